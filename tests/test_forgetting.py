"""Replay mixes exactly; L2-SP and EWC pull back toward the start; sweeps survive interruption."""

from __future__ import annotations

import json

import pytest
import torch

from tutorial_lib import data
from tutorial_lib.forgetting import EWC, L2SP, encode_text, general_batches, mix_replay, run_sweep
from tutorial_lib.methods import apply_method
from tutorial_lib.train import TrainConfig, train


@pytest.mark.parametrize(
    "fraction, n_domain, n_general", [(0.25, 30, 10), (0.5, 12, 12), (0.0, 8, 0)]
)
def test_replay_produces_the_requested_mixture(fraction, n_domain, n_general):
    domain = [{"kind": "domain", "i": i} for i in range(n_domain)]
    general = [{"kind": "general", "i": i} for i in range(100)]
    mixed = mix_replay(domain, general, fraction, seed=1)
    kinds = [ex["kind"] for ex in mixed]
    assert kinds.count("domain") == n_domain and kinds.count("general") == n_general
    assert kinds.count("general") / len(mixed) == fraction
    assert mixed == mix_replay(domain, general, fraction, seed=1)  # seeded


def test_replay_refuses_impossible_mixtures():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        mix_replay([{}], [{}], 1.0)
    with pytest.raises(ValueError, match="only 1"):
        mix_replay([{}] * 10, [{}], 0.5)


def test_general_text_examples_train_every_token(tiny):
    _, tok = tiny
    examples = encode_text(tok, data.load_general_text(limit=3), max_length=32)
    assert all(ex["labels"] == ex["input_ids"] and len(ex["input_ids"]) <= 32 for ex in examples)


def test_l2sp_is_zero_at_the_start_and_pulls_back(tiny):
    model, _ = tiny
    model = apply_method(model, "full")
    penalty = L2SP(model, weight=2.0)
    assert penalty(model).item() == 0.0
    weight = model.model.layers[0].mlp.up_proj.weight
    start = weight.detach().clone()
    with torch.no_grad():
        weight.add_(0.1)
    model.zero_grad()
    penalty(model).backward()
    # gradient = weight * (θ - θ0): descending it moves θ back toward θ0
    assert torch.allclose(weight.grad, 2.0 * (weight.detach() - start), atol=1e-6)
    assert torch.all(weight.grad > 0)


def test_l2sp_keeps_weights_closer_to_the_start(corpus, tiny_examples):
    from tutorial_lib.models import tiny_model

    def distance(penalty_weight: float) -> float:
        model, tok = tiny_model(corpus=corpus)
        model = apply_method(model, "full")
        start = [p.detach().clone() for p in model.parameters()]
        pens = [L2SP(model, penalty_weight)] if penalty_weight else []
        train(model, tiny_examples, TrainConfig(steps=6, lr=3e-3), tok.pad_token_id, penalties=pens)
        return sum((p - s).pow(2).sum().item() for p, s in zip(model.parameters(), start))

    assert distance(50.0) < distance(0.0)


def test_ewc_weights_by_fisher_and_is_zero_at_the_start(tiny):
    model, tok = tiny
    model = apply_method(model, "lora")
    batches = general_batches(tok, data.load_general_text(limit=4), max_length=32, batch_size=2)
    ewc = EWC(model, weight=1.0, batches=batches)
    assert ewc(model).item() == 0.0
    largest = max(f.max().item() for f in ewc.fisher.values())
    assert largest == pytest.approx(1.0)
    assert all(torch.all(f >= 0) for f in ewc.fisher.values())


def test_sweep_resumes_without_losing_finished_runs(tmp_path):
    path = tmp_path / "sweep.jsonl"
    configs = [{"lr": 1e-4}, {"lr": 3e-4}, {"lr": 1e-3}]
    calls = []

    def flaky(lr):
        calls.append(lr)
        if lr == 3e-4 and len(calls) == 2:
            raise KeyboardInterrupt  # the learner stops the sweep during the second run
        return {"score": lr * 10}

    with pytest.raises(KeyboardInterrupt):
        run_sweep(configs, flaky, path)
    assert [json.loads(line)["config"] for line in path.read_text().splitlines()] == [configs[0]]
    results = run_sweep(configs, flaky, path)
    assert calls == [1e-4, 3e-4, 3e-4, 1e-3]  # the finished run was not repeated
    assert [r["score"] for r in results] == pytest.approx([1e-3, 3e-3, 1e-2])
