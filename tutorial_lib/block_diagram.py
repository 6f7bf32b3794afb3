"""Where each method's trainable parts sit in a decoder block, read from a model it was applied to.

`trainable_parts` maps the names of the parameters that require grad to the boxes of one picture
of a llama decoder block; `decoder_block` applies a method to a small random llama with the real
model's depth and draws that picture, so what it highlights is what the method really trains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, Rectangle

SMOLLM2_LAYERS = 30  # SmolLM2-135M's decoder blocks: the picture's default depth
PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")
ADDED = {"lora": "B·A", "dora": "m", "ia3": "ℓ", "bias": "+b"}  # small boxes beside a projection
FROZEN, TRAINED, NEW = "#e6e6e6", "#f6b26b", "#93c47d"  # grey, orange (existing), green (added)


def _layer_part(rest: str) -> str:
    """The box of a parameter inside a decoder block, from its name after `layers.<i>.`."""
    if ".adapter." in rest:
        return "adapter.attn" if rest.startswith("self_attn") else "adapter.mlp"
    proj = re.search(r"\b(q|k|v|o|gate|up|down)_proj\b", rest)
    if proj:
        p = proj.group(1)
        for marker, kind in (("lora_magnitude", "dora"), ("lora_", "lora"), ("ia3_", "ia3")):
            if marker in rest:
                return f"{kind}.{p}"
        return f"bias.{p}" if rest.endswith("bias") else p
    for norm in ("input", "post_attention"):
        if rest.startswith(f"{norm}_layernorm"):
            return f"norm.{norm}"
    raise ValueError(f"no box in the block picture for parameter {rest!r}")


def trainable_parts(model) -> set[str]:
    """The picture's boxes that hold a parameter with requires_grad (a tied head counts too):
    'q', 'lora.q', 'ia3.down', 'norm.input', 'adapter.mlp', 'prefix.k', 'embedding', 'lm_head',
    and 'layer.<i>' for each block that has one."""
    parts: set[str] = set()
    peft_config = getattr(model, "active_peft_config", None)
    for name, p in model.named_parameters(remove_duplicate=False):  # the tied head's name too
        if not p.requires_grad:
            continue
        name = name.removeprefix("base_model.model.")
        layer = re.match(r"(?:model\.)?model\.layers\.(\d+)\.(.+)", name)
        if layer:
            parts |= {f"layer.{layer.group(1)}", _layer_part(layer.group(2))}
        elif name.startswith("prompt_encoder.") and peft_config.peft_type == "PREFIX_TUNING":
            parts |= {"prefix.k", "prefix.v"} | {
                f"layer.{i}" for i in range(peft_config.num_layers)
            }
        elif name.startswith("prompt_encoder.") or name == "prompt":
            parts.add("prompt")
        elif name.endswith("embed_tokens.weight"):
            parts.add("embedding")
        elif name.endswith("lm_head.weight"):
            parts.add("lm_head")
        elif re.search(r"(^|\.)norm\.", name):
            parts.add("norm.final")
        else:
            raise ValueError(f"no box in the block picture for parameter {name!r}")
    return parts


def method_model(method: str, config=None, layers: int = SMOLLM2_LAYERS):
    """A small random llama with `layers` blocks, prepared by `method` (its config or the default)."""
    from tutorial_lib.methods import apply_method, get_method
    from tutorial_lib.methods.prompts import PromptConfig
    from tutorial_lib.models import tiny_model

    model, tokenizer = tiny_model(seed=0, layers=layers)
    config = config if config is not None else get_method(method).config_cls()
    if isinstance(config, PromptConfig) and config.tokenizer is None:
        config = replace(config, tokenizer=tokenizer)  # the init text needs this model's tokenizer
    return apply_method(model, method, config, seed=0)


# --- drawing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    name: str  # the part name trainable_parts uses
    label: str
    x: float  # centre
    y: float
    w: float
    h: float = 0.55


MAIN = 3.6  # x of the main column
BASE_BOXES = [
    Box("embedding", "token embedding", MAIN, 0.4, 3.0),
    Box("norm.input", "RMSNorm", MAIN, 1.75, 2.2),
    Box("q", "q_proj", 2.0, 2.7, 0.9),
    Box("k", "k_proj", MAIN, 2.7, 0.9),
    Box("v", "v_proj", 5.2, 2.7, 0.9),
    Box("o", "o_proj", MAIN, 4.45, 0.9),
    Box("norm.post_attention", "RMSNorm", MAIN, 6.8, 2.2),
    Box("gate", "gate_proj", 2.6, 7.75, 1.1),
    Box("up", "up_proj", 4.6, 7.75, 1.1),
    Box("down", "down_proj", MAIN, 9.55, 1.1),
    Box("norm.final", "final RMSNorm", MAIN, 12.0, 2.2),
    Box("lm_head", "LM head", MAIN, 12.9, 3.0),
]
OPS = [  # computations without weights: drawn, never highlighted
    ("softmax(q·kᵀ/√d)·v", MAIN, 3.55),
    ("SiLU(gate) ⊙ up", MAIN, 8.65),
]
OPTIONAL_BOXES = [  # drawn only where the method adds them
    Box("prompt", "virtual tokens\n(soft prompt)", 0.95, 0.4, 1.7, 0.7),
    Box("prefix.k", "prefix keys", 1.0, 3.55, 1.2),
    Box("prefix.v", "prefix values", 6.2, 3.55, 1.3),
    Box("adapter.attn", "adapter  d→b→d", MAIN, 5.25, 2.2),
    Box("adapter.mlp", "adapter  d→b→d", MAIN, 10.35, 2.2),
]
RESIDUALS = (6.05, 11.1)  # y of the two "+" joins


def _draw_box(ax, box: Box, colour: str, bold: bool) -> None:
    patch = FancyBboxPatch(
        (box.x - box.w / 2, box.y - box.h / 2),
        box.w,
        box.h,
        boxstyle="round,pad=0.02,rounding_size=0.08",
        facecolor=colour,
        edgecolor="black" if bold else "#999999",
        linewidth=1.4 if bold else 0.8,
        gid=box.name,
    )
    ax.add_patch(patch)
    ax.text(
        box.x,
        box.y,
        box.label,
        ha="center",
        va="center",
        fontsize=8,
        color="black" if bold else "#666666",
        fontweight="bold" if bold else "normal",
    )


def _attachments(parts: set[str], ia3_inputs: set[str]) -> list[Box]:
    """Small boxes right of each projection for what the method adds there (LoRA, IA³, bias)."""
    boxes = []
    for base in (b for b in BASE_BOXES if b.name in PROJECTIONS):
        kinds = [k for k in ADDED if f"{k}.{base.name}" in parts]
        for i, kind in enumerate(kinds):  # stacked when two (DoRA: B·A and m)
            h = base.h / len(kinds)
            label = ADDED[kind]
            if kind == "ia3":
                label += " in" if base.name in ia3_inputs else " out"
            y = base.y + base.h / 2 - h * (i + 0.5)
            boxes.append(Box(f"{kind}.{base.name}", label, base.x + base.w / 2 + 0.36, y, 0.62, h))
    return boxes


def _tied(model) -> bool:
    """Whether the output head reuses the input embedding's matrix (SmolLM2 does)."""
    found = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        for part in ("embed_tokens.weight", "lm_head.weight"):
            if name.endswith(part) and "ln_tuning" not in name:
                found.setdefault(part, p)
    return len(found) == 2 and found["embed_tokens.weight"] is found["lm_head.weight"]


def _ia3_inputs(model) -> set[str]:
    """The projections whose input (not output) IA³ scales: peft's feedforward modules."""
    config = getattr(model, "active_peft_config", None)
    ff = getattr(config, "feedforward_modules", None) or []
    return {name.removesuffix("_proj") for name in ff}


def _draw_layers(ax, parts: set[str], layers: int) -> list[str]:
    """A strip of every block, bottom to top; those holding a trained part are coloured."""
    x, bottom, top = 8.7, 1.3, 11.4
    h = (top - bottom) / layers
    lit = []
    for i in range(layers):
        on = f"layer.{i}" in parts
        lit += [f"layer.{i}"] if on else []
        ax.add_patch(
            Rectangle(
                (x, bottom + i * h),
                0.6,
                h * 0.85,
                gid=f"layer.{i}",
                facecolor=TRAINED if on else FROZEN,
                edgecolor="#777777",
                lw=0.5,
            )
        )
    ax.text(
        x + 0.3, top + 0.15, "blocks\nwith a\ntrained\npart", ha="center", va="bottom", fontsize=7
    )
    ax.text(x + 0.75, bottom + h / 2, "0", va="center", fontsize=7)
    ax.text(x + 0.75, top - h / 2, str(layers - 1), va="center", fontsize=7)
    return lit


def _draw_frame(ax, layers: int) -> None:
    """The block's outline, its residual path, and the two additions it feeds."""
    ax.add_patch(
        FancyBboxPatch(
            (0.2, 1.25),
            7.0,
            10.2,
            boxstyle="round,pad=0.02,rounding_size=0.2",
            facecolor="none",
            edgecolor="#444444",
            linestyle="--",
        )
    )
    ax.text(0.35, 11.25, f"decoder block × {layers}", fontsize=9, fontweight="bold", va="center")
    starts = (1.3, RESIDUALS[0] + 0.35)  # each residual branches off where its sub-layer starts
    for y, start in zip(RESIDUALS, starts):
        ax.text(
            MAIN,
            y,
            "+",
            ha="center",
            va="center",
            fontsize=14,
            fontweight="bold",
            bbox=dict(boxstyle="circle,pad=0.1", facecolor="white", edgecolor="black"),
        )
        ax.plot([MAIN, 0.6, 0.6], [start, start, y], color="#777777", lw=1)
        ax.annotate(
            "", (MAIN - 0.25, y), (0.6, y), arrowprops=dict(arrowstyle="->", color="#777777")
        )
        ax.text(
            0.7, start + 0.05, "residual", fontsize=7, color="#777777", rotation=90, va="bottom"
        )
    ax.plot([MAIN, MAIN], [0.7, 12.6], color="#bbbbbb", lw=1, zorder=0)


def decoder_block(method: str, config=None, layers: int = SMOLLM2_LAYERS, model=None):
    """A decoder block with the parts `method` trains highlighted (orange: existing weights that
    train; green: weights the method adds; grey: frozen). The method is applied for real to a
    small random llama with `layers` blocks (or pass `model`, already prepared); the strip on the
    right shows which blocks hold a trained part. `fig.highlighted` lists the coloured boxes."""
    model = model if model is not None else method_model(method, config, layers)
    parts = trainable_parts(model)
    fig, ax = plt.subplots(figsize=(7.5, 9.5), dpi=80)
    _draw_frame(ax, layers)
    highlighted = _draw_layers(ax, parts, layers)
    for box in BASE_BOXES:
        on = box.name in parts
        if box.name == "lm_head" and _tied(model):
            box = replace(box, label="LM head (tied to embedding)")
        highlighted += [box.name] if on else []
        _draw_box(ax, box, TRAINED if on else FROZEN, on)
    added = [b for b in OPTIONAL_BOXES if b.name in parts] + _attachments(parts, _ia3_inputs(model))
    for box in added:
        highlighted.append(box.name)
        _draw_box(ax, box, NEW, True)
    for label, x, y in OPS:
        ax.text(
            x,
            y,
            label,
            ha="center",
            va="center",
            fontsize=8,
            style="italic",
            bbox=dict(boxstyle="round", facecolor="white", edgecolor="#bbbbbb"),
        )
    _legend(ax)
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 13.9)
    ax.axis("off")
    ax.set_title(f"{method}: where the trained weights sit", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.text(0.5, 0.01, _caption(method, layers), ha="center", va="bottom", fontsize=8, wrap=True)
    fig.highlighted = set(highlighted)
    plt.close(fig)  # a notebook shows the returned figure once
    return fig


def _caption(method: str, layers: int) -> str:
    from tutorial_lib.methods import REGISTRY

    what = REGISTRY[method].description if method in REGISTRY else method
    return (
        f"{what}\n(read from requires_grad after applying it to a random llama of {layers} blocks)"
    )


def _legend(ax) -> None:
    handles = [
        Rectangle((0, 0), 1, 1, facecolor=TRAINED, edgecolor="black"),
        Rectangle((0, 0), 1, 1, facecolor=NEW, edgecolor="black"),
        Rectangle((0, 0), 1, 1, facecolor=FROZEN, edgecolor="#999999"),
    ]
    labels = ["existing weight, trained", "added weight, trained", "frozen"]
    ax.legend(
        handles, labels, loc="upper right", fontsize=7, frameon=False, bbox_to_anchor=(1.0, 1.0)
    )
