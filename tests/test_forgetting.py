"""Replay mixes exactly; L2-SP and EWC pull back toward the start; sweeps survive interruption."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tutorial_lib import data
from tutorial_lib.baseline import Baseline
from tutorial_lib.forgetting import EWC, L2SP, encode_text, general_batches, mix_replay
from tutorial_lib.methods import apply_method
from tutorial_lib.results import at_domain_accuracy, comparison_table
from tutorial_lib.sweeps import run_sweep
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
    total = sum(f.sum().item() for f in ewc.fisher.values())
    assert total / sum(f.numel() for f in ewc.fisher.values()) == pytest.approx(1.0)
    assert all(torch.all(f >= 0) for f in ewc.fisher.values())
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in ewc.fisher:
            params[name] += 0.1
    model.zero_grad()
    ewc(model).backward()
    for name, fisher in ewc.fisher.items():  # the pull on each weight is its importance × offset
        torch.testing.assert_close(params[name].grad, 0.1 * fisher, rtol=1e-3, atol=1e-6)


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


def test_sweep_makes_its_results_folder(tmp_path):
    path = tmp_path / "runs" / "new.jsonl"  # a fresh clone has no runs/ folder
    assert run_sweep([{"lr": 1e-4}], lambda lr: {"score": lr}, path) == [{"score": 1e-4}]
    assert path.exists()


# --- one experiment with mitigations, and comparing runs ----------------------------------------


def test_experiment_with_replay_and_penalties_records_its_trajectory(tiny_folder, profile_with):
    from tutorial_lib.experiment import run_experiment

    profile = profile_with(
        probe_items=10, domain_facts=2, general_items=4, replay_items=4, batch_size=4
    )
    result = run_experiment(
        "full",
        Baseline(profile, tiny_folder),
        steps=4,
        lr=1e-3,
        replay=0.5,
        l2sp=0.1,
        ewc=0.1,
        eval_at=(2, 99),
    )
    s = result.summary()
    assert (s["replay"], s["l2sp"], s["ewc"]) == (0.5, 0.1, 0.1)
    assert [p["step"] for p in s["trajectory"]] == [0, 2, 4]  # 99 is past the end: skipped
    start, end = s["trajectory"][0], s["trajectory"][-1]
    assert start["retention"] == 1.0 and start["forgetting"] == 0.0
    assert end["domain_accuracy"] == s["domain_accuracy_after"]
    assert end["general_ce"] == s["general_ce_after"] != start["general_ce"]
    json.dumps(s)  # the CLI writes it as JSON


def test_replay_pool_is_apart_from_the_evaluation_text_and_the_probe():
    replay = data.load_replay_text()
    general = {row["text"] for row in data.load_general_text()}
    assert len(replay) == 100 and not general & {row["text"] for row in replay}
    sentences = {s.strip() for text in general for s in text.split(". ")}
    assert not sentences & {s.strip() for row in replay for s in row["text"].split(". ")}


def _trajectory(*points):
    return [
        {"step": s, "domain_accuracy": d, "retention": r, "general_ce": c} for s, d, r, c in points
    ]


def test_matched_accuracy_interpolates_between_measured_steps():
    run = _trajectory((0, 0.2, 1.0, 3.0), (10, 0.6, 0.9, 3.2), (20, 1.0, 0.7, 3.6))
    at = at_domain_accuracy(run, 0.8)
    assert at["step"] == pytest.approx(15) and at["retention"] == pytest.approx(0.8)
    assert at["general_ce"] == pytest.approx(3.4)
    assert at_domain_accuracy(run, 0.6)["step"] == 10  # reached exactly at a measured step
    assert at_domain_accuracy(run, 1.01) is None  # never reached: no number is invented


def test_matched_accuracy_takes_the_first_crossing():
    run = _trajectory(
        (0, 0.2, 1.0, 3.0), (10, 0.9, 0.8, 3.1), (20, 0.7, 0.6, 3.3), (30, 0.95, 0.5, 3.4)
    )
    assert at_domain_accuracy(run, 0.85)["step"] == pytest.approx(10 * 0.65 / 0.7)


def test_comparison_table_reports_end_and_matched_numbers():
    def run(label, end_domain, trajectory):
        return {
            "label": label,
            "domain_accuracy_after": end_domain,
            "probe_accuracy_after": 0.6,
            "forgetting": 0.05,
            "forgetting_stderr": 0.02,
            "retention": trajectory[-1]["retention"],
            "general_ce_after": trajectory[-1]["general_ce"],
            "sec_per_step": 4.0,
            "trajectory": trajectory,
        }

    fast = run("fast", 1.0, _trajectory((0, 0.2, 1.0, 3.0), (10, 1.0, 0.8, 3.5)))
    slow = run("slow", 0.5, _trajectory((0, 0.2, 1.0, 3.0), (10, 0.5, 0.95, 3.1)))
    table = comparison_table([fast, slow], target=0.6)
    assert table.loc["fast", "forgetting (pts)"] == 5.0
    assert table.loc["fast", "retention at 60%"] == pytest.approx(0.9)
    assert table.loc["fast", "step to 60%"] == pytest.approx(5.0)
    assert math.isnan(table.loc["slow", "retention at 60%"])  # never got there: no number


def test_replayed_text_adds_no_padding(tiny, profile_with):
    from tutorial_lib.experiment import training_examples

    _, tokenizer = tiny
    profile = profile_with(domain_facts=6)
    plain = training_examples(tokenizer, profile, 0.0, seed=0)
    mixed = training_examples(tokenizer, profile, 0.5, seed=0)
    assert len(mixed) == 2 * len(plain) == 48
    longest = max(len(ex["input_ids"]) for ex in plain)
    assert max(len(ex["input_ids"]) for ex in mixed) == longest  # same width, same step cost


def test_matched_accuracy_of_a_run_that_starts_there_is_its_start():
    run = _trajectory((0, 0.9, 1.0, 3.0), (10, 1.0, 0.8, 3.5))
    assert at_domain_accuracy(run, 0.8)["step"] == 0


def test_a_mid_run_point_on_a_subset_estimates_the_full_suites_numbers(tiny, profile_with):
    """The untrained model, measured on the cheaper subset, lands exactly on the full baseline."""
    from tutorial_lib.baseline import Suite, evaluate_base
    from tutorial_lib.experiment import trajectory_point

    model, tok = tiny
    profile = profile_with(probe_items=30, domain_facts=2, general_items=6)
    suite = Suite.from_profile(profile)
    mid = suite.subset(10, 2)
    assert len(mid.probe) == 10 and {p["category"] for p in mid.probe} == {
        p["category"] for p in suite.probe
    }
    before, mid_before = evaluate_base(model, tok, suite), evaluate_base(model, tok, mid)
    point = trajectory_point(5, before, mid_before, mid_before)
    assert point["probe_accuracy"] == before.probe.accuracy
    assert point["general_ce"] == pytest.approx(before.general_ce)
    assert point["forgetting"] == 0.0 and point["probe_n_items"] == 10


def test_experiment_measures_mid_run_points_on_the_trajectory_suite(tiny_folder, profile_with):
    from tutorial_lib.baseline import Suite
    from tutorial_lib.experiment import run_experiment

    profile = profile_with(probe_items=20, domain_facts=2, general_items=4, batch_size=4)
    mid = Suite.from_profile(profile).subset(10, 2)
    where = Baseline(profile, tiny_folder, trajectory_suite=mid)
    result = run_experiment("full", where, steps=4, lr=1e-3, eval_at=(2,))
    assert [p["probe_n_items"] for p in result.trajectory] == [20, 10, 20]


def _lr_run(method, lr, domain, retention, ce, before_domain=0.25, before_ce=3.0):
    return {
        "method": method,
        "label": f"{method} {lr:g}",
        "lr": lr,
        "domain_accuracy_before": before_domain,
        "domain_accuracy_after": domain,
        "retention": retention,
        "general_ce_before": before_ce,
        "general_ce_after": ce,
        "trainable_params": 1000,
        "trainable_percent": 0.5,
        "optimizer_state_bytes": 8000,
        "peak_memory_bytes": 2e9,
        "sec_per_step": 2.0,
        "checkpoint_bytes": 4000,
    }


def test_best_per_method_picks_most_learning_then_most_kept():
    from tutorial_lib.results import best_per_method

    runs = [
        _lr_run("a", 1e-3, 0.5, 0.9, 3.1),
        _lr_run("a", 3e-3, 0.75, 0.8, 3.3),
        _lr_run("a", 1e-2, 0.75, 0.85, 3.4),  # same learning, kept more: this one
        _lr_run("b", 1e-2, 0.25, 1.0, 3.0),
    ]
    best = best_per_method(runs)
    assert best["a"]["lr"] == 1e-2 and best["b"]["lr"] == 1e-2


def test_matched_table_reads_the_gentlest_rate_that_reaches_the_target():
    from tutorial_lib.results import learning_rate_path, matched_table

    runs = [
        _lr_run("a", 3e-3, 1.0, 0.8, 3.6),
        _lr_run("a", 1e-3, 0.75, 0.9, 3.2),  # out of order: the path sorts by rate
        _lr_run("b", 1e-2, 0.5, 0.95, 3.1),
    ]
    path = learning_rate_path([r for r in runs if r["method"] == "a"])
    assert [p["lr"] for p in path] == [0.0, 1e-3, 3e-3]
    assert path[0] == {"lr": 0.0, "domain_accuracy": 0.25, "retention": 1.0, "general_ce": 3.0}
    table = matched_table(runs, target=0.875)
    assert table.loc["a", "best lr"] == 3e-3
    assert table.loc["a", "lr to 88%"] == pytest.approx(2e-3)  # halfway from 1e-3 to 3e-3
    assert table.loc["a", "retention at 88%"] == pytest.approx(0.85)
    assert table.loc["a", "CE at 88%"] == pytest.approx(3.4)
    assert math.isnan(table.loc["b", "retention at 88%"])  # never got there: no number


def test_matched_table_keeps_small_learning_rates_unrounded():
    from tutorial_lib.results import matched_table

    runs = [_lr_run("a", 3e-5, 0.75, 0.9, 3.2), _lr_run("a", 1e-5, 0.5, 0.95, 3.1)]
    table = matched_table(runs, target=0.5)
    assert table.loc["a", "best lr"] == 3e-5  # not 0.0, as rounding to 4 places showed it
    assert table.loc["a", "lr to 50%"] == pytest.approx(1e-5)  # the gentler rate got there


def test_costs_table_converts_units():
    from tutorial_lib.results import costs_table

    table = costs_table([_lr_run("a", 1e-3, 0.5, 0.9, 3.1)])
    row = table.loc["a 0.001"]
    assert row["optimizer state (MiB)"] == pytest.approx(8000 / 2**20, abs=5e-4)
    assert row["peak memory (GiB)"] == pytest.approx(2e9 / 2**30, abs=5e-4)
    assert row["checkpoint (MiB)"] == pytest.approx(4000 / 2**20, abs=5e-4)
