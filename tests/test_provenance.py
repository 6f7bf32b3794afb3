"""One provenance record beside every result: command, sizes, machine, versions, date."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tutorial_lib import provenance
from tutorial_lib.provenance import Provenance, command_line, read, record

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
WITH_PROVENANCE = [
    "compare-lesson.json",
    "cpu-2-cores.json",
    "lessons-full.json",
    "lessons-quick.json",
    "lora-scratch.json",
    "small-memory.json",
]


def test_a_record_says_what_ran_at_what_sizes_where_with_what_and_when():
    ran = record("tutorial-lib compare --profile quick", {"train_steps": 2}, threads=1)
    saved = ran.to_json()
    assert set(saved) == {"command", "profile", "machine", "versions", "date"}
    assert saved["profile"] == {"train_steps": 2} and saved["machine"]["threads"] == 1
    assert saved["machine"]["physical_cores"] >= 1 and saved["machine"]["cpu"]
    assert "torch" in saved["versions"] and saved["date"][:2] == "20"
    assert read({"ran": json.loads(json.dumps(saved))}) == ran  # it survives JSON


def test_extra_versions_join_the_library_versions():
    ran = record("python benchmarks/run.py", extra_versions={"lm_eval": "not installed"})
    assert ran.versions["lm_eval"] == "not installed" and "transformers" in ran.versions


def test_the_command_is_quoted_as_a_shell_would_need_it():
    assert (
        command_line("tutorial-lib", ["train", "--model", "a b"])
        == "tutorial-lib train --model 'a b'"
    )


def test_a_record_without_a_command_is_refused():
    with pytest.raises(ValueError, match="needs the command"):
        Provenance(" ", None)


@pytest.mark.parametrize("name", WITH_PROVENANCE)
def test_every_committed_result_says_where_it_ran(name):
    """Old shapes (a benchmark's flat context, the small-memory routes' cpu/cores) read too."""
    ran = read(json.loads((RESULTS / name).read_text()))
    assert ran.machine["cpu"] and ran.machine["physical_cores"] >= 1
    assert ran.versions["torch"].startswith("2.")


def test_a_result_without_provenance_says_so():
    with pytest.raises(ValueError, match="no provenance in this result"):
        provenance.read({"runs": []})


def test_the_compare_command_writes_the_record(monkeypatch):
    """The CLI's record is this one: what lesson 07 and `compare.same_budget` read."""
    from dataclasses import asdict

    from tutorial_lib import commands
    from tutorial_lib.config import get_profile

    monkeypatch.setattr("sys.argv", ["tutorial-lib", "compare", "--profile", "quick"])
    ran = commands._how_it_ran(get_profile("quick"))
    assert ran["command"] == "tutorial-lib compare --profile quick"
    assert ran["profile"] == asdict(get_profile("quick")) and ran["machine"]["threads"] >= 1
