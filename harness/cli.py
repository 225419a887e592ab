"""The ``fourbit`` command, a thin layer over pytest and the result files.

``fourbit list``; ``fourbit run [SUITE...]``; ``fourbit baseline update [SUITE...]``;
``fourbit report RESULTS.json``; ``fourbit compare OLD.json NEW.json``.

Exit codes: 0 all passed; 1 a test failed, a metric regressed or a plugin broke; 2 usage error
(unknown suite or implementation, malformed --quantizer, unreadable or corrupt baseline or result file),
printed as one line; 3 (run, baseline update) the pytest process ended before its session finished (a plugin
ended or crashed it: no summary, no result file), one line naming the test and implementation it was running.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import FourbitError, StoredFileError, UsageError

__all__ = ["SUITES", "find_suites_dir", "main"]

SUITES = ("properties", "agreement", "kernels", "accuracy")
"""Suites ``fourbit run`` knows, in the order a bare ``fourbit run`` runs them (those present in the suites folder)."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def find_suites_dir(explicit: str | None = None) -> Path:
    """The suites folder: --suites-dir, $FOURBIT_SUITES, ./suites (a checkout), the suites the installed package
    carries (``harness/_suites``, mapped from the repository's suites/ at build time), or the checkout's suites/
    beside the package (an editable install run from another folder)."""
    if explicit:
        if not (Path(explicit) / "properties").is_dir():
            raise UsageError(f"--suites-dir {explicit!r} has no properties/ suite, expected the repository's suites/")
        return Path(explicit)
    from importlib.resources import files

    shipped = str(files("harness").joinpath("_suites"))  # a real folder: the package is installed unzipped
    beside_package = str(Path(__file__).resolve().parents[1] / "suites")
    for candidate in (os.environ.get("FOURBIT_SUITES"), "suites", shipped, beside_package):
        if candidate and (Path(candidate) / "properties").is_dir():
            return Path(candidate)
    raise UsageError("cannot find the suites/ folder; run from the repository root or pass --suites-dir DIR")


_CLI_ONLY = ("--baseline-dir", "--update-baselines")
"""Plugin options the CLI handles itself (the baseline folder's default depends on where the suites are)."""


def cli_flag(pytest_flag: str) -> str:
    """The ``fourbit run`` spelling of a plugin option: ``--fourbit-full-kernels`` is ``--full-kernels``."""
    return pytest_flag.replace("--fourbit-", "--", 1)


def _add_run_options(command: argparse.ArgumentParser) -> None:
    """The suites, the CLI's own options, and every option of the pytest plugin under its CLI spelling
    (harness.pytest_plugin._options declares them once; nothing is listed twice here)."""
    from harness.pytest_plugin._options import all_declared_options

    command.add_argument("suites", nargs="*", metavar="SUITE", help=f"one of {', '.join(SUITES)} (default: all)")
    command.add_argument("--suites-dir", default=None, metavar="DIR", help="default: ./suites, else the installed ones")
    command.add_argument(
        "--baseline-dir",
        default=None,
        metavar="DIR",
        help="folder of baseline files (default: baselines/ beside the suites of a checkout; for the installed "
        "suites ./baselines when it exists, else the baseline shipped with the package, exact metrics only)",
    )
    command.add_argument("--junit", default=None, metavar="PATH", help="write a JUnit XML report")
    command.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="run the tests in N pytest-xdist worker processes (pytest's -n N); not with the kernels suite, whose "
        "timings must not share the CPU",
    )
    command.add_argument(
        "--hypothesis-profile",
        default=None,
        metavar="NAME",
        help="property suites: fourbit (default, 20 seeded examples a property) or fourbit-thorough (400)",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in all_declared_options():
        if option.flag in _CLI_ONLY:
            continue
        group = groups.get(option.group) or groups.setdefault(option.group, command.add_argument_group(option.group))
        settings = {k: v for k, v in option.settings.items() if k in ("help", "metavar", "type")}
        if option.takes == "flag":
            group.add_argument(cli_flag(option.flag), dest=option.dest, action="store_true", **settings)
        elif option.takes == "list":
            group.add_argument(cli_flag(option.flag), dest=option.dest, action="append", default=[], **settings)
        else:
            group.add_argument(cli_flag(option.flag), dest=option.dest, default=None, **settings)
    command.epilog = "Arguments after -- go to pytest unchanged, e.g. fourbit run properties -- -x -k exact_zero"


def _plugin_arguments(args: argparse.Namespace) -> list[str]:
    """The pytest command-line arguments for the plugin options given to ``fourbit run``."""
    from harness.pytest_plugin._options import all_declared_options

    arguments: list[str] = []
    for option in all_declared_options():
        if option.flag in _CLI_ONLY:
            continue
        value = getattr(args, option.dest, None)
        if option.takes == "flag":
            arguments += [option.flag] if value else []
        elif option.takes == "list":
            arguments += [f"{option.flag}={item}" for item in value or ()]
        elif value is not None:
            arguments.append(f"{option.flag}={value}")
    return arguments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fourbit", description="Test and compare 4-bit weight quantizers.")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="implementations, their formats and capabilities, and load errors")
    listing.add_argument("--quantizer", action="append", default=[], metavar="MODULE:ATTR")

    run = commands.add_parser("run", help="run suites (default: all) through pytest, compared with the baseline")
    _add_run_options(run)
    run.add_argument("--update-baselines", action="store_true", help="write the metrics into the baseline file")

    baseline = commands.add_parser("baseline", help="manage stored baselines")
    baseline_commands = baseline.add_subparsers(dest="baseline_command", required=True)
    update = baseline_commands.add_parser("update", help="run suites and write their metrics into the baseline")
    _add_run_options(update)

    report = commands.add_parser("report", help="render a saved --json result file")
    report.add_argument("results", metavar="RESULTS.json")

    compare = commands.add_parser("compare", help="compare two saved --json result files, side by side")
    compare.add_argument("old", metavar="OLD.json")
    compare.add_argument("new", metavar="NEW.json")
    return parser


def _list(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from harness.registry import load_registry
    from harness.report import render_load_errors

    _SHORT_DTYPE = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
    registry = load_registry(args.quantizer)
    registry.build()  # the list shows every implementation's spec: each library is imported
    table = Table(title="fourbit implementations")
    for column in ("name", "format", "block", "scale", "double quant", "packing", "dtypes", "ops", "source"):
        table.add_column(column)
    for impl in registry.implementations.values():
        spec, caps = impl.quantizer.spec, impl.quantizer.capabilities
        dq = "-" if spec.double_quant is None else f"{spec.double_quant.bits}-bit/{spec.double_quant.block_size}"
        dtypes = ",".join(_SHORT_DTYPE.get(d, str(d).removeprefix("torch.")) for d in caps.dtypes)
        ops = ",".join(op for op, flag in (("matmul", caps.has_matmul), ("module", caps.has_module)) if flag) or "-"
        blocks = str(spec.block_size)
        if caps.block_sizes:
            blocks += f" ({min(caps.block_sizes)}-{max(caps.block_sizes)})"
        table.add_row(impl.name, spec.format, blocks, spec.scale, dq, spec.packing or "-", dtypes, ops, impl.source)
    console = Console(width=max(Console().width, 150))
    console.print(table)
    if registry.unavailable:
        unavailable = Table(title="unavailable here (their tests skip with this reason)", title_style="yellow")
        unavailable.add_column("name", style="bold")
        unavailable.add_column("reason")
        for name, reason in registry.unavailable.items():
            unavailable.add_row(name, Text(reason))
        console.print(unavailable)
    if registry.errors:
        console.print(render_load_errors([(e.source, e.error) for e in registry.errors]))
        return EXIT_FAILED
    return EXIT_OK


def _baseline_arguments(args: argparse.Namespace, suites_dir: Path, *, updating: bool = False) -> list[str]:
    """``--baseline-dir`` as given; else baselines/ beside the suites (a checkout, or suites of the user's own);
    for the suites installed inside the package, ./baselines when it exists, otherwise none (the plugin then
    gates the exact metrics with the shipped baseline, harness.pytest_plugin.gate) -- never a folder inside the
    installed package."""
    if args.baseline_dir:
        return [f"--baseline-dir={args.baseline_dir}"]
    if not _installed(suites_dir):
        beside = suites_dir.resolve().parent / "baselines"
        return [f"--baseline-dir={beside}"] if beside.is_dir() or updating else []
    return [f"--baseline-dir={Path('baselines').resolve()}"] if Path("baselines").is_dir() else []


TIMING_SUITES = ("kernels",)
"""Suites whose tests time code (marked ``fourbit_timing``): they run without pytest-xdist workers."""


def _worker_arguments(args: argparse.Namespace, paths: list[str]) -> list[str]:
    """``-n N`` for ``--workers N``; a timing suite among the suites is a usage error that says how to split the
    run (harness.pytest_plugin.distributed refuses timing tests beside other workers)."""
    workers = int(getattr(args, "workers", 0) or 0)
    if workers < 0:
        raise UsageError(f"--workers {workers}: expected a number of worker processes, 0 (none) or more")
    if workers == 0:
        return []
    timed = [Path(path).name for path in paths if Path(path).name in TIMING_SUITES]
    if timed and workers > 1:
        others = [Path(path).name for path in paths if Path(path).name not in TIMING_SUITES]
        raise UsageError(
            f"--workers {workers}: the {', '.join(timed)} suite times code and must not share the CPU with other "
            f"workers; run `fourbit run {' '.join(others) or 'properties'} --workers {workers}` and "
            f"`fourbit run {' '.join(timed)}` apart"
        )
    return ["-n", str(workers)]


def _installed(suites_dir: Path) -> bool:
    """Whether ``suites_dir`` is the copy of the suites inside the installed package (not a checkout's)."""
    return Path(__file__).resolve().parent in suites_dir.resolve().parents


def _installed_suites_arguments(suites_dir: Path) -> list[str]:
    """For the suites inside the installed package: pytest's root at the suites folder (so their
    known_failures.toml is found, whatever folder the run starts in), the settings a checkout's pyproject.toml
    gives, and no cache written into the package."""
    if not _installed(suites_dir):
        return []
    return [
        f"--rootdir={suites_dir.resolve()}",
        "-p",
        "no:cacheprovider",
        "--strict-markers",
        "-o",
        "xfail_strict=true",
    ]


def _run(args: argparse.Namespace, *, update_baselines: bool = False) -> int:
    import pytest

    suites_dir = find_suites_dir(args.suites_dir)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        raise UsageError(f"unknown suite {', '.join(map(repr, unknown))}, expected one of {', '.join(SUITES)}")
    absent = [s for s in args.suites if not (suites_dir / s).is_dir()]
    if absent:
        raise UsageError(f"suite {', '.join(map(repr, absent))} is not in {str(suites_dir)!r}")
    paths = [str(suites_dir / s) for s in (args.suites or [s for s in SUITES if (suites_dir / s).is_dir()])]
    updating = update_baselines or bool(getattr(args, "update_baselines", False))
    options = [
        *_worker_arguments(args, paths),
        *_plugin_arguments(args),
        *_baseline_arguments(args, suites_dir, updating=updating),
        *(["--update-baselines"] if updating else []),
        *([f"--junitxml={args.junit}"] if args.junit else []),
        *([f"--hypothesis-profile={args.hypothesis_profile}"] if args.hypothesis_profile else []),
        *_installed_suites_arguments(suites_dir),
    ]
    try:
        code = _run_pytest([*paths, *options, *args.pytest_args])
    except RunUnfinished as exc:
        print(f"fourbit: error: {exc}", file=sys.stderr)
        return EXIT_UNFINISHED
    if code == pytest.ExitCode.USAGE_ERROR:
        return EXIT_USAGE
    return EXIT_OK if code == pytest.ExitCode.OK else EXIT_FAILED


# ------------------------------------------------------------------ fourbit run: pytest in a watched child process

if TYPE_CHECKING:
    from subprocess import Popen

    from harness.pytest_plugin.faults import RunningTest, RunState

EXIT_UNFINISHED = 3
"""``fourbit run``: the pytest process ended before its session finished (no summary, no result file)."""

_POLL_S = 0.1
_EXIT_GRACE_S = 30.0
"""How long the child may take to exit after its session finished (a thread left running keeps it alive)."""
_SIGINT_ACK_S = 1.0
"""How long the child may take to show it got a SIGINT (a Ctrl-C reaches both processes) before it is sent one."""


class RunUnfinished(FourbitError):
    """The pytest process of ``fourbit run`` ended before its session finished; the message names the test and the
    implementation that were running."""


def _run_pytest(arguments: list[str]) -> int:
    """pytest's exit status for ``arguments``, run in a child process (:func:`_guarded_pytest`): a plugin that ends
    or crashes the process, or hangs where no signal reaches, cannot end the run with a status that looks like a
    pass. A stand-in for ``pytest.main`` (a test's) is called in this process: there is no pytest to watch."""
    import _pytest.config
    import pytest

    if pytest.main is not _pytest.config.main:
        return int(pytest.main(arguments))
    return _guarded_pytest(arguments)


def _guarded_pytest(arguments: list[str]) -> int:
    """pytest in a child process, sharing a folder of run state with it (harness.pytest_plugin.faults.RunState).
    Its exit status counts only when its session finished (else RunUnfinished, naming the test that was running).
    A test that outlives its time limit (a hang in native code: the limit's signal never reached Python) has its
    process ended; a fresh one replays the tests done, fails that one and runs the rest."""
    import tempfile

    import pytest

    from harness.pytest_plugin.faults import RunState

    with tempfile.TemporaryDirectory(prefix="fourbit-run-") as folder:
        state = RunState(Path(folder))
        while True:
            state.new_process()
            child = _WatchedChild(state)
            status = child.run(arguments)
            if state.finished():
                recorded = state.finished_status()
                return recorded if child.lingered and recorded is not None else status
            if not state.started() and status == pytest.ExitCode.USAGE_ERROR:
                return status  # pytest refused the command line before a session began
            timed_out = child.overdue or _past_time_limit(state)
            if timed_out is None or child.signalled or timed_out.nodeid in state.ended_tests():
                if state.running() is not None:
                    print(file=sys.stdout, flush=True)  # the ended process's progress line was left open
                raise RunUnfinished(_unfinished_message(status, state, child.signalled))
            state.add_ended(timed_out, _ended_message(timed_out))
            print(file=sys.stdout, flush=True)  # the ended process's progress line was left open
            print(
                f"fourbit: {timed_out.describe()} did not stop at its time limit of {timed_out.timeout:g} s: its "
                "process was ended, the remaining tests go on in a fresh one",
                file=sys.stderr,
                flush=True,
            )


def _past_time_limit(state: RunState) -> RunningTest | None:
    """The test the ended process was running, when it had run past its time limit (pytest-timeout's thread
    method ends the process itself), else None."""
    import time

    running = state.running()
    if running is None or running.timeout is None or time.time() < running.started + running.timeout:
        return None
    return running


def _ended_message(test: RunningTest) -> str:
    subject = f"the test of implementation {test.implementation!r}" if test.implementation else "the test"
    return (
        f"Timeout: {subject} ran past its time limit of {test.timeout:g} s and did not stop (a hang where Python "
        "code does not run, such as a native call): fourbit run ended its process and went on in a fresh one"
    )


def _unfinished_message(status: int, state: RunState, signalled: str | None) -> str:
    """One line: how the pytest process ended, and the test (and implementation) it was running."""
    import signal

    if signalled:
        how = f"was stopped by {signalled}"
    elif status < 0:
        how = f"was killed by {signal.Signals(-status).name}" if -status in signal.valid_signals() else "was killed"
    else:
        how = f"exited with status {status}"
    running = state.running()
    where = f"during {running.describe()}" if running is not None else "outside any test"
    return f"the pytest process {how} {where}, before the run finished: no summary or result file was written"


def _child_stream(stream: Any) -> int | None:
    """The file descriptor behind ``stream`` for the child to write to directly (a terminal stays a terminal),
    or None when it has none (a test's captured output): the child's output is then copied into it."""
    try:
        stream.flush()
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None


def _copy_output(pipe: Any, stream: Any) -> None:
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := os.read(pipe.fileno(), 65536):
        stream.write(decoder.decode(chunk))
        stream.flush()
    pipe.close()


def _child_environment(folder: str) -> dict[str, str]:
    """This environment, the run state folder, and the front of this process's sys.path (its script's folder,
    $PYTHONPATH, folders a caller prepended) ahead of $PYTHONPATH: the child imports the quantizers this
    process would."""
    from harness.pytest_plugin.faults import STATE_ENV

    interpreter = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    front: list[str] = []
    for entry in sys.path:
        path = Path(entry or os.getcwd()).resolve()
        if any(path == root or root in path.parents for root in interpreter):
            break
        front.append(str(path))
    environment = dict(os.environ)
    environment[STATE_ENV] = folder
    inherited = [entry for entry in environment.get("PYTHONPATH", "").split(os.pathsep) if entry]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*front, *inherited]))
    return environment


class _WatchedChild:
    """One pytest process: its output goes where this process's goes; a test past its time limit and grace is
    ended (``overdue``); SIGINT and SIGTERM are passed on (a Ctrl-C reaches the child itself: it is passed on only
    when the child does not show it got one, and a second Ctrl-C it never saw ends it)."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.overdue: RunningTest | None = None
        self.signalled: str | None = None
        self.lingered = False
        """Whether the child was ended because it did not exit after its session finished."""
        self._sigints: list[float] = []
        self._sigterm = False

    def run(self, arguments: list[str]) -> int:
        import subprocess
        import threading

        command = [sys.executable, "-P", "-m", "pytest", *arguments]  # -P: no current folder on sys.path, as here
        streams = (sys.stdout, sys.stderr)
        targets = [_child_stream(stream) for stream in streams]
        process = subprocess.Popen(
            command,
            env=_child_environment(str(self.state.folder)),
            stdout=subprocess.PIPE if targets[0] is None else targets[0],
            stderr=subprocess.PIPE if targets[1] is None else targets[1],
        )
        copies = [
            threading.Thread(target=_copy_output, args=(pipe, stream), daemon=True)
            for pipe, stream in zip((process.stdout, process.stderr), streams, strict=True)
            if pipe is not None
        ]
        for copy in copies:
            copy.start()
        previous = self._take_signals()
        try:
            status = self._wait(process)
        finally:
            self._give_back_signals(previous)
        for copy in copies:
            copy.join(timeout=5)
        return status

    def _wait(self, process: Popen[bytes]) -> int:
        import signal
        import subprocess
        import time

        passed_on: set[str] = set()
        finished_at: float | None = None
        while True:
            try:
                return int(process.wait(timeout=_POLL_S))
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if finished_at is None and self.state.finished():
                finished_at = now
            if finished_at is not None and now - finished_at > _EXIT_GRACE_S:
                self.lingered = True
                process.kill()
            elif self._sigterm:
                self.signalled = "SIGTERM"
                if "SIGTERM" not in passed_on:
                    process.terminate()
                    passed_on.add("SIGTERM")
            elif self._sigints:
                self.signalled = "SIGINT"
                if self.state.interrupted():
                    continue  # pytest got it: it stops the session and writes its summary
                if self._sigints[-1] - self._sigints[0] >= _SIGINT_ACK_S:
                    process.kill()  # Ctrl-C again, and pytest never saw the first: it is stuck
                elif "SIGINT" not in passed_on and now - self._sigints[0] >= _SIGINT_ACK_S:
                    process.send_signal(signal.SIGINT)  # sent to this process only, not from a terminal
                    passed_on.add("SIGINT")
            else:
                running = self.state.running()
                if running is not None and running.overdue(time.time()):
                    self.overdue = running
                    process.kill()

    def _take_signals(self) -> dict[int, Any]:
        """Record SIGINT and SIGTERM while the child runs (unless ignored here, or not the main thread)."""
        import signal
        import threading
        import time

        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_sigint(signum: int, frame: object) -> None:
            self._sigints.append(time.monotonic())

        def on_sigterm(signum: int, frame: object) -> None:
            self._sigterm = True

        previous: dict[int, Any] = {}
        for number, handler in ((signal.SIGINT, on_sigint), (signal.SIGTERM, on_sigterm)):
            if signal.getsignal(number) is not signal.SIG_IGN:
                previous[number] = signal.signal(number, handler)
        return previous

    def _give_back_signals(self, previous: dict[int, Any]) -> None:
        import signal

        for number, handler in previous.items():
            signal.signal(number, handler)


def _console() -> Any:
    from rich.console import Console

    return Console(width=max(Console().width, 120))


def _report(args: argparse.Namespace) -> int:
    """A saved run rendered as at its end, following the suites' declarations stored in the file, its failed
    tests first; exit 1 when a test failed (or errored) or a result regressed."""
    from harness.report import RunSummary, render_run
    from harness.report.terminal import render_failures, render_outcome_counts
    from harness.results.files import load_partial, load_run, partial_path

    console = _console()
    unfinished = partial_path(args.results).is_file()
    if unfinished:
        run = load_partial(args.results)
        console.print(
            f"{args.results}: the run did not finish (killed?); {len(run.outcomes)} finished tests read from "
            f"{partial_path(args.results)}",
            markup=False,
            soft_wrap=True,
        )
    else:
        run = load_run(args.results)
    commit = (run.environment.get("git") or {}).get("commit", "?")
    torch_version = (run.environment.get("libraries") or {}).get("torch", "?")
    console.print(f"{args.results}: {len(run.results)} results; torch {torch_version}, commit {commit}", markup=False)
    if not run.stores_outcomes:
        note = f"schema {run.schema_version}, written before result files kept them: pass/fail unknown"
        console.print(f"{args.results} holds no test outcomes ({note})", markup=False, soft_wrap=True)
    summary = RunSummary(outcomes=run.outcomes, results=run.results, suites=run.suites)
    failures = render_failures(summary.outcomes)
    if failures is not None:
        console.print(failures)
    console.print(render_run(summary))
    if summary.outcomes:
        console.print(render_outcome_counts(summary.outcomes))
    return EXIT_FAILED if summary.failures or summary.regressed or unfinished else EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    """Two saved runs: the properties whose tests' outcomes changed (passed -> failed is a regression), then each
    metric judged against the old run; exit 1 on a regression of either, 2 when the runs have nothing in common."""
    from harness.report import render_comparison
    from harness.report.terminal import describe_run, render_outcome_changes
    from harness.results.compare import compare_outcomes, compare_runs, shared_keys
    from harness.results.files import load_run

    old = load_run(args.old)
    new = load_run(args.new)
    if not shared_keys(old.results, old.outcomes, new.results, new.outcomes):
        raise UsageError(
            f"{args.old} and {args.new} have nothing in common: {args.old} holds "
            f"{describe_run(old.results, old.outcomes)}, {args.new} {describe_run(new.results, new.outcomes)}"
        )
    console = _console()
    changes = compare_outcomes(old.outcomes, new.outcomes)
    shown = render_outcome_changes(changes, old_label=args.old, new_label=args.new)
    if shown is not None:
        console.print(shown)
    for label, run in ((args.old, old), (args.new, new)):
        if not run.stores_outcomes:
            line = f"test outcomes not compared: {label} holds none (schema {run.schema_version})"
            console.print(line, markup=False, soft_wrap=True)
    compared = compare_runs(old.results, new.results)
    if compared or not changes:
        console.print(render_comparison(compared, old_label=args.old, new_label=args.new, suites=new.suites))
    regressed = any(c.change == "regressed" for c in changes) or any(r.verdict == "regressed" for r in compared)
    return EXIT_FAILED if regressed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1 :]
    args = _parser().parse_args(argv)
    args.pytest_args = pytest_args
    try:
        if args.command == "list":
            return _list(args)
        if args.command == "run":
            return _run(args)
        if args.command == "baseline":
            return _run(args, update_baselines=True)
        if args.command == "report":
            return _report(args)
        return _compare(args)
    except (UsageError, StoredFileError) as exc:
        print(f"fourbit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FourbitError as exc:
        print(f"fourbit: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
