"""Profiles and lesson budgets: one place that sizes every lesson, so `quick` (CI) and `full`
(learners) share one code path."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

PROFILE_ENV = "TUTORIAL_PROFILE"


@dataclass(frozen=True)
class Profile:
    """How big a lesson's runs are; only sizes change between profiles, never the code."""

    name: str
    train_steps: int  # optimizer steps of a standard lesson run
    batch_size: int  # sequences per optimizer step
    max_length: int  # tokens per training sequence (longer rows are rejected, not cut)
    probe_items: int | None  # general-knowledge items evaluated (None = all)
    domain_facts: int | None  # domain facts trained and asked about (None = all of the task's)
    general_items: int | None  # general-text passages for cross-entropy (None = all)
    eval_batch_size: int = 32  # sequences per evaluation forward pass
    replay_items: int | None = None  # replay passages used to estimate EWC's Fisher (None = all)
    # general passages KL(base ‖ tuned) is measured on (None = all, 0 = none): the base's fp16
    # log-probabilities are held for them, positions x 49,152 x 2 B (16 passages: 173 MiB)
    kl_passages: int | None = 16
    suite_items: int | None = 0  # published-suite items per task (None = all 100; 0 = none)
    # held-out wordings asked per fact (None = all 4): MC, the control and recall all scale with it
    heldout_wordings: int | None = None

    def __post_init__(self) -> None:
        for field in ("train_steps", "batch_size", "max_length", "eval_batch_size"):
            if getattr(self, field) <= 0:
                raise ValueError(f"Profile.{field} must be > 0, got {getattr(self, field)}")
        if self.kl_passages is not None and self.kl_passages < 0:
            raise ValueError(f"Profile.kl_passages must be >= 0 or None, got {self.kl_passages}")
        if self.suite_items is not None and not 0 <= self.suite_items <= 100:
            raise ValueError(f"Profile.suite_items must be 0..100 or None, got {self.suite_items}")
        if self.heldout_wordings is not None and self.heldout_wordings < 1:
            raise ValueError(
                f"Profile.heldout_wordings must be >= 1 or None, got {self.heldout_wordings}"
            )

    def with_overrides(self, **changes: object) -> Profile:
        """Return a copy with some sizes changed (e.g. more steps for one experiment)."""
        return replace(self, **changes)


PROFILES: dict[str, Profile] = {
    # CI and nbval: every cell runs, on subsets, in a few minutes on 2 CPU cores. A small model
    # needs many passes over a fact before it answers a new wording of it (measured: LoRA at
    # lr 3e-3 went from 0.33 to 0.42 after 5 passes and to 0.83 after 13 on 12 facts), so
    # `quick` teaches fewer facts rather than fewer passes.
    "quick": Profile(
        "quick",
        train_steps=48,  # 8 passes over 12 facts x 4 phrasings
        batch_size=8,
        max_length=128,
        probe_items=64,
        domain_facts=12,
        general_items=12,
        replay_items=16,
        kl_passages=4,
        heldout_wordings=2,  # half of each fact's 4: an evaluation ~20 s cheaper on 2 cores
    ),
    # What a learner gets: whole evaluation sets, runs long enough for effects to show.
    "full": Profile(
        "full",
        train_steps=330,  # 6 passes over 110 facts x 4 phrasings
        batch_size=8,
        max_length=128,
        probe_items=None,
        domain_facts=None,
        general_items=None,
        kl_passages=16,
        suite_items=100,  # the published suite: 100 items of each of 5 tasks, before and after
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The profile named, else $TUTORIAL_PROFILE, else `full` (what a learner should get)."""
    name = name or os.environ.get(PROFILE_ENV, "full")
    try:
        return PROFILES[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; allowed: {', '.join(PROFILES)} "
            f"(set {PROFILE_ENV}=quick for a fast smoke run)"
        ) from None


# --- lesson budgets -------------------------------------------------------------------------
# What each lesson changes in its profile: sizes only, never the code. The method lessons
# (03-07) share one budget, so their runs compare across lessons and with lesson 07's committed
# comparison (`compare.committed()`, run at METHOD_LESSON's `full` sizes; a test checks it).

Budget = Mapping[str, Mapping[str, int | None]]  # profile name -> Profile fields it overrides

METHOD_LESSON_QUICK = dict(  # batches of 1, scoring in 16s: 03 and 04 peak under 1.5 GiB (Binder)
    domain_facts=1, train_steps=2, batch_size=1, probe_items=8, general_items=1, eval_batch_size=16
)
METHOD_LESSON: Budget = {
    "full": dict(  # 4 passes; the published suite is not scored (fast probe only)
        domain_facts=14, train_steps=28, probe_items=120, general_items=16, suite_items=0
    ),
    "quick": METHOD_LESSON_QUICK,
}

LESSON_BUDGETS: dict[str, Budget] = {
    # quick: 4 items a task show the suite works; batches of 16 keep the kernel in 1.5 GiB (Binder)
    "00": {"full": {}, "quick": dict(suite_items=4, eval_batch_size=16)},
    "01": {  # the method lessons' run (lesson 07 compares it), the suite, and its noise floor
        "full": {**METHOD_LESSON["full"], "suite_items": 100},  # 56 recall questions
        "quick": dict(  # every cell on a few items: 2 facts, 4 steps, 2 suite items a task
            domain_facts=2,
            train_steps=4,
            batch_size=4,
            probe_items=16,
            general_items=2,
            kl_passages=2,
            suite_items=2,
            eval_batch_size=16,
        ),
    },
    "02": {
        "full": dict(
            domain_facts=14, train_steps=28, general_items=32, replay_items=48, suite_items=0
        ),
        "quick": {  # batches of 2: replay mixes a general passage into each (not Binder: 5 GiB)
            **METHOD_LESSON_QUICK,
            "batch_size": 2,
            "eval_batch_size": 32,
            "probe_items": 16,
            "general_items": 2,
            "replay_items": 2,
        },
    },
    "03": METHOD_LESSON,
    "04": METHOD_LESSON,
    "05": METHOD_LESSON,
    "06": {  # all 360 probe items and lesson 02's passages: QLoRA's change is measured as 02's
        "full": dict(domain_facts=14, train_steps=28, general_items=32, suite_items=0),
        "quick": METHOD_LESSON_QUICK,
    },
    "07": {  # the method lessons' budget and the published suite, as its comparison ran
        "full": {**METHOD_LESSON["full"], "suite_items": 100},
        "quick": {**METHOD_LESSON_QUICK, "suite_items": 2},
    },
    "08": {  # your own data: the sample's 64 training chats
        "full": dict(train_steps=80),  # 10 passes; every general measure
        "quick": dict(  # batches of 1, scoring in 4s, 2 KL passages: 1.6 GiB (1.8 with 2, 16, 4)
            train_steps=6,
            batch_size=1,
            eval_batch_size=4,
            kl_passages=2,
            probe_items=16,
            general_items=4,
            suite_items=4,
        ),
    },
}


def lesson_number(notebook: str | Path) -> str:
    """A lesson's number from its notebook's name: "00" for notebooks/00_setup_and_baseline.ipynb,
    "05b" for a lesson added after 05 without renumbering the others (05b_lora_variants)."""
    return Path(notebook).stem.split("_", 1)[0]


def lesson_profile(lesson: str, base: Profile | None = None) -> Profile:
    """Lesson `lesson`'s sizes ("03" or "03_additive_methods"), on `base` (default: the profile
    `get_profile()` picks); the result keeps the base profile's name."""
    base = base or get_profile()
    budget = LESSON_BUDGETS.get(str(lesson)[:2])
    if budget is None:
        raise ValueError(f"unknown lesson {lesson!r}; allowed: {', '.join(LESSON_BUDGETS)}")
    if base.name not in budget:
        raise ValueError(
            f"lesson {lesson} has no budget for profile {base.name!r}; allowed: {', '.join(budget)}"
        )
    return base.with_overrides(**budget[base.name])


def _check_budgets() -> None:
    """Every budget names only Profile fields, for every profile, and gives a valid Profile."""
    known = {f.name for f in fields(Profile)} - {"name"}
    for lesson, budget in LESSON_BUDGETS.items():
        if set(budget) != set(PROFILES):
            raise ValueError(
                f"lesson {lesson}'s budget covers {sorted(budget)}, not {sorted(PROFILES)}"
            )
        for name, sizes in budget.items():
            if unknown := set(sizes) - known:
                raise ValueError(f"lesson {lesson} ({name}) sets unknown sizes {sorted(unknown)}")
            PROFILES[name].with_overrides(**sizes)  # runs Profile's own checks


_check_budgets()
