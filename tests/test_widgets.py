"""The rank explorer: the numbers behind it, its updates, and its plain-table fallback."""

from __future__ import annotations

import sys

import pytest

from tutorial_lib import widgets
from tutorial_lib.lowrank import architecture_of, lora_trainable
from tutorial_lib.memory import ARCHITECTURES, estimate
from tutorial_lib.widgets import (
    PRESETS,
    RankChoice,
    rank_explorer,
    rank_numbers,
    rank_table,
    widgets_can_render,
)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(preset="3B"), r"preset must be one of \['this model', '1B', '7B', '70B'\]"),
        (dict(targets="mlp"), r"targets must be one of \['attention only', 'all linear'\]"),
        (dict(precision="int4"), "precision must be one of"),
        (dict(r=0), "r must be a positive integer"),
        (dict(r=2.0), "r must be a positive integer"),
    ],
)
def test_a_wrong_choice_names_the_allowed_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RankChoice(**kwargs)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_numbers_are_the_estimators_for_lora_and_full_finetuning(preset):
    arch = ARCHITECTURES[PRESETS[preset]]
    numbers = rank_numbers(RankChoice(preset, 16, "attention only", batch=4, seq_len=64))
    n = lora_trainable(arch, 16, "attention")
    assert numbers.trainable == n and numbers.total == arch.n_params + n
    lora = estimate(arch, method="lora", rank=16, targets="attention", batch=4, seq_len=64)
    full = estimate(arch, method="full", batch=4, seq_len=64)
    assert numbers.lora == lora and numbers.full == full
    assert (numbers.lora.gradients, numbers.lora.optimizer) == (4 * n, 8 * n)  # fp32 + AdamW
    assert numbers.lora.weights == full.weights + 4 * n  # the frozen base and the adapters
    assert numbers.lora.activations == full.activations
    assert numbers.lora.total < numbers.full.total


def test_bf16_halves_the_frozen_weights_but_not_the_adapters():
    fp32 = rank_numbers(RankChoice("7B", 8)).lora
    bf16 = rank_numbers(RankChoice("7B", 8, precision="bf16 mixed, fp32 master")).lora
    n = lora_trainable(ARCHITECTURES["Llama-2-7B"], 8)
    assert bf16.weights - 4 * n == (fp32.weights - 4 * n) // 2
    assert (bf16.gradients, bf16.optimizer) == (fp32.gradients, fp32.optimizer)


def test_full_finetuning_in_mixed_precision_keeps_16_bytes_a_parameter():
    """The explorer's full fine-tuning column uses lesson 01's recipes: the fp32 master copy
    makes mixed precision 16 bytes a parameter, as fp32 is."""
    for precision in ("fp32", "bf16 mixed, fp32 master"):
        full = rank_numbers(RankChoice("7B", 8, precision=precision)).full
        states = full.weights + full.gradients + full.optimizer
        assert states == 16 * ARCHITECTURES["Llama-2-7B"].n_params


def test_this_model_can_be_the_loaded_one(tiny):
    model, _ = tiny
    numbers = rank_numbers(RankChoice(r=4), this_model=architecture_of(model))
    assert numbers.trainable == lora_trainable(model, 4)
    assert numbers.total == sum(p.numel() for p in model.parameters()) + numbers.trainable


def test_the_plain_table_covers_models_targets_and_ranks():
    table = rank_table(ranks=(1, 8))
    assert len(table) == len(PRESETS) * 2 * 2
    row = table.loc[("SmolLM2-135M", "all linear", 8)]
    assert row["trainable"] == 2_442_240 and row["trainable %"] == pytest.approx(1.783)
    smol = table.loc["SmolLM2-135M"]["trainable"]
    assert smol[("all linear", 8)] == 8 * smol[("all linear", 1)]  # linear in r
    assert smol[("attention only", 8)] < smol[("all linear", 8)]


def test_outside_a_kernel_the_explorer_prints_the_table(capsys):
    assert not widgets_can_render()  # pytest runs no IPython kernel
    assert rank_explorer() is None
    printed = capsys.readouterr().out
    assert "2442240" in printed and "Llama-2-70B" in printed and "full FT total (GiB)" in printed


def test_without_ipywidgets_the_explorer_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails as if not installed
    assert not widgets_can_render()


def test_the_widget_updates_its_numbers_when_a_control_moves(monkeypatch):
    pytest.importorskip("ipywidgets")
    monkeypatch.setattr(widgets, "widgets_can_render", lambda: True)
    box = rank_explorer()
    preset, targets, r = box.children[:3]
    assert box.plain.startswith("SmolLM2-135M, r = 8, all linear: 2,442,240 trainable")
    r.value, preset.value, targets.value = 64, "7B", "attention only"
    expected = lora_trainable(ARCHITECTURES["Llama-2-7B"], 64, "attention")
    assert box.plain.startswith(f"Llama-2-7B, r = 64, attention only: {expected:,} trainable")
    assert box._repr_mimebundle_()["text/plain"] == box.plain  # what a viewer without widgets shows


def _summary_row(method: str, family: str, acc: float, kept: float) -> dict:
    stats = lambda v: {"mean": v, "std": None, "min": v, "max": v}  # noqa: E731
    row = {"method": method, "family": family, "seeds": 1}
    row |= {"domain_accuracy_after": stats(acc), "retention": stats(kept)}
    return row | {"peak_memory_bytes": stats(2.0**30 if method == "big" else 2.0**29)}


SUMMARY = [
    _summary_row("big", "full", 0.9, 0.9),
    _summary_row("small", "additive", 0.6, 0.95),
    _summary_row("worse", "additive", 0.5, 0.5),
]


def test_outside_a_kernel_the_comparison_explorer_is_the_plot_with_its_front_ringed():
    from matplotlib.collections import PathCollection

    from tutorial_lib.widgets import comparison_explorer

    (ax,) = comparison_explorer(SUMMARY).axes
    points = {t.get_text(): tuple(t.xy) for t in ax.texts}
    assert points == {"big": (0.9, 0.9), "small": (0.6, 0.95), "worse": (0.5, 0.5)}
    rings = [c for c in ax.collections if isinstance(c, PathCollection)]
    ringed = {tuple(xy) for c in rings for xy in c.get_offsets().tolist()}
    assert ringed == {points["big"], points["small"]}  # "worse" is beaten on both axes
    assert "retention" in ax.get_ylabel().lower()


def test_the_comparison_explorer_redraws_for_the_methods_and_axes_picked(monkeypatch):
    pytest.importorskip("ipywidgets")
    from tutorial_lib.widgets import comparison_explorer

    monkeypatch.setattr(widgets, "widgets_can_render", lambda: True)
    box = comparison_explorer(SUMMARY)
    pick, (x_axis, y_axis) = box.children[0].children[0], box.children[0].children[1].children
    assert box.plain.endswith("not beaten on both: big, small")
    x_axis.value = "peak_memory_bytes"  # lower is better: "small" now beats "big" on memory
    y_axis.value = "retention"
    assert "x = peak_memory_bytes" in box.plain and box.plain.endswith("small")
    pick.value = ("big", "worse")
    assert box.plain.startswith("Comparison explorer (needs a live kernel): 2 methods")
    assert box._repr_mimebundle_()["text/plain"] == box.plain
