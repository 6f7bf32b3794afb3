"""Lean evaluation gives the numbers the whole-logits evaluation gave, for every kind of model.

The references below are the evaluation as it was before it computed log-probabilities only
where they are used: every position's full-vocabulary logits from one forward.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tutorial_lib import data, scoring
from tutorial_lib.evaluate import general_cross_entropy, question_prompt
from tutorial_lib.methods import apply_method, get_method
from tutorial_lib.methods.base import eval_mode
from tutorial_lib.scoring import head_input, score_choices, score_continuations

METHODS = [
    "full",
    "lora",
    "prompt-tuning",
    "prefix-tuning",
    "ia3",
    "adapter",
    "lora-scratch",
    "prompt-scratch",
]


def reference_cross_entropy(model, tokenizer, passages, batch_size=16, max_length=256) -> float:
    """The general-text cross-entropy as it was: the whole batch's logits, then one loss."""
    total, count = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(passages), batch_size):
            enc = tokenizer(
                [p["text"] for p in passages[start : start + batch_size]],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
                add_special_tokens=False,
            )
            logits = model(**enc).logits[:, :-1].float()
            target = enc["input_ids"][:, 1:].masked_fill(enc["attention_mask"][:, 1:] == 0, -100)
            loss = F.cross_entropy(logits.transpose(1, 2), target, reduction="sum")
            total += loss.item()
            count += int((target != -100).sum())
    return total / count


def reference_scores(model, tokenizer, requests, batch_size=5) -> list[tuple[float, int]]:
    """Continuation log-probabilities as they were: every position's logits, then the span's."""
    encoded = [scoring._encode_pair(tokenizer, c, x) for c, x in requests]
    results = []
    with eval_mode(model):
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            ids, mask = scoring._pad([ctx + cont for ctx, cont in batch], tokenizer.pad_token_id)
            logits = model(input_ids=ids, attention_mask=mask).logits
            for row, (ctx, cont) in enumerate(batch):
                span = logits[row, len(ctx) - 1 : len(ctx) + len(cont) - 1].float()
                logp = F.log_softmax(span, -1).gather(1, torch.tensor(cont)[:, None])
                results.append((logp.sum().item(), len(cont)))
    return results


def _groups(tokenizer) -> list[tuple[str, list[str]]]:
    groups = []
    for style, items in (
        ("plain", data.load_probe(limit=3)),
        ("chat", data.load_domain_eval(facts=1)),
    ):
        for item in items:
            prompt, sep = question_prompt(tokenizer, item["question"], style)
            groups.append((prompt, [sep + c for c in item["choices"]]))
    groups.append(("The sky is bl", ["ue", "ack"]))  # tokens may merge across the boundary
    return groups


def _trained_a_little(model, tokenizer, name: str):
    """The method applied, with its new weights moved off their (often no-op) initial values."""
    config = get_method(name).config_cls()
    if hasattr(config, "tokenizer"):
        config.tokenizer = tokenizer  # the soft prompt starts from its init text's embeddings
    model = apply_method(model, name, config, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.mark.parametrize("name", METHODS)
def test_lean_numbers_equal_the_whole_logits_numbers(tiny, name):
    model, tok = tiny
    model = _trained_a_little(model, tok, name)
    passages = data.load_general_text(limit=4)
    lean = general_cross_entropy(model, tok, passages, batch_size=3)
    assert lean == pytest.approx(reference_cross_entropy(model, tok, passages, 3), abs=1e-5)
    groups = _groups(tok)
    requests = [(c, x) for c, xs in groups for x in xs]
    expected = reference_scores(model, tok, requests)
    plain = score_continuations(model, tok, requests, batch_size=5)
    shared = [s for group in score_choices(model, tok, groups, batch_size=3) for s in group]
    for got in (plain, shared):
        assert [n for _, n in got] == [n for _, n in expected]
        assert [lp for lp, _ in got] == pytest.approx(
            [lp for lp, _ in expected], abs=1e-5, rel=1e-6
        )  # float32 sums of about -90 nats differ in their 8th digit


def test_long_batches_are_scored_in_several_pieces(tiny, monkeypatch):
    """More positions than HEAD_ROWS: the output layer runs piece by piece, same numbers."""
    model, tok = tiny
    passages = data.load_general_text(limit=4)
    whole = general_cross_entropy(model, tok, passages)
    monkeypatch.setattr(scoring, "HEAD_ROWS", 7)
    assert general_cross_entropy(model, tok, passages) == pytest.approx(whole, abs=1e-6)


def test_the_output_layer_computes_one_position_inside_head_input(tiny):
    model, tok = tiny
    ids = tok("one two three four", return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad(), head_input(model) as (head, seen):
        logits = model(input_ids=ids).logits
    assert head is model.lm_head
    assert logits.shape[1] == 1 and seen[0].shape[:2] == ids.shape
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape[1] == ids.shape[1]  # the hook is gone after


@pytest.mark.slow
def test_lean_numbers_equal_the_whole_logits_numbers_on_the_real_model(real):
    model, tok = real
    passages = data.load_general_text(limit=6)
    lean = general_cross_entropy(model, tok, passages, batch_size=3)
    assert lean == pytest.approx(reference_cross_entropy(model, tok, passages, 3), abs=1e-5)
    groups = _groups(tok)
    requests = [(c, x) for c, xs in groups for x in xs]
    expected = [lp for lp, _ in reference_scores(model, tok, requests)]
    shared = [lp for group in score_choices(model, tok, groups, batch_size=3) for lp, _ in group]
    assert shared == pytest.approx(expected, abs=1e-4)  # the cache's arithmetic, as before
    plain = [lp for lp, _ in score_continuations(model, tok, requests, batch_size=5)]
    # the head runs on the span's rows only: another matrix shape, so float32 rounds differently
    # on some CPUs (a 3.5e-6 relative difference in a sum of about -7 was measured on one), so 1e-5
    # is relative for sums of several tokens' log-probabilities
    assert plain == pytest.approx(expected, rel=1e-5, abs=1e-5)
