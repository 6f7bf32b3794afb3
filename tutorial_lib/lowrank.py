"""Low-rank arithmetic for lesson 05: what LoRA trains, what rank an update really has, merging.

Parameter counts work on a loaded model (its real layers) or on a shape only
(`memory.Architecture`, for models too big to load here); the spectrum helpers take any
update ΔW, full fine-tuning's W_after − W_before or LoRA's scaled B·A alike.
"""

from __future__ import annotations

import torch
from torch import nn

from tutorial_lib.memory import Architecture
from tutorial_lib.methods.lora import LoraLinear, is_target

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
TARGET_SETS = {"attention": ATTENTION, "all-linear": ATTENTION + MLP}  # llama-style names


# --- parameter arithmetic -----------------------------------------------------------------------


def lora_params_per_matrix(d_in: int, d_out: int, r: int) -> int:
    """r·(d_in + d_out): A is (r, d_in) and B (d_out, r), against d_in·d_out for ΔW itself."""
    return r * (d_in + d_out)


def block_linear_shapes(arch: Architecture) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of each linear layer of one llama-style block, by module name."""
    h, i = arch.hidden_size, arch.intermediate_size
    kv = arch.num_key_value_heads * (h // arch.num_attention_heads)  # grouped-query attention
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]
    return dict(zip(ATTENTION + MLP, shapes))


def target_names(targets: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Module names for "attention" or "all-linear", or the names given; others are refused."""
    if isinstance(targets, str):
        if targets not in TARGET_SETS:
            raise ValueError(f"targets must be one of {sorted(TARGET_SETS)} or a list of names")
        return TARGET_SETS[targets]
    unknown = sorted(set(targets) - set(ATTENTION + MLP))
    if unknown:
        raise ValueError(f"unknown target(s) {unknown}; a llama block has {list(ATTENTION + MLP)}")
    return tuple(targets)


def lora_trainable(
    model_or_arch: nn.Module | Architecture, r: int, targets: str | list[str] = "all-linear"
) -> int:
    """LoRA's trainable parameters at rank r: from a model's real layers, or an architecture."""
    names = target_names(targets)
    if isinstance(model_or_arch, Architecture):
        shapes = block_linear_shapes(model_or_arch)
        per_block = sum(lora_params_per_matrix(*shapes[n], r) for n in names)
        return model_or_arch.num_hidden_layers * per_block
    head = model_or_arch.get_output_embeddings()
    return sum(
        lora_params_per_matrix(m.in_features, m.out_features, r)
        for name, m in model_or_arch.named_modules()
        if is_target(name, m, list(names), head)
    )


def architecture_of(model: nn.Module, name: str = "this model") -> Architecture:
    """The shape numbers of a loaded llama-style model, for the same arithmetic as the presets."""
    c = model.config
    return Architecture(
        name,
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.vocab_size,
        bool(getattr(c, "tie_word_embeddings", False)),
    )


# The LoRA paper (Hu et al. 2021) adapts GPT-3 175B's d x d attention matrices.
GPT3_D_MODEL, GPT3_LAYERS, GPT3_PARAMS = 12288, 96, 175e9
GPT3_PAPER_FIGURES = [  # (where in the paper, matrices per layer, r, the figure it prints)
    ("Table 4, LoRA", ("W_q", "W_v"), 1, "4.7M"),
    ("Table 4, LoRA", ("W_q", "W_v"), 8, "37.7M"),
    ("Table 5, budget", ("W_q",), 8, "18M"),
    ("Table 5, budget", ("W_q", "W_v"), 4, "18M"),
    ("Table 5, budget", ("W_q", "W_k", "W_v", "W_o"), 2, "18M"),
]


def gpt3_lora_figures():
    """The paper's GPT-3 175B counts recomputed as layers x matrices x r·(d + d), with the
    fp16 adapter size (§4.2: r = 4 on W_q, W_v makes a checkpoint of "roughly 35MB")."""
    import pandas as pd

    rows = []
    for where, matrices, r, printed in GPT3_PAPER_FIGURES:
        n = GPT3_LAYERS * len(matrices) * lora_params_per_matrix(GPT3_D_MODEL, GPT3_D_MODEL, r)
        rows.append(
            {
                "paper": where,
                "matrices": ", ".join(matrices),
                "r": r,
                "paper says": printed,
                "recomputed": n,
                "share of 175B": f"1 in {GPT3_PARAMS / n:,.0f}",
                "fp16 MB": round(2 * n / 1e6, 1),
            }
        )
    return pd.DataFrame(rows)


# --- the spectrum of an update ------------------------------------------------------------------


def singular_values(delta: torch.Tensor) -> torch.Tensor:
    """Singular values of ΔW, largest first, in float64 (float32's noise floor hides small ones)."""
    return torch.linalg.svdvals(delta.detach().to(torch.float64))


def energy_rank(s: torch.Tensor, energy: float = 0.9) -> int:
    """How many singular values hold `energy` of ΔW's squared Frobenius norm: its effective rank."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    power = s.to(torch.float64) ** 2
    if power.sum() == 0:
        return 0
    share = torch.cumsum(power, 0) / power.sum()
    return int(torch.searchsorted(share, torch.tensor(energy, dtype=share.dtype) - 1e-12)) + 1


def numerical_rank(s: torch.Tensor, shape: tuple[int, int], eps: float = 2.0**-23) -> int:
    """Singular values above float32 rounding (max(shape) · eps · the largest): the true rank."""
    if len(s) == 0 or s[0] == 0:
        return 0
    return int((s > max(shape) * eps * s[0]).sum())


def spectrum_table(deltas: dict[str, torch.Tensor], energy: float = 0.9):
    """One row per update: its shape, numerical rank, effective rank and top singular value share."""
    import pandas as pd

    rows = []
    for name, delta in deltas.items():
        s = singular_values(delta)
        power = s**2
        rows.append(
            {
                "matrix": name,
                "shape": tuple(delta.shape),
                "max rank": min(delta.shape),
                "rank": numerical_rank(s, tuple(delta.shape)),
                f"rank for {energy:.0%} energy": energy_rank(s, energy),
                "top-1 share": float(power[0] / power.sum()) if power.sum() > 0 else 0.0,
            }
        )
    return pd.DataFrame(rows).set_index("matrix")


def _plain_name(name: str) -> str:
    """A module's name without peft's wrapper prefix, so full-FT and LoRA names match."""
    return name.removeprefix("base_model.model.")


def weight_snapshot(model: nn.Module, targets: str | list[str] = "all-linear") -> dict:
    """Copies of the target linear weights (take one before full fine-tuning to get its ΔW)."""
    head = model.get_output_embeddings()
    return {
        _plain_name(name): m.weight.detach().clone()
        for name, m in model.named_modules()
        if is_target(name, m, targets, head)
    }


def weight_deltas(before: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Full fine-tuning's update W_after − W_before for every matrix in a `weight_snapshot`."""
    modules = {_plain_name(n): m for n, m in model.named_modules()}
    return {n: modules[n].weight.detach() - w for n, w in before.items()}


def lora_deltas(model: nn.Module) -> dict[str, torch.Tensor]:
    """LoRA's update scaling · B·A for every adapted matrix, ours (LoraLinear) or peft's."""
    deltas = {}
    for name, m in model.named_modules():
        if isinstance(m, LoraLinear):
            deltas[_plain_name(name)] = m.delta_weight().detach()
        elif hasattr(m, "get_delta_weight") and "default" in getattr(m, "lora_A", {}):
            deltas[_plain_name(name)] = m.get_delta_weight("default").detach()
    return deltas


# --- merging ------------------------------------------------------------------------------------


def merge_and_unload(model: nn.Module) -> nn.Module:
    """The plain model with each LoRA update folded into W (no added latency at inference):
    peft's `merge_and_unload` for a peft model, `LoraLinear.merge` and unwrapping for ours."""
    if callable(getattr(model, "merge_and_unload", None)):
        return model.merge_and_unload()
    for name, m in list(model.named_modules()):
        if isinstance(m, LoraLinear):
            m.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, m.base)
    return model
