"""Lesson budgets: each lesson's sizes are named once, in config.py, and the notebooks use them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tutorial_lib.config import (
    LESSON_BUDGETS,
    METHOD_LESSON,
    PROFILES,
    get_profile,
    lesson_number,
    lesson_profile,
)
from tutorial_lib.results import BUDGET

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("0*.ipynb"))


def _code(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_a_lesson_profile_keeps_the_base_profile_and_changes_only_its_sizes(name):
    base = get_profile(name)
    profile = lesson_profile("04", base)
    assert profile.name == name
    assert profile == base.with_overrides(**METHOD_LESSON[name])


def test_the_method_lessons_share_one_budget_in_both_profiles():
    quick = {n: lesson_profile(n, get_profile("quick")) for n in ("03", "04", "05", "06")}
    assert len(set(quick.values())) == 1  # lesson 04 once probed 16 items in quick, the rest 8
    full = {n: lesson_profile(n, get_profile("full")) for n in ("03", "04", "05")}
    assert len(set(full.values())) == 1
    for name in ("full", "quick"):  # lesson 07 adds the published suite to the same training
        lesson, method = (lesson_profile(n, get_profile(name)) for n in ("07", "03"))
        assert {k: getattr(lesson, k) for k in BUDGET} == {k: getattr(method, k) for k in BUDGET}
        assert lesson.train_steps == method.train_steps and lesson.suite_items > 0
    assert lesson_profile("06_qlora", get_profile("full")).probe_items is None  # all, as lesson 02


def test_an_unknown_lesson_names_the_ones_there_are():
    with pytest.raises(ValueError, match="unknown lesson '09'.*allowed: 00, 01, 02"):
        lesson_profile("09", get_profile("quick"))


def test_a_profile_without_a_budget_is_refused():
    odd = get_profile("quick").with_overrides(name="tiny")
    with pytest.raises(ValueError, match="no budget for profile 'tiny'; allowed: full, quick"):
        lesson_profile("03", odd)


def test_the_default_base_is_the_environments_profile(monkeypatch):
    monkeypatch.setenv("TUTORIAL_PROFILE", "quick")
    assert lesson_profile("01") == get_profile("quick").with_overrides(
        **LESSON_BUDGETS["01"]["quick"]
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_notebook_sizes_itself(path):
    code = _code(path)
    assert "SIZES = {" not in code
    number = lesson_number(path)  # "05b" for 05b_lora_variants
    if number != "00":
        assert f'lesson_profile("{number}")' in code
