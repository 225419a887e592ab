"""Discovery of implementations: entry points, ``--quantizer``, the conftest hook, ``--impl``, load errors,
contract violations, test ids, dtype skips, and the example third-party plugin in examples/.

Registry-level checks call :mod:`harness.registry` directly; pytest-level checks run pytest through pytester
(in-process unless a real interpreter matters: exit codes seen by a shell, hypothesis profiles, PYTHONPATH).
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from harness import Capabilities, FormatSpec, QuantizedTensor
from harness.errors import PluginError, UsageError
from harness.registry import ENTRY_POINT_GROUP, Registry, load_registry, resolve_spec

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "suites" / "properties"
EXAMPLE = REPO / "examples" / "fourbit-example-plugin"
EXAMPLE_SRC = EXAMPLE / "src"
BUILTIN_NAMES = {"ref-nf4", "ref-fp4", "ref-af4", "ref-int4", "ref-nf4-dq", "fp32", "fp16", "bf16"}
"""Built-ins that need nothing beyond the core dependencies."""
LIBRARY_NAMES = {
    "bnb-nf4",
    "bnb-fp4",
    "bnb-nf4-dq",
    "bnb-fp4-dq",
    "torchao-nf4",
    "torchao-int4",
    "triton-nf4",
    "triton-fp4",
}
"""Built-ins over optional libraries (or a GPU): available, or listed as unavailable with the reason."""
REF_NAMES = {"ref-nf4", "ref-fp4", "ref-af4", "ref-int4", "ref-nf4-dq"}
FP32_AND_REF_4 = {"fp32", "ref-nf4", "ref-fp4", "ref-af4", "ref-int4"}  # --impl fp32 --impl 'ref-*4'
EXAMPLE_NAME = "example-nf4-argmin"

# A module third parties could have written: the smallest objects that satisfy the contract, in every form
# a --quantizer target may take.
TOY_MODULE = """
import torch
from harness import Capabilities, FormatSpec, QuantizedTensor


class Toy:
    def __init__(self, name="toy-instance", capabilities=None):
        self.name = name
        self.spec = FormatSpec(format="toy", codebook=None, scale="none")
        self.capabilities = capabilities or Capabilities()

    def quantize(self, x):
        return QuantizedTensor(shape=x.shape, dtype=x.dtype, storage={"weight": x.detach().clone()})

    def dequantize(self, q):
        return q.storage["weight"].clone()


class ToyClass(Toy):
    def __init__(self):
        super().__init__("toy-class")


def factory():
    return Toy("toy-factory")


def factory_list():
    return [Toy("toy-list-a"), Toy("toy-list-b")]


class Holder:
    nested = Toy("toy-dotted")


instance = Toy("toy-instance")
f32_only = Toy("toy-f32", Capabilities(dtypes=(torch.float32,)))
multiple_of_128 = Toy("toy-multiple", Capabilities(numel_multiple_of=128))
two_d_only = Toy("toy-2d", Capabilities(shape_rule=lambda shape: None if len(shape) == 2 else "2-D weights only"))
"""

# Objects that break the contract, one way each.
BAD_MODULE = """
from harness import Capabilities, FormatSpec
from toyquant import Toy


class NoDequantize:
    name = "bad-no-dequantize"
    spec = FormatSpec(format="toy", codebook=None, scale="none")
    capabilities = Capabilities()

    def quantize(self, x):
        raise NotImplementedError


no_name = Toy("placeholder")
del no_name.name
wrong_spec = Toy("bad-wrong-spec")
wrong_spec.spec = "nf4"
no_dequantize = NoDequantize()
duplicates = [Toy("toy-dup"), Toy("toy-dup")]
shadows_builtin = Toy("ref-nf4")


def raising_factory():
    raise RuntimeError("no GPU here")
"""

LOCAL_TEST = """
import torch


def test_roundtrip(quantizer):
    x = torch.linspace(-1, 1, 64)
    assert quantizer.dequantize(quantizer.quantize(x)).shape == x.shape
"""

LOCAL_DTYPE_TEST = """
import torch


def test_dtype(quantizer, dtype):
    x = torch.linspace(-1, 1, 128, dtype=dtype)
    assert quantizer.dequantize(quantizer.quantize(x)).dtype == dtype
"""


# ------------------------------------------------------------------------------------------------ helpers


class Runner:
    """pytester plus the paths, environment and files these tests share."""

    def __init__(self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pytester = pytester
        self.monkeypatch = monkeypatch
        # The working tree first, also in subprocesses (whose cwd is pytester's tmp dir, not the repo).
        self.add_path(REPO)
        self.add_path(pytester.path)

    @property
    def path(self) -> Path:
        return self.pytester.path

    def add_path(self, path: Path) -> None:
        """Make ``path`` importable in-process and in subprocesses."""
        self.monkeypatch.syspath_prepend(str(path))
        self.monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")])))

    def write(self, name: str, source: str) -> Path:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(source))
        return target

    def run(self, *args: str | Path) -> pytest.RunResult:
        return self.pytester.runpytest(*args, "-p", "no:cacheprovider")

    def run_subprocess(self, *args: str | Path) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider", timeout=120)

    def collected_ids(self, *args: str | Path) -> list[str]:
        """Test ids of a ``--collect-only -q`` run (which must succeed)."""
        result = self.run("--collect-only", "-q", *args)
        assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
        return [line.strip() for line in result.outlines if "::" in line]

    def fake_installed_example(self) -> Path:
        """A site dir holding what ``pip install`` would: the example's dist-info with the entry points its
        pyproject declares (the package itself stays in examples/, put on the path), so entry-point discovery
        is exercised without touching the venv."""
        project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
        site = self.path / "site"
        dist_info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
        dist_info.mkdir(parents=True)
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
        )
        lines = []
        for group, entries in project["entry-points"].items():
            lines.append(f"[{group}]")
            lines.extend(f"{key} = {value}" for key, value in entries.items())
        (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        self.add_path(site)
        self.add_path(EXAMPLE_SRC)
        return site


def _output(result: pytest.RunResult) -> str:
    return result.stdout.str() + "\n" + result.stderr.str()


def _bracket_ids(ids: list[str], test_name: str) -> set[str]:
    """The parameter part of the ids of ``test_name``: {"ref-nf4", ...} from "test_q[ref-nf4]"."""
    return {m.group(1) for test_id in ids if (m := re.fullmatch(rf"(?:.*::)?{test_name}\[(.+)\]", test_id))}


@pytest.fixture
def runner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runner]:
    from hypothesis import settings

    monkeypatch.setenv("COLUMNS", "250")  # the rich summary tables must not wrap the messages asserted on
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    profile = settings.get_current_profile_name()
    r = Runner(pytester, monkeypatch)
    r.write("toyquant.py", TOY_MODULE)
    r.write("test_local.py", LOCAL_TEST)
    yield r
    settings.load_profile(profile)  # in-process runs load the harness's profile


@pytest.fixture
def example_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    yield
    for name in [m for m in sys.modules if m == "fourbit_example" or m.startswith("fourbit_example.")]:
        del sys.modules[name]


class _Toy:
    """The same minimal quantizer as TOY_MODULE's, for registry-level tests."""

    def __init__(self, name: str = "toy") -> None:
        self.name = name
        self.spec = FormatSpec(format="toy", codebook=None, scale="none")
        self.capabilities = Capabilities()

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        return QuantizedTensor(shape=x.shape, dtype=x.dtype, storage={"weight": x.detach().clone()})

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        return q.storage["weight"].clone()


class _ToyClass(_Toy):
    def __init__(self) -> None:
        super().__init__("toy-class")


class _ClassLevelToy:
    """Everything at class level: the class object itself looks like a quantizer to a structural check."""

    name = "toy-class-level"
    spec = FormatSpec(format="toy", codebook=None, scale="none")
    capabilities = Capabilities()

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        return QuantizedTensor(shape=x.shape, dtype=x.dtype, storage={"weight": x.detach().clone()})

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        return q.storage["weight"].clone()


# ------------------------------------------------------------------------------------ registry level


def test_builtins_load_through_entry_points() -> None:
    from importlib.metadata import entry_points

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][ENTRY_POINT_GROUP]
    installed = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name in ("reference", "identity"):
        assert installed.get(name) == declared[name], f"entry point {name} is not installed (pip install -e .)"

    registry = load_registry()
    assert set(registry.implementations) >= BUILTIN_NAMES
    for name in REF_NAMES:
        assert registry.implementations[name].source.startswith("entry point reference"), name
    for name in ("fp32", "fp16", "bf16"):
        assert registry.implementations[name].source.startswith("entry point identity"), name
    assert not [e for e in registry.errors if e.source.startswith(("entry point reference", "entry point identity"))]
    assert not any("duplicate" in e.error for e in registry.errors)  # built-ins are not loaded a second time


def test_without_entry_points_builtins_come_from_their_specs() -> None:
    registry = load_registry(use_entry_points=False)
    assert set(registry.deferred) == LIBRARY_NAMES - set(registry.unavailable)  # named, not built: not selected
    registry.build()
    assert set(registry.implementations) - LIBRARY_NAMES == BUILTIN_NAMES
    assert set(registry.implementations) | set(registry.unavailable) == BUILTIN_NAMES | LIBRARY_NAMES
    assert not set(registry.implementations) & set(registry.unavailable)
    assert registry.errors == []
    assert registry.implementations["ref-nf4"].source == "built-in harness.quantizers.reference:reference_quantizers"
    assert registry.implementations["fp16"].source == "built-in harness.quantizers.identity:identity_quantizers"


def test_harness_not_installed_falls_back_to_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.registry

    monkeypatch.setattr(harness.registry, "entry_points", lambda group: [])
    registry = load_registry()
    registry.build()
    assert set(registry.implementations) - LIBRARY_NAMES == BUILTIN_NAMES
    assert set(registry.implementations) | set(registry.unavailable) == BUILTIN_NAMES | LIBRARY_NAMES
    assert all(impl.source.startswith("built-in ") for impl in registry.implementations.values())


def test_registry_accepts_instance_class_factory_and_lists() -> None:
    registry = Registry()
    registry.add_object(_Toy("toy-instance"), "s-instance")
    registry.add_object(_ToyClass, "s-class")
    registry.add_object(lambda: _Toy("toy-factory"), "s-factory")
    registry.add_object(lambda: [_Toy("toy-f1"), _Toy("toy-f2")], "s-factory-list")
    registry.add_object([_Toy("toy-l1"), lambda: _Toy("toy-l2"), _ToyClass], "s-list")  # the class again: duplicate
    assert registry.names == sorted(
        ["toy-instance", "toy-class", "toy-factory", "toy-f1", "toy-f2", "toy-l1", "toy-l2"]
    )
    assert {n: i.source for n, i in registry.implementations.items()}["toy-f2"] == "s-factory-list"
    assert isinstance(registry.implementations["toy-class"].quantizer, _ToyClass)
    assert [(e.source, "duplicate name 'toy-class'" in e.error) for e in registry.errors] == [("s-list", True)]


def _raise() -> None:
    raise RuntimeError("no GPU here")


def _without(attr: str) -> _Toy:
    toy = _Toy(f"toy-without-{attr}")
    setattr(toy, attr, None)
    return toy


class _NoDequantize:
    name = "toy-no-dequantize"
    spec = FormatSpec(format="toy", codebook=None, scale="none")
    capabilities = Capabilities()

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        raise NotImplementedError


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: _without("name"), "name=None"),
        (lambda: _Toy("has space"), "name='has space'"),
        (lambda: _Toy("x[1]"), "name='x[1]'"),
        (lambda: _without("spec"), "spec=None, expected a harness.FormatSpec"),
        (lambda: _without("capabilities"), "capabilities=None, expected a harness.Capabilities"),
        (lambda: _without("quantize"), "quantize is missing or not callable"),
        (_NoDequantize, "dequantize is missing or not callable"),
        (lambda: _raise, "raised RuntimeError: no GPU here"),
    ],
    ids=["no-name", "space", "brackets", "spec", "capabilities", "quantize", "dequantize", "factory-raises"],
)
def test_contract_violation_is_recorded_not_raised(make, message: str) -> None:  # type: ignore[no-untyped-def]
    registry = Registry()
    registry.add_object(make(), "the-source")
    registry.add_object(_Toy("toy-good"), "good-source")
    assert registry.names == ["toy-good"]
    assert len(registry.errors) == 1
    assert registry.errors[0].source == "the-source"
    assert message in registry.errors[0].error


def test_factory_returning_a_class_gets_an_instance_or_an_error() -> None:
    registry = Registry()
    registry.add_object(lambda: _ClassLevelToy, "s")
    registered = [impl.quantizer for impl in registry.implementations.values()]
    assert not any(isinstance(q, type) for q in registered), "a class object was registered as a quantizer"


def test_select_exact_names_and_globs() -> None:
    registry = load_registry(use_entry_points=False)
    assert [i.name for i in registry.select(None)] == list(registry.implementations)  # all: each one built
    assert not registry.deferred
    assert [i.name for i in registry.select(["ref-nf4"])] == ["ref-nf4"]
    assert {i.name for i in registry.select(["ref-*"])} == REF_NAMES
    assert {i.name for i in registry.select(["fp32", "ref-*4"])} == FP32_AND_REF_4
    with pytest.raises(UsageError) as excinfo:
        registry.select(["ref-nf4", "nope*"])
    message = str(excinfo.value)
    assert "'nope*'" in message and "'ref-nf4'" not in message
    assert all(name in message for name in BUILTIN_NAMES)


@pytest.mark.parametrize("spec", ["nocolon", "a:b:c", ":attr", "module:", ""])
def test_malformed_quantizer_spec_is_a_usage_error(spec: str) -> None:
    with pytest.raises(UsageError, match="expected MODULE:ATTR"):
        resolve_spec(spec)


def test_quantizer_spec_import_failures_are_plugin_errors() -> None:
    with pytest.raises(PluginError, match="ModuleNotFoundError"):
        resolve_spec("missing_module_for_fourbit_tests:x")
    with pytest.raises(PluginError, match="has no attribute 'nope'"):
        resolve_spec("harness.quantizers.reference:nope")
    assert resolve_spec("harness.quantizers.reference:ReferenceQuantizer.with_block_size") is not None  # dotted


# -------------------------------------------------------------------------------------------- pytest level


def test_quantizer_option_takes_instance_class_factory_and_list(runner: Runner) -> None:
    result = runner.run(
        "test_local.py",
        "--fourbit-no-entry-points",
        "--impl", "toy-*",
        "--quantizer", "toyquant:instance",
        "--quantizer", "toyquant:ToyClass",
        "--quantizer", "toyquant:factory",
        "--quantizer", "toyquant:factory_list",
        "--quantizer", "toyquant:Holder.nested",
        "-v",
    )  # fmt: skip
    expected = {"toy-instance", "toy-class", "toy-factory", "toy-list-a", "toy-list-b", "toy-dotted"}
    assert result.ret == pytest.ExitCode.OK, _output(result)
    result.assert_outcomes(passed=len(expected))
    assert _bracket_ids(re.findall(r"test_local\.py::(\S+) PASSED", result.stdout.str()), "test_roundtrip") == expected
    assert "failed to load" not in result.stdout.str()


@pytest.mark.parametrize("where", ["conftest", "plugin"])
def test_hook_provides_quantizers(runner: Runner, where: str) -> None:
    hook = """
        import pytest
        from toyquant import Toy


        def pytest_fourbit_quantizers(config):
            assert isinstance(config, pytest.Config)
            return [Toy("hook-a"), lambda: Toy("hook-b")]
    """
    if where == "conftest":
        runner.write("conftest.py", hook)
        args: tuple[str, ...] = ()
    else:
        runner.write("hookplugin.py", hook)
        args = ("-p", "hookplugin")
    ids = runner.collected_ids("test_local.py", "--fourbit-no-entry-points", *args)
    assert {"hook-a", "hook-b"} <= _bracket_ids(ids, "test_roundtrip")
    assert _bracket_ids(ids, "test_roundtrip") >= BUILTIN_NAMES  # the hook adds to the built-ins
    result = runner.run("test_local.py", "--fourbit-no-entry-points", "--impl", "hook-*", *args)
    assert result.ret == pytest.ExitCode.OK, _output(result)
    result.assert_outcomes(passed=2)


def test_replace_hook_wraps_a_named_implementation_under_its_name(runner: Runner) -> None:
    """pytest_fourbit_replace_quantizer puts a wrapper in the place of one implementation (what the gate check's
    slowdown does): the tests run the wrapper, under the implementation's own name and ids."""
    runner.write(
        "conftest.py",
        """
        CALLS = []


        class Counting:
            def __init__(self, inner):
                self._inner, self.name, self.spec = inner, inner.name, inner.spec
                self.capabilities = inner.capabilities

            def quantize(self, x):
                CALLS.append(self.name)
                return self._inner.quantize(x)

            def dequantize(self, q):
                return self._inner.dequantize(q)


        def pytest_fourbit_replace_quantizer(config, quantizer):
            return Counting(quantizer) if quantizer.name == "ref-int4" else None


        def pytest_sessionfinish(session):
            print(f"wrapped calls: {len(CALLS)}")
        """,
    )
    result = runner.run("test_local.py", "--fourbit-no-entry-points", "--impl", "ref-int4", "--impl", "ref-nf4", "-s")
    assert result.ret == pytest.ExitCode.OK, _output(result)
    result.assert_outcomes(passed=2)
    assert "wrapped calls: 1" in result.stdout.str()  # ref-int4's test went through the wrapper, ref-nf4's did not


def test_a_replacement_under_another_name_is_a_load_error_and_the_original_stays() -> None:
    registry = load_registry((), [("test", _Toy("toy"))], use_entry_points=False)
    original = registry.implementations["toy"].quantizer
    registry.replace("toy", _Toy("other"), "the hook")
    assert registry.implementations["toy"].quantizer is original
    assert [(e.source, e.error) for e in registry.errors] == [
        ("the hook", "replacement for 'toy' is named 'other', expected the same name")
    ]
    registry.replace("toy", object(), "the hook")
    assert registry.implementations["toy"].quantizer is original and "replacement for 'toy'" in registry.errors[1].error
    wrapper = _Toy("toy")
    registry.replace("toy", wrapper, "the hook")
    assert registry.implementations["toy"].quantizer is wrapper
    assert registry.implementations["toy"].source.endswith("replaced by the hook")


def test_every_plugin_option_says_whether_a_fresh_process_rerun_repeats_it(pytestconfig: pytest.Config) -> None:
    """Options are declared through harness.pytest_plugin._options.add_option (which records whether a re-run
    passes them on), so no table of them is kept by hand: every option of the fourbit groups is declared there,
    and the re-run's arguments are derived from the declarations."""
    from harness.pytest_plugin._options import declared_options, repeated_arguments

    declared = {option.flag for option in declared_options().values()}
    groups = [group for group in pytestconfig._parser._groups if group.name.startswith("fourbit")]
    flags = {name for group in groups for option in group.options for name in option.names()}
    assert flags and flags <= declared
    repeated = {o.flag for o in declared_options().values() if o.repeat_in_reruns}
    assert {"--impl", "--quantizer", "--fourbit-kernel-threads", "--model", "--coqa-data", "--coqa-impl"} <= repeated
    assert not {"--fourbit-json", "--baseline-dir", "--fourbit-timing-reruns", "--update-baselines"} & repeated

    values = {"impl": ["a", "b*"], "model": "/m", "coqa_last_turn": True, "fourbit_kernel_threads": 1}

    class Config:
        def getoption(self, dest: str) -> object:
            return values.get(dest)

    arguments = repeated_arguments(Config())  # type: ignore[arg-type]
    assert arguments[arguments.index("--impl") : arguments.index("--impl") + 4] == ["--impl", "a", "--impl", "b*"]
    assert arguments[arguments.index("--model") : arguments.index("--model") + 2] == ["--model", "/m"]
    assert "--coqa-last-turn" in arguments and "--coqa-data" not in arguments  # unset: not repeated


def test_hook_in_a_nested_conftest_is_used_or_reported(runner: Runner) -> None:
    runner.write(
        "pkg/sub/conftest.py",
        """
        from toyquant import Toy


        def pytest_fourbit_quantizers(config):
            return Toy("nested-hook")
        """,
    )
    runner.write("pkg/sub/test_nested.py", LOCAL_TEST)
    result = runner.run("pkg", "--fourbit-no-entry-points", "--collect-only", "-q")
    output = _output(result)
    used = "nested-hook" in output
    named = "sub/conftest.py" in output and "pytest_fourbit_quantizers" in output
    reported = result.ret != pytest.ExitCode.OK and named
    assert used or reported, output


def test_suite_ids_name_the_implementation(runner: Runner) -> None:
    ids = runner.collected_ids(SUITES, "--impl", "ref-nf4")
    for expected in (
        "test_roundtrip.py::test_exact_zero[ref-nf4-bfloat16]",
        "test_roundtrip.py::test_exact_zero[ref-nf4-float32]",
        "test_codebook.py::test_codebook[ref-nf4]",
        "test_error_stats.py::test_error_statistics[ref-nf4-block64]",
    ):
        assert any(test_id.endswith(expected) for test_id in ids), expected
    assert all("ref-nf4" in test_id for test_id in ids), [i for i in ids if "ref-nf4" not in i]
    assert not any("ref-nf4-dq" in test_id for test_id in ids)  # an exact name is not a prefix match


def test_impl_selects_exact_names_and_globs(runner: Runner) -> None:
    assert _bracket_ids(runner.collected_ids("test_local.py", "--impl", "ref-*"), "test_roundtrip") == REF_NAMES
    ids = runner.collected_ids("test_local.py", "--impl", "fp32", "--impl", "ref-*4")
    assert _bracket_ids(ids, "test_roundtrip") == FP32_AND_REF_4
    assert _bracket_ids(runner.collected_ids("test_local.py"), "test_roundtrip") >= BUILTIN_NAMES  # no --impl: all


def test_unknown_impl_is_a_usage_error(runner: Runner) -> None:
    result = runner.run_subprocess("test_local.py", "--impl", "ref-nf4", "--impl", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, _output(result)
    stderr = result.stderr.str()
    assert "--impl 'nope' matches no implementation" in stderr
    assert "known:" in stderr and all(name in stderr for name in BUILTIN_NAMES)
    assert "Traceback" not in _output(result) and "INTERNALERROR" not in _output(result)
    assert "passed" not in result.stdout.str()


def test_malformed_quantizer_option_is_a_usage_error(runner: Runner) -> None:
    result = runner.run("test_local.py", "--quantizer", "nocolon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, _output(result)
    assert "--quantizer 'nocolon': expected MODULE:ATTR" in result.stderr.str()
    assert "Traceback" not in _output(result)


def test_missing_module_is_reported_and_the_rest_still_runs(runner: Runner) -> None:
    result = runner.run("test_local.py", "--quantizer", "missing_module_for_fourbit_tests:x", "--impl", "ref-nf4")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, _output(result)
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "plugins that failed to load" in out
    assert "--quantizer missing_module_for_fourbit_tests:x" in out
    assert "ModuleNotFoundError" in out and "missing_module_for_fourbit_tests" in out


def test_contract_violations_are_reported_and_the_rest_still_runs(runner: Runner) -> None:
    runner.write("badquant.py", BAD_MODULE)
    bad = ["no_name", "wrong_spec", "no_dequantize", "duplicates", "shadows_builtin", "raising_factory"]
    args = [arg for name in bad for arg in ("--quantizer", f"badquant:{name}")]
    result = runner.run(
        "test_local.py", *args, "--quantizer", "toyquant:instance", "--impl", "toy-*", "--impl", "ref-nf4"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED, _output(result)
    result.assert_outcomes(passed=3)  # toy-instance, the first toy-dup, ref-nf4
    out = result.stdout.str()
    assert "plugins that failed to load" in out
    for name in bad:
        assert f"--quantizer badquant:{name}" in out
    for message in (
        "name=None",
        "spec='nf4', expected a harness.FormatSpec",
        "dequantize is missing or not callable",
        "duplicate name 'toy-dup'",
        "duplicate name 'ref-nf4'",
        "RuntimeError: no GPU here",
    ):
        assert message in out, message


def test_capabilities_dtypes_skip_other_dtypes_with_the_reason(runner: Runner) -> None:
    result = runner.run(
        SUITES, "-k", "exact_zero", "--quantizer", "toyquant:f32_only", "--impl", "toy-f32", "-rs", "-v"
    )
    assert result.ret == pytest.ExitCode.OK, _output(result)
    result.assert_outcomes(passed=1, skipped=2)
    out = result.stdout.str()
    assert re.search(r"test_exact_zero\[toy-f32-float32\] PASSED", out)
    for dtype in ("float16", "bfloat16"):
        assert re.search(rf"test_exact_zero\[toy-f32-{dtype}\] SKIPPED", out), dtype
        assert f"toy-f32: dtype torch.{dtype} not in capabilities.dtypes" in out


@pytest.mark.parametrize("target", ["multiple_of_128", "two_d_only"])
def test_dtype_skip_ignores_shape_limits(runner: Runner, target: str) -> None:
    runner.write("test_local_dtype.py", LOCAL_DTYPE_TEST)
    result = runner.run("test_local_dtype.py", "--quantizer", f"toyquant:{target}", "--impl", "toy-*", "-rs")
    result.assert_outcomes(passed=3)


def test_user_parametrized_quantizer_argument_is_left_alone(runner: Runner) -> None:
    runner.write(
        "test_user_param.py",
        """
        import pytest


        @pytest.mark.parametrize("quantizer", ["ref-nf4", "ref-fp4"])
        def test_by_name(quantizer):
            assert quantizer.startswith("ref-")
        """,
    )
    result = runner.run("test_user_param.py")
    assert result.ret == pytest.ExitCode.OK, _output(result)
    result.assert_outcomes(passed=2)


def test_thorough_hypothesis_profile_is_usable(runner: Runner) -> None:
    """The profile the harness documents for long runs must exist when hypothesis's plugin loads it
    (a subprocess: in-process, the outer run has registered the profiles already). ``-p fourbit`` loads the
    harness's plugin first, so its pytest_configure runs after hypothesis's whatever order the venv lists them in."""
    result = runner.run_subprocess(
        "test_local.py", "-p", "fourbit", "--impl", "ref-nf4", "--hypothesis-profile", "fourbit-thorough"
    )
    assert result.ret == pytest.ExitCode.OK, _output(result)


# ------------------------------------------------------------------------------------------ example plugin


def test_example_pyproject_declares_the_entry_point() -> None:
    pyproject = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert project["name"] == "fourbit-example-plugin"
    assert project["entry-points"][ENTRY_POINT_GROUP] == {"example": "fourbit_example:quantizers"}
    dependencies = project["dependencies"]
    assert any(re.fullmatch(r"fourbit[-_]harness\b.*", dep) for dep in dependencies)
    torch_pins = [dep for dep in dependencies if re.match(r"torch\b", dep) and re.search(r"[=<>~!]", dep)]
    assert torch_pins == [], "the example must not pin torch"
    module = project["entry-points"][ENTRY_POINT_GROUP]["example"].split(":")[0]
    assert (EXAMPLE_SRC / module / "__init__.py").is_file()
    assert (EXAMPLE / "README.md").is_file()


def test_example_loads_through_quantizer_spec(example_on_path: None) -> None:
    registry = load_registry(["fourbit_example:quantizers"], use_entry_points=False)
    assert registry.errors == []
    impl = registry.implementations[EXAMPLE_NAME]
    assert impl.source == "--quantizer fourbit_example:quantizers"
    quantizer = impl.quantizer
    assert quantizer.spec.format == "nf4" and quantizer.spec.block_size == 64
    assert quantizer.spec.packing == "high-nibble-first"
    x = torch.randn(3, 70)
    q = quantizer.quantize(x)
    assert set(q.storage) == {"packed", "absmax"}
    assert quantizer.dequantize(q).shape == x.shape


def test_example_is_discovered_through_its_entry_point(runner: Runner) -> None:
    runner.fake_installed_example()
    registry = load_registry()
    assert registry.implementations[EXAMPLE_NAME].source.startswith("entry point example")
    assert set(registry.implementations) >= BUILTIN_NAMES
    assert not [e for e in registry.errors if "example" in e.source]
    assert EXAMPLE_NAME not in load_registry(use_entry_points=False).implementations

    assert EXAMPLE_NAME in _bracket_ids(runner.collected_ids("test_local.py"), "test_roundtrip")
    ids = runner.collected_ids("test_local.py", "--fourbit-no-entry-points")
    assert EXAMPLE_NAME not in _bracket_ids(ids, "test_roundtrip")
    assert _bracket_ids(ids, "test_roundtrip") >= BUILTIN_NAMES  # built-ins still load


def test_example_passes_the_property_suites(runner: Runner) -> None:
    runner.add_path(EXAMPLE_SRC)
    result = runner.run_subprocess(
        SUITES, "--quantizer", "fourbit_example:quantizers", "--impl", "example-*", "--fourbit-no-entry-points"
    )
    assert result.ret == pytest.ExitCode.OK, _output(result)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, outcomes
    assert outcomes.get("passed", 0) >= 40, outcomes  # the suites ran, not just skipped
    assert "FAIL" not in result.stdout.str()  # the verdict matrix
    assert "failed to load" not in result.stdout.str()
