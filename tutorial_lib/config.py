"""Profiles: one place that sizes every lesson, so `quick` (CI) and `full` (learners) share one code path."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

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

    def __post_init__(self) -> None:
        for field in ("train_steps", "batch_size", "max_length", "eval_batch_size"):
            if getattr(self, field) <= 0:
                raise ValueError(f"Profile.{field} must be > 0, got {getattr(self, field)}")

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
        general_items=24,
        replay_items=16,
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
