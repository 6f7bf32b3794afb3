"""The exercises in the instructor notes: every written answer is what the library computes."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from tutorial_lib import lowrank, quant, results
from tutorial_lib.evaluate import ChoiceResult, Evaluation, forgetting_report
from tutorial_lib.exercise_answers import shaped
from tutorial_lib.memory import (
    ARCHITECTURES,
    activation_bytes,
    count_params,
    estimate,
)
from tutorial_lib.methods import apply_method
from tutorial_lib.methods.additive import AdapterConfig
from tutorial_lib.methods.prompts import PrefixConfig
from tutorial_lib.methods.selective import TopLayersConfig

NOTES = Path(__file__).resolve().parent.parent / "docs" / "teaching.md"
SECTION = "## Exercises with answers"
LESSONS = [f"{n:02d}" for n in range(8)]
SMOL = ARCHITECTURES["SmolLM2-135M"]
MIB, GIB = 2**20, 2**30

HEADING = re.compile(r"### Lesson (\d\d), exercise (\d+): (.+)")
ANSWER = re.compile(r"\*\*Answer:\*\* (\d{1,3}(?:,\d{3})*(?:\.\d+)?) (.+)")


# --- the parser -----------------------------------------------------------------------------------


def exercises() -> list[dict]:
    """Each exercise of the notes' exercise section: lesson, number, title, answer, unit, how."""
    text = NOTES.read_text(encoding="utf-8")
    assert SECTION in text, f"docs/teaching.md has no '{SECTION}' section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found = []
    for block in section.split("\n### ")[1:]:
        lines = block.splitlines()
        heading = HEADING.fullmatch("### " + lines[0].strip())
        assert heading, f"bad exercise heading: {lines[0]!r}"
        answers = [m for line in lines if (m := ANSWER.fullmatch(line.strip()))]
        hows = [line for line in lines if line.startswith("*How:* ")]
        assert len(answers) == 1 and len(hows) == 1, f"{lines[0]}: needs one Answer and one How"
        found.append(
            {
                "lesson": heading.group(1),
                "number": int(heading.group(2)),
                "title": heading.group(3),
                "answer": answers[0].group(1),
                "unit": answers[0].group(2),
            }
        )
    return found


# --- inputs the checkers share --------------------------------------------------------------------


def choices(right: list[bool]) -> ChoiceResult:
    """Multiple-choice results with these items right (the answer is always choice 0)."""
    n = len(right)
    return ChoiceResult(
        ids=[f"item-{i}" for i in range(n)],
        categories=["probe"] * n,
        answers=[0] * n,
        predictions=[0 if ok else 1 for ok in right],
        predictions_norm=[0 if ok else 1 for ok in right],
        correct_logprobs=[0.0] * n,
    )


def trainable(method: str, config=None) -> int:
    """Trainable parameters of a method applied to the SmolLM2-shaped model."""
    return count_params(apply_method(shaped(), method, config))[0]


# --- one checker per exercise: the library's value, in the unit the notes write ---------------------


def probe_stderr() -> float:
    return 100 * choices([True] * 83 + [False] * 37).stderr


def domain_stderr() -> float:
    return 100 * choices([True] * 4 + [False] * 4).stderr


def fixed_memory() -> float:
    est = estimate(SMOL, method="full", batch=8, seq_len=128)
    return (est.weights + est.gradients + est.optimizer) / MIB


def activations() -> float:
    assert activation_bytes(SMOL, 8, 128) == estimate(SMOL, batch=8, seq_len=128).activations
    return activation_bytes(SMOL, 8, 128) / MIB


def paired_forgetting_stderr() -> float:
    before = [True] * 83 + [False] * 37
    after = [False] * 12 + [True] * 71 + [True] * 4 + [False] * 33  # 12 lost, 4 gained
    evaluations = [Evaluation(choices(r), choices([True]), 3.0) for r in (before, after)]
    report = forgetting_report(*evaluations)
    assert round(100 * report["forgetting"], 1) == 6.7  # the question states it
    return 100 * report["forgetting_stderr"]


def matched_retention() -> float:
    runs = [
        {"lr": lr, "domain_accuracy_after": acc, "retention": kept, "general_ce_after": 3.0}
        for lr, acc, kept in [(1e-5, 0.6, 0.95), (3e-5, 0.9, 0.80), (1e-4, 1.0, 0.60)]
    ]
    for run in runs:
        run.update(domain_accuracy_before=0.5, general_ce_before=2.9)
    path = results.learning_rate_path(runs)
    return 100 * results.at_domain_accuracy(path, 0.75)["retention"]


def top_two_blocks_share() -> float:
    return 100 * trainable("top-layers", TopLayersConfig(k=2)) / SMOL.n_params


def gpt3_rank_4() -> int:
    table = lowrank.gpt3_lora_figures()
    row = table[(table["matrices"] == "W_q, W_v") & (table["r"] == 4)]
    return int(row["recomputed"].iloc[0])


def qlora_7b() -> float:
    setup = dict(method="qlora", rank=16, batch=1, seq_len=512, gradient_checkpointing=True)
    return estimate("Llama-2-7B", **setup).total / GIB


def seed_gap_stderr() -> float:
    from tutorial_lib.results import paired_differences

    answered = {"a": [3, 4, 2], "b": [2, 2, 2]}  # questions right of 14, seeds 0, 1, 2
    records = [
        {"method": m, "seed": s, "domain_accuracy_after": n / 14}
        for m, ns in answered.items()
        for s, n in enumerate(ns)
    ]
    (gap,) = paired_differences(records, "domain_accuracy_after", ["a", "b"])
    assert not gap["supported"]  # the notes say no ranking may be stated
    return 100 * gap["se"]


def qlora_70b_on_two() -> float:
    est = estimate(
        "Llama-2-70B",
        method="qlora",
        rank=16,
        batch=1,
        seq_len=512,
        gradient_checkpointing=True,
        gpus=2,
        sharding="fsdp",
    )
    return est.total / GIB


CHECKERS = {  # (lesson, exercise): (unit as written, what the library computes)
    ("00", 1): ("percentage points", probe_stderr),
    ("00", 2): ("percentage points", domain_stderr),
    ("01", 1): ("MiB", fixed_memory),
    ("01", 2): ("MiB", activations),
    ("02", 1): ("percentage points", paired_forgetting_stderr),
    ("02", 2): ("% retention", matched_retention),
    ("03", 1): (
        "trainable parameters",
        lambda: trainable("adapter", AdapterConfig(placement="houlsby")),
    ),
    ("03", 2): (
        "trainable parameters",
        lambda: trainable("prefix-tuning", PrefixConfig(num_virtual_tokens=8)),
    ),
    ("04", 1): ("% of the parameters", top_two_blocks_share),
    ("04", 2): ("trainable parameters", lambda: trainable("ln-tuning")),
    ("05", 1): ("trainable parameters", lambda: lowrank.lora_trainable(SMOL, 8, "all-linear")),
    ("05", 2): ("trainable parameters", gpt3_rank_4),
    ("06", 1): ("bits per weight", lambda: quant.bits_per_param(double=True)),
    ("06", 2): ("GiB", qlora_7b),
    ("07", 1): ("percentage points", seed_gap_stderr),
    ("07", 2): ("GiB", qlora_70b_on_two),
}


# --- the tests ------------------------------------------------------------------------------------


def test_every_lesson_has_two_exercises_and_each_a_checker():
    found = exercises()
    assert Counter(e["lesson"] for e in found) == Counter({lesson: 2 for lesson in LESSONS})
    assert sorted((e["lesson"], e["number"]) for e in found) == sorted(CHECKERS)


@pytest.mark.parametrize("exercise", exercises(), ids=lambda e: f"{e['lesson']}-{e['number']}")
def test_answer_is_what_the_library_computes(exercise):
    key = (exercise["lesson"], exercise["number"])
    assert key in CHECKERS, f"lesson {key[0]}, exercise {key[1]} has no checker in this file"
    unit, compute = CHECKERS[key]
    written = exercise["answer"]
    decimals = len(written.split(".")[1]) if "." in written else 0
    value = compute()
    expected = f"{value:,.{decimals}f}"
    assert exercise["unit"] == unit, f"{exercise['title']}: unit {exercise['unit']!r}, not {unit!r}"
    assert written == expected, f"{exercise['title']}: the notes say {written}, the library {value}"
