"""The wheel carries everything a run needs: it is built from the checkout, installed into a fresh environment, and
run from a folder outside the checkout (``fourbit list``, ``fourbit run properties``, the accuracy suite's data,
``fourbit baseline update``).

The fresh environment gets the dependencies already installed here through a ``deps.pth`` that names this
interpreter's site-packages: a path line in a .pth file puts that folder on sys.path without processing the .pth
files inside it, so the checkout's editable finder stays off and ``harness`` is the installed copy. A wheel without
the suites therefore fails here: nothing falls back to the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.pytest_plugin.gate import SHIPPED_NOTE
from harness.results.environment import environment_key

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
_NOT_SOURCE = shutil.ignore_patterns(".*", "__pycache__", "build", "dist", "*.egg-info", "fourbit-results")
"""Left out of the copy the wheel is built from: version control, environments, caches and build leftovers (a
stale build/lib would otherwise end up in the wheel)."""


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    python: Path
    package: Path
    """The installed ``harness`` folder in the fresh environment's site-packages."""
    workdir: Path
    """A folder outside the checkout, with no suites/ and no baselines/ of its own."""
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def fourbit(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.venv / "bin" / "fourbit"), *args)


def _files(folder: Path, *, hidden: bool = True) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` but bytecode caches (and, unless ``hidden``, dot-files such as a
    .pytest_cache), with its size and modification time."""
    files = {}
    for path in folder.rglob("*"):
        parts = path.relative_to(folder).parts
        if path.is_file() and "__pycache__" not in parts and (hidden or not any(p.startswith(".") for p in parts)):
            files[path.relative_to(folder).as_posix()] = (path.stat().st_size, path.stat().st_mtime_ns)
    return files


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    source, dist, venv, workdir = root / "source", root / "dist", root / "venv", root / "work"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)]
    subprocess.run([*build, str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("fourbit_harness-*.whl")

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[kind] for kind in ("purelib", "platlib"))
    (Path(site) / "deps.pth").write_text("".join(f"{path}\n" for path in ours), encoding="utf-8")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST_", "FOURBIT_", "VIRTUAL_ENV"))}
    env.update(COLUMNS="200", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    env.pop("GITHUB_STEP_SUMMARY", None)
    install = [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)]
    subprocess.run(install, check=True, capture_output=True, env=env, timeout=300)
    workdir.mkdir()
    return Installed(wheel, venv, python, Path(site) / "harness", workdir, env)


def test_the_wheel_holds_every_package_and_the_suites_data_and_baselines(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "harness").rglob("__init__.py")}
    assert {f"{p}/__init__.py" for p in packages} <= names  # pyproject.toml lists them by hand
    suites = {f"harness/_suites/{name}" for name in _files(REPO / "suites", hidden=False)}
    baselines = {f"harness/_baselines/{p.name}" for p in (REPO / "baselines").glob("*.json")}
    assert "harness/_suites/known_failures.toml" in suites and "harness/_baselines/cpu-x86_64.json" in baselines
    assert "harness/_suites/accuracy/data/coqa_fourbit.json" in suites
    assert sorted((suites | baselines) - names) == []


def test_harness_is_the_installed_copy_not_the_checkout(installed: Installed) -> None:
    probe = installed.run(str(installed.python), "-c", "import harness; print(harness.__file__)")
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).parent == installed.package


def test_fourbit_list_outside_the_checkout(installed: Installed) -> None:
    listing = installed.fourbit("list")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "ref-nf4" in listing.stdout


def test_the_accuracy_suites_data_is_found_in_the_installed_package(installed: Installed) -> None:
    script = (
        "import json\n"
        "from harness.evals.coqa_data import default_coqa_path, load_coqa\n"
        "from harness.evals.fidelity import default_sample_path, load_sample\n"
        "print(json.dumps({'coqa': str(default_coqa_path()), 'stories': len(load_coqa(default_coqa_path())),\n"
        "                  'sample': str(default_sample_path()), 'chars': len(load_sample())}))\n"
    )
    probe = installed.run(str(installed.python), "-c", script)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    data = installed.package / "_suites" / "accuracy" / "data"
    assert Path(found["coqa"]) == data / "coqa_fourbit.json" and found["stories"] > 0
    assert Path(found["sample"]) == data / "fidelity_sample.txt" and found["chars"] > 0


def test_run_and_baseline_update_outside_the_checkout(installed: Installed) -> None:
    """With no baseline of its own, a run compares with the shipped baseline's exact entries; an update writes
    ./baselines and nothing under the installed package; the next run compares with that."""
    before = _files(installed.package)

    run = installed.fourbit("run", "properties", "--impl", "ref-nf4")
    assert run.returncode == 0, run.stdout + run.stderr
    assert SHIPPED_NOTE in run.stdout
    assert re.search(r"^baseline: \d+ ok", run.stdout, re.MULTILINE), run.stdout  # its exact entries gate the run

    update = installed.fourbit("baseline", "update", "properties", "--impl", "ref-nf4")
    assert update.returncode == 0, update.stdout + update.stderr
    written = installed.workdir / "baselines" / f"{environment_key()}.json"
    assert f"baseline {written}: wrote" in update.stdout
    assert _files(installed.package) == before  # the shipped baselines and suites are left as they were

    again = installed.fourbit("run", "properties", "--impl", "ref-nf4")
    assert again.returncode == 0, again.stdout + again.stderr
    assert SHIPPED_NOTE not in again.stdout
