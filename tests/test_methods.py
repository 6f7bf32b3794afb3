"""One test matrix over every registered method, on the tiny model."""

from __future__ import annotations

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
