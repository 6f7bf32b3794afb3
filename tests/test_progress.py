"""tutorial_lib.progress: plain tqdm outside a kernel, one updated text line inside one."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from tqdm.std import tqdm

from tutorial_lib import progress


class FakeHandle:
    """Stands in for IPython's DisplayHandle: records every update."""

    def __init__(self, shown: list[str]):
        self.shown = shown

    def update(self, bundle: dict, raw: bool = False) -> None:
        self.shown.append(bundle["text/plain"])


@pytest.fixture
def shown(monkeypatch) -> list[str]:
    """What a TextBar displays, without a kernel: the first display, then every update."""
    import IPython.display

    texts: list[str] = []

    def display(bundle: dict, raw: bool = False, display_id: bool = False) -> FakeHandle:
        texts.append(bundle["text/plain"])
        return FakeHandle(texts)

    monkeypatch.setattr(IPython.display, "display", display)
    return texts


def test_outside_a_kernel_it_is_plain_tqdm_and_counts(capsys):
    assert not progress.in_jupyter_kernel()
    with progress.bar(total=10, initial=2, desc="training") as b:
        assert isinstance(b, tqdm)
        b.update(3)
        b.set_postfix(loss="1.234")
        assert b.n == 5
    assert list(progress.bar(range(7), desc="x")) == list(range(7))
    assert "training" in capsys.readouterr().err  # stderr text, as before
    quiet = progress.bar(range(3), desc="hidden", disable=True)
    assert list(quiet) == [0, 1, 2]
    assert "hidden" not in capsys.readouterr().err


def test_text_bar_shows_counts_postfix_and_a_summary(shown, monkeypatch):
    monkeypatch.setattr(progress, "REFRESH_SECONDS", 0.0)
    b = progress.TextBar(total=48, initial=10, desc="training")
    b.update(2)
    b.set_postfix(loss="1.234")
    assert re.fullmatch(r"training: 12/48 \[00:00<00:\d\d, loss=1.234\]", shown[-1])
    b.update(36)
    b.close()
    b.close()  # a second close changes nothing
    assert re.fullmatch(r"training: 48/48 in \d+\.\ds, loss=1.234", shown[-1])
    assert shown[0].startswith("training: 10/48 [00:00<?")  # the first line, replaced later


def test_text_bar_rate_limits_and_leave_false_ends_empty(shown):
    items = list(progress.TextBar(range(100), desc="probe", leave=False))
    assert items == list(range(100))
    assert len(shown) == 2  # the first display and the final (empty) update: no redraw per item
    assert shown[-1] == ""


def test_duration_reads_short():
    assert progress.duration(8.44) == "8.4s"
    assert progress.duration(125) == "2m05s"
    assert progress.duration(3780) == "1h03m"


NOTEBOOK_CELLS = [
    "import time\nfrom tutorial_lib.progress import bar\n"
    "for _ in bar(range(30), desc='kept'):\n    time.sleep(0.03)",
    "for _ in bar(range(30), desc='gone', leave=False):\n    time.sleep(0.03)",
]


def output_texts(cell: dict) -> list[str]:
    """Every text a cell's stored outputs hold: streams, text/plain, tracebacks."""
    texts = []
    for out in cell.get("outputs", []):
        texts.append(out.get("text", ""))
        texts.append(out.get("data", {}).get("text/plain", ""))
        texts.extend(out.get("traceback", []))
    return ["".join(t) if isinstance(t, list) else t for t in texts]


def test_a_saved_notebook_keeps_only_the_final_line(tmp_path: Path):
    """Executed by nbclient in a fresh kernel, as the lessons are: display updates replace the
    stored outputs, so no 0 % line is left and leave=False leaves no bar text."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in NOTEBOOK_CELLS])
    start = time.perf_counter()
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    nbformat.write(nb, tmp_path / "bars.ipynb")
    kept, gone = (output_texts(c) for c in nbformat.read(tmp_path / "bars.ipynb", 4).cells)
    everything = kept + gone
    assert not [t for t in everything if re.search(r"(?<!\d)0%|(?<!\d)0/30", t)], everything
    assert any(re.fullmatch(r"kept: 30/30 in \d+\.\ds", t) for t in kept), kept
    assert not any("gone" in t for t in gone), gone
    assert time.perf_counter() - start < 120
