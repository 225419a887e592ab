"""The end-of-run summary, regressions, comparisons, pair matrices and the Markdown step summary, rendered into a
StringIO console (or a string) and compared as whole text."""

from __future__ import annotations

import io
import math

from rich.console import Console, RenderableType

from harness.report import RunSummary, render_markdown, render_pair_matrix
from harness.report.model import Outcome, verdict_matrix
from harness.report.terminal import (
    describe_run,
    regression_message,
    render_comparison,
    render_failures,
    render_metrics,
    render_outcome_changes,
    render_outcome_counts,
    render_regressions,
    render_run,
)
from harness.results.compare import compare_outcomes
from harness.results.records import Result, SuiteSummary, TestOutcome

OUTCOMES = [
    Outcome("ref-nf4", "exact_zero", "passed", "properties"),
    Outcome("ref-nf4", "exact_zero", "failed", "properties"),  # one failing dtype makes the verdict FAIL
    Outcome("zoo-x", "exact_zero", "passed", "properties"),
    Outcome("ref-nf4", "packing", "skipped", "properties"),
    Outcome("zoo-x", "packing", "passed", "properties"),
]
RESULTS = [
    Result("properties", "gauss-block64", "ref-nf4", "mae", 0.07281234),
    Result("properties", "gauss-block64", "ref-nf4", "sqnr_db", 20.7345, unit="dB", direction="higher"),
]

# A compared run over three suites: one metric of each verdict; kernels has metrics but no verdicts.
MIXED_OUTCOMES = [
    Outcome("ref-nf4", "exact_zero", "passed", "properties"),
    Outcome("bnb-fp4", "exact_zero", "xfailed", "properties"),
    Outcome("ref-nf4~bnb-nf4", "agreement", "passed", "agreement"),
]
OK = Result(
    "properties", "gauss-block64", "ref-nf4", "mse", 0.0125, baseline=0.0125, verdict="ok", statistic="within tolerance"
)
IMPROVED = Result(
    "properties", "gauss-block64", "bnb-fp4", "mse", 0.02, baseline=0.025, verdict="improved", statistic="better"
)
REGRESSED = Result(
    "agreement",
    "gauss-4096",
    "ref-nf4~bnb-nf4",
    "code_agreement",
    0.9875,
    direction="higher",
    baseline=0.99984,
    verdict="regressed",
    statistic="-1.2%: worse (higher is better)",
)
NEW = Result(
    "agreement",
    "gauss-4096",
    "ref-nf4~bnb-nf4",
    "level_agreement",
    0.999,
    direction="higher",
    verdict="new",
    statistic="no baseline for this metric",
)
MISSING = Result(
    "kernels",
    "4096x4096",
    "bnb-nf4",
    "dequantize_ratio",
    math.nan,
    kind="timing",
    baseline=1.25,
    verdict="missing",
    statistic="in the baseline, not produced by this run",
)
MIXED = [OK, IMPROVED, REGRESSED, NEW, MISSING]
# What suites/agreement/test_agreement.py declares (tests/test_agreement.py checks that it does).
AGREEMENT = SuiteSummary(
    headline=("level_agreement", "code_agreement", "disagreements_off_midpoint", "max_abs_diff", "mean_abs_diff"),
    pair_matrix=("level_agreement", "code_agreement"),
)


EXPECTED = """\
                          fourbit: plugins that failed to load                           
┏━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ source              ┃ error                                                           ┃
┡━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ --quantizer bad:mod │ import 'bad' failed: ModuleNotFoundError: No module named 'bad' │
└─────────────────────┴─────────────────────────────────────────────────────────────────┘
  fourbit properties: verdicts  
┏━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━┓
┃ property   ┃ ref-nf4 ┃ zoo-x ┃
┡━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━┩
│ exact zero │  FAIL   │ pass  │
│ packing    │  skip   │ pass  │
└────────────┴─────────┴───────┘
                fourbit properties: metrics                
┏━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━━━━┓
┃ implementation ┃ case          ┃     mae ┃ sqnr_db (dB) ┃
┡━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━━━┩
│ ref-nf4        │ gauss-block64 │ 0.07281 │        20.73 │
└────────────────┴───────────────┴─────────┴──────────────┘
"""

EXPECTED_MIXED = """\
                                        fourbit: REGRESSIONS                                        
┏━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━━━━━┓
┃ suite     ┃ implementation  ┃ case       ┃ metric         ┃ baseline ┃ now    ┃ statistic        ┃
┡━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━━━━━┩
│ agreement │ ref-nf4~bnb-nf4 │ gauss-4096 │ code_agreement │ 0.9998   │ 0.9875 │ -1.2%: worse     │
│           │                 │            │                │          │        │ (higher is       │
│           │                 │            │                │          │        │ better)          │
└───────────┴─────────────────┴────────────┴────────────────┴──────────┴────────┴──────────────────┘
   fourbit properties: verdicts   
┏━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━┓
┃ property   ┃ ref-nf4 ┃ bnb-fp4 ┃
┡━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━┩
│ exact zero │  pass   │  known  │
└────────────┴─────────┴─────────┘
             fourbit properties: metrics             
┏━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━┓
┃ implementation ┃ case          ┃              mse ┃
┡━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━┩
│ ref-nf4        │ gauss-block64 │           0.0125 │
│ bnb-fp4        │ gauss-block64 │ 0.02 (was 0.025) │
└────────────────┴───────────────┴──────────────────┘
  fourbit agreement: verdicts  
┏━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┓
┃ property  ┃ ref-nf4~bnb-nf4 ┃
┡━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━┩
│ agreement │      pass       │
└───────────┴─────────────────┘
           fourbit: ref-nf4 agreement            
┏━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
┃              ┃        ref-nf4 ┃       bnb-nf4 ┃
┡━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
│ ref-nf4      │              - │     99.89999% │
│              │                │     98.75000% │
│ bnb-nf4      │      99.89999% │             - │
│              │      98.75000% │               │
└──────────────┴────────────────┴───────────────┘
  cell: level / code agreement, case gauss-4096  
                       fourbit agreement: metrics                       
┏━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┓
┃ implementation  ┃ case       ┃      code_agreement ┃ level_agreement ┃
┡━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━┩
│ ref-nf4~bnb-nf4 │ gauss-4096 │ 0.9875 (was 0.9998) │           0.999 │
└─────────────────┴────────────┴─────────────────────┴─────────────────┘
            fourbit kernels: metrics             
┏━━━━━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━┓
┃ implementation ┃ case      ┃ dequantize_ratio ┃
┡━━━━━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━┩
│ bnb-nf4        │ 4096x4096 │          missing │
└────────────────┴───────────┴──────────────────┘
baseline: 1 ok, 1 improved, 1 regressed, 1 new, 1 missing
"""

EXPECTED_REGRESSIONS = """\
                                        fourbit: REGRESSIONS                                        
┏━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━━━━━┓
┃ suite     ┃ implementation  ┃ case       ┃ metric         ┃ baseline ┃ now    ┃ statistic        ┃
┡━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━━━━━┩
│ agreement │ ref-nf4~bnb-nf4 │ gauss-4096 │ code_agreement │ 0.9998   │ 0.9875 │ -1.2%: worse     │
│           │                 │            │                │          │        │ (higher is       │
│           │                 │            │                │          │        │ better)          │
└───────────┴─────────────────┴────────────┴────────────────┴──────────┴────────┴──────────────────┘
"""

EXPECTED_COMPARISON = """\
                              fourbit compare: old.json -> new.json                              
┏━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━┳━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━━┓
┃ suite      ┃ implementation  ┃ case          ┃ metric           ┃    old ┃    new ┃ verdict   ┃
┡━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━┩
│ agreement  │ ref-nf4~bnb-nf4 │ gauss-4096    │ code_agreement   │ 0.9998 │ 0.9875 │ regressed │
│ kernels    │ bnb-nf4         │ 4096x4096     │ dequantize_ratio │   1.25 │      - │ missing   │
│ agreement  │ ref-nf4~bnb-nf4 │ gauss-4096    │ level_agreement  │      - │  0.999 │ new       │
│ properties │ bnb-fp4         │ gauss-block64 │ mse              │  0.025 │   0.02 │ improved  │
│ properties │ ref-nf4         │ gauss-block64 │ mse              │ 0.0125 │ 0.0125 │ ok        │
└────────────┴─────────────────┴───────────────┴──────────────────┴────────┴────────┴───────────┘
1 ok, 1 improved, 1 regressed, 1 new, 1 missing
"""

EXPECTED_MARKDOWN = """\
## fourbit summary

Baseline: 1 ok, 1 improved, 1 regressed, 1 new, 1 missing

### Regressions

| suite | implementation | case | metric | baseline | now | statistic |
|---|---|---|---|---|---|---|
| agreement | ref-nf4~bnb-nf4 | gauss-4096 | code_agreement | 0.9998 | 0.9875 | -1.2%: worse (higher is better) |

### properties

| implementation | exact_zero |
|---|---|
| ref-nf4 | pass |
| bnb-fp4 | known |

| implementation | case | metric | value | unit | baseline | verdict |
|---|---|---|---|---|---|---|
| ref-nf4 | gauss-block64 | mse | 0.0125 |  | 0.0125 | ok |
| bnb-fp4 | gauss-block64 | mse | 0.02 |  | 0.025 | improved |

### agreement

| implementation | agreement |
|---|---|
| ref-nf4~bnb-nf4 | pass |

| implementation | case | metric | value | unit | baseline | verdict |
|---|---|---|---|---|---|---|
| ref-nf4~bnb-nf4 | gauss-4096 | code_agreement | 0.9875 |  | 0.9998 | regressed |
| ref-nf4~bnb-nf4 | gauss-4096 | level_agreement | 0.999 |  | - | new |

### kernels

| implementation | case | metric | value | unit | baseline | verdict |
|---|---|---|---|---|---|---|
| bnb-nf4 | 4096x4096 | dequantize_ratio | - |  | 1.25 | missing |

"""


def _text(renderable: RenderableType, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_run_summary_renders_errors_verdicts_and_metrics() -> None:
    errors = [("--quantizer bad:mod", "import 'bad' failed: ModuleNotFoundError: No module named 'bad'")]
    assert _text(render_run(RunSummary(OUTCOMES, RESULTS, errors))) == EXPECTED


def test_run_summary_puts_regressions_first_groups_by_suite_and_counts_verdicts() -> None:
    assert _text(render_run(RunSummary(MIXED_OUTCOMES, MIXED, suites={"agreement": AGREEMENT}))) == EXPECTED_MIXED


def test_run_summary_of_a_compared_run_without_regressions_has_no_regressions_table() -> None:
    text = _text(render_run(RunSummary(results=[OK, IMPROVED])))
    assert "REGRESSIONS" not in text
    assert text.splitlines()[0].strip() == "fourbit properties: metrics"
    assert text.splitlines()[-1] == "baseline: 1 ok, 1 improved"


def test_regressions_table() -> None:
    table = render_regressions(MIXED)
    assert table is not None
    assert _text(table) == EXPECTED_REGRESSIONS
    assert render_regressions([OK, IMPROVED, NEW, MISSING]) is None
    assert render_regressions([]) is None


def test_comparison_lists_regressions_first_and_counts_verdicts() -> None:
    compared = list(reversed(MIXED))  # the order of the input does not matter
    assert _text(render_comparison(compared, old_label="old.json", new_label="new.json")) == EXPECTED_COMPARISON


def test_comparison_of_nothing_says_so() -> None:
    assert _text(render_comparison([])).splitlines()[-1] == "nothing to compare"


def test_markdown_summary() -> None:
    assert render_markdown(RunSummary(MIXED_OUTCOMES, MIXED, suites={"agreement": AGREEMENT})) == EXPECTED_MARKDOWN


def test_markdown_escapes_table_cells() -> None:
    tricky = Result(
        "agreement",
        "gauss-4096",
        "a~b",
        "code_agreement",
        0.5,
        baseline=0.75,
        direction="higher",
        verdict="regressed",
        statistic="worse | by a lot\nsecond line",
    )
    row = next(
        line for line in render_markdown(RunSummary(results=[tricky])).splitlines() if line.startswith("| agreement |")
    )
    assert row == "| agreement | a~b | gauss-4096 | code_agreement | 0.75 | 0.5 | worse \\| by a lot second line |"


def test_markdown_of_an_empty_run() -> None:
    assert render_markdown(RunSummary()) == "## fourbit summary\n\n"


def test_regression_message_names_metric_baseline_value_and_statistic() -> None:
    assert regression_message(REGRESSED) == (
        "code_agreement of ref-nf4~bnb-nf4 on gauss-4096 (agreement) regressed: baseline 0.9998, now 0.9875; "
        "-1.2%: worse (higher is better)"
    )
    with_unit = Result(
        "properties", "c", "ref-nf4", "sqnr_db", 19.5, unit="dB", baseline=20.0, verdict="regressed", statistic="s"
    )
    assert (
        regression_message(with_unit) == "sqnr_db of ref-nf4 on c (properties) regressed: baseline 20, now 19.5 dB; s"
    )


def test_regression_message_of_a_new_metric_under_strict() -> None:
    assert regression_message(NEW) == (
        "level_agreement of ref-nf4~bnb-nf4 on gauss-4096 (agreement): no baseline (--fourbit-strict): "
        "no baseline for this metric"
    )


def test_bracketed_case_names_are_shown_verbatim() -> None:
    result = Result("properties", "test_a[toy-a]", "toy-a", "err[max]", 1.0, baseline=0.5, verdict="regressed")
    assert "│ test_a[toy-a] │" in _text(render_metrics([result]))
    regressions = render_regressions([result])
    assert regressions is not None
    assert "│ test_a[toy-a] │ err[max] │" in _text(regressions)
    assert "│ test_a[toy-a] │ err[max] │" in _text(render_comparison([result]))


def test_verdict_folding() -> None:
    impls, props, verdicts = verdict_matrix(
        [
            Outcome("a", "p", "skipped"),
            Outcome("a", "p", "passed"),
            Outcome("b", "p", "skipped"),
            Outcome("c", "p", "xfailed"),
            Outcome("c", "p", "skipped"),
            Outcome("d", "p", "xfailed"),
            Outcome("d", "p", "failed"),
            Outcome("d", "p", "passed"),
        ]
    )
    assert impls == ["a", "b", "c", "d"] and props == ["p"]
    assert verdicts == {("a", "p"): "pass", ("b", "p"): "skip", ("c", "p"): "known", ("d", "p"): "FAIL"}


def test_a_known_bug_in_one_case_is_not_hidden_by_passing_cases() -> None:
    _, _, verdicts = verdict_matrix([Outcome("bnb-fp4", "p", "passed"), Outcome("bnb-fp4", "p", "xfailed")])
    assert verdicts == {("bnb-fp4", "p"): "known"}


def test_empty_run_renders_nothing() -> None:
    assert _text(render_run(RunSummary())).strip() == ""


def test_outcomes_without_a_suite_keep_the_generic_titles() -> None:
    outcomes = [Outcome(f"implementation-{i}", "p", "passed") for i in range(3)]  # wide enough not to wrap titles
    results = [Result("", "c", f"implementation-{i}", "metric-with-a-long-name", 1.0) for i in range(3)]
    lines = _text(render_run(RunSummary(outcomes, results))).splitlines()
    assert [line.strip() for line in lines if "fourbit" in line] == [
        "fourbit: property verdicts",
        "fourbit: recorded metrics",
    ]


def test_many_implementations_become_rows() -> None:
    outcomes = [Outcome(f"impl-{i}", prop, "passed") for i in range(9) for prop in ("exact_zero", "packing")]
    lines = _text(render_run(RunSummary(outcomes))).splitlines()
    assert "implementation" in lines[2] and "exact zero" in lines[2] and "packing" in lines[2]
    assert sum(line.startswith("│ impl-") for line in lines) == 9


def test_load_errors_are_not_read_as_markup() -> None:
    text = _text(
        render_run(RunSummary(load_errors=[("entry point bnb", "not installed: pip install 'fourbit-harness[bnb]'")]))
    )
    assert "fourbit-harness[bnb]" in text


def test_implementation_verdicts_get_their_own_table_after_the_metrics() -> None:
    from harness.results.aggregate import aggregate_timing

    cases = [
        Result("kernels", f"case-{i}", impl, "over_dense", 2.0 * f, kind="timing", baseline=2.0, verdict="ok")
        for impl, factors in (("slow", (1.18, 1.2, 1.22, 1.19, 1.21)), ("same", (1.01, 0.98, 1.03, 0.99, 1.0)))
        for i, f in enumerate(factors)
    ]
    aggregates = aggregate_timing(cases, "kernels", "over_dense")
    text = _text(render_run(RunSummary(results=cases[:1] + aggregates)))
    regressions, rest = text.split("fourbit kernels: metrics")
    metrics_table, verdicts_table = rest.split("fourbit: implementation verdicts")
    assert "all cases" in regressions  # a regressed implementation is listed with the regressions first
    assert "all cases" not in metrics_table  # aggregates are not rows of the suite's metrics table
    lines = [line for line in verdicts_table.splitlines() if "│" in line and "kernels" in line]
    assert len(lines) == 2
    assert "slow" in lines[0] and "+20.0%" in lines[0] and "regressed" in lines[0]
    assert "same" in lines[1] and "+0.0%" in lines[1] and "ok" in lines[1]
    assert text.splitlines()[-1] == "baseline: 2 ok, 1 regressed"
    markdown = render_markdown(RunSummary(results=cases[:1] + aggregates))
    suite_section, verdicts_section = markdown.split("### Implementation verdicts (median change over all cases)")
    assert "all cases" not in suite_section.split("### kernels")[1]
    assert "| kernels | slow | over_dense_median | +20.0% | regressed |" in verdicts_section
    assert "| kernels | same | over_dense_median | +0.0% | ok |" in verdicts_section


# ---------------------------------------------------------------------------------------------- pair matrices


def _pair_results() -> list[Result]:
    def rates(pair: str, case: str, level: float, code: float, fmt: str) -> list[Result]:
        extra = {"format": fmt}
        return [
            Result("agreement", case, pair, "level_agreement", level, direction="higher", extra=extra),
            Result("agreement", case, pair, "code_agreement", code, direction="higher", extra=extra),
            Result("agreement", case, pair, "max_abs_diff", 0.5, extra=extra),  # not shown
        ]

    return [
        *rates("ref-nf4~bnb-nf4", "big", 1 - 3 / 16777216, 1 - 3 / 16777216, "nf4"),
        *rates("ref-nf4~bnb-nf4", "small", 1.0, 1.0, "nf4"),
        *rates("ref-nf4~torchao-nf4", "big", 1 - 2684 / 16777216, 1 - 2684 / 16777216, "nf4"),
        *rates("ref-fp4~bnb-fp4", "big", 1 - 1 / 16777216, 1 - 90335 / 16777216, "fp4"),
    ]


EXPECTED_MATRIX = """\
               fourbit: nf4 agreement
┏━━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━━┓
┃             ┃   ref-nf4 ┃   bnb-nf4 ┃ torchao-nf4 ┃
┡━━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━━┩
│ ref-nf4     │         - │ 99.99998% │   99.98400% │
│             │           │ 99.99998% │   99.98400% │
│ bnb-nf4     │ 99.99998% │         - │         n/a │
│             │ 99.99998% │           │             │
│ torchao-nf4 │ 99.98400% │       n/a │           - │
│             │ 99.98400% │           │             │
└─────────────┴───────────┴───────────┴─────────────┘
   cell: level / code agreement, lowest of 2 cases
          fourbit: fp4 agreement
┏━━━━━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━━━━┓
┃            ┃     ref-fp4 ┃     bnb-fp4 ┃
┡━━━━━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━━━━┩
│ ref-fp4    │           - │   99.99999% │
│            │             │   99.46156% │
│ bnb-fp4    │   99.99999% │           - │
│            │   99.46156% │             │
└────────────┴─────────────┴─────────────┘
  cell: level / code agreement, case big
"""


def test_agreement_matrix_renders_one_table_per_format() -> None:
    console = Console(file=io.StringIO(), width=100)
    for table in render_pair_matrix(_pair_results(), AGREEMENT.pair_matrix):
        console.print(table)
    lines = [line.rstrip() for line in console.file.getvalue().splitlines()]  # type: ignore[attr-defined]
    assert lines == EXPECTED_MATRIX.splitlines()  # rich pads titles with spaces: compared without them


def test_agreement_matrix_of_no_pairs_is_empty() -> None:
    assert render_pair_matrix([Result("properties", "c", "ref-nf4", "mse", 0.1)], AGREEMENT.pair_matrix) == []


def test_a_pair_matrix_of_any_metric_shows_its_worst_value() -> None:
    """Nothing in the matrix is particular to agreement: a lower-is-better metric shows its highest value."""
    results = [
        Result("other", case, "a~b", "max_abs_diff", value, extra={"format": "nf4"})
        for case, value in (("one", 0.25), ("two", 0.5))
    ]
    (table,) = render_pair_matrix(results, ["max_abs_diff"], title="t")
    lines = [line.rstrip() for line in _text(table).splitlines()]
    assert lines[0].strip() == "t: nf4 max abs diff"
    assert lines[-1].strip() == "cell: max abs diff, highest of 2 cases"
    assert [line.split() for line in lines if line.startswith("│")] == [
        ["│", "a", "│", "-", "│", "0.5", "│"],
        ["│", "b", "│", "0.5", "│", "-", "│"],
    ]


def test_a_suite_declaring_a_headline_shows_those_metrics_and_any_that_moved() -> None:
    moved = Result("agreement", "big", "ref-nf4~bnb-nf4", "scale_max_rel_diff", 0.1, baseline=0.0, verdict="regressed")
    results = [*_pair_results(), moved]
    declared = _text(render_run(RunSummary(results=results, suites={"agreement": AGREEMENT})), width=160)
    assert "fourbit: nf4 agreement" in declared and "fourbit: fp4 agreement" in declared
    header = next(line for line in declared.splitlines() if line.startswith("┃ implementation"))
    assert [cell.strip() for cell in header.strip("┃").split("┃")] == [
        "implementation",
        "case",
        "level_agreement",
        "code_agreement",
        "max_abs_diff",
        "scale_max_rel_diff",  # not a headline metric, but it regressed
    ]
    # Undeclared, the same results are just results: no matrix, every metric.
    undeclared = _text(render_run(RunSummary(results=[*results, *_other_metrics()])), width=200)
    assert "nf4 agreement" not in undeclared and "level / code" not in undeclared
    assert "fourbit agreement: metrics" in undeclared and "packed_agreement" in undeclared
    # Declared, a metric outside the headline that did not move is left out of the terminal, kept in Markdown.
    everything = RunSummary(results=[*results, *_other_metrics()], suites={"agreement": AGREEMENT})
    assert "packed_agreement" not in _text(render_run(everything), width=200)
    assert "| ref-nf4~bnb-nf4 | big | packed_agreement | 1 |  | - | ok |" in render_markdown(everything)


def _other_metrics() -> list[Result]:
    return [Result("agreement", "big", "ref-nf4~bnb-nf4", "packed_agreement", 1.0, direction="higher", verdict="ok")]


def test_comparison_follows_the_new_runs_headline_and_counts_everything() -> None:
    compared = [REGRESSED, NEW, *_other_metrics()]
    text = _text(render_comparison(compared, suites={"agreement": AGREEMENT}), width=160)
    assert "code_agreement" in text and "level_agreement" in text and "packed_agreement" not in text
    assert text.splitlines()[-1].startswith("1 ok, 1 regressed, 1 new (1 more not listed: outside their suite's")
    assert "packed_agreement" in _text(render_comparison(compared))  # undeclared: every metric


# ------------------------------------------------------------------------------------------ outcomes of a saved run

FAILING = [
    TestOutcome(
        "ref-nf4", "exact_zero", "passed", "properties", nodeid="properties/test_values.py::test_exact_zero[ref-nf4]"
    ),
    TestOutcome(
        "zoo-x",
        "exact_zero",
        "failed",
        "properties",
        nodeid="properties/test_values.py::test_exact_zero[zoo-x]",
        message="Failed: 0.0 -> 0.0039 (code 7)",
    ),
    TestOutcome(
        "zoo-x",
        "packing",
        "error",
        "properties",
        nodeid="properties/test_packing.py::test_packing[zoo-x]",
        message="error in setup: RuntimeError: no device",
    ),
    TestOutcome(
        "",
        "test_plain",
        "failed",
        "other",
        nodeid="other/test_plain.py::test_plain",
        message="AssertionError: [bold]x[/bold]\nassert 1 == 2",
    ),
    TestOutcome(
        "bnb-fp4", "exact_zero", "xfailed", "properties", nodeid="properties/test_values.py::test_exact_zero[bnb-fp4]"
    ),
]

EXPECTED_FAILURES = """\
                             fourbit: FAILED TESTS (2 failed, 1 error)                              
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ test                            ┃ implementation ┃ property   ┃ message                          ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ properties/test_values.py::test │ zoo-x          │ exact_zero │ Failed: 0.0 -> 0.0039 (code 7)   │
│ _exact_zero[zoo-x]              │                │            │                                  │
│ properties/test_packing.py::tes │ zoo-x          │ packing    │ error in setup: RuntimeError: no │
│ t_packing[zoo-x]                │                │            │ device                           │
│ other/test_plain.py::test_plain │ -              │ test_plain │ AssertionError: [bold]x[/bold]   │
│                                 │                │            │ assert 1 == 2                    │
└─────────────────────────────────┴────────────────┴────────────┴──────────────────────────────────┘
"""


def test_failed_tests_table_lists_failures_and_errors_verbatim() -> None:
    table = render_failures(FAILING)
    assert table is not None
    assert _text(table) == EXPECTED_FAILURES  # a message is not read as markup
    assert render_failures(FAILING[:1]) is None
    assert _text(render_outcome_counts(FAILING)) == "tests: 1 passed, 2 failed, 1 xfailed, 1 error\n"
    assert _text(render_outcome_counts([])) == "tests: none\n"


def test_the_verdict_matrix_folds_errors_and_xpasses() -> None:
    outcomes = [Outcome("a", "p", "passed"), Outcome("a", "p", "error"), Outcome("b", "p", "xpassed")]
    assert verdict_matrix(outcomes)[2] == {("a", "p"): "FAIL", ("b", "p"): "pass"}


def test_tests_about_no_implementation_leave_the_summary_as_it_was() -> None:
    plain = [Outcome("", "test_plain", "failed", "properties", nodeid="properties/test_x.py::test_plain")]
    assert _text(render_run(RunSummary([*OUTCOMES, *plain], RESULTS))) == _text(
        render_run(RunSummary(OUTCOMES, RESULTS))
    )
    assert render_markdown(RunSummary(plain)) == render_markdown(RunSummary())


OLD_OUTCOMES = [
    TestOutcome("zoo-x", "exact_zero", "passed", "properties", nodeid="n1"),
    TestOutcome("ref-nf4", "packing", "failed", "properties", nodeid="n2"),
    TestOutcome("ref-nf4", "exact_zero", "passed", "properties", nodeid="n3"),
    TestOutcome("zoo-x", "packing", "skipped", "properties", nodeid="n4"),
    TestOutcome("old-impl", "packing", "passed", "properties", nodeid="n5"),
]
NEW_OUTCOMES = [
    TestOutcome(
        "zoo-x",
        "exact_zero",
        "failed",
        "properties",
        nodeid="properties/test_values.py::test_exact_zero[zoo-x]",
        message="Failed: 0.0 -> 0.0039",
    ),
    TestOutcome("zoo-x", "exact_zero", "failed", "properties", nodeid="n1-bf16", message="Failed"),
    TestOutcome("ref-nf4", "packing", "passed", "properties", nodeid="n2"),
    TestOutcome("ref-nf4", "exact_zero", "passed", "properties", nodeid="n3"),
    TestOutcome("zoo-x", "packing", "passed", "properties", nodeid="n4"),
    TestOutcome("new-impl", "packing", "passed", "properties", nodeid="n6"),
]

EXPECTED_OUTCOME_CHANGES = """\
                        fourbit compare: test outcomes old.json -> new.json                         
┏━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ suite      ┃ implementation ┃ property   ┃ old     ┃ new    ┃ change    ┃ failing test           ┃
┡━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━┩
│ properties │ zoo-x          │ exact_zero │ passed  │ failed │ regressed │ properties/test_values │
│            │                │            │         │        │           │ .py::test_exact_zero[z │
│            │                │            │         │        │           │ oo-x]: Failed: 0.0 ->  │
│            │                │            │         │        │           │ 0.0039 (and 1 more)    │
│ properties │ ref-nf4        │ packing    │ failed  │ passed │ fixed     │                        │
│ properties │ zoo-x          │ packing    │ skipped │ passed │ changed   │                        │
│ properties │ new-impl       │ packing    │ -       │ passed │ new       │                        │
│ properties │ old-impl       │ packing    │ passed  │ -      │ missing   │                        │
└────────────┴────────────────┴────────────┴─────────┴────────┴───────────┴────────────────────────┘
test outcomes: 1 regressed, 1 fixed, 1 changed, 1 new, 1 missing, 1 unchanged
"""


def test_outcome_changes_list_regressions_first_and_count_every_kind() -> None:
    changes = compare_outcomes(OLD_OUTCOMES, NEW_OUTCOMES)
    shown = render_outcome_changes(changes, old_label="old.json", new_label="new.json")
    assert shown is not None
    assert _text(shown) == EXPECTED_OUTCOME_CHANGES
    unchanged = render_outcome_changes(compare_outcomes(OLD_OUTCOMES[2:3], OLD_OUTCOMES[2:3]))
    assert unchanged is not None and _text(unchanged) == "test outcomes: 1 unchanged\n"
    assert render_outcome_changes([]) is None


def test_describe_run_names_what_a_file_holds() -> None:
    assert describe_run([Result("kernels", "c", "a", "m", 1.0)], FAILING) == (
        "1 result and 5 test outcomes (suites kernels, other, properties; implementations a, bnb-fp4, ref-nf4, zoo-x)"
    )
    assert describe_run([], []) == "0 results and 0 test outcomes"
    many = [Outcome(f"impl-{i}", "p", "passed", "s") for i in range(6)]
    assert describe_run([], many) == (
        "0 results and 6 test outcomes (suite s; implementations impl-0, impl-1, impl-2, impl-3 and 2 more)"
    )
