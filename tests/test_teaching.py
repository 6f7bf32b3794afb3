"""The instructor notes quote lesson times: they must be the times the benchmarks recorded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tutorial_lib.config import lesson_number

ROOT = Path(__file__).resolve().parent.parent
NOTES = ROOT / "docs" / "teaching.md"
RESULTS = ROOT / "benchmarks" / "results"
COLUMNS = {"full": 1, "quick": 2}  # the time table's columns after the lesson name


def time_table() -> dict[str, list[str]]:
    """Rows of the notes' time table, by lesson number ("00", "05b"), cells stripped."""
    rows = {}
    for line in NOTES.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"\|\s*(\d\d[a-z]?)\s", line):
            rows[match.group(1)] = [c.strip() for c in line.strip("|").split("|")]
    return rows


@pytest.mark.parametrize("profile", sorted(COLUMNS))
def test_lesson_times_match_the_benchmark_results(profile):
    lessons = json.loads((RESULTS / f"lessons-{profile}.json").read_text())["lessons"]
    rows = time_table()
    for name, result in lessons.items():
        seconds = round(result["lesson_seconds"])
        expected = f"{seconds} s ({seconds / 60:.1f} min)"
        row = rows.get(lesson_number(name))
        assert row, f"docs/teaching.md has no time row for lesson {lesson_number(name)}"
        assert row[COLUMNS[profile]] == expected, f"{name} ({profile}): notes say {row}"


PEAK_COLUMNS = {"full": 3, "quick": 4}  # the kernels' peak memory, after the two time columns


@pytest.mark.parametrize("profile", sorted(PEAK_COLUMNS))
def test_lesson_peak_memory_matches_the_benchmark_results(profile):
    lessons = json.loads((RESULTS / f"lessons-{profile}.json").read_text())["lessons"]
    rows = time_table()
    for name, result in lessons.items():
        peak = result.get("kernel_peak_rss_mib")  # MiB, as the key says
        expected = f"{peak / 1024:.1f} GiB" if peak else "not measured"
        row = rows[lesson_number(name)]
        assert row[PEAK_COLUMNS[profile]] == expected, f"{name} ({profile}): notes say {row}"


def test_the_binder_column_follows_the_committed_quick_peaks():
    from tutorial_lib.lesson_fit import binder_verdict

    rows = time_table()
    lessons = json.loads((RESULTS / "lessons-quick.json").read_text())["lessons"]
    for name in lessons:
        assert rows[lesson_number(name)][5] == binder_verdict(name, RESULTS), (
            f"{name}: notes say {rows[lesson_number(name)]}"
        )
