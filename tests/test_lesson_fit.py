"""Each lesson's first cell: will it fit in this machine's memory, and what fits if not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from tutorial_lib import lesson_fit, memory, provenance
from tutorial_lib.config import PROFILES
from tutorial_lib.lesson_fit import (
    LessonFit,
    LessonWontFitError,
    check_lesson,
    lesson_peaks,
    small_routes,
)
from tutorial_lib.memory import machine

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
GiB = 2**30
CHECK_CELL = 'from tutorial_lib.lesson_fit import check_lesson\n\ncheck_lesson("{stem}")'


def fit(free_gib: float, held_gib: float = 0.5, profile: str = "full", routes=()) -> LessonFit:
    return LessonFit(
        lesson="05_lora",
        profile=profile,
        device="cpu",
        free=int(free_gib * GiB),
        held=int(held_gib * GiB),
        source="test",
        peaks={"full": int(4.5 * GiB), "quick": int(1.5 * GiB)},
        routes=list(routes),
    )


ROUTE = {"command": "tutorial-lib train --method lora", "steps": 8, "peak_rss_mib": 1400}


def test_a_lesson_fits_when_its_peak_less_what_is_held_fits_in_nine_tenths_of_the_free():
    assert fit(free_gib=4.5).fits()  # 4.0 GiB more needed, 4.05 allowed
    assert not fit(free_gib=4.4).fits()
    assert fit(free_gib=1.2).fits("quick") and not fit(free_gib=1.0).fits("quick")
    assert fit(free_gib=1.0).fits("none measured") is None


def test_what_does_not_fit_names_the_smaller_profile_and_the_routes_that_fit():
    text = fit(free_gib=1.7, routes=[ROUTE, {**ROUTE, "peak_rss_mib": 1800}]).report()
    assert "will NOT fit" in text
    assert "%env TUTORIAL_PROFILE=quick" in text  # 1.5 - 0.5 fits in 0.9 x 1.7
    assert "tutorial-lib train --method lora" in text and "1.4 GiB" in text
    assert "1.8 GiB" not in text  # that route does not fit 0.9 x 1.7 GiB
    assert "%env" not in fit(free_gib=0.9).report()  # the quick profile does not fit either


def test_a_lesson_that_fits_says_by_how_much():
    text = fit(free_gib=10).report()
    assert "It fits, with about 6.0 GiB to spare" in text and "NOT" not in text


def test_check_lesson_stops_run_all_under_a_declared_limit(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, "1000")
    with pytest.raises(LessonWontFitError, match="TUTORIAL_MEMORY_LIMIT_MB=1000") as err:
        check_lesson("02_catastrophic_forgetting", profile="full", device=torch.device("cpu"))
    assert isinstance(err.value, memory.WontFitError)  # the training preflight's error, too
    monkeypatch.setenv(memory.LIMIT_ENV, str(10**7))
    check_lesson("02_catastrophic_forgetting", profile="full", device=torch.device("cpu"))


def test_the_container_limit_is_read_and_named(monkeypatch, tmp_path):
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(f"{2 * GiB}\n")
    usage.write_text(f"{int(1.5 * GiB)}\n")
    monkeypatch.setattr(machine, "CGROUP_FILES", ((str(limit), str(usage)),))
    monkeypatch.delenv(memory.LIMIT_ENV, raising=False)
    got = lesson_fit.lesson_fit("01_full_finetuning", "quick", torch.device("cpu"))  # 3.5 GiB
    assert got.source == "the container's memory limit"
    assert got.free <= GiB // 2 and got.fits() is False


def test_on_a_gpu_the_report_says_which_profile_suits_it():
    gpu = LessonFit(
        "05_lora",
        "full",
        "cuda",
        free=3 * GiB,
        held=0,
        source="free memory of a test GPU",
        peaks={"full": int(4.5 * GiB), "quick": int(1.5 * GiB)},
    )
    assert "the quick profile suits it" in gpu.report()
    assert "the full profile suits it" in LessonFit(**{**gpu.__dict__, "free": 8 * GiB}).report()


def test_every_lesson_has_a_committed_peak_in_both_profiles():
    for nb in NOTEBOOKS:
        assert set(lesson_peaks(nb.stem)) == set(PROFILES), nb.stem


def test_committed_routes_fit_a_two_gigabyte_session_and_parse():
    from tutorial_lib.cli import build_parser

    routes = small_routes()
    assert routes, "benchmarks/results/small-memory.json has no routes"
    for route in routes:
        args = build_parser().parse_args(route["command"].split()[1:])
        assert (args.batch_size, args.eval_batch_size) == (
            route["batch_size"],
            route["eval_batch_size"],
        )
    smallest = min(r["peak_rss_mib"] for r in routes)
    assert smallest * 2**20 <= 0.9 * 2 * 10**9, "no route fits a 2 GB Binder session"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_check_is_each_lessons_first_cell_after_the_colab_setup(nb):
    code = [c for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code"]
    assert code[0].get("id") == "colab-setup"
    assert code[1].source == CHECK_CELL.format(stem=nb.stem)


def test_a_lesson_under_a_small_limit_stops_at_its_first_cell_and_runs_nothing_else(tmp_path):
    """Lesson 01 (quick peak 3.5 GiB) in a real kernel, quick profile, 1.9 GB declared: stopped
    with the routes (lesson 00 now fits such a session)."""
    nb = nbformat.read(NOTEBOOKS[1], as_version=4)
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "from nbclient.exceptions import CellExecutionError\n"
        f"nb = nbformat.read({str(NOTEBOOKS[1])!r}, as_version=4)\n"
        "for cell in nb.cells:\n"
        "    if cell.cell_type == 'code':\n"
        "        cell.execution_count, cell.outputs = None, []\n"
        "try:\n"
        "    NotebookClient(nb, timeout=300, kernel_name='python3').execute()\n"
        "except CellExecutionError as exc:\n"
        "    print(str(exc)[-3000:])\n"
        "print('EXECUTED', sum(1 for c in nb.cells if c.get('execution_count')))\n"
    )
    env = {**os.environ, memory.LIMIT_ENV: "1900", "TUTORIAL_PROFILE": "quick"}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LessonWontFitError" in proc.stdout and "will NOT fit" in proc.stdout
    assert (
        "tutorial-lib train --method lora --profile quick --steps 8 --batch-size 2" in proc.stdout
    )
    assert proc.stdout.strip().endswith("EXECUTED 2"), proc.stdout[-500:]  # Colab cell, check
    assert len([c for c in nb.cells if c.cell_type == "code"]) > 2


def test_the_cli_takes_smaller_batches(monkeypatch):
    import tutorial_lib.experiment as experiment
    from tutorial_lib.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def record(spec, baseline, **kwargs):
        seen["profile"] = baseline.profile
        raise Stop

    monkeypatch.setattr(experiment, "run_experiment", record)
    with pytest.raises(Stop):
        main("train --method lora --profile quick --batch-size 2 --eval-batch-size 3".split())
    assert (seen["profile"].batch_size, seen["profile"].eval_batch_size) == (2, 3)
    assert seen["profile"].train_steps == PROFILES["quick"].train_steps


def test_the_readme_quotes_the_committed_route():
    route = next(r for r in small_routes() if (r["method"], r["batch_size"]) == ("lora", 2))
    readme = (ROOT / "README.md").read_text()
    assert f"`{route['command']}`\n  (peak {route['peak_rss_mib'] / 1024:.1f} GiB" in readme


def test_routes_file_records_how_it_ran():
    data = json.loads((ROOT / "benchmarks" / "results" / "small-memory.json").read_text())
    ran = provenance.read(data)
    assert ran.versions["torch"] and ran.machine["physical_cores"] >= 1


def _committed_quick(lesson: str) -> tuple[str, dict | None]:
    lessons = lesson_fit.measured_lessons("quick")
    name = next((n for n in lessons if n[:2] == lesson), lesson)
    return name, lessons.get(name)


@pytest.mark.parametrize("lesson", lesson_fit.BINDER_LESSONS)
def test_lessons_declared_to_fit_binder_peak_under_one_and_a_half_gib_in_quick(lesson):
    name, result = _committed_quick(lesson)
    assert result, f"lesson {lesson} has no committed quick run (benchmarks/run.py --lessons)"
    peak = lesson_fit.kernel_peak_bytes(result)
    assert peak and peak <= lesson_fit.BINDER_KERNEL_MIB * 2**20, (name, peak)
    assert lesson_fit.binder_verdict(name).startswith("yes")


def test_the_first_cell_check_passes_for_binder_lessons_in_a_two_gigabyte_session():
    """Each declared lesson's first-cell check, in a fresh process as a kernel runs it."""
    names = [_committed_quick(lesson)[0] for lesson in lesson_fit.BINDER_LESSONS]
    code = (
        "import sys, torch\n"
        "from tutorial_lib.lesson_fit import check_lesson\n"
        "for name in sys.argv[1:]:\n"
        "    check_lesson(name, 'quick', torch.device('cpu'))\n"
    )
    env = {**os.environ, memory.LIMIT_ENV: str(lesson_fit.BINDER_SESSION_MIB)}
    done = subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("It fits") == len(names), done.stdout
    assert f"TUTORIAL_MEMORY_LIMIT_MB={lesson_fit.BINDER_SESSION_MIB}" in done.stdout
