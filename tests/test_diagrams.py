"""The pictures of the ideas: each is drawn from the real objects and shows what they hold."""

from __future__ import annotations

import functools
import re

import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from tutorial_lib.block_diagram import FROZEN, decoder_block, method_model, trainable_parts
from tutorial_lib.methods import REGISTRY

LAYERS = 3  # enough to tell "every block" from "the last k"
GREY = to_rgb(FROZEN)
DRAWN = [m for m in REGISTRY if m not in ("bitfit", "qlora")]  # bitfit refuses llama; qlora slow


def _from_names(model) -> set[str]:
    """The parts, by a second reading of the names: which blocks hold a trained tensor."""
    return {
        f"layer.{m.group(1)}"
        for n, p in model.named_parameters()
        if p.requires_grad and (m := re.search(r"layers\.(\d+)\.", n))
    }


EXPECTED = {  # what each family trains, as the lessons describe it
    "adapter": {"adapter.mlp"},
    "prompt-tuning": {"prompt"},
    "prompt-scratch": {"prompt"},
    "prefix-tuning": {"prefix.k", "prefix.v"},
    "ia3": {"ia3.k", "ia3.v", "ia3.down"},  # peft's llama default: down_proj scaled on its input
    "ln-tuning": {"norm.input", "norm.post_attention", "norm.final"},
    "lora": {f"lora.{p}" for p in ("q", "k", "v", "o", "gate", "up", "down")},
    "bias-added": {f"bias.{p}" for p in ("q", "k", "v", "o", "gate", "up", "down")},
    "chosen-layers": {
        "q",
        "k",
        "v",
        "o",
        "gate",
        "up",
        "down",
        "norm.input",
        "norm.post_attention",
    },
}


@functools.cache
def prepared(method: str):
    return method_model(method, layers=LAYERS)


@pytest.mark.parametrize("method", DRAWN)
def test_decoder_block_highlights_what_requires_grad(method):
    model = prepared(method)
    parts = trainable_parts(model)
    fig = decoder_block(method, layers=LAYERS, model=model)
    assert isinstance(fig, Figure)
    assert fig.highlighted == parts
    boxes = [p for p in fig.axes[0].patches if p.get_gid() is not None]
    coloured = {p.get_gid() for p in boxes if p.get_facecolor()[:3] != GREY}
    assert coloured == parts  # every trained part is a coloured box, and only those
    if method != "prefix-tuning":  # peft's prefix is one tensor that feeds every block
        assert {p for p in parts if p.startswith("layer.")} == _from_names(model)
    if method in EXPECTED:
        assert {p for p in parts if not p.startswith("layer.")} == EXPECTED[method]


def test_top_layers_lights_the_last_blocks_and_full_lights_everything():
    top = trainable_parts(prepared("top-layers"))
    assert {p for p in top if p.startswith("layer.")} == {"layer.1", "layer.2"}
    assert "norm.final" in top and "embedding" not in top
    full = trainable_parts(prepared("full"))
    assert {"embedding", "lm_head", "q", "down", "norm.final"} <= full  # the head is tied


def test_chosen_layers_lights_its_block_alone_and_not_the_final_norm():
    parts = trainable_parts(prepared("chosen-layers"))
    assert {p for p in parts if p.startswith("layer.")} == {f"layer.{LAYERS - 1}"}  # default: -1
    assert "norm.final" not in parts  # unlike top-layers


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


# --- W + B·A, the NF4 pipeline, forgetting flips ------------------------------------------------


def _texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts) + "\n".join(
        t.get_text() for t in fig.texts
    )


def test_lora_shapes_prints_the_counts_and_the_naming_note():
    from tutorial_lib.diagrams import lora_shapes

    fig = lora_shapes(576, 576, 8)
    assert fig.counts["W"] == 331_776 and fig.counts["B·A"] == 9_216
    text = _texts(fig)
    assert "331,776" in text and "9,216" in text and "576 × 8" in text and "8 × 576" in text
    assert "ΔW ≈ A×B" in text and text.count("ΔW ≈ A×B") == 1
    assert {p.get_gid() for p in fig.axes[0].patches} == {"W", "B", "A"}
    tall = lora_shapes(576, 1536, 16).axes[0].patches
    w, b, a = (next(p for p in tall if p.get_gid() == g) for g in ("W", "B", "A"))
    assert w.get_height() == b.get_height() and w.get_width() == a.get_width()  # shapes agree
    assert w.get_height() / w.get_width() == pytest.approx(1536 / 576)
    with pytest.raises(ValueError, match="r <="):
        lora_shapes(4, 4, 8)


def test_quantisation_pipeline_bits_and_panels():
    import torch

    from tutorial_lib import quant
    from tutorial_lib.diagrams import quantisation_pipeline

    weights = torch.randn(64, 576, generator=torch.Generator().manual_seed(0)) * 0.05
    fig = quantisation_pipeline(weights)
    assert fig.bits == {"single": 4 + 32 / 64, "double": 4 + 8 / 64 + 32 / (64 * 256)}
    assert len(fig.axes) == 5  # four panels, then the strip of stages
    flow = [t.get_text() for t in fig.axes[4].texts if t.get_text()]  # arrows have none
    assert flow == fig.stages
    assert [stage.split("\n")[0] for stage in flow] == [
        "weights",
        "blocks of 64",
        "absmax scale per block",
        "NF4 codes",
        "scales double-quantised",
        "bits per weight",
    ]
    assert flow[0].endswith(f"{weights.numel():,} values")
    assert flow[1].endswith(f"{weights.numel() // 64:,} blocks")  # 576 blocks of 64
    assert flow[4].endswith("8-bit, blocks of 256")
    assert flow[-1].endswith(f"{quant.bits_per_param(double=True):.3f}")  # 4.127
    levels = [line.get_xdata()[0] for line in fig.axes[1].lines]
    assert levels == pytest.approx(quant.bitsandbytes_levels("nf4").tolist())  # the 16 of bnb
    codes = quant.quantize_blockwise(weights, quant.NF4_LEVELS).codes[0]
    assert [int(t.get_text()) for t in fig.axes[2].texts] == codes.tolist()  # block 0's codes
    assert "4.1270" in fig._suptitle.get_text() and "4.5" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="one block"):
        quantisation_pipeline(torch.zeros(10))


def test_forgetting_flips_counts_the_items():
    from tutorial_lib.diagrams import forgetting_flips

    before = [True, True, True, False, False, True, False]
    after = [True, False, True, True, False, False, False]
    fig = forgetting_flips(before, after, before, before)
    assert fig.counts["this run"] == {"kept right": 2, "lost": 2, "gained": 1, "kept wrong": 2}
    assert fig.counts["floor (control run)"] == {
        "kept right": 4,
        "lost": 0,
        "gained": 0,
        "kept wrong": 3,
    }
    assert len(fig.axes[0].patches) == 2 * len(before)  # one cell per item per run
    assert "forgot +14.3" in _texts(fig)  # (2 lost - 1 gained) / 7
    with pytest.raises(ValueError, match="same items"):
        forgetting_flips(before, after[:-1])
    with pytest.raises(ValueError, match="both"):
        forgetting_flips(before, after, floor_before=before)


def test_forgetting_flips_reads_choice_results():
    from tutorial_lib.diagrams import forgetting_flips
    from tutorial_lib.evaluate import ChoiceResult

    def result(predictions):
        n = len(predictions)
        return ChoiceResult(["i"] * n, ["c"] * n, [0] * n, predictions, predictions, [0.0] * n)

    fig = forgetting_flips(result([0, 0, 1]), result([1, 0, 0]))
    assert fig.counts == {"this run": {"kept right": 1, "lost": 1, "gained": 1, "kept wrong": 0}}
