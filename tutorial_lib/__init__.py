"""tutorial_lib: the library behind the fine-tuning curriculum (it trains and measures; notebooks explain)."""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes logs a warning at import on AVX512-BF16 CPUs when it cannot load a CPU kernel
# through the `kernels` package (absent, or offline with no cached kernel: that package fetches
# code from a model hub). It is harmless: 4-bit layers fall back to bitsandbytes' own CPU
# kernels. Keep it out of the lessons' output.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)


def _not_offline_trust_notice(record: _logging.LogRecord) -> bool:
    """False for `kernels`' notice that it skipped a hub publisher check while offline.

    bitsandbytes asks `kernels` (installed with transformers) for a CPU kernel from a model hub;
    offline, `kernels` first logs that it cannot check the publisher, then finds no cached
    kernel, and bitsandbytes falls back to its own (the notice above). Nothing is loaded, so the
    line only confuses a learner. Every other `kernels` message still shows."""
    return not record.getMessage().startswith("Skipping publisher trust check")


_logging.getLogger("kernels._internals.hf_hub").addFilter(_not_offline_trust_notice)
