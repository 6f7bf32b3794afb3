"""The `tutorial-lib` command, run as a learner would run it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import SUMMARY_KEYS, save_model_folder
from tutorial_lib.methods import REGISTRY


def cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tutorial_lib", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_methods_lists_the_registry():
    proc = cli("methods")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert {"full", "lora", "lora-scratch", "dora", "qlora"} <= set(names)
    assert len({line.index(" lr=") for line in lines}) == 1  # one column, however long a name


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--method", "nope", "--steps", "1"], "unknown method 'nope'"),
        (["train", "--method", "lora", "--steps", "0"], "must be a positive integer"),
        (["train", "--method", "lora", "--lr", "-1"], "must be a positive number"),
        (["train", "--method", "lora", "--json", "/no/such/dir/out.json"], "cannot write"),
        (["baseline", "--profile", "huge"], "invalid choice"),
        (["train", "--method", "lora", "--resume"], "--resume needs --checkpoint-dir"),
        (["frobnicate"], "invalid choice"),
        (["train", "--method", "full", "--replay", "1"], "must be a fraction in [0, 1)"),
        (["train", "--method", "full", "--l2sp", "-0.1"], "must be a number >= 0"),
        (["train", "--method", "full", "--ewc", "nan"], "must be a number >= 0"),
        (["train", "--method", "lora", "--task", "acme"], "unknown task 'acme'; allowed:"),
        (["train", "--method", "lora", "--task", "tarnwick+acme"], "unknown task 'tarnwick+acme'"),
    ],
)
def test_bad_arguments_give_one_line_and_no_traceback(args, message):
    proc = cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "error" in line]) == 1


@pytest.mark.slow
def test_fetch_model_prints_a_verified_folder():
    from pathlib import Path

    from tutorial_lib.models import verify_converted

    proc = cli("fetch-model")
    assert proc.returncode == 0
    assert verify_converted(Path(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_baseline_json(tmp_path):
    out = tmp_path / "baseline.json"
    proc = cli("baseline", "--profile", "quick", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert {
        "probe_accuracy",
        "probe_accuracy_by_category",
        "probe_n_items",
        "domain_accuracy",
        "domain_n_items",
        "domain_recall",
        "domain_control_accuracy",
        "general_ce",
    } <= set(result)
    assert result["probe_accuracy"] > 0.4 and len(result["probe_accuracy_by_category"]) >= 8


@pytest.mark.slow
def test_train_lora_learns_the_domain(tmp_path):
    out = tmp_path / "lora.json"
    # 16 steps of 8 over 6 facts (5 passes) teach it; half of quick's facts and a third of its
    # steps keep this, CI's slowest test, to about two minutes
    args = ("train", "--method", "lora", "--profile", "quick", "--facts", "6", "--steps", "16")
    proc = cli(*args, "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert SUMMARY_KEYS <= set(result)
    assert result["domain_accuracy_after"] > result["domain_accuracy_before"]
    assert result["domain_recall_after"] > result["domain_recall_before"]
    assert result["loss_history"][-1] < result["loss_history"][0]
    assert 0 < result["trainable_params"] < 0.05 * result["total_params"]
    assert 0 < result["checkpoint_bytes"] < 20 * 2**20  # the adapter, not the whole model


def test_train_keeps_checkpoints_and_takes_the_forgetting_options(tmp_path, tiny_folder):
    out, ckpt = tmp_path / "run.json", tmp_path / "ckpt"
    args = ["train", "--method", "full", "--model", tiny_folder, "--profile", "quick"]
    args += ["--steps", "2", "--replay", "0.25", "--l2sp", "0.01", "--checkpoint-dir", str(ckpt)]
    proc = cli(*args, "--bf16", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert SUMMARY_KEYS <= set(result) and (result["replay"], result["l2sp"]) == (0.25, 0.01)
    assert result["bf16"] is True
    assert "replay 0.25  l2sp 0.01  bf16 autocast" in proc.stdout
    assert [p.name for p in ckpt.iterdir()] == ["step-000002"]


def test_same_seed_gives_the_same_run_in_two_processes(tmp_path, tiny_folder):
    """`--seed` fixes LoRA's random A matrices as well as the data order, in any process."""
    args = ["train", "--method", "lora", "--model", tiny_folder, "--profile", "quick"]
    histories = []
    for run in ("a", "b"):
        proc = cli(*args, "--steps", "3", "--seed", "7", "--json", str(tmp_path / f"{run}.json"))
        assert proc.returncode == 0, proc.stderr[-2000:]
        histories.append(json.loads((tmp_path / f"{run}.json").read_text())["loss_history"])
    assert histories[0] == histories[1]
    assert histories[0][1] != histories[0][0]  # it trained: the losses are not trivially equal


def test_task_takes_a_single_task_or_a_mixture():
    from tutorial_lib.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["train", "--method", "lora"]).task is None  # the run's default: TASKS[0]
    assert parse(["train", "--method", "lora", "--task", "brimvale"]).task == "brimvale"
    mixture = parse(["train", "--method", "lora", "--task", "tarnwick+brimvale"])
    assert mixture.task == "tarnwick+brimvale"


def test_train_on_another_task(tmp_path, corpus):
    from tutorial_lib import data
    from tutorial_lib.models import tiny_model

    # The tiny tokenizer learns its words from the corpus: give it Brimvale's too, or Brimvale's
    # chats split into so many pieces that they exceed the profile's max_length.
    brimvale = [
        m["content"] for r in data.load_domain_train(task="brimvale") for m in r["messages"]
    ]
    folder = save_model_folder(*tiny_model(seed=0, corpus=corpus + brimvale), tmp_path / "tiny")
    out = tmp_path / "brimvale.json"
    args = ["train", "--method", "lora", "--model", folder, "--profile", "quick"]
    proc = cli(*args, "--steps", "1", "--task", "brimvale", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(out.read_text())["spec"]["task"] == "brimvale"
    assert "task brimvale" in proc.stdout and "lora on brimvale" in proc.stderr


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_method_trains_through_the_cli_with_every_key(method, tiny_folder, tmp_path, capsys):
    from tutorial_lib.cli import main

    out = tmp_path / f"{method}.json"
    args = ["train", "--method", method, "--model", tiny_folder, "--profile", "quick"]
    status = main([*args, "--steps", "2", "--json", str(out)])
    if method == "bitfit":  # the tiny llama, like SmolLM2, has no biases: refused, not faked
        assert status == 2 and "bias-added" in capsys.readouterr().err
        return
    assert status == 0, capsys.readouterr().err[-2000:]
    result = json.loads(out.read_text())
    assert SUMMARY_KEYS <= set(result)
    assert (result["method"], result["steps"]) == (method, 2)
    assert result["lr"] == REGISTRY[method].default_lr  # each method at its own default rate
