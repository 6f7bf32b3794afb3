"""benchmarks/*.py: their arithmetic, their instruments and the lm-eval task, on the tiny model."""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tutorial_lib import data
from tutorial_lib.evaluate import evaluate_choices, question_prompt
from tutorial_lib.methods import apply_method

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
MODULES = ("run", "training", "probe_bench", "timing")


@pytest.fixture(scope="module")
def benchmarks():
    """The scripts' modules (not part of the package), imported as run.py imports its siblings."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield SimpleNamespace(**{name: importlib.import_module(name) for name in MODULES})
    finally:
        sys.path.remove(str(BENCHMARKS))
        for name in MODULES:
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def run(benchmarks):
    return benchmarks.run


@pytest.fixture(scope="module")
def training(benchmarks):
    return benchmarks.training


@pytest.fixture(scope="module")
def probe(benchmarks):
    return benchmarks.probe_bench


@pytest.fixture
def probe_items():
    return data.load_probe(limit=4)


def test_matmul_flops_is_a_plausible_rate(training):
    rates = training.matmul_flops(64, torch.float32, repeats=2, min_seconds=0.01)
    assert len(rates) == 2
    assert all(1e6 < r < 1e16 for r in rates)  # FLOP/s: above a 1990 PC, below a data centre


def test_mfu_arithmetic(training):
    assert training.training_flops_per_token(1_000_000) == 6_000_000
    # 100 tokens/s x 6 MFLOP/token = 0.6 GFLOP/s of a 1.2 GFLOP/s peak
    assert training.mfu(100.0, 1_000_000, 1.2e9) == pytest.approx(0.5)


def test_step_times_leave_out_warmup_and_the_unended_last_step(training):
    starts = [0.0, 10.0, 11.0, 12.0, 14.0]  # step 0 is slow (warm-up); step 4 has no end mark
    timed = training.step_times(starts, tokens=[5, 5, 6, 8, 99], skip=1)
    assert timed.seconds == [1.0, 1.0, 2.0]
    assert timed.tokens == [5, 6, 8]
    assert timed.warmup_seconds == [10.0]
    assert timed.tokens_per_sec == pytest.approx(19 / 4)


def test_step_clock_counts_unpadded_tokens_per_forward(training, tiny):
    model, _ = tiny
    clock = training.StepClock(model)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    for _ in range(3):
        model(input_ids=torch.ones_like(mask), attention_mask=mask)
    timed = clock.stop(skip=0)
    assert timed.tokens == [5, 5]  # three forwards = two ended steps
    model(input_ids=torch.ones_like(mask), attention_mask=mask)
    assert len(clock.starts) == 3  # stop() removed the hook


def test_settings_reject_too_few_steps_to_time(run):
    with pytest.raises(ValueError, match="train_steps"):
        replace(run.SETTINGS["quick"], train_steps=3)  # 2 warm-up + 1 without an end mark


def test_only_rejects_unknown_names_and_keeps_dependency_order(run, capsys):
    args = run.parse_args(["--json", "x.json", "--only", "mfu,matmul", "--notebooks"])
    assert args.selected == ["matmul", "mfu", "notebooks"]
    with pytest.raises(SystemExit):
        run.parse_args(["--json", "x.json", "--only", "matmull"])
    assert "allowed" in capsys.readouterr().err


def test_synthetic_batches_are_fixed_length_and_fully_labelled(training, tiny):
    _, tokenizer = tiny
    batches = training.synthetic_batches(tokenizer, length=16, batch_size=3, count=2)
    assert len(batches) == 2
    for b in batches:
        assert b["input_ids"].shape == (3, 16)
        assert torch.equal(b["labels"], b["input_ids"])
        assert bool(b["attention_mask"].all())


def test_trainee_step_trains(training, tiny):
    model, tokenizer = tiny
    trainee = training.Trainee(apply_method(model, "full").train(), lr=1e-2)
    batch = training.synthetic_batches(tokenizer, length=16, batch_size=2, count=1)[0]
    losses = [trainee.step(batch) for _ in range(5)]
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in trainee.params)  # zero_grad(set_to_none) as in train


def test_interleaving_alternates_blocks(training):
    order = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def step(self, batch):
            order.append(self.name)

    times = training.interleaved_step_times(
        {"a": Fake("a"), "b": Fake("b")}, [{}], block_steps=2, repeats=3, warmup=1
    )
    assert order == ["a", "b"] + ["a", "a", "b", "b", "b", "b", "a", "a", "a", "a", "b", "b"]
    assert [len(blocks) for blocks in times.values()] == [3, 3]


def test_naive_scorer_agrees_with_the_library(probe, tiny, probe_items):
    model, tokenizer = tiny
    naive = probe.naive_choice_scores(model, tokenizer, probe_items)
    ours = probe.our_choice_scores(model, tokenizer, probe_items, batch_size=4)
    assert naive == [pytest.approx(row, abs=1e-4) for row in ours]
    result = evaluate_choices(model, tokenizer, probe_items, style="plain")
    assert probe.agreement(result, *probe.predictions(naive, probe_items)) == 1.0


def test_acc_norm_divides_by_characters_of_the_bare_choice(probe):
    items = [{"choices": ["ab", "abcd"]}]
    plain, norm = probe.predictions([[-3.0, -4.0]], items)
    assert plain == [0]  # -3 > -4
    assert norm == [1]  # -4/4 > -3/2: lm-eval's acc_norm, no leading space counted


def test_lm_eval_task_asks_exactly_our_plain_prompt(probe, tiny, probe_items, tmp_path):
    """The YAML, rendered the way lm-eval renders it (jinja2, StrictUndefined), gives our prompt."""
    import yaml
    from jinja2 import BaseLoader, Environment, StrictUndefined

    _, tokenizer = tiny
    config = yaml.safe_load(probe.write_lm_eval_task(probe_items, tmp_path).read_text())
    env = Environment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
    rows = data.read_jsonl(config["dataset_kwargs"]["data_files"]["test"], "probe")
    assert rows == probe_items
    for doc in rows:
        context, sep = question_prompt(tokenizer, doc["question"], "plain")
        assert env.from_string(config["doc_to_text"]).render(**doc) == context
        assert config["target_delimiter"] == sep
        assert doc[config["doc_to_target"]] == doc["answer"]


def test_lm_eval_builds_our_requests(probe, tiny, probe_items, tmp_path):
    """lm-eval itself, given the task, asks for (context, " " + choice) exactly as we score."""
    pytest.importorskip("lm_eval", reason="lm-eval is in the bench extra")
    import yaml
    from lm_eval.api.task import ConfigurableTask

    _, tokenizer = tiny
    config = yaml.safe_load(probe.write_lm_eval_task(probe_items, tmp_path).read_text())
    task = ConfigurableTask(config=config)
    for doc in task.test_docs():
        context, sep = question_prompt(tokenizer, doc["question"], "plain")
        requests = task.construct_requests(doc, task.doc_to_text(doc))
        assert [r.arguments for r in requests] == [(context, sep + c) for c in doc["choices"]]


def test_a_failing_measurement_is_recorded_and_the_others_still_run(run, tmp_path, monkeypatch):
    monkeypatch.setitem(run.MEASUREMENTS, "matmul", lambda b: 1 / 0)
    monkeypatch.setitem(
        run.MEASUREMENTS, "probe", lambda b: {"probe_eval_speedup": 2.5, "detail": {"items": 3}}
    )
    runner = run.Bench(run.SETTINGS["quick"], threads=torch.get_num_threads())
    run.run(["matmul", "probe"], runner, tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert "ZeroDivisionError" in saved["errors"]["matmul"]
    assert saved["probe_eval_speedup"] == 2.5
    assert saved["detail"]["probe"]["items"] == 3
    row = next(r for r in run.summary_table(saved).splitlines() if "probe_eval_speedup" in r)
    assert row.split()[-1] == "NO"  # 2.5 misses the >= 3 target
