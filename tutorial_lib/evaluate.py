"""Measure what a model knows: multiple-choice log-likelihood, cross-entropy, forgetting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from tutorial_lib import scoring, stopwatch
from tutorial_lib.choices import (  # re-exported: lessons and tests read them here
    DOMAIN_STYLE,
    PROBE_STYLE,
    ChoiceResult,
    evaluate_choices,
    paired_stderr,
    question_prompt,
)
from tutorial_lib.data import render_prompt
from tutorial_lib.general_text import (
    BaseLogprobs,
    PassageScores,
    _batches,
    ce_change,
    score_general,
)
from tutorial_lib.measures import flips, paired_mean_shift
from tutorial_lib.memory.machine import hands_memory_back
from tutorial_lib.methods.base import adapters_disabled as adapters_disabled  # lessons use it here
from tutorial_lib.methods.base import eval_mode
from tutorial_lib.reports import RETENTION_MEANING as RETENTION_MEANING
from tutorial_lib.reports import run_report as run_report
from tutorial_lib.scoring import (
    head_input,
    real_positions,
)

__all__ = [
    "DOMAIN_STYLE",
    "PROBE_STYLE",
    "RETENTION_MEANING",
    "ChoiceResult",
    "Evaluation",
    "adapters_disabled",
    "evaluate_choices",
    "evaluate_model",
    "forgetting_report",
    "paired_stderr",
    "question_prompt",
    "run_report",
]

if TYPE_CHECKING:
    from tutorial_lib.recall import RecallResult


def general_cross_entropy(
    model, tokenizer, passages: list[dict], batch_size: int = 16, max_length: int = 256
) -> float:
    """Mean next-token cross-entropy (nats per token) over general passages: forgetting shows here
    before it shows in accuracy."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with eval_mode(model), head_input(model) as (head, seen):
        for _, enc in _batches(tokenizer, passages, batch_size, max_length, device):
            model(**enc)
            hidden = real_positions(seen.pop(), enc["input_ids"].shape[1])[:, :-1]
            scored = enc["attention_mask"][:, 1:] == 1  # padding predicts nothing
            total += _summed_cross_entropy(head, hidden[scored], enc["input_ids"][:, 1:][scored])
            count += int(scored.sum())
    return total / count


def _summed_cross_entropy(head, hidden: torch.Tensor, targets: torch.Tensor) -> float:
    """Summed cross-entropy of `targets` given `hidden` (N, d), HEAD_ROWS positions at a time.

    The logits are laid out (1, V, N), as the whole-batch loss always had them: that is the
    arithmetic whose numbers the lessons print (to the last digit; tested)."""
    total = 0.0
    for start in range(0, len(targets), scoring.HEAD_ROWS):
        logits = head(hidden[start : start + scoring.HEAD_ROWS]).float()
        end = start + scoring.HEAD_ROWS
        total += F.cross_entropy(logits.T[None], targets[None, start:end], reduction="sum").item()
    return total


@dataclass
class Evaluation:
    """One model's scores on the probe, the domain questions and general text."""

    probe: ChoiceResult
    domain: ChoiceResult
    general_ce: float
    general_passages: PassageScores | None = None  # per passage: CE, tokens, KL to the base
    recall: RecallResult | None = None  # greedy replies to the domain items (`recall`)
    control: ChoiceResult | None = None  # domain choices after an unrelated question
    suite: dict[str, ChoiceResult] | None = None  # published tasks (`tutorial_lib.suite`)

    def summary(self) -> dict:
        """The metric names every lesson and the CLI use (see design notes, Metrics)."""
        return {
            "probe_accuracy": self.probe.accuracy,
            "probe_accuracy_stderr": self.probe.stderr,
            "probe_accuracy_norm": self.probe.accuracy_norm,
            "probe_accuracy_by_category": self.probe.by_category(),
            "probe_mean_logprob": self.probe.mean_logprob,
            "probe_n_items": len(self.probe.ids),
            "domain_accuracy": self.domain.accuracy,
            "domain_accuracy_stderr": self.domain.stderr,
            "domain_accuracy_norm": self.domain.accuracy_norm,
            "domain_mean_logprob": self.domain.mean_logprob,
            "domain_n_items": len(self.domain.ids),
            "general_ce": self.general_ce,
            **self._recall_summary(),
            **(self._suite_summary() if self.suite else {}),
        }

    def _suite_summary(self) -> dict:
        from tutorial_lib.suite import composite

        return {
            "suite_accuracy": {t: r.accuracy for t, r in self.suite.items()},
            "suite_accuracy_norm": {t: r.accuracy_norm for t, r in self.suite.items()},
            "suite_n_items": {t: len(r.ids) for t, r in self.suite.items()},
            "suite_composite": composite(self.suite),
        }

    def _recall_summary(self) -> dict:
        """Recall and the recognition control, when they were measured."""
        out = {}
        if self.recall is not None:
            out["domain_recall"] = self.recall.accuracy
            out["domain_recall_stderr"] = self.recall.stderr
            out["domain_recall_n_items"] = len(self.recall.ids)
        if self.control is not None:
            out["domain_control_accuracy"] = self.control.accuracy
            out["domain_control_accuracy_stderr"] = self.control.stderr
        return out

    def report(self) -> str:
        """The baseline as the lessons print it: domain, probe (± its standard error), general."""
        probe = self.probe
        recall = self.recall
        return (
            (
                f"domain recall   {recall.accuracy:.3f} ± {recall.stderr:.3f} on "
                f"{len(recall.ids)} held-out questions (greedy reply states the value)\n"
                if recall is not None
                else ""
            )
            + f"domain accuracy {self.domain.accuracy:.3f} on {len(self.domain.ids)} held-out questions\n"
            f"probe accuracy  {probe.accuracy:.3f} ± {probe.stderr:.3f} on {len(probe.ids)} items\n"
            f"general text CE {self.general_ce:.3f} nats/token"
        )


@hands_memory_back
def evaluate_model(
    model,
    tokenizer,
    probe,
    domain,
    general,
    batch_size: int = 32,
    base_logprobs: BaseLogprobs | None = None,
    recall: bool = True,
    published=None,
) -> Evaluation:
    """Probe, domain and general-text scores of the model as it is now; general text per
    passage (its mean is `general_cross_entropy`'s, to the last digit), and KL(base ‖ model)
    when the base's log-probabilities are given (`general_text.capture_base`); with `recall`,
    also greedy recall of the domain items and MC accuracy under the recognition control.
    `published` (task -> its `ChoiceResult`s, scored by `suite_eval.evaluate_published`, which
    imports this module) is kept as the evaluation's suite."""
    from tutorial_lib import recall as recall_lib  # it builds on this module

    with stopwatch.timed("evaluation"):
        probe_result = evaluate_choices(model, tokenizer, probe, batch_size, "probe", PROBE_STYLE)
        domain_result = evaluate_choices(
            model, tokenizer, domain, batch_size, "domain", DOMAIN_STYLE
        )
        passages = score_general(
            model, tokenizer, general, batch_size // 2 or 1, base=base_logprobs
        )
        evaluation = Evaluation(
            probe=probe_result,
            domain=domain_result,
            general_ce=passages.ce,
            general_passages=passages,
            recall=recall_lib.evaluate_recall(model, tokenizer, domain) if recall else None,
            control=recall_lib.evaluate_control(model, tokenizer, domain, batch_size)
            if recall
            else None,
            suite=published,
        )
    return evaluation


def forgetting_report(before: Evaluation, after: Evaluation) -> dict:
    """What was learned and what was lost between two evaluations of the same items."""
    if before.probe.ids != after.probe.ids:
        raise ValueError("before and after were evaluated on different probe items")
    was_right = [i for i, ok in enumerate(before.probe.correct) if ok]
    still = [i for i in was_right if after.probe.correct[i]]
    cats_before, cats_after = before.probe.by_category(), after.probe.by_category()
    return {
        "domain_gain": after.domain.accuracy - before.domain.accuracy,
        "forgetting": before.probe.accuracy - after.probe.accuracy,
        "forgetting_stderr": paired_stderr(before.probe.correct, after.probe.correct),
        "retention": len(still) / len(was_right) if was_right else float("nan"),
        "forgetting_by_category": {c: cats_before[c] - cats_after[c] for c in cats_before},
        "probe_logprob_shift": after.probe.mean_logprob - before.probe.mean_logprob,
        "general_ce_rise": after.general_ce - before.general_ce,
        "flipped_to_wrong": [before.probe.ids[i] for i in was_right if i not in set(still)],
        **paired_measures(before, after),
    }


def _listed(ci: tuple[float, float] | None) -> list[float] | None:
    """An interval as JSON holds it (a list), so that a saved summary reads back equal."""
    return list(ci) if ci is not None else None


def paired_measures(before: Evaluation, after: Evaluation) -> dict:
    """Forgetting counted both ways and measured continuously (`forgetting_report`'s new keys):
    probe items lost and gained with an exact sign test, the paired shift of the correct answers'
    log-probability, the general-text CE change with a bootstrap over passages, and KL(base ‖
    tuned) when measured. An error that one passage cannot give is None, never made up."""
    counted = flips(before.probe.correct, after.probe.correct, before.probe.ids)
    shift = paired_mean_shift(before.probe.correct_logprobs, after.probe.correct_logprobs)
    out = {
        "probe_lost": counted.lost,
        "probe_gained": counted.gained,
        "probe_sign_test_p": counted.p_value,
        "probe_logprob_shift_stderr": shift.stderr,
        "general_ce_change": after.general_ce - before.general_ce,
        "general_ce_change_stderr": None,
        "general_ce_change_ci95": None,
        "general_n_passages": None,
        "kl_to_base": None,
        "kl_to_base_stderr": None,
        "kl_to_base_ci95": None,
        "kl_n_passages": 0,
    }
    if before.general_passages is not None and after.general_passages is not None:
        change = ce_change(before.general_passages, after.general_passages)
        out["general_ce_change_stderr"] = change.stderr
        out["general_ce_change_ci95"] = _listed(change.ci95)
        out["general_n_passages"] = change.n
    kl = after.general_passages.kl() if after.general_passages is not None else None
    if kl is not None:
        out["kl_to_base"], out["kl_to_base_stderr"] = kl.value, kl.stderr
        out["kl_to_base_ci95"], out["kl_n_passages"] = _listed(kl.ci95), kl.n
    return out


def flipped_items(before: Evaluation, after: Evaluation, items: list[dict]) -> list[dict]:
    """The probe items the base model got right and the trained model gets wrong, with the
    answer it now prefers: what forgetting looks like, item by item."""
    if before.probe.ids != [item["id"] for item in items]:
        raise ValueError("items must be the probe items both evaluations scored, in order")
    return [
        {
            "category": item.get("category", ""),
            "question": item["question"],
            "before": before.probe.chosen_texts[i],
            "after": after.probe.chosen_texts[i],
        }
        for i, item in enumerate(items)
        if before.probe.correct[i] and not after.probe.correct[i]
    ]


def answer(
    model, tokenizer, question: str, max_new_tokens: int = 40, system: str | None = None
) -> str:
    """The model's greedy reply to one question, for before/after side-by-sides; `system`
    asks as another task's assistant (None: the default task's system prompt)."""
    prompt = render_prompt(tokenizer, question, system)
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    enc = enc.to(next(model.parameters()).device)
    with eval_mode(model):
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def side_by_side(
    models: dict,
    tokenizer,
    questions: list[str],
    max_new_tokens: int = 40,
    system: str | None = None,
):
    """Each model's greedy answer to each question, as a table (one column per model)."""
    import pandas as pd

    rows = [
        {
            "question": q,
            **{name: answer(m, tokenizer, q, max_new_tokens, system) for name, m in models.items()},
        }
        for q in questions
    ]
    return pd.DataFrame(rows).style.hide(axis="index").set_properties(**{"text-align": "left"})
