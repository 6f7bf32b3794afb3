"""Root pytest config: tests and notebooks run in the quick profile unless told otherwise.

The notebook kernels nbval starts inherit this environment.
"""

import os
import shutil
import subprocess

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
def _netless() -> bool:
    if shutil.which("unshare") is None:
        return False
    return any(
        subprocess.run([*prefix, "true"], capture_output=True).returncode == 0
        for prefix in (["unshare", "-n"], ["unshare", "-rn"])
    )


def pytest_configure(config):
    if "not slow" not in (config.getoption("markexpr", "") or "") and _netless():
        collect_ignore.append("notebooks/00_setup_and_baseline.ipynb")
