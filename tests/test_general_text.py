"""General text passage by passage: the same cross-entropy as before, and KL to the base."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tutorial_lib import data, scoring
from tutorial_lib.evaluate import general_cross_entropy
from tutorial_lib.general_text import PassageScores, capture_base, ce_change, score_general


def _passages(n: int = 5) -> list[dict]:
    return data.load_general_text(limit=n)


def _perturbed(model) -> None:
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.add_(
            0.05 * torch.randn_like(model.model.layers[0].mlp.down_proj.weight)
        )


def _whole_logits_kl(base_model, model, tok, passages) -> list[float]:
    """KL(base ‖ model) per passage from each model's whole logits, one passage at a time."""
    sums = []
    for p in passages:
        ids = tok(
            p["text"],
            return_tensors="pt",
            add_special_tokens=False,
            truncation=True,
            max_length=256,
        )["input_ids"]
        with torch.no_grad():
            b = F.log_softmax(base_model(ids).logits[0, :-1].float(), -1).half().float()
            t = F.log_softmax(model(ids).logits[0, :-1].float(), -1).half().float()
        sums.append((b.exp() * (b - t)).sum().item())
    return sums


def test_per_passage_cross_entropy_is_general_cross_entropy(tiny):
    model, tok = tiny
    passages = _passages()
    scores = score_general(model, tok, passages, batch_size=3)
    expected = general_cross_entropy(model, tok, passages, batch_size=3)
    assert scores.ce == expected  # the same arithmetic, to the last digit
    assert sum(scores.ce_sums) / sum(scores.tokens) == pytest.approx(expected, abs=1e-6)
    assert scores.ids == [p["id"] for p in passages] and scores.kl_sums is None
    assert scores.kl() is None  # no base given: no KL, never a made-up number
    for p, ce, n in zip(passages, scores.ce_sums, scores.tokens):
        enc = tok(
            p["text"],
            return_tensors="pt",
            add_special_tokens=False,
            truncation=True,
            max_length=256,
        )
        ids = enc["input_ids"]
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss.item()
        assert n == ids.shape[1] - 1 and ce / n == pytest.approx(loss, rel=1e-5)


def test_kl_of_the_base_against_itself_is_exactly_zero(tiny):
    model, tok = tiny
    passages = _passages()
    base = capture_base(model, tok, passages, 4, batch_size=3)
    assert base.ids == [p["id"] for p in passages[:4]]
    positions = sum(len(t) for t in base.logprobs)
    assert base.nbytes == positions * model.config.vocab_size * 2  # fp16
    scores = score_general(model, tok, passages, batch_size=3, base=base)
    assert scores.kl_sums == [0.0] * 4 and scores.kl_n_passages == 4
    kl = scores.kl()
    assert kl.value == 0.0 and kl.stderr == 0.0 and kl.n == 4


def test_kl_grows_when_a_weight_moves_and_matches_the_whole_logits(tiny, monkeypatch):
    model, tok = tiny
    passages = _passages()
    base_model = type(model)(model.config).eval()
    base_model.load_state_dict(model.state_dict())
    base = capture_base(model, tok, passages, 4, batch_size=3)
    _perturbed(model)
    scores = score_general(model, tok, passages, batch_size=3, base=base)
    assert all(s > 0 for s in scores.kl_sums) and scores.kl().value > 0
    # per token, to 1e-5 nats: the fp16 rounding of either model's log-probabilities is the rest
    per_token = [s / n for s, n in zip(scores.kl_sums, scores.tokens)]
    expected = _whole_logits_kl(base_model, model, tok, passages[:4])
    assert per_token == pytest.approx([s / n for s, n in zip(expected, scores.tokens)], abs=1e-5)
    monkeypatch.setattr(scoring, "HEAD_ROWS", 7)  # many pieces per batch: the same numbers
    chunked = score_general(model, tok, passages, batch_size=2, base=base)
    assert [s / n for s, n in zip(chunked.kl_sums, chunked.tokens)] == pytest.approx(
        per_token, abs=1e-5
    )
    assert chunked.ce_sums == pytest.approx(scores.ce_sums, rel=1e-5)
    assert chunked.kl().value == pytest.approx(scores.kl().value, abs=1e-5)


def test_kl_in_a_few_rows_at_a_time_gives_the_same_sums_to_the_last_bit(tiny, monkeypatch):
    """`KL_ROWS` bounds the memory KL takes (lesson 08 in a 2 GB session), never its numbers."""
    from tutorial_lib import general_text

    model, tok = tiny
    passages = _passages()
    base = capture_base(model, tok, passages, 4, batch_size=3)
    _perturbed(model)
    monkeypatch.setattr(general_text, "KL_ROWS", 10**6)  # every row of a piece at once
    whole = score_general(model, tok, passages, batch_size=3, base=base)
    monkeypatch.setattr(general_text, "KL_ROWS", 3)
    rows = score_general(model, tok, passages, batch_size=3, base=base)
    assert rows.kl_sums == whole.kl_sums and rows.ce_sums == whole.ce_sums
    assert all(s > 0 for s in rows.kl_sums)


def test_the_base_must_be_of_the_same_passages(tiny):
    model, tok = tiny
    base = capture_base(model, tok, _passages(), 2)
    with pytest.raises(ValueError, match="other passages"):
        score_general(model, tok, _passages(6)[1:], base=base)
    with pytest.raises(ValueError, match="KL passages"):
        capture_base(model, tok, _passages(2), 3)


def test_the_cross_entropy_change_is_per_token_with_a_bootstrap_over_passages():
    before = PassageScores(["a", "b", "c"], [10.0, 20.0, 30.0], [10, 10, 20], 60 / 40)
    after = PassageScores(["a", "b", "c"], [12.0, 20.0, 34.0], [10, 10, 20], 66 / 40)
    change = ce_change(before, after)
    assert change.value == pytest.approx(6 / 40) and change.stderr > 0 and change.n == 3
    one = ce_change(PassageScores(["a"], [1.0], [4], 0.25), PassageScores(["a"], [2.0], [4], 0.5))
    assert one.value == 0.25 and one.stderr is None
    with pytest.raises(ValueError, match="different general passages"):
        ce_change(before, PassageScores(["a"], [1.0], [4], 0.25))
