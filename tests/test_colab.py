"""Colab: each lesson opens with a badge to its own path and one identical, Colab-only setup cell.

The cells are generated from pyproject.toml's repository address (tutorial_lib/delivery.py) and
put into a notebook by `python -m tutorial_lib.delivery colab NOTEBOOK` before it is re-executed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tutorial_lib import delivery

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
BADGE_LINK = re.compile(r"\]\((https://colab\.research\.google\.com/github/[^)]+)\)")

# Lessons committed before the Colab cells existed. Strict: a lesson that gains the cells fails
# here until its name is removed, so this list cannot go stale.
PENDING_COLAB_CELLS: set[str] = set()


def _params():
    for path in NOTEBOOKS:
        marks = []
        if path.name in PENDING_COLAB_CELLS:
            reason = f"{path.name} not yet re-executed with the Colab cells"
            marks = [pytest.mark.xfail(strict=True, reason=reason)]
        yield pytest.param(path, marks=marks, id=path.name)


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.mark.parametrize("path", _params())
def test_lesson_opens_with_its_badge_and_the_setup_cell(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    assert _source(cells[0]).startswith("# "), "the title comes first"
    badge, setup = cells[1], cells[2]
    links = BADGE_LINK.findall(_source(badge))
    assert links == [f"{delivery.colab_url(path)}"], f"badge of {path.name} links to {links}"
    assert links[0].endswith(f"/blob/{delivery.BRANCH}/notebooks/{path.name}")
    assert _source(badge) == delivery.colab_badge(path)
    assert setup["cell_type"] == "code" and _source(setup) == delivery.colab_setup_source()
    assert not setup.get("outputs"), "off Colab the setup cell prints nothing"


def test_every_address_comes_from_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    repo = pyproject["project"]["urls"]["Repository"]
    assert delivery.repository_url() == repo
    owner_name = repo.removeprefix("https://github.com/")
    nb = ROOT / "notebooks" / "00_setup_and_baseline.ipynb"
    assert delivery.colab_url(nb) == (
        f"https://colab.research.google.com/github/{owner_name}/blob/main/notebooks/{nb.name}"
    )
    assert f'REPO = "{repo}"' in delivery.colab_setup_source()
    assert delivery.binder_url(nb).endswith(f"{owner_name}/main?labpath=notebooks%2F{nb.name}")
    with pytest.raises(ValueError, match="not a https://github.com/OWNER/NAME"):
        delivery._github_repo("https://gitlab.com/a/b")


def _run_setup_cell(tmp_path: Path, on_colab: bool) -> subprocess.CompletedProcess:
    """Run the setup cell in a fresh interpreter, subprocess.run recorded instead of run."""
    prelude = f"""
import json, subprocess, sys, types
calls = []
def fake_run(cmd, **kwargs):
    calls.append(list(cmd))
    if "-c" in cmd:  # keep the constraints pip would have been given
        calls.append(open(cmd[cmd.index("-c") + 1]).read())
    return subprocess.CompletedProcess(cmd, 0, "", "")
subprocess.run = fake_run
if {on_colab}:
    sys.modules["google.colab"] = types.ModuleType("google.colab")
"""
    epilogue = """
import os
if calls:
    print(json.dumps({"calls": calls, "data": os.environ.get("TUTORIAL_LIB_DATA")}))
"""
    script = tmp_path / "cell.py"
    script.write_text(prelude + delivery.colab_setup_source() + epilogue)
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True
    )


def test_setup_cell_does_nothing_off_colab(tmp_path):
    done = _run_setup_cell(tmp_path, on_colab=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # no commands, no output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.py"]  # and no files


def test_setup_cell_on_colab_clones_then_installs_with_torch_and_numpy_pinned(tmp_path):
    done = _run_setup_cell(tmp_path, on_colab=True)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    clone, pip, pins = record["calls"]
    repo = delivery.repository_url()
    assert clone == [
        "git",
        "clone",
        "--quiet",
        "--depth",
        "1",
        repo,
        str(tmp_path / "tutorial-lib"),
    ]
    assert pip[1:4] == ["-m", "pip", "install"] and pip[-1] == str(tmp_path / "tutorial-lib")
    assert "--no-deps" not in pip and "-U" not in pip and "--upgrade" not in pip
    assert pins == f"torch=={version('torch')}\nnumpy=={version('numpy')}\n"
    assert record["data"] == str(tmp_path / "tutorial-lib" / "data")


def test_pip_resolves_the_package_beside_the_pinned_torch_and_numpy(tmp_path):
    """The setup cell's install, asked of pip here (dry run): it changes nothing but the package."""
    pins = tmp_path / "pins.txt"
    pins.write_text(f"torch=={version('torch')}\nnumpy=={version('numpy')}\n")
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-build-isolation"]
    cmd += ["-c", str(pins), "--report", str(report), str(ROOT)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    installs = [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]]
    assert installs == [delivery.DISTRIBUTION]  # torch and numpy stay as they are


def test_apply_inserts_after_the_title_and_refreshes_in_place(tmp_path):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    path = nb_dir / "09_example.ipynb"
    lesson = json.loads((ROOT / "notebooks" / "00_setup_and_baseline.ipynb").read_text())
    colab = {delivery.BADGE_ID, delivery.SETUP_ID}
    original = [c for c in lesson["cells"] if c.get("id") not in colab]  # as before the cells
    path.write_text(json.dumps({**lesson, "cells": original}))
    assert delivery.apply_colab_cells(path, root=tmp_path)
    cells = json.loads(path.read_text())["cells"]
    assert cells[0] == original[0] and cells[3:] == original[1:]  # nothing else moved or changed
    assert [c["id"] for c in cells[1:3]] == [delivery.BADGE_ID, delivery.SETUP_ID]
    assert f"/blob/main/notebooks/{path.name})" in _source(cells[1])
    assert _source(cells[2]) == delivery.colab_setup_source()
    assert not delivery.apply_colab_cells(path, root=tmp_path)  # already current: untouched

    cells[2]["source"] = ["# an old setup cell\n"]
    cells[2]["execution_count"] = 2
    cells.insert(5, cells.pop(1))  # a stale badge, moved down
    path.write_text(json.dumps({**json.loads(path.read_text()), "cells": cells}))
    assert delivery.apply_colab_cells(path, root=tmp_path)
    refreshed = json.loads(path.read_text())["cells"]
    assert len(refreshed) == len(original) + 2
    assert [c["id"] for c in refreshed[1:3]] == [delivery.BADGE_ID, delivery.SETUP_ID]
    assert _source(refreshed[2]) == delivery.colab_setup_source()
    assert refreshed[2]["execution_count"] == 2  # the lead re-executes; counts stay consecutive


def test_setup_cell_passes_the_house_lint(tmp_path):
    if shutil.which("ruff") is None:
        pytest.skip("ruff is in the dev extra")
    cell = tmp_path / "cell.py"
    cell.write_text(delivery.colab_setup_source() + "\n")  # a file ends in a newline; a cell not
    for args in (["check"], ["format", "--check"]):
        done = subprocess.run(
            ["ruff", *args, "--config", str(ROOT / "pyproject.toml"), str(cell)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_lesson_table_is_the_generated_one():
    """Every lesson has its Colab and Binder links and its measured time and memory, read from
    benchmarks/results: refresh with `python -m tutorial_lib.delivery table`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(delivery.LESSON_TABLE_START, 1)[1].split(delivery.LESSON_TABLE_END)[0]
    assert block.strip() == delivery.lessons_table(), "run: python -m tutorial_lib.delivery table"
    for path in NOTEBOOKS:
        assert delivery.colab_url(path) in block and delivery.binder_url(path) in block


def test_refreshing_the_table_rewrites_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Title\n\n{delivery.LESSON_TABLE_START}\nstale\n{delivery.LESSON_TABLE_END}\n\nrest\n"
    )
    assert delivery.refresh_readme_table(readme, ROOT)
    text = readme.read_text()
    assert text.startswith("# Title\n") and text.endswith("\n\nrest\n") and "stale" not in text
    assert not delivery.refresh_readme_table(readme, ROOT)  # already fresh
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="lacks the lesson-table markers"):
        delivery.refresh_readme_table(readme, ROOT)
