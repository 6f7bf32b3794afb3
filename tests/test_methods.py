"""One test matrix over every registered method, on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tutorial_lib.experiment import save_trainable
from tutorial_lib.methods import REGISTRY, apply_method, get_method
from tutorial_lib.methods.lora import LoraMethodConfig
from tutorial_lib.train import TrainConfig, train

METHODS = sorted(REGISTRY)


def _frozen_snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


@pytest.mark.parametrize("name", METHODS)
def test_method_trains_only_its_parameters(name, tiny, tiny_examples):
    model, tok = tiny
    model = apply_method(model, name)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = _frozen_snapshot(model)
    assert trainable, "a method must train something"
    result = train(
        model,
        tiny_examples,
        TrainConfig(steps=12, lr=get_method(name).default_lr * 3),
        tok.pad_token_id,
    )
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], t) for n, t in frozen.items()), "a frozen weight moved"
    assert any(not torch.equal(params[n], t) for n, t in trainable.items())
    assert result.loss_history[-1] < result.loss_history[0]


@pytest.mark.parametrize("name", METHODS)
def test_saved_trainables_round_trip(name, tiny, tmp_path):
    model, _ = tiny
    model = apply_method(model, name)
    size = save_trainable(model, tmp_path / "t.safetensors")
    loaded = load_file(tmp_path / "t.safetensors")
    params = dict(model.named_parameters())
    assert set(loaded) == {n for n, p in params.items() if p.requires_grad}
    assert all(torch.equal(loaded[n], params[n].detach()) for n in loaded)
    assert size > sum(t.numel() * 4 for t in loaded.values())  # fp32 data plus a header


def test_lora_trains_r_times_in_plus_out_per_linear(tiny):
    model, _ = tiny
    cfg = model.config
    h, kv = cfg.hidden_size, cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    i = cfg.intermediate_size
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]  # q k v o gate up down
    expected = cfg.num_hidden_layers * sum(8 * (a + b) for a, b in shapes)
    model = apply_method(model, "lora", LoraMethodConfig(r=8))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


def test_lora_starts_as_the_identity(tiny):
    model, _ = tiny
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        before = model(ids).logits.clone()
        after = apply_method(model, "lora")(ids).logits
    assert torch.allclose(before, after)  # B starts at zero, so B·A adds nothing yet


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(r=0), "r must be a positive integer"),
        (dict(alpha=-1), "alpha"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_bad_lora_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoraMethodConfig(**kwargs)


def test_unknown_target_module_lists_the_real_ones(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match=r"unknown target module\(s\) \['qkv'\].*q_proj"):
        apply_method(model, "lora", LoraMethodConfig(target_modules=["qkv"]))


def test_unknown_method_lists_the_registry():
    with pytest.raises(ValueError, match="available: full, lora"):
        get_method("adapterz")


def test_full_can_keep_embeddings_frozen(tiny):
    from tutorial_lib.methods.full import FullConfig

    model, _ = tiny
    model = apply_method(model, "full", FullConfig(train_embeddings=False))
    assert not model.get_input_embeddings().weight.requires_grad
    assert model.model.layers[0].self_attn.q_proj.weight.requires_grad


# --- one seed, the same run in every process -----------------------------------------------------

SEEDED_RUN = Path(__file__).with_name("seeded_run.py")


def _run_in_fresh_process(model_dir: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(SEEDED_RUN), str(model_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TUTORIAL_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, corpus) -> tuple[dict, dict]:
    """Every method trained by `run_experiment` in two separate processes with seed 7."""
    from tutorial_lib.models import tiny_model

    model_dir = tmp_path_factory.mktemp("tiny-model")
    model, tokenizer = tiny_model(seed=0, corpus=corpus)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return _run_in_fresh_process(model_dir), _run_in_fresh_process(model_dir)


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_run_in_separate_processes(name, two_process_runs):
    first, second = (runs[name] for runs in two_process_runs)
    if "error" in first:
        pytest.skip(f"{name} does not apply to the tiny model: {first['error']}")
    assert first["losses"] == second["losses"]  # exactly: the same initial values, the same data
    assert first["weights"] == second["weights"]
