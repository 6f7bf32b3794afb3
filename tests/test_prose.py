"""Every number in a lesson's prose is backed: by an output above it, a results file it names, or
a citation (tutorial_lib/prose.py). Reads the notebooks only, nothing is executed.

The lessons were written before the check, so `prose_counts.json` records how many unbacked
numbers each lesson has today, and the check is a ratchet: a lesson fails when its count rises
(a new unbacked number) and when it falls (lower the record, so it cannot rise back). A lesson not
in the record must have none. After fixing prose, regenerate the record with

    python -m tutorial_lib.prose --counts notebooks/[0-9][0-9]*_*.ipynb > tests/prose_counts.json
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from tutorial_lib import prose

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
COUNTS = Path(__file__).with_name("prose_counts.json")


def notebook(*cells: str | dict) -> nbformat.NotebookNode:
    """Markdown from strings; a code cell from {"out": text} (a stream) or {"html": ...}."""
    built = []
    for cell in cells:
        if isinstance(cell, str):
            built.append(new_markdown_cell(cell))
        elif "html" in cell:
            data = {"text/html": cell["html"]}
            built.append(new_code_cell("x", outputs=[new_output("display_data", data=data)]))
        else:
            built.append(new_code_cell("x", outputs=[new_output("stream", text=cell["out"])]))
    return new_notebook(cells=built)


def texts(nb: nbformat.NotebookNode, root: Path | None = None) -> list[str]:
    return [u.text for u in prose.unbacked(nb, root)]


def test_a_printed_number_backs_the_prose_below_it():
    nb = notebook({"out": "accuracy 0.4286\n"}, "The run reaches 0.4286.")
    assert texts(nb) == []


def test_an_unbacked_number_is_reported_with_its_cell_and_context():
    nb = notebook({"out": "accuracy 0.4286\n"}, "Intro.", "The run reaches 0.4375 on the domain.")
    (found,) = prose.unbacked(nb)
    assert (found.cell, found.text) == (2, "0.4375")
    assert "reaches 0.4375 on the" in found.context


def test_an_output_below_the_cell_does_not_back_it():
    nb = notebook("The run will reach 0.4286.", {"out": "accuracy 0.4286\n"})
    assert texts(nb) == ["0.4286"]


def test_html_and_execute_result_outputs_count_tags_removed():
    html = "<style>td {width: 64.5em}</style><table><td>0.517</td><td>1,234</td></table>"
    nb = notebook({"html": html}, "It was 0.517 and 1234, not 64.5.")
    cell = new_code_cell("x", outputs=[new_output("execute_result", data={"text/plain": "3.211"})])
    nb.cells.append(cell)
    nb.cells.append(new_markdown_cell("Then 3.211."))
    assert texts(nb) == ["64.5"]  # a style sheet is not an output a reader sees


@pytest.mark.parametrize(
    "printed, prose_says",
    [
        ("0.928", "0.93"),  # rounding to the digits shown
        ("5.79", "5.8"),
        ("0.125", "0.12"),  # a half rounds either way: Python's format rounds it to even
        ("0.125", "0.13"),
        ("1580", "1,580"),  # thousands separators
        ("1,580", "1580"),
        ("0.12", "12%"),  # percent against fraction, either way
        ("0.12", "12 %"),
        ("12", "12%"),
        ("12.0%", "0.12"),
        ("-0.04", "−0.04"),  # signs: a unicode minus, a magnitude
        ("-0.04", "fell by 0.04"),
        ("0.025", "±0.025"),
        ("0.0001", "1e-4"),  # scientific notation, either side
        ("1e-04", "0.0001"),
        ("3e-4", "3e−4"),
        ("628.4", "about 630"),  # an approximate integer rounds to its trailing zeros
        ("29.0", "29"),
        ("3.04", "3×"),
        ("0.0817 0.1290", "0.08–0.13"),  # a range is two numbers
        ("0.15 0.19", "15 to 19 %"),  # a range sharing its percent sign
        ("stderr 0.035", "±3.5 points"),  # points are percentage points
        ("0.017 0.023", "1.7 ± 2.3 points"),  # sharing the unit
    ],
)
def test_normalisation_backs(printed, prose_says):
    assert texts(notebook({"out": printed}, f"We measured {prose_says} here.")) == []


@pytest.mark.parametrize(
    "printed, prose_says, reported",
    [
        ("0.938", "0.93", "0.93"),  # rounds to 0.94: stale
        ("0.928", "0.928 and 0.929", "0.929"),
        ("0.12", "0.012", "0.012"),  # a fraction is not a percent unless marked
        ("1.4", "1.4 GiB and 1434 MiB", "1434"),  # units are never converted
        ("628.4", "630 MB", "630"),  # an exact integer must round at the units
        ("15800", "1,580", "1,580"),  # separators do not change the value
        ("0.47", "47", "47"),  # a bare integer is not a percent
        ("2.2", "22", "22"),
    ],
)
def test_normalisation_does_not_back(printed, prose_says, reported):
    assert texts(notebook({"out": printed}, f"We measured {prose_says} here.")) == [reported]


def test_a_named_results_file_backs_its_cell_only(tmp_path):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "timing.json").write_text(json.dumps({"lesson": {"seconds": 647.31, "peak": 3.9}}))
    named = "It took 647 s (`benchmarks/results/timing.json`) and 3.9 GiB."
    nb = notebook(named, "It took 647 s.", "It took 647 s (see `benchmarks/results/missing.json`).")
    assert [(u.cell, u.text) for u in prose.unbacked(nb, tmp_path)] == [(1, "647"), (2, "647")]
    assert texts(notebook(named)) == ["647", "3.9"]  # no root: no file can back


def test_a_notebook_path_finds_its_repository_root(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "r.csv").write_text("method,acc\nlora,0.4375\n")
    (tmp_path / "notebooks").mkdir()
    path = tmp_path / "notebooks" / "00_x.ipynb"
    nbformat.write(notebook("Reaches 0.4375 (data/r.csv); 0.5625 unbacked."), path)
    assert [u.text for u in prose.unbacked(path)] == ["0.5625"]


@pytest.mark.parametrize(
    "sentence",
    [
        "Hu et al. adapted GPT-3 with 12,288-wide layers and saved 99.99 %.",
        "LoRA cuts memory by 66.7 % (Hu et al., 2021).",
        "Quantiles of a normal make 4.127 bits (Dettmers and Zettlemoyer, 2023).",
        "Biderman et al. (2024) report 0.48 against 0.61.",
        "Aghajanyan (2020) found an intrinsic dimension of 200.",
    ],
)
def test_a_citation_exempts_its_sentence_only(sentence):
    assert texts(notebook(sentence)) == []
    assert texts(notebook(f"{sentence} Here we measured 0.4375.")) == ["0.4375"]


@pytest.mark.parametrize(
    "rule, markdown",
    [
        ("small integer", "Train 8 chats for 14 steps on 2 cores, 20 at most; 0 errors."),
        ("lesson numbers", "As lesson 05 showed, and lessons 03–07 and 21 and 22 agree."),
        ("section and exercise", "See section 3.2, §4 and exercise 31; step 28 is the last."),
        ("identifiers", "SmolLM2-135M, Llama-3.2-3B, GPT-3, Q4_1, fp16, bf16 and NF4 in 8 bits."),
        ("years", "The method of 2021 was improved in 2024."),
        ("ordinals", "At the 28th and 110th steps."),
        ("inline code", "Call `suite.subset(120, 16)` with `lr=3e-4`."),
        ("fenced code", "Run\n```bash\npython run.py --steps 110 --lr 0.0003\n```\n"),
        ("links and URLs", "See [the run](https://example.org/runs/647?x=0.93) and <www.a.b/123>."),
        ("HTML attributes", '<img src="a.png" width="600" height="415">'),
        ("footnote ids", "As measured[^41]."),
        ("paths and files", "In benchmarks/results/lessons-full.json and 05_lora.ipynb."),
        ("versions", "With transformers>=4.56, peft==0.17.1 and Python 3.10."),
        ("quotations", 'A reply that says "1,580 grams" or “$89” states the value.'),
        (
            "named sizes",
            "A 70B model, 7B–65B models, a 135 M model, a 135M-parameter one, 175B, a 48 GB GPU.",
        ),
        ("a product's factor", "A batch of 8 × 128 tokens."),  # the 128 is checked, see below
    ],
)
def test_each_exemption_rule(rule, markdown):
    found = texts(notebook(markdown))
    assert found == (["128"] if "×" in markdown else []), rule


@pytest.mark.parametrize(
    "markdown, reported",
    [
        ("It gained 21 points.", ["21 points"]),  # just above the small integers
        ("It gained 3×.", ["3"]),  # a ratio is a measurement
        ("It costs 5 %.", ["5 %"]),  # so is a percent
        ("About ±8 points.", ["8 points"]),  # and an error
        ("The model of 2048 tokens.", ["2048"]),  # outside the years
        ("28 steps took 41 s.", ["28", "41"]),  # a count of steps is not a step number
        ("A 135M model with 1.7M trained.", ["1.7"]),  # a count of parameters is measured
        ("It trains 155M parameters.", ["155"]),  # a size that is not a model's name
        ("It needs 48 GB on the GPU.", ["48"]),
        ("Lesson 05 took 797 s.", ["797"]),
        ("When 0.05 < p and p > 0.93.", ["0.05", "0.93"]),  # a comparison is not an HTML tag
        ('A "quote" then 0.93 and "another".', ["0.93"]),  # prose between two quotations
    ],
)
def test_the_exemptions_stop_where_they_should(markdown, reported):
    assert texts(notebook(markdown)) == reported


def test_counts_and_the_command_line(tmp_path, capsys):
    path = tmp_path / "05_x.ipynb"
    nbformat.write(notebook({"out": "0.5"}, "It was 0.5, then 0.75 and 0.8."), path)
    assert prose.counts([path]) == {"05_x": 2}
    assert prose.main(["--counts", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"05_x": 2}
    prose.main([str(path)])
    assert "05_x cell 1: '0.75'" in capsys.readouterr().out


# --- the lessons: a ratchet on today's unbacked numbers ---------------------------------------


def recorded() -> dict[str, int]:
    return json.loads(COUNTS.read_text(encoding="utf-8"))


def test_the_record_names_only_lessons_that_exist():
    assert set(recorded()) <= {p.stem for p in LESSONS}


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_a_lesson_has_no_more_unbacked_numbers_than_recorded(path):
    found = prose.unbacked(path)
    allowed = recorded().get(path.stem, 0)
    listing = "\n".join(f"  cell {u.cell}: {u.text!r} in “{u.context}”" for u in found)
    assert len(found) <= allowed, (
        f"{path.name}: {len(found)} unbacked numbers, {allowed} recorded. Back each new one with "
        "an output above it, a results file the cell names, or a citation (notebooks/README.md):\n"
        + listing
    )
    assert len(found) == allowed, (
        f"{path.name}: {len(found)} unbacked numbers, fewer than the {allowed} recorded. Lower the "
        "record so it cannot rise again: python -m tutorial_lib.prose --counts "
        "notebooks/[0-9][0-9]*_*.ipynb > tests/prose_counts.json"
    )
