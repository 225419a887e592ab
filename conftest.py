"""Repository-level pytest configuration.

The harness's pytest plugin is normally loaded through its ``pytest11`` entry point (``pip install -e .``).
From a bare checkout (``PYTHONPATH=. pytest suites/``) no entry point exists, so load the plugin here;
when it is installed, pytest has already loaded it and nothing is added.
"""

from importlib.metadata import entry_points

if not any(ep.value == "harness.pytest_plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["harness.pytest_plugin"]
