"""The pictures of the ideas: each is drawn from the real objects and shows what they hold."""

from __future__ import annotations

import re

import pytest
from matplotlib.figure import Figure

from tutorial_lib.block_diagram import decoder_block, method_model, trainable_parts
from tutorial_lib.methods import REGISTRY

LAYERS = 3  # enough to tell "every block" from "the last k"
DRAWN = [m for m in REGISTRY if m not in ("bitfit", "qlora")]  # bitfit refuses llama; qlora slow


def _from_names(model) -> set[str]:
    """The parts, by a second reading of the names: which blocks hold a trained tensor."""
    return {
        f"layer.{m.group(1)}"
        for n, p in model.named_parameters()
        if p.requires_grad and (m := re.search(r"layers\.(\d+)\.", n))
    }


@pytest.mark.parametrize("method", DRAWN)
def test_decoder_block_highlights_what_requires_grad(method):
    model = method_model(method, layers=LAYERS)
    parts = trainable_parts(model)
    fig = decoder_block(method, layers=LAYERS, model=model)
    assert isinstance(fig, Figure)
    assert fig.highlighted == parts
    coloured = {p.get_gid() for p in fig.axes[0].patches if p.get_gid() in parts}
    assert coloured == parts  # every highlighted part is a drawn box
    if method != "prefix-tuning":  # peft's prefix is one tensor that feeds every block
        assert {p for p in parts if p.startswith("layer.")} == _from_names(model)


EXPECTED = {  # what each family trains, as the lessons describe it
    "adapter": {"adapter.mlp"},
    "prompt-tuning": {"prompt"},
    "prefix-tuning": {"prefix.k", "prefix.v"},
    "ia3": {"ia3.k", "ia3.v", "ia3.down"},
    "ln-tuning": {"norm.input", "norm.post_attention", "norm.final"},
    "lora": {f"lora.{p}" for p in ("q", "k", "v", "o", "gate", "up", "down")},
}


@pytest.mark.parametrize("method", list(EXPECTED))
def test_trainable_parts_per_family(method):
    parts = trainable_parts(method_model(method, layers=LAYERS))
    assert {p for p in parts if not p.startswith("layer.")} == EXPECTED[method]


def test_top_layers_lights_the_last_blocks_and_full_lights_everything():
    top = trainable_parts(method_model("top-layers", layers=LAYERS))
    assert {p for p in top if p.startswith("layer.")} == {"layer.1", "layer.2"}
    assert "norm.final" in top and "embedding" not in top
    full = trainable_parts(method_model("full", layers=LAYERS))
    assert {"embedding", "lm_head", "q", "down", "norm.final"} <= full  # the head is tied


def test_adapter_houlsby_adds_one_after_attention_too():
    from tutorial_lib.methods.additive import AdapterConfig

    model = method_model("adapter", AdapterConfig(placement="houlsby"), layers=LAYERS)
    assert {"adapter.attn", "adapter.mlp"} <= trainable_parts(model)


def test_unknown_parameter_is_named():
    import torch

    model = method_model("lora", layers=1)
    model.register_parameter("mystery", torch.nn.Parameter(torch.zeros(1)))
    with pytest.raises(ValueError, match="mystery"):
        trainable_parts(model)
