"""The committed lesson notebooks, as a reader sees them on GitHub: clean, complete, full profile.

Reads the .ipynb files only (nothing is executed), so it takes a second. A later lesson joins
the checks as soon as its notebook is committed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
MAX_BYTES = 3 * 2**20  # a lesson that grows past this is storing something it should not
PROGRESS_LINE = re.compile(r"\b0%\||\| 0/\d+ \[")  # tqdm's first frame, left by a widget
LOCAL_PATHS = ("/root/", "/home/", "/tmp/", "/work/", "/Users/", "C:\\")
FULL_PROFILE = re.compile(r"Profile\(name='full'|\bprofile full\b")  # how the lessons show it
PROFILE_CELLS = 5  # the profile is printed in the knobs cell, near the top


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def code_cells(nb: dict) -> list[dict]:
    """Code cells with code in them (an empty cell is never executed)."""
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def joined(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value


def output_texts(cell: dict) -> list[str]:
    """The text a reader sees of each output: streams, text/* forms, tracebacks (no images)."""
    texts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            texts.append(joined(out["text"]))
        texts += [joined(v) for k, v in out.get("data", {}).items() if k.startswith("text/")]
        texts += out.get("traceback", [])
    return texts


def looks_like_styler(html: str) -> bool:
    """A pandas Styler's HTML: GitHub strips its <style>, so a text/plain form must stand by."""
    return '<style type="text/css">' in html and '<table id="T_' in html


# Lessons committed from code older than the progress module, until they are re-executed.
# Strict: the test fails as soon as such a lesson is clean, so this list cannot go stale.
PENDING_RE_EXECUTION: set[str] = set()


@pytest.fixture(params=NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def notebook(request) -> tuple[Path, dict]:
    return request.param, load(request.param)


def test_there_are_lessons():
    assert NOTEBOOKS, "no notebooks/[0-9][0-9]*_*.ipynb found"


def test_no_error_outputs(notebook):
    path, nb = notebook
    errors = [
        f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
        for i, c in enumerate(nb["cells"])
        for out in c.get("outputs", [])
        if out["output_type"] == "error"
    ]
    assert not errors, f"{path.name} was saved with errors: {errors}"


def test_executed_top_to_bottom_once(notebook):
    path, nb = notebook
    counts = [c["execution_count"] for c in code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: execution counts {counts}"


def test_no_leftover_progress_lines(notebook, request):
    path, nb = notebook
    if path.name in PENDING_RE_EXECUTION:
        reason = "committed before the progress module; needs a full re-execution"
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    left = [
        (i, text.strip()[:80])
        for i, c in enumerate(nb["cells"])
        for text in output_texts(c)
        if PROGRESS_LINE.search(text)
    ]
    assert not left, f"{path.name} keeps {len(left)} progress-bar first frames, e.g. {left[:3]}"


def test_no_local_paths(notebook):
    path, nb = notebook
    found = [
        (i, marker)
        for i, c in enumerate(nb["cells"])
        for text in [joined(c["source"]), *output_texts(c)]
        for marker in LOCAL_PATHS
        if marker in text
    ]
    assert not found, f"{path.name} shows local paths (cell, path): {found}"


def test_styled_tables_have_a_text_form(notebook):
    path, nb = notebook
    bare = [
        i
        for i, c in enumerate(nb["cells"])
        for out in c.get("outputs", [])
        if looks_like_styler(joined(out.get("data", {}).get("text/html", "")))
        and "text/plain" not in out.get("data", {})
    ]
    assert not bare, f"{path.name}: Styler tables without text/plain in cells {bare}"


def test_file_size(notebook):
    path, _ = notebook
    assert path.stat().st_size < MAX_BYTES, f"{path.name}: {path.stat().st_size:,} bytes"


def test_executed_in_the_full_profile(notebook):
    path, nb = notebook
    texts = [t for c in code_cells(nb)[:PROFILE_CELLS] for t in output_texts(c)]
    assert any(FULL_PROFILE.search(t) for t in texts), (
        f"{path.name}: none of the first {PROFILE_CELLS} code cells shows the full profile"
    )
