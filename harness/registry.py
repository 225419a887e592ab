"""Discovery of implementations: built-ins and third parties through one path.

Sources, in order: entry points of group ``fourbit.quantizers`` (the harness's
own built-ins are registered there too), ``--quantizer module:attr`` specs, and
objects returned by the ``pytest_fourbit_quantizers`` hook. Each object may be a
Quantizer instance, a class, a zero-argument factory, or a list of these, or a :class:`Deferred`: the names of
implementations whose library is imported only when a run selects one of them.
A source that fails to import or yields something that breaks the contract is
recorded as a :class:`LoadError` (reported by name, never fatal to the run).
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from harness.api import Capabilities, FormatSpec, Quantizer
from harness.errors import ContractViolation, MissingDependency, PluginError, UsageError

__all__ = [
    "ENTRY_POINT_GROUP",
    "Deferred",
    "Implementation",
    "LoadError",
    "Registry",
    "check_quantizer",
    "load_registry",
    "resolve_spec",
]

ENTRY_POINT_GROUP = "fourbit.quantizers"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+@-]*$")
_BUILTIN_SPECS = (
    "harness.quantizers.reference:reference_quantizers",
    "harness.quantizers.identity:identity_quantizers",
    "harness.quantizers.bitsandbytes:bitsandbytes_quantizers",
    "harness.quantizers.torchao:torchao_quantizers",
    "harness.quantizers.triton:triton_quantizers",
)


@dataclass(frozen=True)
class Deferred:
    """Implementations a plugin names up front and builds only when a run selects one of them: importing a big
    library (bitsandbytes takes seconds) for implementations a run does not test is time the user waits for
    nothing. ``requires`` are the modules the implementations need, looked up without importing them
    (``importlib.util.find_spec``): one that is missing makes every name unavailable with ``hint``. ``load``
    returns what a plugin could register directly (quantizers, a factory, a list), and must build every name.

    Calling a Deferred builds its implementations, so it can stand where a factory function stood."""

    names: tuple[str, ...]
    load: Callable[[], object]
    requires: tuple[str, ...] = ()
    hint: str = ""

    def __call__(self) -> object:
        return self.load()

    def missing_requirement(self) -> str | None:
        """The first module of ``requires`` that is not installed, or None."""
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module)
            except (ImportError, ValueError):
                found = None
            if found is None:
                return module
        return None


@dataclass(frozen=True)
class Implementation:
    """A quantizer that passed the contract check, and where it came from."""

    quantizer: Quantizer
    source: str

    @property
    def name(self) -> str:
        return self.quantizer.name


@dataclass(frozen=True)
class LoadError:
    """A plugin that could not be used: its source and what went wrong."""

    source: str
    error: str


def check_quantizer(obj: object, source: str) -> Quantizer:
    """Return ``obj`` if it satisfies the Quantizer contract, else raise ContractViolation naming the problem."""
    label = repr(getattr(obj, "name", None) or type(obj).__name__)
    if isinstance(obj, type):
        raise ContractViolation(source, f"{label}: got the class {obj.__name__}, expected an instance of it")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ContractViolation(
            source,
            f"{label}: name={name!r}, expected a non-empty string of letters, digits and _.+@- (used in test ids)",
        )
    spec = getattr(obj, "spec", None)
    if not isinstance(spec, FormatSpec):
        raise ContractViolation(source, f"{name!r}: spec={spec!r}, expected a harness.FormatSpec")
    capabilities = getattr(obj, "capabilities", None)
    if not isinstance(capabilities, Capabilities):
        raise ContractViolation(source, f"{name!r}: capabilities={capabilities!r}, expected a harness.Capabilities")
    for method in ("quantize", "dequantize"):
        if not callable(getattr(obj, method, None)):
            raise ContractViolation(source, f"{name!r}: {method} is missing or not callable")
    return obj  # type: ignore[return-value]  # checked structurally above


def _instantiate(obj: object, source: str) -> list[object]:
    """Turn an entry-point/--quantizer target into quantizer candidates."""
    if isinstance(obj, (list, tuple)):
        return [item for element in obj for item in _instantiate(element, source)]
    if hasattr(obj, "quantize") and not isinstance(obj, type):
        return [obj]
    if callable(obj):
        try:
            produced = obj()
        except MissingDependency:
            raise
        except Exception as exc:  # a third party's factory may raise anything
            raise PluginError(source, f"calling {obj!r} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(produced, (list, tuple)):
            return list(produced)
        return [produced]
    return [obj]


def _import_target(module_name: str) -> Any:
    """The module of a ``--quantizer`` spec: a Python file (``path/to/quant.py``, imported under its stem), or a
    module importable from sys.path or, failing that, from the current folder (as ``python -m`` would find it)."""
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no such file {str(path)!r}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"{str(path)!r} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module  # dataclasses and pickling look a class's module up by name
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(path.stem, None)
            raise
        return module
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        here = str(Path.cwd())
        top = module_name.split(".")[0]
        if exc.name != top or here in sys.path or not any(Path(here, top + s).exists() for s in (".py", "")):
            raise
        sys.path.insert(0, here)
        return importlib.import_module(module_name)


def resolve_spec(spec: str) -> object:
    """Import ``module:attr`` or ``path/to/file.py:attr`` (attr may be dotted). A malformed spec is a UsageError;
    import failures a PluginError."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise UsageError(f"--quantizer {spec!r}: expected MODULE:ATTR or FILE.py:ATTR, e.g. mypkg.quant:MyQuantizer")
    module_name, attr_path = spec.split(":")
    source = f"--quantizer {spec}"
    try:
        target: Any = _import_target(module_name)
    except Exception as exc:
        raise PluginError(source, f"import {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise PluginError(source, f"module {module_name!r} has no attribute {attr_path!r}") from None
    return target


@dataclass
class Registry:
    """Every implementation a run can use, plus the plugins that failed to load."""

    implementations: dict[str, Implementation] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    """Implementations whose library (or device) is missing: name -> reason with the install hint.
    Their tests are collected and skipped with that reason; they are not errors."""
    deferred: dict[str, tuple[Deferred, str]] = field(default_factory=dict)
    """Implementations named but not built yet: name -> (its Deferred, source). :meth:`select` builds them."""

    def _add_unavailable(self, exc: MissingDependency) -> None:
        for name in exc.names:
            if name not in self.implementations:
                self.unavailable.setdefault(name, exc.message)

    def add_object(self, obj: object, source: str) -> None:
        """Instantiate and contract-check ``obj``; record any failure instead of raising."""
        if isinstance(obj, Deferred):
            self._add_deferred(obj, source)
            return
        try:
            candidates = _instantiate(obj, source)
        except MissingDependency as exc:
            self._add_unavailable(exc)
            return
        except PluginError as exc:
            self.errors.append(LoadError(source, exc.message))
            return
        for candidate in candidates:
            try:
                quantizer = check_quantizer(candidate, source)
            except ContractViolation as exc:
                self.errors.append(LoadError(source, exc.message))
                continue
            existing = self.implementations.get(quantizer.name)
            if existing is not None:
                self.errors.append(
                    LoadError(source, f"duplicate name {quantizer.name!r} (already provided by {existing.source})")
                )
                continue
            self.implementations[quantizer.name] = Implementation(quantizer, source)

    def _add_deferred(self, deferred: Deferred, source: str) -> None:
        missing = deferred.missing_requirement()
        if missing is not None:
            reason = f"{missing} is not installed"
            self._add_unavailable(MissingDependency(source, deferred.names, reason, deferred.hint))
            return
        for name in deferred.names:
            taken = self.implementations.get(name) or self.deferred.get(name)
            if taken is not None:
                where = taken.source if isinstance(taken, Implementation) else taken[1]
                self.errors.append(LoadError(source, f"duplicate name {name!r} (already provided by {where})"))
                continue
            self.deferred[name] = (deferred, source)

    def build(self, patterns: Sequence[str] | None = None) -> None:
        """Build the deferred implementations that match ``patterns`` (all when none given), each plugin's at once
        (its library is imported once); a failure is a load error of that plugin, as at load time."""
        wanted = [
            name
            for name in self.deferred
            if not patterns or any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
        ]
        for name in wanted:
            if name not in self.deferred:
                continue  # built with an earlier name of the same plugin
            deferred, source = self.deferred[name]
            for sibling in deferred.names:
                self.deferred.pop(sibling, None)
            before = len(self.errors)
            self.add_loader(deferred.load, source)
            built = set(self.implementations) | set(self.unavailable)
            unbuilt = [n for n in deferred.names if n not in built]
            if unbuilt and len(self.errors) == before:
                names = ", ".join(map(repr, unbuilt))
                self.errors.append(LoadError(source, f"declared {names} but its loader did not build them"))

    def add_loader(self, loader: Callable[[], object], source: str) -> None:
        """Run ``loader`` (an import) and add what it returns; an exception becomes a LoadError."""
        try:
            obj = loader()
        except UsageError:
            raise
        except MissingDependency as exc:
            self._add_unavailable(exc)
            return
        except PluginError as exc:
            self.errors.append(LoadError(source, exc.message))
            return
        except Exception as exc:  # an entry point's import may raise anything
            self.errors.append(LoadError(source, f"{type(exc).__name__}: {exc}"))
            return
        self.add_object(obj, source)

    def replace(self, name: str, replacement: object, source: str) -> None:
        """Put ``replacement`` (a wrapper of the implementation, say) in the place of implementation ``name``.
        It must meet the contract and keep the name, so that its results and baselines stay those of ``name``;
        otherwise the implementation is kept and the reason recorded as a load error."""
        current = self.implementations[name]
        try:
            quantizer = check_quantizer(replacement, source)
        except ContractViolation as exc:
            self.errors.append(LoadError(source, f"replacement for {name!r}: {exc.message}"))
            return
        if quantizer.name != name:
            self.errors.append(
                LoadError(source, f"replacement for {name!r} is named {quantizer.name!r}, expected the same name")
            )
            return
        self.implementations[name] = Implementation(quantizer, f"{current.source}, replaced by {source}")

    @property
    def names(self) -> list[str]:
        """Every implementation a run can select, built or deferred."""
        return sorted({*self.implementations, *self.deferred})

    def select_unavailable(self, patterns: Sequence[str] | None) -> dict[str, str]:
        """Unavailable implementations matching ``patterns`` (all when none given): name -> reason."""
        return {
            name: reason
            for name, reason in self.unavailable.items()
            if not patterns or any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
        }

    def select(self, patterns: Sequence[str] | None) -> list[Implementation]:
        """Implementations matching any of the glob ``patterns`` (all when none given), in registration order.

        A pattern that matches nothing is a UsageError listing the known names.
        """
        known = [*self.implementations, *self.deferred, *self.unavailable]
        unknown = [p for p in patterns or () if not any(fnmatch.fnmatchcase(n, p) for n in known)]
        if unknown:
            failed = "".join(f"; {e.source} failed to load: {e.error}" for e in self.errors)
            raise UsageError(
                f"--impl {', '.join(map(repr, unknown))} matches no implementation; known: {', '.join(sorted(known))}"
                + failed
            )
        self.build(patterns)
        if not patterns:
            return list(self.implementations.values())
        return [
            impl
            for name, impl in self.implementations.items()
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
        ]


def _entry_point_source(ep: Any) -> str:
    dist = getattr(getattr(ep, "dist", None), "name", None)
    return f"entry point {ep.name}" + (f" ({dist})" if dist else f" = {ep.value}")


def load_registry(
    quantizer_specs: Iterable[str] = (),
    hook_results: Iterable[tuple[str, object]] = (),
    *,
    use_entry_points: bool = True,
) -> Registry:
    """Build the registry from entry points, ``--quantizer`` specs and hook results.

    When the harness itself is not installed (no entry point of ours), its
    built-ins are loaded from the same specs its entry points name.
    """
    registry = Registry()
    own_found = False
    if use_entry_points:
        for ep in sorted(
            entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (not e.value.startswith("harness."), e.name)
        ):
            own_found = own_found or ep.value.startswith("harness.")
            registry.add_loader(ep.load, _entry_point_source(ep))
    if not own_found:
        for spec in _BUILTIN_SPECS:
            registry.add_loader(functools.partial(resolve_spec, spec), f"built-in {spec}")
    for spec in quantizer_specs:
        registry.add_loader(functools.partial(resolve_spec, spec), f"--quantizer {spec}")
    for source, obj in hook_results:
        registry.add_object(obj, source)
    return registry
