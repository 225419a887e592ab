"""Deferred implementations (harness.registry.Deferred): a library is imported only when a run selects one of its
implementations, so a run of one implementation does not wait for bitsandbytes or torchao to import."""

from __future__ import annotations

import subprocess
import sys

from harness.api import Capabilities, FormatSpec, QuantizedTensor
from harness.registry import Deferred, Registry


class _Toy:
    spec = FormatSpec(format="toy", codebook=None, scale="none")
    capabilities = Capabilities()

    def __init__(self, name: str) -> None:
        self.name = name

    def quantize(self, x):  # type: ignore[no-untyped-def]
        return QuantizedTensor(shape=x.shape, dtype=x.dtype, storage={"weight": x.clone()})

    def dequantize(self, q):  # type: ignore[no-untyped-def]
        return q.storage["weight"].clone()


def _counting(names: tuple[str, ...], built: tuple[str, ...] | None = None) -> tuple[Deferred, list[int]]:
    calls: list[int] = []

    def load() -> list[_Toy]:
        calls.append(1)
        return [_Toy(name) for name in (names if built is None else built)]

    return Deferred(names=names, load=load), calls


def test_an_unselected_deferred_plugin_is_never_built() -> None:
    registry = Registry()
    deferred, calls = _counting(("lib-a", "lib-b"))
    registry.add_object(deferred, "plugin lib")
    registry.add_object(_Toy("plain"), "plugin plain")
    assert registry.names == ["lib-a", "lib-b", "plain"]
    assert [impl.name for impl in registry.select(["plain"])] == ["plain"]
    assert calls == []
    assert [impl.name for impl in registry.select(["lib-*"])] == ["lib-a", "lib-b"]
    assert calls == [1]  # both names from one build
    registry.select(None)
    assert calls == [1] and registry.deferred == {}


def test_a_deferred_plugin_with_a_missing_library_is_unavailable_without_building() -> None:
    registry = Registry()
    deferred, calls = _counting(("lib-a",))
    missing = Deferred(names=("lib-a",), load=deferred.load, requires=("no_such_library_here",), hint="pip install x")
    registry.add_object(missing, "plugin lib")
    assert registry.unavailable == {"lib-a": "no_such_library_here is not installed (pip install x)"}
    assert calls == [] and registry.select(["lib-a"]) == []


def test_a_deferred_plugin_that_fails_to_build_is_a_load_error() -> None:
    def broken() -> object:
        raise RuntimeError("the library's import failed")

    registry = Registry()
    registry.add_object(Deferred(names=("lib-a",), load=broken), "plugin lib")
    assert registry.select(["lib-a"]) == []
    assert [(e.source, e.error) for e in registry.errors] == [
        ("plugin lib", "RuntimeError: the library's import failed")
    ]


def test_a_deferred_plugin_must_build_what_it_named() -> None:
    registry = Registry()
    deferred, _ = _counting(("lib-a", "lib-b"), built=("lib-a",))
    registry.add_object(deferred, "plugin lib")
    assert [impl.name for impl in registry.select(["lib-b"])] == []
    assert [e.error for e in registry.errors] == ["declared 'lib-b' but its loader did not build them"]
    assert [impl.name for impl in registry.select(["lib-a"])] == ["lib-a"]


def test_a_deferred_name_taken_by_another_plugin_is_a_duplicate() -> None:
    registry = Registry()
    registry.add_object(_Toy("lib-a"), "plugin first")
    deferred, _ = _counting(("lib-a",))
    registry.add_object(deferred, "plugin lib")
    assert [e.error for e in registry.errors] == ["duplicate name 'lib-a' (already provided by plugin first)"]


def test_selecting_a_reference_implementation_imports_neither_bitsandbytes_nor_torchao() -> None:
    probe = (
        "import sys; from harness.registry import load_registry; registry = load_registry(); "
        "registry.select(['ref-nf4']); print('bitsandbytes' in sys.modules, 'torchao' in sys.modules); "
        "registry.select(['bnb-nf4']); print('bitsandbytes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "True"]
