"""The main text of each lesson stays at most 2,000 words (issue 24), by `prose.main_text_words`:
everything a learner meets before the appendix, the exercises included (the markdown up to the
first Appendix or Solutions heading; the worked solutions close each lesson, after its appendix),
without code, tables, `<details>` blocks, HTML comments and link targets. Reads the notebooks
only, nothing is executed.

`word_counts.json` records each lesson's count and the check is a ratchet: a lesson fails when it
rises above both its record and 2,000 words.
A lesson over 2,000 words whose count falls must lower its record, so it cannot rise back. Regenerate
the record with

    python -m tutorial_lib.prose --words notebooks/[0-9][0-9]*_*.ipynb > tests/word_counts.json
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tutorial_lib import prose

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
COUNTS = Path(__file__).with_name("word_counts.json")
REGENERATE = (
    "python -m tutorial_lib.prose --words notebooks/[0-9][0-9]*_*.ipynb > tests/word_counts.json"
)


def notebook(*cells: str) -> nbformat.NotebookNode:
    """Markdown cells from strings; a string starting with "code:" is a code cell."""
    built = [
        new_code_cell(c.removeprefix("code:")) if c.startswith("code:") else new_markdown_cell(c)
        for c in cells
    ]
    return new_notebook(cells=built)


@pytest.mark.parametrize(
    "markdown, expected",
    [
        ("Fine-tuning is further training.", 4),  # hyphenated words are one word
        ("# 00 · Setup and baseline", 4),  # headings count; "·" is no word, "00" is
        ("It took 647 s (10.8 min), ±0.025.", 7),
        ("A list:\n- one;\n- two — and three.", 6),
        ("See [the results file](https://example.org/a/b/c.json) now.", 5),  # the link's text
        ("[![Open In Colab](https://colab.example/badge.svg)](https://colab.example/nb)", 0),
        ("Call `tutorial_lib.memory.estimate(model, setup)` first.", 2),  # inline code
        ("Run\n```python\nx = train(model, steps=28)\nprint(x)\n```\nthen read.", 3),
        ("Kept <!-- a note to the editor, many words long --> short.", 2),
        ("Words.\n<details><summary>Solution</summary>\n\nThe answer is long.\n</details>", 1),
        ("A table:\n| method | recall |\n|---|---|\n| lora | 0.64 |\nbelow it.", 4),
        ('An <img src="a.png" width="600"> image and <b>bold</b> text.', 5),
        ("Plain https://example.org/runs/647 URL.", 2),
    ],
)
def test_what_a_word_count_reads(markdown, expected):
    assert prose.words(markdown) == expected


def test_the_main_text_is_markdown_up_to_the_first_end_heading():
    nb = notebook(
        "# Title here",
        "code:print('many words in code do not count at all')",
        "## Summary\nTwo points.\n\n## Exercises\n1. Many words in an exercise.",
        "## Appendix\nA long appendix.",
        "## Solutions",
        "<details><summary>Solution to exercise 1: words</summary>\n\nAn answer.\n</details>",
    )
    exercises = "## Summary\nTwo points.\n\n## Exercises\n1. Many words in an exercise."
    assert prose.main_text(nb) == ["# Title here", exercises, ""]
    assert prose.main_text_words(nb) == 2 + 10  # the exercises count


def test_exercises_count_and_the_solutions_and_appendix_do_not():
    """The exercises are main text; the solutions after them, or after the appendix, are not."""
    body = "# Lesson\nOne two three.\n\n## Exercises\n1. Four five six seven."
    solution = "<details><summary>Solution to exercise 1: eight</summary>\n\nNine.\n</details>"
    appendix = "## Appendix: tables\nTen eleven twelve."
    assert prose.main_text_words(notebook(body)) == 4 + 6
    assert prose.main_text_words(notebook(body, appendix, "## Solutions", solution)) == 4 + 6
    assert prose.main_text_words(notebook(body, "## Solutions\nThirteen.", solution)) == 4 + 6
    # a solution's text outside its <details> still counts until a Solutions heading ends it
    loose = "Solution to exercise 1: the answer is nine."
    assert prose.main_text_words(notebook(body, loose)) == 4 + 6 + 8
    assert prose.main_text_words(notebook(body, "## Solutions", loose)) == 4 + 6


@pytest.mark.parametrize("heading", ["## Appendix", "### Appendix: every run", "# Solutions"])
def test_each_end_heading_ends_the_main_text(heading):
    nb = notebook("One two three.", f"{heading}\nFour five.", "Six seven.")
    assert prose.main_text_words(nb) == 3


def test_an_end_word_that_is_no_heading_or_sits_in_code_does_not_end_it():
    nb = notebook(
        "The solutions below and the appendix are not counted.",
        "```markdown\n## Appendix\n```\nStill main text.",
        "## Appendix",
        "Not main text.",
    )
    assert prose.main_text_words(nb) == 9 + 3


def test_a_lesson_without_an_end_heading_counts_every_markdown_cell():
    assert prose.main_text_words(notebook("One two.", "code:x = 1", "Three.")) == 3


def test_word_counts_and_the_command_line(tmp_path, capsys):
    path = tmp_path / "05_x.ipynb"
    nbformat.write(notebook("# Five words in a title", "## Appendix\nmore"), path)
    assert prose.word_counts([path]) == {"05_x": 5}
    assert prose.main(["--words", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"05_x": 5}


# --- the lessons: a ratchet on today's counts ----------------------------------------------------


def recorded() -> dict[str, int]:
    return json.loads(COUNTS.read_text(encoding="utf-8"))


def test_the_record_names_every_lesson_and_only_lessons():
    assert set(recorded()) == {p.stem for p in LESSONS}, f"regenerate the record: {REGENERATE}"


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_a_lesson_stays_within_its_words(path):
    count = prose.main_text_words(path)
    record = recorded().get(path.stem, prose.WORD_LIMIT)
    allowed = max(record, prose.WORD_LIMIT)
    assert count <= allowed, (
        f"{path.name}: {count:,} words of main text, more than {allowed:,} (its record "
        f"{record:,}, the limit {prose.WORD_LIMIT:,}). Say it in fewer words, or move tables and "
        "details to the appendix (after an '## Appendix' heading)"
    )
    if count < record:
        message = f"{path.name}: {count:,} words, fewer than the {record:,} recorded: {REGENERATE}"
        if record > prose.WORD_LIMIT:  # the record is this lesson's ceiling: keep it tight
            pytest.fail(message)
        warnings.warn(message, stacklevel=1)
