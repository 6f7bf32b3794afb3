"""Root pytest config: tests and notebooks run in the quick profile unless told otherwise.

The notebook kernels nbval starts inherit this environment.
"""

import functools
import os
import shutil
import subprocess

import pytest

os.environ.setdefault("TUTORIAL_PROFILE", "quick")

collect_ignore = []

# Lesson 05 runs top to bottom in a real browser (tests/test_browser.py: every cell, no error, its
# widget drawn), which is nbval-lax's check and more; where that browser is installed (CI installs
# it), nbval does not run the lesson a second time. Without the browser, nbval runs it as any other.
_BROWSER = ("/usr/bin/chromium", "/usr/bin/chromedriver")
if all(os.path.exists(p) for p in _BROWSER) and "TUTORIAL_BROWSER_NOTEBOOK" not in os.environ:
    collect_ignore.append("notebooks/05_lora.ipynb")


# Lesson 00 runs top to bottom with no network from the classroom kit (tests/test_prefetch.py:
# every cell, no error, and each NBVAL_CHECK_OUTPUT cell printing what the committed lesson
# printed), which is nbval-lax's check and more; where an empty network namespace can be made,
# nbval does not run the lesson a second time (about 70 s). `-m "not slow"` deselects that test,
# so then nbval runs the lesson as any other.
@functools.cache
def _netless_prefix() -> list[str] | None:
    """A command prefix giving a process an empty network namespace, where this machine allows it."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return None


@pytest.fixture
def netless_prefix() -> list[str] | None:
    """`_netless_prefix()`: the prefix for a process with no network, or None where none can be made."""
    return _netless_prefix()


def pytest_configure(config):
    if "not slow" not in (config.getoption("markexpr", "") or "") and _netless_prefix():
        collect_ignore.append("notebooks/00_setup_and_baseline.ipynb")
