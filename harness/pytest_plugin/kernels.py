"""Options of the kernels suite (suites/kernels): which shapes it times and on how many torch threads."""

from __future__ import annotations

import pytest

from harness.pytest_plugin._options import add_option

__all__: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fourbit-kernels", "fourbit: kernels suite")
    add_option(
        group,
        "--fourbit-full-kernels",
        repeat_in_reruns=True,
        action="store_true",
        default=False,
        help="kernels suite: every shape and dtype (4096x11008, 11008x4096, bfloat16) and more rounds; slower",
    )
    add_option(
        group,
        "--fourbit-kernel-threads",
        repeat_in_reruns=True,
        type=int,
        default=1,
        metavar="N",
        help="kernels suite: torch threads while timing on CPU (default 1: on a shared machine a second thread "
        "waits for other jobs; 0 keeps torch's default)",
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    threads = session.config.getoption("fourbit_kernel_threads")
    if threads < 0:
        raise pytest.UsageError(f"--fourbit-kernel-threads={threads}, expected 0 (torch's default) or more")
