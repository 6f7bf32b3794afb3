"""LoRA's parameter arithmetic, the spectrum of an update, and the ledger behind the explorer."""

from __future__ import annotations

import pytest
import torch

from tutorial_lib import lowrank
from tutorial_lib.lowrank import (
    GPT3_PAPER_FIGURES,
    architecture_of,
    energy_rank,
    gpt3_lora_figures,
    lora_deltas,
    lora_params_per_matrix,
    lora_trainable,
    numerical_rank,
    singular_values,
    spectrum_table,
    target_names,
    weight_deltas,
    weight_snapshot,
)
from tutorial_lib.memory import ARCHITECTURES, estimate, setup_for
from tutorial_lib.methods import apply_method
from tutorial_lib.methods.lora import LoraMethodConfig

# --- parameter arithmetic ------------------------------------------------------------------------


def test_one_matrix_costs_r_times_in_plus_out():
    assert lora_params_per_matrix(576, 192, 8) == 8 * 768
    assert lora_params_per_matrix(4096, 4096, 1) == 8192  # against 16.8 M for ΔW itself


@pytest.mark.parametrize("method", ["lora", "lora-scratch"])
@pytest.mark.parametrize("targets", ["all-linear", "attention", ["q_proj", "v_proj"]])
def test_count_on_a_model_and_on_its_shape_equal_what_trains(tiny, method, targets, corpus):
    from tutorial_lib.models import tiny_model

    model, _ = tiny
    expected = lora_trainable(model, 4, targets)
    assert lora_trainable(architecture_of(model), 4, targets) == expected
    peft_targets = list(target_names(targets)) if targets != "all-linear" else targets
    config = LoraMethodConfig(r=4, target_modules=peft_targets)
    trained = apply_method(tiny_model(0, corpus=corpus)[0], method, config)
    assert sum(p.numel() for p in trained.parameters() if p.requires_grad) == expected


def test_known_counts_of_public_models():
    smol, llama7 = ARCHITECTURES["SmolLM2-135M"], ARCHITECTURES["Llama-2-7B"]
    assert lora_trainable(smol, 8) == 2_442_240  # design §5: "2.44 M trainable, 1.78 %"
    assert lora_trainable(llama7, 8, ["q_proj", "v_proj"]) == 4_194_304  # peft's usual printout
    assert lora_trainable(llama7, 8, "all-linear") == 19_988_480


def test_unknown_targets_are_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="one of"):
        target_names("mlp")
    with pytest.raises(ValueError, match=r"unknown target\(s\) \['qkv'\]"):
        target_names(["q_proj", "qkv"])


def test_gpt3_figures_of_the_lora_paper_are_reproduced():
    rows = gpt3_lora_figures().to_dict("records")
    assert len(rows) == len(GPT3_PAPER_FIGURES)
    by_setting = {(row["matrices"], row["r"]): row for row in rows}
    # Table 4: 4.7M and 37.7M are r = 1 and r = 8 on W_q and W_v (r = 4 there gives 18.9M).
    assert by_setting[("W_q, W_v", 1)]["recomputed"] == 4_718_592
    assert by_setting[("W_q, W_v", 8)]["recomputed"] == 37_748_736
    for row in rows:
        printed = float(row["paper says"].rstrip("M"))
        assert row["recomputed"] / 1e6 == pytest.approx(printed, rel=0.05)
    # Table 5's "18M" budget is 18.87 M however it is split (r = 8 on one, 4 on two, 2 on four).
    budget = [row["recomputed"] for row in rows if row["paper"] == "Table 5, budget"]
    assert budget == [18_874_368] * 3
    # §4.2: r = 4 on W_q and W_v in fp16 is "roughly 35MB" (37.7 million bytes, 36.0 MiB).
    assert by_setting[("W_q, W_v", 4)]["fp16 (MiB)"] == pytest.approx(36.0)


# --- the spectrum of an update -------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_a_matrix_of_known_rank_has_that_rank(rank):
    g = torch.Generator().manual_seed(rank)
    delta = torch.randn(40, rank, generator=g) @ torch.randn(rank, 30, generator=g)
    s = singular_values(delta)
    assert numerical_rank(s, delta.shape) == rank
    assert 1 <= energy_rank(s, 0.9) <= rank
    assert energy_rank(s, 1.0) == rank


def test_energy_rank_counts_squared_singular_values():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
    assert energy_rank(s, 0.6) == 1  # 9/14 = 0.64
    assert energy_rank(s, 0.9) == 2  # 13/14 = 0.93
    assert energy_rank(s, 0.95) == 3
    assert energy_rank(torch.ones(10), 0.9) == 9  # a flat spectrum: 90 % needs 90 % of them
    assert energy_rank(torch.zeros(5)) == 0 and numerical_rank(torch.zeros(5), (5, 5)) == 0
    with pytest.raises(ValueError, match="energy"):
        energy_rank(s, 0)


def test_full_rank_update_and_spectrum_table():
    delta = torch.eye(12) + torch.diag(torch.linspace(0, 0.1, 12))
    table = spectrum_table({"eye": delta, "zero": torch.zeros(3, 4)})
    assert table.loc["eye", "rank"] == 12 and table.loc["eye", "max rank"] == 12
    assert table.loc["eye", "rank for 90% energy"] == 11  # a flat spectrum: nearly all needed
    assert table.loc["zero", "rank"] == 0 and table.loc["zero", "top-1 share"] == 0.0


def test_full_finetuning_deltas_are_after_minus_before(tiny):
    model, _ = tiny
    before = weight_snapshot(model, ["q_proj", "v_proj"])
    assert sorted(before) == [f"model.layers.{i}.self_attn.{m}_proj" for i in (0, 1) for m in "qv"]
    q = model.model.layers[1].self_attn.q_proj.weight
    rank_one = torch.outer(torch.arange(q.shape[0]) / 100.0, torch.ones(q.shape[1]))
    with torch.no_grad():
        q += rank_one
    deltas = weight_deltas(before, model)
    assert torch.allclose(deltas["model.layers.1.self_attn.q_proj"], rank_one, atol=1e-6)
    table = spectrum_table(deltas)
    assert table.loc["model.layers.1.self_attn.q_proj", "rank"] == 1
    assert table.loc["model.layers.0.self_attn.q_proj", "rank"] == 0


@pytest.mark.parametrize("method", ["lora", "lora-scratch"])
def test_lora_deltas_are_scaled_b_a_of_rank_at_most_r(tiny, method):
    model, _ = tiny
    model = apply_method(model, method, LoraMethodConfig(r=3, alpha=12))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    deltas = lora_deltas(model)
    assert len(deltas) == 2 * 7 and all(n.startswith("model.layers.") for n in deltas)
    for delta in deltas.values():
        assert numerical_rank(singular_values(delta), delta.shape) == 3
    layer = model.get_submodule(
        ("base_model.model." if method == "lora" else "") + "model.layers.0.mlp.down_proj"
    )
    a, b = (
        (layer.lora_A, layer.lora_B)
        if method == "lora-scratch"
        else (layer.lora_A["default"].weight, layer.lora_B["default"].weight)
    )
    assert torch.allclose(deltas["model.layers.0.mlp.down_proj"], 4 * b @ a, atol=1e-6)


# --- the estimate behind the rank explorer ---------------------------------------------------


def test_the_estimate_from_the_shape_equals_the_estimate_of_the_model(tiny):
    """What the rank explorer shows (a shape and a choice) is what `train`'s preflight
    estimates for the model prepared that way."""
    model, _ = tiny
    arch = architecture_of(model)
    assert arch.n_params == sum(p.numel() for p in model.parameters())
    shape = estimate(arch, method="lora", rank=4, targets="attention", batch=2, seq_len=16)
    config = LoraMethodConfig(r=4, target_modules=list(target_names("attention")))
    model = apply_method(model, "lora-scratch", config)
    prepared = estimate(arch, setup_for(model, batch=2, seq_len=16))
    assert prepared == shape
    assert shape.weights == sum(p.numel() * p.element_size() for p in model.parameters())


def _rank_run(r: int, domain: float, retention: float) -> dict:
    return {
        "label": f"LoRA r={r}",
        "method": "lora",
        "spec": {"method_config": {"r": r, "alpha": 16}},
        "domain_accuracy_after": domain,
        "domain_accuracy_before": 0.5,
        "retention": retention,
    }


def test_by_rank_plots_in_rank_order_on_a_log_axis():
    runs = [_rank_run(64, 0.9, 0.7), _rank_run(1, 0.6, 0.95), _rank_run(8, 0.7, 0.9)]
    ax = lowrank.by_rank(runs).axes[0]
    domain, retention = ax.lines[:2]
    assert list(domain.get_xdata()) == [1, 8, 64]
    assert list(domain.get_ydata()) == [0.6, 0.7, 0.9]
    assert list(retention.get_ydata()) == [0.95, 0.9, 0.7]
    assert ax.get_xscale() == "log"


def test_by_rank_refuses_a_run_without_a_rank():
    with pytest.raises(ValueError, match="no LoRA rank"):
        lowrank.by_rank([{"label": "full", "method": "full", "spec": {"method_config": None}}])
