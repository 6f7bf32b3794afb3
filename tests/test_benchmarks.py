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


def test_fixed_length_examples_are_fully_labelled_and_train(training, tiny):
    from tutorial_lib.train import TrainConfig, train

    model, tokenizer = tiny
    examples = training.fixed_length_examples(tokenizer, length=16, count=6)
    assert len(examples) == 6
    assert all(len(ex["input_ids"]) == 16 and ex["labels"] == ex["input_ids"] for ex in examples)
    result = train(
        apply_method(model, "full"),
        examples,
        TrainConfig(steps=6, batch_size=2, lr=1e-2),
        pad_id=tokenizer.pad_token_id,
    )
    assert result.loss_history[-1] < result.loss_history[0]


def test_interleaving_reverses_the_order_every_other_repeat(training):
    order = []

    def timer(name):
        return lambda bench, method: order.append((name, method)) or name

    bench = SimpleNamespace(settle=lambda: order.append("settle"))
    runs = training.interleaved_runs(bench, {"a": timer("a"), "b": timer("b")}, repeats=3)
    called = [o for o in order if o != "settle"]
    assert [name for name, _ in called] == ["a", "b", "b", "a", "a", "b"]
    assert all(name == method for name, method in called)  # no method given: each its own name
    assert order.count("settle") == 6  # before every run
    assert runs == {"a": ["a"] * 3, "b": ["b"] * 3}
    order.clear()
    training.interleaved_runs(bench, {"x": timer("x")}, repeats=1, method="lora")
    assert order[-1] == ("x", "lora")


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


def test_packed_examples_are_fixed_length_and_keep_the_chats_labels(training, tiny_examples):
    packed = training.packed_examples(tiny_examples, 32)
    flat_ids = [t for ex in tiny_examples for t in ex["input_ids"]]
    flat_labels = [t for ex in tiny_examples for t in ex["labels"]]
    assert len(packed) == len(flat_ids) // 32
    assert all(len(ex["input_ids"]) == len(ex["labels"]) == 32 for ex in packed)
    assert [t for ex in packed for t in ex["input_ids"]] == flat_ids[: 32 * len(packed)]
    assert [t for ex in packed for t in ex["labels"]] == flat_labels[: 32 * len(packed)]
    everything = training.packed_examples(tiny_examples, 32, label_all=True)
    assert all(ex["labels"] == ex["input_ids"] for ex in everything)


def test_bf16_loss_gap_is_relative_to_fp32(training):
    gap = training.loss_gap(bf16=[2.2, 1.0, 0.55], fp32=[2.0, 1.0, 0.5])
    assert gap["bf16_max_step_loss_rel_diff"] == pytest.approx(0.1)
    assert gap["bf16_final_loss_rel_diff"] == pytest.approx(0.1)
    assert gap["bf16_mean_loss_rel_diff"] == pytest.approx(0.25 / 3.5)


def test_notebooks_are_timed_without_cached_sweep_runs(run, tmp_path):
    (tmp_path / "02_x_quick.jsonl").write_text("cached\n")
    (tmp_path / "02_x_full.jsonl").write_text("full\n")
    with run.without_cached_runs(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == ["02_x_full.jsonl"]
        (tmp_path / "02_x_quick.jsonl").write_text("written by the timed run\n")
    assert (tmp_path / "02_x_quick.jsonl").read_text() == "cached\n"
    assert (tmp_path / "02_x_full.jsonl").read_text() == "full\n"
