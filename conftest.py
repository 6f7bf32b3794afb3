"""Root pytest config: tests and notebooks run in the quick profile unless told otherwise.

The notebook kernels nbval starts inherit this environment.
"""

import os

os.environ.setdefault("TUTORIAL_PROFILE", "quick")

# Lesson 05 runs top to bottom in a real browser (tests/test_browser.py: every cell, no error, its
# widget drawn), which is nbval-lax's check and more; where that browser is installed (CI installs
# it), nbval does not run the lesson a second time. Without the browser, nbval runs it as any other.
_BROWSER = ("/usr/bin/chromium", "/usr/bin/chromedriver")
if all(os.path.exists(p) for p in _BROWSER) and "TUTORIAL_BROWSER_NOTEBOOK" not in os.environ:
    collect_ignore = ["notebooks/05_lora.ipynb"]
