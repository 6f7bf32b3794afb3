"""The pieces lesson 05 adds: per-matrix and per-rank arithmetic, tying our LoRA to peft's on a
real-shaped check, the spectrum summary and its plot."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from tutorial_lib.lowrank import (  # noqa: E402
    architecture_of,
    energy_curves,
    logits_of,
    lora_trainable,
    matrix_table,
    peft_lora_layers,
    rank_costs,
    spectrum_by_shape,
    spectrum_summary,
    tie_to_peft,
)
from tutorial_lib.memory import ARCHITECTURES  # noqa: E402
from tutorial_lib.methods import apply_method  # noqa: E402
from tutorial_lib.methods.lora import LoraMethodConfig  # noqa: E402
from tutorial_lib.models import tiny_model  # noqa: E402


def test_matrix_table_adds_up_to_the_model_count():
    smol = ARCHITECTURES["SmolLM2-135M"]
    table = matrix_table(smol, r=8)
    assert table.loc["q_proj", "LoRA at r=8"] == 8 * (576 + 576)
    assert table.loc["v_proj", "d_out"] == 192  # 3 key-value heads of 64
    assert table.loc["30 blocks", "LoRA at r=8"] == lora_trainable(smol, 8) == 2_442_240
    assert table.loc["30 blocks", "ΔW values"] == smol.linear_params
    assert 0 < table.loc["down_proj", "LoRA / ΔW (%)"] < 2


def test_rank_costs_are_linear_in_r_and_match_the_model(tiny):
    model, _ = tiny
    table = rank_costs(model, ranks=(1, 2, 4))
    for target in ("all-linear", "attention"):
        one = table.loc[(target, 1), "trainable"]
        assert table.loc[(target, 4), "trainable"] == 4 * one == lora_trainable(model, 4, target)
        assert table.loc[(target, 1), "AdamW state (MiB)"] == round(8 * one / 2**20, 2)
    assert table.loc[("attention", 4), "trainable"] < table.loc[("all-linear", 4), "trainable"]
    by_shape = rank_costs(architecture_of(model), ranks=(1, 2, 4))
    assert by_shape["trainable"].tolist() == table["trainable"].tolist()


def test_tied_layers_give_peft_outputs_and_not_the_base(corpus):
    tokenizer = tiny_model(0, corpus=corpus)[1]
    config = LoraMethodConfig(r=4, alpha=16)  # scaling 4: a LoRA without it would differ
    theirs = apply_method(tiny_model(0, corpus=corpus)[0], "lora", config)
    ours = apply_method(tiny_model(0, corpus=corpus)[0], "lora-scratch", config)
    base = tiny_model(0, corpus=corpus)[0]
    assert tie_to_peft(ours, theirs, std=0.1) == len(peft_lora_layers(theirs)) == 2 * 7
    text = "How heavy is the Vessick daypack?"
    assert torch.equal(logits_of(ours, tokenizer, text), logits_of(theirs, tokenizer, text))
    assert not torch.allclose(logits_of(ours, tokenizer, text), logits_of(base, tokenizer, text))


def test_spectrum_summary_finds_the_rank_of_known_updates():
    g = torch.Generator().manual_seed(0)
    low = {
        f"m{i}": torch.randn(30, 2, generator=g) @ torch.randn(2, 20, generator=g) for i in range(3)
    }
    full = {"eye": torch.eye(20)}
    table = spectrum_summary({"low": low, "full": full}, energy=0.9, top=2)
    assert table.loc["low", "median rank"] == 2 and table.loc["low", "top-2 share"] == 1.0
    assert table.loc["low", "matrices"] == 3
    assert table.loc["full", "median rank"] == 20
    assert table.loc["full", "median rank for 90%"] == 18  # a flat spectrum needs 90 % of it
    assert table.loc["full", "top-2 share"] == pytest.approx(0.1)


def test_spectrum_by_shape_keeps_shapes_apart_and_reports_shares_of_the_maximum():
    g = torch.Generator().manual_seed(0)
    deltas = {
        "square": torch.eye(20),  # rank 20 of 20
        "wide": torch.randn(20, 5, generator=g) @ torch.randn(5, 10, generator=g),  # 5 of 10
        "wide2": torch.randn(20, 5, generator=g) @ torch.randn(5, 10, generator=g),
    }
    table = spectrum_by_shape({"run": deltas}, energy=0.9, top=2)
    square, wide = table.loc[("run", "20 × 20")], table.loc[("run", "20 × 10")]
    assert square["median rank"] == 20 and square["rank / max"] == 1.0
    assert wide["matrices"] == 2 and wide["max rank"] == 10
    assert wide["median rank"] == 5 and wide["rank / max"] == 0.5
    # one median over both shapes would have mixed a maximum of 20 with one of 10
    assert len(table) == 2


def test_energy_curves_draw_each_matrix_and_a_median_that_ends_at_one():
    g = torch.Generator().manual_seed(1)
    deltas = {
        "a": {"x": torch.randn(12, 8, generator=g), "y": torch.randn(6, 12, generator=g)},
        "b": {"x": torch.randn(12, 1, generator=g) @ torch.randn(1, 8, generator=g)},
    }
    fig = energy_curves(deltas)
    lines = fig.axes[0].get_lines()
    medians = [line for line in lines if line.get_label().endswith("(median)")]
    assert [m.get_label() for m in medians] == ["a (median)", "b (median)"]
    assert len(lines) == 3 + 2 + 1  # three matrices, two medians, the dashed 90 % line
    assert medians[0].get_ydata()[-1] == pytest.approx(1.0)
    assert medians[1].get_ydata()[0] == pytest.approx(1.0)  # rank one: all in the first
