"""The end-of-run summary, rendered into a StringIO console and compared as text."""

from __future__ import annotations

import io

from rich.console import Console

from harness.report import Outcome, render_run, verdict_matrix
from harness.results import Result

EXPECTED = """\
                          fourbit: plugins that failed to load                           
┏━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ source              ┃ error                                                           ┃
┡━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ --quantizer bad:mod │ import 'bad' failed: ModuleNotFoundError: No module named 'bad' │
└─────────────────────┴─────────────────────────────────────────────────────────────────┘
   fourbit: property verdicts   
┏━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━┓
┃ property   ┃ ref-nf4 ┃ zoo-x ┃
┡━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━┩
│ exact zero │  FAIL   │ pass  │
│ packing    │  skip   │ pass  │
└────────────┴─────────┴───────┘
                 fourbit: recorded metrics                 
┏━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━━━━┓
┃ implementation ┃ case          ┃     mae ┃ sqnr_db (dB) ┃
┡━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━━━┩
│ ref-nf4        │ gauss-block64 │ 0.07281 │        20.73 │
└────────────────┴───────────────┴─────────┴──────────────┘
"""

OUTCOMES = [
    Outcome("ref-nf4", "exact_zero", "passed"),
    Outcome("ref-nf4", "exact_zero", "failed"),  # one failing dtype makes the verdict FAIL
    Outcome("zoo-x", "exact_zero", "passed"),
    Outcome("ref-nf4", "packing", "skipped"),
    Outcome("zoo-x", "packing", "passed"),
]
RESULTS = [
    Result("properties", "gauss-block64", "ref-nf4", "mae", 0.07281234),
    Result("properties", "gauss-block64", "ref-nf4", "sqnr_db", 20.7345, unit="dB", direction="higher"),
]


def test_run_summary_renders_errors_verdicts_and_metrics() -> None:
    console = Console(file=io.StringIO(), width=100)
    errors = [("--quantizer bad:mod", "import 'bad' failed: ModuleNotFoundError: No module named 'bad'")]
    console.print(render_run(OUTCOMES, RESULTS, errors))
    assert console.file.getvalue() == EXPECTED  # type: ignore[attr-defined]


def test_verdict_folding() -> None:
    impls, props, verdicts = verdict_matrix(
        [Outcome("a", "p", "skipped"), Outcome("a", "p", "passed"), Outcome("b", "p", "skipped")]
    )
    assert impls == ["a", "b"] and props == ["p"]
    assert verdicts == {("a", "p"): "pass", ("b", "p"): "skip"}


def test_empty_run_renders_nothing() -> None:
    console = Console(file=io.StringIO(), width=100)
    console.print(render_run([], [], []))
    assert console.file.getvalue().strip() == ""  # type: ignore[attr-defined]


def test_many_implementations_become_rows() -> None:
    outcomes = [Outcome(f"impl-{i}", prop, "passed") for i in range(9) for prop in ("exact_zero", "packing")]
    console = Console(file=io.StringIO(), width=100)
    console.print(render_run(outcomes, [], []))
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert "implementation" in lines[2] and "exact zero" in lines[2] and "packing" in lines[2]
    assert sum(line.startswith("│ impl-") for line in lines) == 9


def test_load_errors_are_not_read_as_markup() -> None:
    console = Console(file=io.StringIO(), width=100)
    console.print(render_run([], [], [("entry point bnb", "not installed: pip install 'fourbit-harness[bnb]'")]))
    assert "fourbit-harness[bnb]" in console.file.getvalue()  # type: ignore[attr-defined]
