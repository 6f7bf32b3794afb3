"""Progress bars that leave a saved notebook readable.

tqdm.auto's notebook widget stores its *first* text form (`probe:   0%|   | 0/23 [00:00<?]`) in
the notebook, and GitHub or nbviewer show that, having no widget state. Inside a Jupyter kernel
`bar` shows one line of text through a display handle instead and updates it in place; nbclient
applies those updates to the stored outputs, so a saved notebook keeps only the final line (or
nothing, with leave=False). Elsewhere it is plain `tqdm` on stderr.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.std import tqdm

REFRESH_SECONDS = 0.5  # at most one display update per this many seconds (close always updates)


def in_jupyter_kernel() -> bool:
    """True inside an IPython kernel (Jupyter, VS Code, Colab), where stderr bars pile up."""
    if "IPython" not in sys.modules:  # never import IPython just to ask
        return False
    shell = sys.modules["IPython"].get_ipython()
    return any(c.__name__ == "ZMQInteractiveShell" for c in type(shell).__mro__)


def clock(seconds: float) -> str:
    """mm:ss (h:mm:ss past an hour), as tqdm shows elapsed and remaining time."""
    return tqdm.format_interval(seconds)


def duration(seconds: float) -> str:
    """A finished run's length, short: 8.4s, 2m05s, 1h03m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class TextBar:
    """A one-line text progress display updated in place through an IPython display handle."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        leave: bool = True,
        initial: int = 0,
    ):
        from IPython.display import display

        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.leave = iterable, total, desc, leave
        self.n = self.initial = initial
        self.postfix: dict[str, Any] = {}
        self.start = self.last_shown = time.perf_counter()
        self.closed = False
        self.handle = display(self._bundle(self.text()), raw=True, display_id=True)

    @staticmethod
    def _bundle(text: str) -> dict[str, str]:
        """A display bundle holding only text: what every notebook viewer can show."""
        return {"text/plain": text}

    def _prefix(self) -> str:
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        return f"{self.desc}: {count}" if self.desc else count

    def _postfix(self) -> str:
        return "".join(f", {k}={v}" for k, v in self.postfix.items())

    def text(self) -> str:
        """The running line: `training: 12/48 [00:31<01:33, loss=1.234]`."""
        elapsed = time.perf_counter() - self.start
        done = self.n - self.initial
        if self.total is not None:
            left = clock(elapsed / done * (self.total - self.n)) if done > 0 else "?"
            timing = f"{clock(elapsed)}<{left}"
        else:
            timing = clock(elapsed)
        return f"{self._prefix()} [{timing}{self._postfix()}]"

    def summary(self) -> str:
        """The final line: `training: 48/48 in 2m05s, loss=0.412`."""
        return f"{self._prefix()} in {duration(time.perf_counter() - self.start)}{self._postfix()}"

    def refresh(self, force: bool = False) -> None:
        """Redraw, unless the last redraw was under REFRESH_SECONDS ago."""
        now = time.perf_counter()
        if force or now - self.last_shown >= REFRESH_SECONDS:
            self.handle.update(self._bundle(self.text()), raw=True)
            self.last_shown = now

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = {k: str(v) for k, v in values.items()}
        if refresh:
            self.refresh()

    def close(self) -> None:
        """Leave the summary line (leave=True) or an empty text (leave=False)."""
        if not self.closed:
            self.closed = True
            self.handle.update(self._bundle(self.summary() if self.leave else ""), raw=True)

    def __iter__(self) -> Iterator:
        try:
            for item in () if self.iterable is None else self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> TextBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bar(
    iterable: Iterable | None = None,
    total: int | None = None,
    desc: str = "",
    leave: bool = True,
    disable: bool = False,
    initial: int = 0,
) -> tqdm | TextBar:
    """A progress bar: `TextBar` inside a Jupyter kernel, plain tqdm on stderr elsewhere."""
    if disable or not in_jupyter_kernel():
        return tqdm(iterable, total=total, desc=desc, leave=leave, disable=disable, initial=initial)
    return TextBar(iterable, total=total, desc=desc, leave=leave, initial=initial)
