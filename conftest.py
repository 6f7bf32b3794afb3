"""Root pytest config: tests and notebooks run in the quick profile unless told otherwise.

The notebook kernels nbval starts inherit this environment.
"""

import os

os.environ.setdefault("TUTORIAL_PROFILE", "quick")
