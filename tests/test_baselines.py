"""Baseline files (round trip, stable formatting, schema versions, clear errors) and the compare rules per kind.

The statistics behind the rules are tested in tests/test_stats.py; here the question is whether
baselines.py feeds them the right numbers and turns their answers into the right verdicts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import pytest

from harness.errors import BaselineFormatError
from harness.results import baselines
from harness.results.baselines import (
    MAX_FOLDED_RUNS,
    SCHEMA_VERSION,
    Baseline,
    BaselineEntry,
    baseline_path,
    entry_from_result,
    load_baseline,
    save_baseline,
    update_baseline,
)
from harness.results.compare import DEFAULT_EXACT_REL_TOL, apply_verdict, compare_result, compare_runs, missing_entries
from harness.results.environment import timing_machine
from harness.results.records import Result

ENVIRONMENT = {"python": "3.11.9", "cpu": {"machine": "x86_64", "flags": ["avx2"]}}


def _result(metric: str = "mse", value: float = 1.0, **fields: Any) -> Result:
    defaults: dict[str, Any] = {"suite": "properties", "case": "gauss-block64", "implementation": "ref-nf4"}
    defaults.update(fields)
    return Result(metric=metric, value=value, **defaults)


def _entry(metric: str = "mse", value: float = 1.0, **fields: Any) -> BaselineEntry:
    defaults: dict[str, Any] = {
        "suite": "properties",
        "case": "gauss-block64",
        "implementation": "ref-nf4",
        "kind": "exact",
        "direction": "lower",
    }
    defaults.update(fields)
    return BaselineEntry(metric=metric, value=value, **defaults)


def _baseline(*entries: BaselineEntry) -> Baseline:
    return Baseline("cpu-x86_64", dict(ENVIRONMENT), {e.key: e for e in entries})


def _comparable(entry: BaselineEntry) -> tuple[Any, ...]:
    """The entry's fields with NaN spelled out, so two entries holding NaN compare equal."""

    def spelled(value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(spelled(v) for v in value)
        return "nan" if isinstance(value, float) and math.isnan(value) else value

    return spelled(dataclasses.astuple(entry))


def _every_kind() -> list[BaselineEntry]:
    """Entries of each kind, inserted out of key order, with every optional field used and non-finite values."""
    return [
        _entry("sqnr_db", 20.25, unit="dB", direction="higher", tolerance=1e-4),
        _entry("dequantize_ratio", 1.25, suite="kernels", kind="timing", runs=(1.0, 1.5, 1.25), tolerance=0.2),
        _entry(
            "coqa_f1",
            0.5,
            suite="accuracy",
            kind="sampled",
            direction="higher",
            samples=(0.0, 0.5, 1.0),
            data_hash="h1",
        ),
        _entry("max_error", math.nan),
        _entry("sqnr_db", math.inf, implementation="fp32", unit="dB", direction="higher"),
        _entry("log_ratio", -math.inf, implementation="fp32"),
    ]


# ------------------------------------------------------------------------------------------------ files


def test_save_then_load_gives_the_same_baseline(tmp_path: Path) -> None:
    original = _baseline(*_every_kind())
    path = save_baseline(baseline_path(tmp_path, "cpu-x86_64"), original)
    assert path == tmp_path / "cpu-x86_64.json"
    loaded = load_baseline(path)
    assert loaded.environment_key == original.environment_key
    assert loaded.environment == original.environment
    assert sorted(loaded.entries) == sorted(original.entries)
    for key, entry in original.entries.items():
        assert _comparable(loaded.entries[key]) == _comparable(entry), key
    assert math.isnan(loaded.entries["properties::gauss-block64::ref-nf4::max_error"].value)
    assert loaded.entries["properties::gauss-block64::fp32::sqnr_db"].value == math.inf
    assert loaded.entries["properties::gauss-block64::fp32::log_ratio"].value == -math.inf


def test_the_file_is_plain_json_with_sorted_keys(tmp_path: Path) -> None:
    path = save_baseline(tmp_path / "b.json", _baseline(*_every_kind()))
    text = path.read_text(encoding="utf-8")
    document = json.loads(text)  # strict JSON: a NaN or Infinity literal would not parse in other tools
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert text == json.dumps(document, indent=2, sort_keys=True) + "\n"
    assert document["schema_version"] == SCHEMA_VERSION
    assert list(document["metrics"]) == sorted(e.key for e in _every_kind())


def test_saving_twice_gives_identical_bytes(tmp_path: Path) -> None:
    entries = _every_kind()
    first = save_baseline(tmp_path / "first.json", _baseline(*entries)).read_bytes()
    second = save_baseline(tmp_path / "second.json", _baseline(*reversed(entries))).read_bytes()
    assert first == second  # insertion order does not leak into the file
    again = save_baseline(tmp_path / "again.json", load_baseline(tmp_path / "first.json")).read_bytes()
    assert again == first  # load + save is the identity: an unchanged baseline gives an empty review diff


def test_non_finite_samples_survive(tmp_path: Path) -> None:
    entry = _entry("kld", 1.0, kind="sampled", samples=(0.5, math.inf, math.nan), data_hash="h")
    path = save_baseline(tmp_path / "b.json", _baseline(entry))
    assert _comparable(load_baseline(path).entries[entry.key]) == _comparable(entry)


def _write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _document(metrics: dict[str, Any], version: int = SCHEMA_VERSION) -> dict[str, Any]:
    return {"schema_version": version, "environment_key": "cpu-x86_64", "environment": {}, "metrics": metrics}


def test_a_newer_schema_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "newer.json", _document({}, version=SCHEMA_VERSION + 1))
    with pytest.raises(BaselineFormatError, match="newer") as excinfo:
        load_baseline(path)
    assert str(path) in str(excinfo.value)
    assert f"schema_version={SCHEMA_VERSION + 1}" in str(excinfo.value)


def test_an_older_schema_without_migration_is_too_old(tmp_path: Path) -> None:
    path = _write(tmp_path / "older.json", _document({}, version=SCHEMA_VERSION - 1))
    with pytest.raises(BaselineFormatError, match="too old") as excinfo:
        load_baseline(path)
    assert str(path) in str(excinfo.value)


@pytest.mark.parametrize("version", [None, "1", 1.0, True])
def test_a_schema_version_that_is_not_an_integer_is_refused(tmp_path: Path, version: object) -> None:
    path = _write(tmp_path / "b.json", _document({}) | {"schema_version": version})
    with pytest.raises(BaselineFormatError, match=re.escape(f"schema_version={version!r}, expected an integer")):
        load_baseline(path)


def test_a_registered_migration_is_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the layout moved to version 2, where version 1 called the stored number "score"."""
    entry = _entry("mse", 0.25)
    old_layout = {key: value for key, value in entry.as_json().items() if key != "value"} | {"score": entry.value}
    path = _write(tmp_path / "v1.json", _document({entry.key: old_layout}, version=1))
    with pytest.raises(BaselineFormatError, match="lacks the field 'value'"):
        load_baseline(path)  # version 1 is current here: the old layout is invalid, so the migration does the work

    def rename_score(document: dict[str, Any]) -> dict[str, Any]:
        metrics = {
            key: {("value" if name == "score" else name): v for name, v in raw.items()}
            for key, raw in document["metrics"].items()
        }
        return document | {"metrics": metrics}

    monkeypatch.setattr(baselines, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(baselines.MIGRATIONS, 1, rename_score)
    loaded = load_baseline(path)
    assert loaded.entries == {entry.key: entry}
    save_baseline(tmp_path / "v2.json", loaded)
    assert json.loads((tmp_path / "v2.json").read_text())["schema_version"] == 2


def test_corrupt_json_names_the_file_line_and_column(tmp_path: Path) -> None:
    text = '{\n  "schema_version": 1,\n  "metrics": {"a": 1,}\n}\n'
    path = tmp_path / "corrupt.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as decode:
        json.loads(text)
    with pytest.raises(BaselineFormatError) as excinfo:
        load_baseline(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert f"line {decode.value.lineno}, column {decode.value.colno}" in message


def test_missing_file_and_wrong_top_level(tmp_path: Path) -> None:
    with pytest.raises(BaselineFormatError, match="no such file"):
        load_baseline(tmp_path / "absent.json")
    with pytest.raises(BaselineFormatError, match="top level is list"):
        load_baseline(_write(tmp_path / "list.json", [1, 2]))
    with pytest.raises(BaselineFormatError, match="has no 'metrics' object"):
        load_baseline(_write(tmp_path / "nometrics.json", {"schema_version": SCHEMA_VERSION}))


VALID = _entry("mse", 0.5, tolerance=0.1)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"value": None}, "value"),
        ({"suite": None}, "suite"),
        ({"kind": None}, "kind"),
        ({"direction": None}, "direction"),
        ({"kind": "median"}, "kind"),
        ({"direction": "up"}, "direction"),
    ],
    ids=["no-value", "no-suite", "no-kind", "no-direction", "bad-kind", "bad-direction"],
)
def test_a_malformed_entry_names_its_key_and_field(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    raw = {k: v for k, v in (VALID.as_json() | change).items() if v is not None}
    path = _write(tmp_path / "b.json", _document({VALID.key: raw}))
    with pytest.raises(BaselineFormatError) as excinfo:
        load_baseline(path)
    message = str(excinfo.value)
    assert str(path) in message and repr(VALID.key) in message
    assert _names_field(message, field), message


def _names_field(message: str, field: str) -> bool:
    """The message points at the field: ``'value'``, ``.value`` or ``value=`` (not just the word in a sentence)."""
    return re.search(rf"(['.]{field}\b|\b{field}=)", message) is not None


@pytest.mark.parametrize(
    "change",
    [{"value": "fast"}, {"runs": ["fast"]}, {"samples": 3}, {"tolerance": "tight"}, {"runs": "12"}],
    ids=["value-string", "runs-item", "samples-number", "tolerance-string", "runs-string"],
)
def test_a_wrongly_typed_field_is_named(tmp_path: Path, change: dict[str, Any]) -> None:
    (field,) = change
    path = _write(tmp_path / "b.json", _document({VALID.key: VALID.as_json() | change}))
    with pytest.raises(BaselineFormatError) as excinfo:
        load_baseline(path)
    message = str(excinfo.value)
    assert repr(VALID.key) in message and _names_field(message, field), message


def test_an_entry_filed_under_another_key_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "b.json", _document({"properties::other::ref-nf4::mse": VALID.as_json()}))
    with pytest.raises(BaselineFormatError, match=re.escape(f"describes {VALID.key!r}")):
        load_baseline(path)
    path = _write(tmp_path / "c.json", _document({VALID.key: [1, 2]}))
    with pytest.raises(
        BaselineFormatError, match=re.escape(f"metrics[{VALID.key!r}] is malformed (expected an object, got a list)")
    ):
        load_baseline(path)


# ----------------------------------------------------------------------------------------------- update


def test_update_replaces_exact_and_keeps_other_suites() -> None:
    other_suite = _entry("dequantize_ratio", 2.0, suite="kernels", kind="timing", runs=(2.0,))
    baseline = _baseline(_entry("mse", 1.0), other_suite)
    written = update_baseline(baseline, [_result("mse", 0.75, tolerance=1e-3, unit="u")], {"new": "environment"})
    assert written == 1
    assert baseline.entries[_entry("mse").key] == _entry("mse", 0.75, tolerance=1e-3, unit="u")
    assert baseline.entries[other_suite.key] == other_suite
    assert baseline.environment == {"new": "environment"}


def test_update_timing_keeps_the_last_runs_and_their_median() -> None:
    baseline = _baseline(_entry("dequantize_ratio", 9.0, suite="kernels"))  # an exact entry under the same key
    run_ratios = [1.3, 1.1, 1.7, 1.2, 1.05, 1.4, 1.15, 1.25, 1.12, 1.33, 1.08, 1.6]
    for count, ratio in enumerate(run_ratios, start=1):
        samples = (ratio * 0.99, ratio, ratio * 1.01)
        update_baseline(
            baseline, [_result("dequantize_ratio", ratio, suite="kernels", kind="timing", samples=samples)], {}
        )
        entry = baseline.entries[_entry("dequantize_ratio", suite="kernels").key]
        kept = run_ratios[max(0, count - MAX_FOLDED_RUNS) : count]
        assert entry.runs == tuple(kept)  # the exact entry's 9.0 never enters the runs
        assert entry.value == pytest.approx(statistics.median(kept), rel=1e-12)
        assert entry.kind == "timing" and entry.samples == ()  # per-round samples are not stored
    assert len(entry.runs) == MAX_FOLDED_RUNS < len(run_ratios)


def test_update_sampled_stores_items_and_data_hash() -> None:
    baseline = _baseline()
    items = (1.0, 0.0, 0.5, 0.25)
    result = _result(
        "coqa_f1", statistics.fmean(items), kind="sampled", direction="higher", samples=items, data_hash="abc"
    )
    update_baseline(baseline, [result], {})
    entry = baseline.entries[_entry("coqa_f1").key]
    assert (entry.samples, entry.data_hash, entry.kind, entry.direction) == (items, "abc", "sampled", "higher")
    assert entry.value == result.value and entry.runs == ()


def test_exact_entries_do_not_store_samples() -> None:
    baseline = _baseline()
    update_baseline(baseline, [_result("mse", 1.0, samples=(1.0, 2.0))], {})
    assert baseline.entries[_entry("mse").key].samples == ()


# ---------------------------------------------------------------------------------------------- compare


@pytest.mark.parametrize(
    ("direction", "current", "verdict"),
    [
        ("lower", 1.1, "regressed"),
        ("lower", 0.9, "improved"),
        ("higher", 0.9, "regressed"),
        ("higher", 1.1, "improved"),
        ("lower", 1.0 + DEFAULT_EXACT_REL_TOL / 2, "ok"),
        ("higher", 1.0 - DEFAULT_EXACT_REL_TOL / 2, "ok"),
        ("lower", 1.0 + DEFAULT_EXACT_REL_TOL * 10, "regressed"),
    ],
)
def test_exact_verdicts(direction: str, current: float, verdict: str) -> None:
    compared = compare_result(_result("m", current, direction=direction), _entry("m", 1.0, direction=direction))
    assert compared.verdict == verdict
    assert compared.baseline == 1.0 and compared.value == current
    assert repr(current) in compared.statistic  # the statistic carries the numbers compared


def test_exact_tolerance_comes_from_the_result_then_the_entry() -> None:
    assert compare_result(_result("m", 1.1), _entry("m", 1.0, tolerance=0.2)).verdict == "ok"
    assert compare_result(_result("m", 1.1, tolerance=0.05), _entry("m", 1.0, tolerance=0.2)).verdict == "regressed"
    assert compare_result(_result("m", 1.1, tolerance=0.2), _entry("m", 1.0)).verdict == "ok"


def test_no_entry_and_no_baseline_are_new() -> None:
    compared = compare_result(_result(), None)
    assert (compared.verdict, compared.baseline) == ("new", None) and compared.statistic
    assert apply_verdict(_result(), None).verdict == "new"
    assert apply_verdict(_result("mse", 2.0), _baseline(_entry("mse", 1.0))).verdict == "regressed"
    assert apply_verdict(_result("other"), _baseline(_entry("mse", 1.0))).verdict == "new"


@pytest.mark.parametrize(
    "entry",
    [_entry("m", 1.0, kind="timing", runs=(1.0,)), _entry("m", 1.0, direction="higher")],
    ids=["kind", "direction"],
)
def test_a_kind_or_direction_mismatch_is_new_not_compared(entry: BaselineEntry) -> None:
    compared = compare_result(_result("m", 100.0), entry)
    assert compared.verdict == "new"
    assert compared.baseline == 1.0
    assert "not compared" in compared.statistic and f"{entry.kind}/{entry.direction}" in compared.statistic


# A timing baseline folded from five runs, and rounds of one run around a ratio (a fixed, mild spread).
TIMING_RUNS = (1.0, 1.03, 0.98, 1.01, 0.99)
ROUND_SPREAD = (0.97, 0.99, 1.0, 1.01, 1.03, 0.98, 1.02, 1.0, 0.995, 1.005)


def _timing(scale: float, **fields: Any) -> Result:
    samples = tuple(scale * statistics.median(TIMING_RUNS) * s for s in ROUND_SPREAD)
    return _result("dequantize_ratio", statistics.median(samples), kind="timing", samples=samples, **fields)


TIMING_ENTRY = _entry("dequantize_ratio", statistics.median(TIMING_RUNS), kind="timing", runs=TIMING_RUNS)


@pytest.mark.parametrize(("scale", "verdict"), [(1.0, "ok"), (1.5, "regressed"), (1 / 1.5, "improved")])
def test_timing_compares_the_rounds_with_the_baseline_runs(scale: float, verdict: str) -> None:
    compared = compare_result(_timing(scale), TIMING_ENTRY)
    assert compared.verdict == verdict, compared.statistic
    assert compared.baseline == TIMING_ENTRY.value
    assert f"over {len(ROUND_SPREAD)} rounds" in compared.statistic
    assert f"({len(TIMING_RUNS)} baseline runs)" in compared.statistic


def test_timing_higher_is_better_flips_the_verdict() -> None:
    entry = dataclasses.replace(TIMING_ENTRY, direction="higher")
    assert compare_result(_timing(1.5, direction="higher"), entry).verdict == "improved"
    assert compare_result(_timing(1 / 1.5, direction="higher"), entry).verdict == "regressed"


def test_timing_min_effect_is_the_result_tolerance() -> None:
    assert compare_result(_timing(1.5, tolerance=0.6), TIMING_ENTRY).verdict == "ok"


def test_timing_without_samples_is_new_with_the_reason() -> None:
    result = dataclasses.replace(_timing(1.5), samples=())
    compared = compare_result(result, TIMING_ENTRY)
    assert compared.verdict == "new"
    assert compared.baseline == TIMING_ENTRY.value
    assert "samples" in compared.statistic


ITEMS = tuple(float(i % 3 == 0) * 0.5 + float(i % 2) * 0.5 for i in range(200))  # scores in {0, 0.5, 1}


def _sampled(items: tuple[float, ...], data_hash: str | None = "coqa-v1", **fields: Any) -> Result:
    return _result(
        "coqa_f1", statistics.fmean(items), kind="sampled", direction="higher", samples=items, data_hash=data_hash,
        **fields,
    )  # fmt: skip


SAMPLED_ENTRY = _entry(
    "coqa_f1", statistics.fmean(ITEMS), kind="sampled", direction="higher", samples=ITEMS, data_hash="coqa-v1"
)


def test_sampled_same_items_is_ok_and_a_clear_drop_regresses() -> None:
    assert compare_result(_sampled(ITEMS), SAMPLED_ENTRY).verdict == "ok"
    dropped = tuple(0.0 if i % 4 == 0 else s for i, s in enumerate(ITEMS))  # a quarter of the items lose all credit
    compared = compare_result(_sampled(dropped, tolerance=0.01), SAMPLED_ENTRY)
    assert compared.verdict == "regressed", compared.statistic
    assert compared.baseline == SAMPLED_ENTRY.value
    assert f"over {len(ITEMS)} paired items" in compared.statistic
    raised = tuple(1.0 if i % 4 == 0 else s for i, s in enumerate(ITEMS))
    assert compare_result(_sampled(raised, tolerance=0.01), SAMPLED_ENTRY).verdict == "improved"


def test_sampled_drop_within_tolerance_is_ok() -> None:
    dropped = tuple(0.0 if i % 4 == 0 else s for i, s in enumerate(ITEMS))
    drop = statistics.fmean(ITEMS) - statistics.fmean(dropped)
    assert compare_result(_sampled(dropped, tolerance=2 * drop), SAMPLED_ENTRY).verdict == "ok"


@pytest.mark.parametrize(
    "result",
    [_sampled(ITEMS, data_hash="coqa-v2"), _sampled(ITEMS[:-1]), _sampled(ITEMS, data_hash=None)],
    ids=["other-hash", "fewer-items", "no-hash"],
)
def test_sampled_on_other_items_is_new(result: Result) -> None:
    compared = compare_result(result, SAMPLED_ENTRY)
    assert compared.verdict == "new"
    assert "items differ" in compared.statistic


# ---------------------------------------------------------------------------------------------- missing


def test_missing_entries_are_scoped_to_the_suites_and_implementations_run() -> None:
    produced = _entry("mse")
    not_produced = _entry("mae", 0.25, unit="u", direction="lower")
    other_implementation = _entry("mae", implementation="ref-fp4")
    other_suite = _entry("mae", suite="agreement")
    baseline = _baseline(produced, not_produced, other_implementation, other_suite)
    missing = missing_entries(baseline, [_result("mse")], {("properties", "ref-nf4")})
    assert [m.key for m in missing] == [("properties", "gauss-block64", "ref-nf4", "mae")]
    (only,) = missing
    assert (only.verdict, only.baseline, only.unit, only.kind) == ("missing", 0.25, "u", "exact")
    assert math.isnan(only.value)
    wider = missing_entries(baseline, [_result("mse")], {("properties", "ref-nf4"), ("agreement", "ref-nf4")})
    assert sorted(m.suite for m in wider) == ["agreement", "properties"]


# ---------------------------------------------------------------------------------------------- compare runs


def test_compare_runs_judges_new_against_old() -> None:
    old = [
        _result("mse", 1.0),
        _result("mae", 2.0),
        _result("max_error", 3.0),
        _result("sqnr_db", 20.0, direction="higher"),
        _result("ghost", math.nan, verdict="missing"),  # a missing marker in the old file is not a metric
    ]
    new = [
        _result("mse", 1.0),
        _result("mae", 2.5),
        _result("sqnr_db", 21.0, direction="higher"),
        _result("fresh", 5.0),
        _result("ghost", math.nan, verdict="missing"),
    ]
    compared = compare_runs(old, new)
    verdicts = {r.metric: r.verdict for r in compared}
    assert verdicts == {
        "mse": "ok",
        "mae": "regressed",
        "sqnr_db": "improved",
        "fresh": "new",
        "max_error": "missing",
    }
    assert len(compared) == len(verdicts)
    by_metric = {r.metric: r for r in compared}
    assert (by_metric["mae"].baseline, by_metric["mae"].value) == (2.0, 2.5)
    assert by_metric["max_error"].baseline == 3.0


def test_compare_runs_timing_uses_the_old_run_as_a_one_run_baseline() -> None:
    old = _timing(1.0)
    entry = entry_from_result(old)
    assert (entry.runs, entry.value, entry.samples) == ((old.value,), old.value, ())
    (compared,) = compare_runs([old], [_timing(2.0)])
    assert compared.verdict == "regressed", compared.statistic
    (same,) = compare_runs([old], [_timing(1.0)])
    assert same.verdict == "ok", same.statistic


def test_timing_baselines_from_other_hardware_are_not_compared() -> None:
    epyc = {"cpu": {"model": "AMD EPYC", "count": 2, "machine": "x86_64"}, "cuda": None}
    baseline = dataclasses.replace(_baseline(TIMING_ENTRY, _entry("mse", 1.0)), environment=epyc)
    here = timing_machine(epyc)
    assert here == "AMD EPYC, 2 cores"
    assert apply_verdict(_timing(1.5), baseline, here).verdict == "regressed"  # same machine: compared
    laptop = timing_machine({"cpu": {"model": "Intel Core i7", "count": 8}})
    compared = apply_verdict(_timing(1.5), baseline, laptop)
    assert compared.verdict == "new" and compared.baseline == TIMING_ENTRY.value
    assert "baseline timed on AMD EPYC, 2 cores, this run on Intel Core i7, 8 cores: not compared" in compared.statistic
    assert apply_verdict(_result("mse", 2.0), baseline, laptop).verdict == "regressed"  # exact: compared anywhere
    assert timing_machine({"cuda": {"device": "NVIDIA H100"}, "cpu": epyc["cpu"]}) == "NVIDIA H100 (CUDA)"


def test_the_same_cpu_model_without_its_simd_flags_is_other_hardware() -> None:
    """Virtual machines report "AMD EPYC" for parts with and without AVX-512; a library picks other kernels on
    each, so a timing baseline of one is not compared on the other (exact metrics still are)."""
    with_avx512 = {"cpu": {"model": "AMD EPYC", "count": 2, "flags": ["avx2", "avx512f", "avx512_bf16"]}}
    avx2_only = {"cpu": {"model": "AMD EPYC", "count": 2, "flags": ["avx2", "fma"]}}
    assert timing_machine(with_avx512) == "AMD EPYC, 2 cores, avx2 avx512_bf16 avx512f"
    assert timing_machine(avx2_only) != timing_machine(with_avx512)
    baseline = dataclasses.replace(_baseline(TIMING_ENTRY, _entry("mse", 1.0)), environment=with_avx512)
    compared = apply_verdict(_timing(2.0), baseline, timing_machine(avx2_only))
    assert compared.verdict == "new" and "not compared" in compared.statistic
    assert apply_verdict(_timing(2.0), baseline, timing_machine(with_avx512)).verdict == "regressed"
    assert apply_verdict(_result("mse", 2.0), baseline, timing_machine(avx2_only)).verdict == "regressed"


@pytest.mark.parametrize(
    ("scale", "share", "verdict"),
    [(1.5, 0.6, "inconclusive"), (1.5, 0.95, "regressed"), (1.5, None, "regressed"), (1 / 1.5, 0.6, "improved"),
     (1.0, 0.6, "ok")],
)  # fmt: skip
def test_a_timing_regression_under_cpu_contention_is_inconclusive(
    scale: float, share: float | None, verdict: str
) -> None:
    compared = compare_result(_timing(scale, extra={"cpu_share": share}), TIMING_ENTRY)
    assert compared.verdict == verdict, compared.statistic
    if verdict == "inconclusive":
        assert "the rounds got 60% of their CPU" in compared.statistic and compared.extra["contended"] is True
        assert "+50.0%" in compared.statistic  # the measured change is still shown


def test_a_timing_regression_against_one_reference_only_is_inconclusive() -> None:
    why = "the same rounds against the other reference did not regress: over_dense ok (+1.0%)"
    compared = compare_result(_timing(1.5, extra={"uncorroborated": why}), TIMING_ENTRY)
    assert compared.verdict == "inconclusive"
    assert compared.statistic.endswith(f"but {why}: a reference moved, not (only) the kernel: inconclusive")
    assert compare_result(_timing(1 / 1.5, extra={"uncorroborated": why}), TIMING_ENTRY).verdict == "improved"
