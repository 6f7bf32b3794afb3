"""The printouts lessons and the CLI share are methods of their result types: same text as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tutorial_lib.evaluate import ChoiceResult, Evaluation, run_report
from tutorial_lib.recall import RecallResult

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _choices(n: int, right: int) -> ChoiceResult:
    answers = [0] * n
    return ChoiceResult(
        ids=[f"q{i}" for i in range(n)],
        categories=["c"] * n,
        answers=answers,
        predictions=[0] * right + [1] * (n - right),
        predictions_norm=answers,
        correct_logprobs=[-1.0] * n,
    )


def _printed(notebook: str, marker: str) -> str:
    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text(encoding="utf-8"))["cells"]
    (cell,) = [c for c in cells if marker in "".join(c["source"])]
    return "".join("".join(o["text"]) for o in cell["outputs"] if o.get("name") == "stdout")


@pytest.mark.parametrize(
    ("notebook", "probe", "domain", "recalled", "general_ce"),
    [
        ("02_catastrophic_forgetting", (360, 244), (56, 22), 0, 3.046),
        ("03_additive_methods", (120, 83), (56, 22), 0, 2.903),  # recall by generation first
        ("04_selective_methods", (120, 83), (56, 22), 0, 2.903),  # rewritten: as 03
    ],
)
def test_the_baseline_report_is_what_the_committed_lessons_printed(
    notebook, probe, domain, recalled, general_ce
):
    """The counts behind each lesson's committed numbers give back its committed lines."""
    recall = None
    if recalled is not None:
        n = domain[0]
        recall = RecallResult(
            [f"q{i}" for i in range(n)],
            ["reply"] * n,
            ["value"] * n,
            [True] * recalled + [False] * (n - recalled),
        )
    base = Evaluation(
        probe=_choices(*probe), domain=_choices(*domain), general_ce=general_ce, recall=recall
    )
    assert _printed(notebook, "print(before.report())").startswith(base.report() + "\n")


def test_the_baseline_report_reads_the_same_numbers_as_the_summary():
    base = Evaluation(probe=_choices(8, 5), domain=_choices(4, 1), general_ce=3.25)
    s = base.summary()
    assert base.report().splitlines() == [
        f"domain accuracy {s['domain_accuracy']:.3f} on {s['domain_n_items']} held-out questions",
        f"probe accuracy  {s['probe_accuracy']:.3f} ± {s['probe_accuracy_stderr']:.3f} on 8 items",
        f"general text CE {s['general_ce']:.3f} nats/token",
    ]


RUN = {
    "method": "lora",
    "lr": 3e-3,
    "steps": 8,
    "replay": 0.0,
    "l2sp": 0.1,
    "ewc": 0.0,
    "bf16": False,
    "interrupted": True,
    "trainable_params": 1_843_200,
    "total_params": 136_358_208,
    "trainable_percent": 1.3517,
    "loss_history": [2.5, 1.25],
    "domain_accuracy_before": 0.25,
    "domain_accuracy_after": 0.5,
    "probe_accuracy_before": 0.625,
    "probe_accuracy_after": 0.5,
    "retention": 0.8,
    "general_ce_before": 3.0,
    "general_ce_after": 3.5,
    "sec_per_step": 1.234,
    "tokens_per_sec": 812.4,
    "peak_memory_bytes": 3 * 2**30,
    "checkpoint_bytes": 7 * 2**20 + 2**19,
}


def test_a_runs_report_is_the_train_commands_text():
    assert run_report(RUN, "tarnwick").splitlines() == [
        "method lora  task tarnwick  lr 0.003  steps 8  l2sp 0.1  (interrupted)",
        "trainable        1,843,200 of 136,358,208 (1.35 %)",
        "loss             2.500 -> 1.250",
        "domain accuracy  0.250 -> 0.500",
        "general text CE  3.000 -> 3.500",
        "probe accuracy   0.625 -> 0.500  (retention 0.800)",
        "time             1.23 s/step, 812 tokens/s",
        "peak memory      3072 MiB; checkpoint 7.5 MiB",
    ]


PAIRED = {
    "probe_lost": 11,
    "probe_gained": 1,
    "probe_sign_test_p": 26 / 4096,
    "probe_logprob_shift": -0.25,
    "probe_logprob_shift_stderr": 0.0625,
    "general_ce_change": 0.5,
    "general_ce_change_stderr": 0.02,
    "general_ce_change_ci95": [0.46, 0.54],
    "general_n_passages": 16,
    "kl_to_base": 0.0123,
    "kl_to_base_stderr": 0.0021,
    "kl_to_base_ci95": [0.008, 0.016],
    "kl_n_passages": 16,
}


def test_a_runs_report_leads_forgetting_with_the_continuous_measures():
    lines = run_report({**RUN, **PAIRED}, "tarnwick").splitlines()
    assert lines[3:8] == [
        "domain accuracy  0.250 -> 0.500",
        "general text CE  3.000 -> 3.500  (change +0.5000 ± 0.0200 nats/token over 16 passages)",
        "KL(base ‖ tuned) 0.0123 ± 0.0021 nats/token over 16 passages",
        "probe items      11 lost, 1 gained (sign test p = 0.00635); log-prob of the correct"
        " answers -0.250 ± 0.062",
        "probe accuracy   0.625 -> 0.500  (retention 0.800: share of the items the base got"
        " right still right)",
    ]


def test_one_passage_gives_no_error_estimate_and_no_kl_says_so():
    one = {
        **PAIRED,
        "general_ce_change_stderr": None,
        "general_ce_change_ci95": None,
        "general_n_passages": 1,
        "kl_to_base": None,
        "kl_to_base_stderr": None,
        "kl_to_base_ci95": None,
        "kl_n_passages": 0,
    }
    lines = run_report({**RUN, **one}, "tarnwick").splitlines()
    assert lines[4].endswith("(change +0.5000 nats/token, no error estimate (1 passage))")
    assert lines[5] == "KL(base ‖ tuned) not measured (no base log-probabilities)"
