"""The progress bar shows on a terminal, and only there."""

from __future__ import annotations

import io
import sys

import pytest

from harness.report.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(steps: int) -> None:
    with progress_bar("CoQA: generating answers", steps) as advance:
        for _ in range(steps):
            advance(1)


def test_drawn_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "__stderr__", terminal)
    monkeypatch.delenv("FOURBIT_NO_PROGRESS", raising=False)
    _run(3)
    assert "CoQA: generating answers" in terminal.getvalue()


def test_silent_when_not_a_terminal_or_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    redirected = io.StringIO()
    monkeypatch.setattr(sys, "__stderr__", redirected)
    _run(3)
    assert redirected.getvalue() == ""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "__stderr__", terminal)
    monkeypatch.setenv("FOURBIT_NO_PROGRESS", "1")
    _run(3)
    assert terminal.getvalue() == ""
