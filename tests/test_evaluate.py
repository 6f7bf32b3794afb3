"""Multiple-choice scoring is the right arithmetic; reports add up."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tutorial_lib import data
from tutorial_lib.evaluate import (
    ChoiceResult,
    Evaluation,
    adapters_disabled,
    evaluate_choices,
    forgetting_report,
    general_cross_entropy,
    question_prompt,
)
from tutorial_lib.methods import apply_method
from tutorial_lib.scoring import score_choices, score_continuations


def _manual_logprob(model, tok, context: str, continuation: str) -> float:
    """Reference: one forward over the whole text; position t-1 predicts token t."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
    return sum(logp[t - 1, whole[t]].item() for t in range(len(ctx), len(whole)))


def test_scores_match_a_single_unbatched_forward(tiny):
    model, tok = tiny
    requests = [
        ("Question: What is up?\nAnswer:", " The sky"),
        ("Hello", " world and more"),
        ("A", " b"),
    ]
    scores = score_continuations(model, tok, requests, batch_size=3)
    for (ctx, cont), (logprob, n_tokens) in zip(requests, scores):
        assert logprob == pytest.approx(_manual_logprob(model, tok, ctx, cont), abs=1e-4)
        assert n_tokens >= 1


@pytest.mark.parametrize("style", ["plain", "chat"])
def test_shared_prefix_scoring_equals_scoring_each_choice_alone(tiny, style):
    model, tok = tiny
    groups = []
    for item in data.load_probe(limit=9) + data.load_domain_eval(facts=3):
        prompt, sep = question_prompt(tok, item["question"], style)
        groups.append((prompt, [sep + c for c in item["choices"]]))
    groups.append(("Two choices only:", [" yes", " no"]))
    groups.append(("The sky is bl", ["ue", "ack"]))  # tokens may merge across the boundary
    shared = score_choices(model, tok, groups, batch_size=4)
    naive = score_continuations(model, tok, [(c, x) for c, xs in groups for x in xs], batch_size=5)
    flat = [score for group in shared for score in group]
    assert [n for _, n in flat] == [n for _, n in naive]
    assert [lp for lp, _ in flat] == pytest.approx([lp for lp, _ in naive], abs=1e-4)


def test_batch_size_does_not_change_scores(tiny):
    model, tok = tiny
    items = data.load_probe(limit=12)
    one = evaluate_choices(model, tok, items, batch_size=1, style="plain")
    many = evaluate_choices(model, tok, items, batch_size=7, style="plain")
    assert one.predictions == many.predictions
    assert one.correct_logprobs == pytest.approx(many.correct_logprobs, abs=1e-4)


def test_prediction_is_the_most_likely_choice(tiny):
    model, tok = tiny
    item = data.load_domain_eval(facts=1)[0]
    result = evaluate_choices(model, tok, [item])
    prompt = data.render_prompt(tok, item["question"])  # the deployment's system prompt first
    manual = [_manual_logprob(model, tok, prompt, c) for c in item["choices"]]
    assert result.predictions[0] == max(range(4), key=manual.__getitem__)
    assert result.correct_logprobs[0] == pytest.approx(manual[item["answer"]], abs=1e-4)


def test_unknown_prompt_style_is_rejected(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="allowed: 'chat', 'plain'"):
        evaluate_choices(model, tok, data.load_probe(limit=1), style="mmlu")


def test_general_cross_entropy_matches_the_model_loss(tiny):
    model, tok = tiny
    passage = data.load_general_text(limit=1)
    ids = tok(passage[0]["text"], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids, labels=ids).loss.item()
    assert general_cross_entropy(model, tok, passage, max_length=4096) == pytest.approx(
        expected, rel=1e-4
    )


def _result(correct: list[bool], cats: list[str], logprob: float) -> ChoiceResult:
    return ChoiceResult(
        ids=[f"q{i}" for i in range(len(correct))],
        categories=cats,
        answers=[0] * len(correct),
        predictions=[0 if ok else 1 for ok in correct],
        predictions_norm=[0] * len(correct),
        correct_logprobs=[logprob] * len(correct),
    )


def test_forgetting_report_arithmetic():
    cats = ["geo", "geo", "sci", "sci"]
    before = Evaluation(
        _result([True, True, True, False], cats, -1.0),
        _result([False, False], ["d", "d"], -5.0),
        general_ce=2.0,
    )
    after = Evaluation(
        _result([True, False, True, True], cats, -1.5),
        _result([True, False], ["d", "d"], -2.0),
        general_ce=2.25,
    )
    report = forgetting_report(before, after)
    assert report["forgetting"] == 0.0  # one lost, one gained: accuracy alone hides it
    assert report["forgetting_stderr"] == pytest.approx(math.sqrt(0.5 / 4))  # two flips in four
    assert report["retention"] == pytest.approx(2 / 3)
    assert report["flipped_to_wrong"] == ["q1"]
    assert report["forgetting_by_category"] == {"geo": 0.5, "sci": -0.5}
    assert report["domain_gain"] == 0.5
    assert report["general_ce_rise"] == 0.25
    assert report["probe_logprob_shift"] == -0.5
    assert before.probe.stderr == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    # counted both ways: one lost (q1), one gained (q3); p = 1 for one flip each way
    assert (report["probe_lost"], report["probe_gained"]) == (1, 1)
    assert report["probe_sign_test_p"] == 1.0
    assert report["probe_logprob_shift_stderr"] == 0.0  # every item moved by -0.5
    # no per-passage scores (an Evaluation built by hand): the change, but no made-up error
    assert report["general_ce_change"] == 0.25 and report["general_ce_change_stderr"] is None
    assert report["general_n_passages"] is None
    assert (report["kl_to_base"], report["kl_n_passages"]) == (None, 0)


def test_forgetting_report_carries_the_passages_uncertainty_and_kl():
    from tutorial_lib.general_text import PassageScores

    cats = ["c"] * 3
    ids = ["a", "b", "c"]
    before = Evaluation(
        _result([True, True, False], cats, -1.0),
        _result([False], ["d"], -5.0),
        general_ce=2.0,
        general_passages=PassageScores(ids, [20.0, 20.0, 40.0], [10, 10, 20], 2.0),
    )
    after = Evaluation(
        _result([False, True, False], cats, -2.0),
        _result([True], ["d"], -2.0),
        general_ce=2.25,
        general_passages=PassageScores(ids, [22.0, 21.0, 47.0], [10, 10, 20], 2.25, [1.0, 3.0]),
    )
    report = forgetting_report(before, after)
    assert report["general_ce_change"] == pytest.approx(0.25)
    assert report["general_ce_change_stderr"] > 0 and report["general_n_passages"] == 3
    low, high = report["general_ce_change_ci95"]
    assert low <= 0.25 <= high
    assert report["kl_to_base"] == pytest.approx(4 / 20) and report["kl_n_passages"] == 2
    assert report["kl_to_base_stderr"] > 0 and isinstance(report["kl_to_base_ci95"], list)
    assert (report["probe_lost"], report["probe_gained"]) == (1, 0)
    assert report["probe_sign_test_p"] == 1.0  # one flip is no evidence


def test_before_is_measured_without_the_adapter(tiny):
    model, tok = tiny
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        base_logits = model(ids).logits.clone()
    peft_model = apply_method(model, "lora")
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # make the adapter change the output
    with torch.no_grad():
        assert not torch.allclose(peft_model(ids).logits, base_logits)
        with adapters_disabled(peft_model):
            assert torch.allclose(peft_model(ids).logits, base_logits, atol=1e-6)


def test_side_by_side_has_one_column_per_model(tiny):
    from tutorial_lib.evaluate import side_by_side

    model, tok = tiny
    table = side_by_side({"before": model, "after": model}, tok, ["Hi?", "Why?"], max_new_tokens=3)
    assert list(table.data.columns) == ["question", "before", "after"]
    assert (
        table.data["before"].tolist() == table.data["after"].tolist()
    )  # greedy: same model, same text


def test_flipped_items_lists_what_was_forgotten_with_the_new_answer():
    from tutorial_lib.evaluate import ChoiceResult, Evaluation, flipped_items

    items = [
        {"id": f"p{i}", "category": "c", "question": f"q{i}", "choices": ["a", "b"], "answer": 0}
        for i in range(4)
    ]

    def evaluation(preds):
        probe = ChoiceResult(
            ids=[it["id"] for it in items],
            categories=["c"] * 4,
            answers=[0] * 4,
            predictions=preds,
            predictions_norm=preds,
            correct_logprobs=[0.0] * 4,
            chosen_texts=[items[i]["choices"][p] for i, p in enumerate(preds)],
        )
        return Evaluation(probe=probe, domain=probe, general_ce=3.0)

    before, after = evaluation([0, 0, 1, 1]), evaluation([0, 1, 0, 1])
    assert flipped_items(before, after, items) == [
        {"category": "c", "question": "q1", "before": "a", "after": "b"}
    ]
    with pytest.raises(ValueError, match="probe items"):
        flipped_items(before, after, items[::-1])


def test_quiet_progress_hides_bars_and_restores_them():
    from tutorial_lib.scoring import progress, quiet_progress

    with quiet_progress():
        assert progress(range(2), "x").disable
    assert not progress(range(2), "x").disable
