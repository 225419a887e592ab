"""Fidelity of a quantized model to its full-precision reference, as llama.cpp's perplexity tool measures it
with ``--kl-divergence``: both models read the same fixed text in chunks, and each position's next-token
distribution of the quantized model is compared with the reference's.

Method (llama.cpp's, kept so numbers are comparable in kind):

* the text is tokenized once and cut into non-overlapping chunks of ``chunk_size`` tokens (512); leftover
  tokens at the end are not used;
* each chunk is evaluated on its own; only predictions for the second half of each chunk are scored
  (``score_from = chunk_size // 2``), so every scored token has at least 256 tokens of context;
* per scored token: ``KL(p_ref || p_quant) = sum_v p_ref(v) (log p_ref(v) - log p_quant(v))`` over the whole
  vocabulary (nats), whether the two argmaxes agree (top-1 agreement), and the negative log-likelihood of the
  actual next token under each model; perplexity is ``exp(mean NLL)``.

Uncertainty: tokens of one chunk share their context and the same layers' errors, so per-token values are not
independent (their lag-1 autocorrelation is measured and reported by :class:`Fidelity`); a bootstrap over
tokens would give too narrow an interval, and a bootstrap over the few chunks (6 here) would be too coarse.
The unit resampled is therefore a block of ``block_tokens`` (64) consecutive scored tokens inside one chunk
(a block bootstrap): per-block means are the ``samples`` a baseline stores and pairs, and the CI of the mean
is :func:`harness.results.stats.bootstrap_ci` over them.

The reference's log-probabilities for the scored positions are computed once per session (float32:
chunks x 256 x vocab, 300 MB for 6 chunks of SmolLM2's 49,152-token vocabulary) and kept in memory, so
each quantized model costs one batched forward pass over the chunks (one dequantization of every layer for
implementations that dequantize per call).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import InvalidArgument

__all__ = [
    "DEFAULT_BLOCK_TOKENS",
    "DEFAULT_CHUNK_SIZE",
    "SAMPLE_FILENAME",
    "Fidelity",
    "Reference",
    "compare_to_reference",
    "default_sample_path",
    "kl_divergence",
    "load_sample",
    "reference_run",
    "tokenize_chunks",
]

SAMPLE_FILENAME = "fidelity_sample.txt"
DEFAULT_CHUNK_SIZE = 512
DEFAULT_BLOCK_TOKENS = 64


def default_sample_path() -> Path:
    """The fixed text the suites ship (``suites/accuracy/data/fidelity_sample.txt``), in the suites folder that
    ``fourbit run`` would use (harness.cli.find_suites_dir; an installed package carries it too)."""
    from harness.cli import find_suites_dir

    return (find_suites_dir() / "accuracy" / "data" / SAMPLE_FILENAME).resolve()


def load_sample(path: str | os.PathLike[str] | None = None) -> str:
    """The text of ``path`` (default: the shipped sample); InvalidArgument naming the file if unusable."""
    file = Path(path) if path is not None else default_sample_path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgument(f"{file}: no such file, expected a UTF-8 text sample for the fidelity suite") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{file}: cannot be read as UTF-8 text ({exc})") from exc
    if not text.strip():
        raise InvalidArgument(f"{file}: the file is empty, expected a few thousand tokens of prose")
    return text


def tokenize_chunks(tokenizer: Any, text: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """``[n_chunks, chunk_size]`` token ids of ``text`` (no special tokens added, leftover dropped)."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 4:
        raise InvalidArgument(f"chunk_size={chunk_size!r}, expected an int >= 4 such as 512")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n_chunks = len(ids) // chunk_size
    if n_chunks < 1:
        raise InvalidArgument(
            f"the text has {len(ids)} tokens, fewer than one chunk of {chunk_size}; expected a longer sample"
        )
    return torch.tensor(ids[: n_chunks * chunk_size], dtype=torch.long).reshape(n_chunks, chunk_size)


@torch.inference_mode()
def _scored_log_probs(model: Any, chunks: torch.Tensor, score_from: int, batch_chunks: int) -> torch.Tensor:
    """float32 log-softmax of the predictions for tokens ``score_from..chunk_size-1`` of each chunk:
    ``[n_chunks, chunk_size - score_from, vocab]`` (position j's logits predict token j + 1)."""
    chunk_size = chunks.shape[1]
    keep = chunk_size - score_from + 1  # logits at score_from-1 .. chunk_size-1; the last predicts nothing
    parts = []
    for start in range(0, chunks.shape[0], batch_chunks):
        batch = chunks[start : start + batch_chunks]
        logits = model(input_ids=batch, use_cache=False, logits_to_keep=keep).logits
        parts.append(torch.log_softmax(logits[:, :-1].float(), dim=-1))
    return torch.cat(parts)


def kl_divergence(reference_log_probs: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """Per-position ``KL(p_ref || p)`` in nats over the last dimension (the vocabulary)."""
    return (reference_log_probs.exp() * (reference_log_probs - log_probs)).sum(-1)


@dataclass(frozen=True)
class Reference:
    """What the full-precision model predicted on the sample; computed once, compared with every quantizer."""

    chunks: torch.Tensor
    """Token ids, ``[n_chunks, chunk_size]``."""
    score_from: int
    log_probs: torch.Tensor
    """float32 ``[n_chunks, n_scored, vocab]``."""
    data_hash: str

    @property
    def targets(self) -> torch.Tensor:
        """The tokens the scored predictions are for, ``[n_chunks, n_scored]``."""
        return self.chunks[:, self.score_from :]

    @property
    def nll(self) -> torch.Tensor:
        return -self.log_probs.gather(-1, self.targets.unsqueeze(-1)).squeeze(-1)


def reference_run(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    score_from: int | None = None,
    batch_chunks: int = 8,
) -> Reference:
    """Run the reference model over ``text`` (see the module docstring) and keep its scored log-probs."""
    chunks = tokenize_chunks(tokenizer, text, chunk_size=chunk_size)
    score_from = chunk_size // 2 if score_from is None else score_from
    if not 1 <= score_from < chunk_size:
        raise InvalidArgument(f"score_from={score_from!r}, expected 1..{chunk_size - 1}")
    digest = hashlib.sha256()
    digest.update(f"chunk_size={chunk_size};score_from={score_from};".encode())
    digest.update(np.asarray(chunks, dtype=np.int64).tobytes())
    log_probs = _scored_log_probs(model, chunks, score_from, batch_chunks)
    return Reference(chunks=chunks, score_from=score_from, log_probs=log_probs, data_hash=digest.hexdigest())


@dataclass(frozen=True)
class Fidelity:
    """A quantized model against the reference on the same tokens (see the module docstring)."""

    kld: np.ndarray
    """Per scored token, chunk by chunk, nats."""
    top1: np.ndarray
    """Per scored token: 1.0 where the argmaxes agree."""
    nll: np.ndarray
    reference_nll: np.ndarray
    block_tokens: int
    tokens_per_chunk: int
    confidence: float
    kld_ci: tuple[float, float]
    top1_ci: tuple[float, float]
    log_ppl_ratio_ci: tuple[float, float]

    @property
    def n_tokens(self) -> int:
        return int(self.kld.size)

    def block_means(self, values: np.ndarray) -> np.ndarray:
        """Means over consecutive blocks of ``block_tokens`` scored tokens, never across a chunk boundary."""
        per_chunk = values.reshape(-1, self.tokens_per_chunk)
        blocks = self.tokens_per_chunk // self.block_tokens
        return per_chunk[:, : blocks * self.block_tokens].reshape(-1, self.block_tokens).mean(axis=1)

    @property
    def kld_mean(self) -> float:
        return float(self.kld.mean())

    @property
    def kld_median(self) -> float:
        return float(np.median(self.kld))

    @property
    def kld_p99(self) -> float:
        return float(np.quantile(self.kld, 0.99))

    @property
    def kld_max(self) -> float:
        return float(self.kld.max())

    @property
    def top1_agreement(self) -> float:
        return float(self.top1.mean())

    @property
    def ppl(self) -> float:
        return math.exp(float(self.nll.mean()))

    @property
    def reference_ppl(self) -> float:
        return math.exp(float(self.reference_nll.mean()))

    @property
    def ppl_ratio(self) -> float:
        """``ppl / reference_ppl`` = exp(mean per-token NLL difference)."""
        return math.exp(float((self.nll - self.reference_nll).mean()))

    @property
    def ppl_ratio_ci(self) -> tuple[float, float]:
        return (math.exp(self.log_ppl_ratio_ci[0]), math.exp(self.log_ppl_ratio_ci[1]))

    def autocorrelation(self, lag: int = 1) -> float:
        """Lag-``lag`` autocorrelation of per-token KLD within chunks: how far from independent tokens are."""
        per_chunk = self.kld.reshape(-1, self.tokens_per_chunk)
        centered = per_chunk - self.kld.mean()
        numerator = float((centered[:, lag:] * centered[:, :-lag]).sum())
        denominator = float((centered**2).sum())
        return numerator / denominator if denominator > 0 else 0.0


@torch.inference_mode()
def compare_to_reference(
    model: Any,
    reference: Reference,
    *,
    block_tokens: int = DEFAULT_BLOCK_TOKENS,
    batch_chunks: int = 8,
    confidence: float = 0.95,
) -> Fidelity:
    """One forward pass of ``model`` over the reference's chunks; per-token KLD, top-1 agreement and NLL."""
    from harness.results.stats import bootstrap_ci

    tokens_per_chunk = reference.chunks.shape[1] - reference.score_from
    if not isinstance(block_tokens, int) or not 1 <= block_tokens <= tokens_per_chunk:
        raise InvalidArgument(
            f"block_tokens={block_tokens!r}, expected 1..{tokens_per_chunk} (scored tokens per chunk)"
        )
    kld_parts, top1_parts, nll_parts = [], [], []
    targets = reference.targets
    for start in range(0, reference.chunks.shape[0], batch_chunks):
        log_probs = _scored_log_probs(
            model, reference.chunks[start : start + batch_chunks], reference.score_from, batch_chunks
        )
        reference_part = reference.log_probs[start : start + batch_chunks]
        kld_parts.append(kl_divergence(reference_part, log_probs))
        top1_parts.append((reference_part.argmax(-1) == log_probs.argmax(-1)).double())
        nll_parts.append(-log_probs.gather(-1, targets[start : start + batch_chunks].unsqueeze(-1)).squeeze(-1))
    kld = torch.cat(kld_parts).double().reshape(-1).numpy()
    top1 = torch.cat(top1_parts).reshape(-1).numpy()
    nll = torch.cat(nll_parts).double().reshape(-1).numpy()
    reference_nll = reference.nll.double().reshape(-1).numpy()
    result = Fidelity(
        kld=kld,
        top1=top1,
        nll=nll,
        reference_nll=reference_nll,
        block_tokens=block_tokens,
        tokens_per_chunk=tokens_per_chunk,
        confidence=confidence,
        kld_ci=(math.nan, math.nan),
        top1_ci=(math.nan, math.nan),
        log_ppl_ratio_ci=(math.nan, math.nan),
    )

    def interval(values: np.ndarray) -> tuple[float, float]:
        blocks = result.block_means(values)
        return bootstrap_ci(blocks, confidence=confidence) if blocks.size >= 2 else (math.nan, math.nan)

    return Fidelity(
        **{
            **result.__dict__,
            "kld_ci": interval(kld),
            "top1_ci": interval(top1),
            "log_ppl_ratio_ci": interval(nll - reference_nll),
        }
    )


def block_samples(fidelity: Fidelity, values: Sequence[float] | np.ndarray) -> list[float]:
    """Per-block means of ``values`` as plain floats (what a baseline stores)."""
    return [float(v) for v in fidelity.block_means(np.asarray(values, dtype=float))]
