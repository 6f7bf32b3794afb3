"""Our LoRA (lora-scratch) against peft's: outputs, gradients, scaling, merging; DoRA and rsLoRA."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tutorial_lib.evaluate import adapters_disabled
from tutorial_lib.lowrank import merge_and_unload
from tutorial_lib.methods import apply_method
from tutorial_lib.methods.lora import LoraLinear, LoraMethodConfig
from tutorial_lib.models import tiny_model

IDS = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _ours(model) -> dict[str, LoraLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}


def _twins(corpus, config: LoraMethodConfig, seed: int = 0):
    """peft's LoRA and ours on two copies of one tiny base, with the same A and the same
    non-zero B in every layer (B as training would leave it: zero B hides the scaling)."""
    theirs = apply_method(tiny_model(0, corpus=corpus)[0], "lora", config)
    ours = apply_method(tiny_model(0, corpus=corpus)[0], "lora-scratch", config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, layer in _ours(ours).items():
            peft_layer = theirs.get_submodule("base_model.model." + name)
            layer.lora_A.copy_(peft_layer.lora_A["default"].weight)
            b = 0.1 * torch.randn(layer.lora_B.shape, generator=g)
            layer.lora_B.copy_(b)
            peft_layer.lora_B["default"].weight.copy_(b)
    return ours, theirs


ALPHA_NOT_R = LoraMethodConfig(r=4, alpha=16)  # scaling 4: a LoRA without it is off by 4x


def test_scaling_is_alpha_over_r_or_over_sqrt_r_with_rslora():
    assert LoraMethodConfig(r=4, alpha=16).scaling == 4.0
    assert LoraMethodConfig(r=4, alpha=16, rslora=True).scaling == 8.0
    assert LoraMethodConfig(r=16, alpha=16).scaling == 1.0


def test_outputs_equal_peft_with_alpha_not_r(corpus):
    ours, theirs = _twins(corpus, ALPHA_NOT_R)
    base = _logits(tiny_model(0, corpus=corpus)[0])
    mine, peft = _logits(ours), _logits(theirs)
    assert not torch.allclose(peft, base, atol=1e-3)  # the adapters do change the outputs
    assert torch.equal(mine, peft)  # exactly: the same operations in the same order as peft


def test_the_equality_test_would_catch_a_lora_without_scaling(corpus):
    ours, theirs = _twins(corpus, ALPHA_NOT_R)
    for layer in _ours(ours).values():
        layer.scaling = 1.0  # the bug a peer course shipped: B·A added unscaled
    assert not torch.allclose(_logits(ours), _logits(theirs), atol=1e-3)


def test_one_layer_adds_exactly_scaling_times_b_a_x():
    torch.manual_seed(0)
    layer = LoraLinear(nn.Linear(6, 5, bias=False), r=2, scaling=16 / 2)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 6)
    by_hand = x @ layer.base.weight.T + 8 * (x @ layer.lora_A.T @ layer.lora_B.T)
    assert torch.allclose(layer(x), by_hand, atol=1e-5)
    assert torch.allclose(layer.delta_weight(), 8 * layer.lora_B @ layer.lora_A)


def _grads(model, lora_params: dict[str, nn.Parameter]) -> tuple[torch.Tensor, dict]:
    """Gradient of the loss with respect to the input embeddings and to each A and B."""
    embeds = model.get_input_embeddings()(IDS).detach().requires_grad_(True)
    model(inputs_embeds=embeds, labels=IDS).loss.backward()
    return embeds.grad, {n: p.grad for n, p in lora_params.items()}


def _lora_params(ours, theirs):
    mine, peft = {}, {}
    for name, layer in _ours(ours).items():
        peft_layer = theirs.get_submodule("base_model.model." + name)
        mine[name + ".A"], mine[name + ".B"] = layer.lora_A, layer.lora_B
        peft[name + ".A"] = peft_layer.lora_A["default"].weight
        peft[name + ".B"] = peft_layer.lora_B["default"].weight
    return mine, peft


def test_gradients_of_a_b_and_the_input_equal_peft(corpus):
    ours, theirs = _twins(corpus, ALPHA_NOT_R)
    mine_params, peft_params = _lora_params(ours, theirs)
    mine_x, mine = _grads(ours, mine_params)
    peft_x, peft = _grads(theirs, peft_params)
    assert torch.equal(mine_x, peft_x)
    for name in peft:
        assert peft[name].abs().max() > 0, name  # both A and B get a gradient (B is non-zero)
        assert torch.equal(mine[name], peft[name]), name


def test_rslora_equals_peft_use_rslora(corpus):
    config = LoraMethodConfig(r=4, alpha=16, rslora=True)
    ours, theirs = _twins(corpus, config)
    peft_q = theirs.get_submodule("base_model.model.model.layers.0.self_attn.q_proj")
    assert peft_q.scaling["default"] == pytest.approx(16 / math.sqrt(4))
    assert torch.equal(_logits(ours), _logits(theirs))
    plain, _ = _twins(corpus, LoraMethodConfig(r=4, alpha=16))
    assert not torch.allclose(_logits(ours), _logits(plain), atol=1e-3)  # the switch matters


def test_starts_as_the_identity_with_a_like_peft_and_b_zero(corpus):
    model, _ = tiny_model(0, corpus=corpus)
    before = _logits(model)
    model = apply_method(model, "lora-scratch", LoraMethodConfig(r=4, alpha=16))
    assert torch.equal(_logits(model), before)  # B = 0: nothing added, exactly
    for layer in _ours(model).values():
        assert torch.count_nonzero(layer.lora_B) == 0
        bound = 1 / math.sqrt(layer.lora_A.shape[1])  # kaiming_uniform(a=sqrt(5)) = nn.Linear's
        assert layer.lora_A.abs().max() <= bound
        assert layer.lora_A.abs().max() > 0.8 * bound


def test_only_target_modules_are_wrapped_and_match_peft(corpus):
    config = LoraMethodConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    ours, theirs = _twins(corpus, config)
    assert {n.rsplit(".", 1)[-1] for n in _ours(ours)} == {"q_proj", "v_proj"}
    count = [sum(p.numel() for p in m.parameters() if p.requires_grad) for m in (ours, theirs)]
    assert count[0] == count[1] == 2 * 2 * 4 * (64 + 64) - 2 * 4 * (64 - 32)  # v is 64 -> 32
    assert torch.equal(_logits(ours), _logits(theirs))


def test_all_linear_leaves_the_output_head_alone_and_a_regex_works(corpus):
    model, _ = tiny_model(0, corpus=corpus)
    model = apply_method(model, "lora-scratch")
    assert isinstance(model.lm_head, nn.Linear) and not isinstance(model.lm_head, LoraLinear)
    assert len(_ours(model)) == 2 * 7  # q k v o gate up down in each of 2 blocks
    regex = apply_method(
        tiny_model(0, corpus=corpus)[0],
        "lora-scratch",
        LoraMethodConfig(target_modules=r".*\.(q|k)_proj"),
    )
    assert sorted({n.rsplit(".", 1)[-1] for n in _ours(regex)}) == ["k_proj", "q_proj"]
    with pytest.raises(ValueError, match="matched no linear layer"):
        apply_method(
            tiny_model(0, corpus=corpus)[0],
            "lora-scratch",
            LoraMethodConfig(target_modules=r"nothing"),
        )


def test_merged_weights_give_the_same_outputs_and_unmerge_restores_w(corpus):
    ours, _ = _twins(corpus, ALPHA_NOT_R)
    unmerged = _logits(ours)
    layers = _ours(ours)
    w0 = {n: m.base.weight.detach().clone() for n, m in layers.items()}
    for layer in layers.values():
        layer.merge()
        layer.merge()  # a second merge does nothing
    assert all(not torch.equal(m.base.weight, w0[n]) for n, m in layers.items())
    assert torch.allclose(_logits(ours), unmerged, rtol=0, atol=1e-5)
    for layer in layers.values():
        layer.unmerge()
    # Within float rounding, not bit-exact: (W + ΔW) - ΔW need not round back to W (measured
    # here: up to 1.5e-8 on weights of about 0.02; peft unmerges the same way).
    for name, layer in layers.items():
        assert torch.allclose(layer.base.weight, w0[name], rtol=0, atol=1e-6)
    assert torch.allclose(_logits(ours), unmerged, rtol=0, atol=1e-5)


def test_switching_a_merged_layer_off_gives_the_base(corpus):
    ours, _ = _twins(corpus, ALPHA_NOT_R)
    base = _logits(tiny_model(0, corpus=corpus)[0])
    for layer in _ours(ours).values():
        layer.merge()
    with adapters_disabled(ours):
        assert torch.allclose(_logits(ours), base, rtol=0, atol=1e-5)
    assert not torch.allclose(_logits(ours), base, atol=1e-3)  # on again afterwards


@pytest.mark.parametrize("method", ["lora", "lora-scratch"])
def test_merge_and_unload_keeps_the_outputs_and_leaves_a_plain_model(corpus, method):
    ours, theirs = _twins(corpus, ALPHA_NOT_R)
    model = ours if method == "lora-scratch" else theirs
    before = _logits(model)
    merged = merge_and_unload(model)
    assert type(merged.model.layers[0].self_attn.q_proj) is nn.Linear  # no adapter left
    n_base = sum(p.numel() for p in tiny_model(0, corpus=corpus)[0].parameters())
    assert sum(p.numel() for p in merged.parameters()) == n_base
    assert torch.allclose(_logits(merged), before, rtol=0, atol=1e-5)


def test_dora_trains_only_its_direction_and_magnitude(tiny):
    model, _ = tiny
    model = apply_method(model, "dora", LoraMethodConfig(r=4))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    kinds = {n.split(".")[-3] for n in trained}  # ...q_proj.lora_A.default.weight
    assert kinds == {"lora_A", "lora_B", "lora_magnitude_vector"}
    magnitudes = [n for n in trained if "magnitude" in n]
    assert len(magnitudes) == 2 * 7  # one magnitude vector per adapted layer


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rslora="yes"), "rslora must be True or False"),
        (dict(r=True), "r must be a positive integer"),
        (dict(alpha=0), "alpha must be > 0"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoraMethodConfig(**kwargs)
