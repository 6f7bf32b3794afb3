"""tutorial_lib: the library behind the fine-tuning curriculum (it trains and measures; notebooks explain)."""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes logs a warning at import on AVX512-BF16 CPUs when the optional `kernels` package
# (which fetches code from a model hub at run time) is absent. It is harmless: 4-bit layers fall
# back to bitsandbytes' own CPU kernels. Keep it out of the lessons' output.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
