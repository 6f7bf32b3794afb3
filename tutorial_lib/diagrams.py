"""Pictures of the ideas, drawn from real objects: where a method's trainable parts sit (from
`block_diagram`), W beside B·A with their shapes, the NF4 pipeline on a real weight tensor, and
what forgetting and its noise floor look like item by item. Each returns a matplotlib Figure and
keeps the numbers it drew on the figure (`fig.counts`, `fig.bits`) so tests can check them.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from tutorial_lib import quant
from tutorial_lib.block_diagram import decoder_block, trainable_parts

__all__ = [
    "decoder_block",
    "trainable_parts",
    "lora_shapes",
    "quantisation_pipeline",
    "pipeline_stages",
    "forgetting_flips",
]

NAMING = "The essay writes the update ΔW ≈ A×B; the lessons (and peft) write B·A, the same product."


# --- LoRA: W beside B·A -------------------------------------------------------------------------


def _matrix(ax, x: float, y: float, w: float, h: float, colour: str, name: str, shape: str):
    """One matrix as a box, its name inside (beside or above when it does not fit), shape below."""
    ax.add_patch(Rectangle((x, y), w, h, facecolor=colour, edgecolor="black", gid=name))
    if w < 0.35:  # a tall thin matrix: name to its right
        where = dict(x=x + w + 0.08, y=y + h / 2, ha="left", va="center")
    elif h < 0.35 or w < 0.15 * len(name):  # a flat one, or a long name: above it
        where = dict(x=x + w / 2, y=y + h + 0.08, ha="center", va="bottom")
    else:
        where = dict(x=x + w / 2, y=y + h / 2, ha="center", va="center")
    ax.text(s=name, fontsize=12, fontweight="bold", **where)
    ax.text(x + w / 2, y - 0.12, shape, ha="center", va="top", fontsize=9)


def lora_shapes(d_in: int, d_out: int, r: int, name: str = "W"):
    """W (d_out × d_in, frozen) + B (d_out × r) · A (r × d_in, trained), drawn to one scale
    (the rank's side is widened to stay visible), with both parameter counts computed."""
    if min(d_in, d_out, r) <= 0 or r > min(d_in, d_out):
        raise ValueError(f"need 0 < r <= min(d_in, d_out); got d_in={d_in}, d_out={d_out}, r={r}")
    counts = {"W": d_out * d_in, "B": d_out * r, "A": r * d_in}
    counts["B·A"] = counts["B"] + counts["A"]
    unit = 3.0 / max(d_in, d_out)  # data units per row or column
    thick = max(r * unit, 0.12)  # the rank's side, at least visible
    h_w, w_w = d_out * unit, d_in * unit
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=80)
    _matrix(ax, 0, 0, w_w, h_w, "#e6e6e6", name, f"{d_out} × {d_in}")
    x = w_w + 0.5
    ax.text(x - 0.25, h_w / 2, "+", fontsize=20, ha="center", va="center")
    _matrix(ax, x, 0, thick, h_w, "#93c47d", "B", f"{d_out} × {r}")
    x += thick + 0.9
    ax.text(x - 0.25, h_w / 2, "·", fontsize=24, ha="center", va="center")
    _matrix(ax, x, h_w - thick, w_w, thick, "#93c47d", "A", f"{r} × {d_in}")
    share = counts["B·A"] / counts["W"]
    lines = [
        f"{name}: {d_out} × {d_in} = {counts['W']:,} parameters, frozen",
        f"B·A: {d_out} × {r} + {r} × {d_in} = {counts['B·A']:,} parameters, trained "
        f"({100 * share:.1f} % of {name})",
        f"B·A is {d_out} × {d_in} like {name}, but its rank is at most r = {r}",
    ]
    ax.text(x, h_w - thick - 0.45, "\n".join(lines), fontsize=9, va="top", linespacing=1.6)
    ax.set_xlim(-0.1, x + max(w_w, 6.2))
    ax.set_ylim(-0.5, h_w + 0.45)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"LoRA: {name} stays frozen, the update B·A of rank {r} trains", fontsize=11)
    fig.text(0.5, 0.02, NAMING, ha="center", fontsize=8, style="italic")
    fig.counts = counts
    plt.close(fig)
    return fig


# --- the QLoRA storage pipeline: blocks, absmax, NF4 codes, double-quantised scales ------------


def pipeline_stages(n: int, block: int = quant.BLOCK) -> list[str]:
    """The storage pipeline's stages for `n` weights, each named with its own number: what the
    top strip of `quantisation_pipeline` draws, left to right."""
    blocks = -(-n // block)
    return [
        f"weights\n{n:,} values",
        f"blocks of {block}\n{blocks:,} blocks",
        f"absmax scale per block\n{blocks:,} fp32 scales",
        "NF4 codes\n4 bits per weight",
        f"scales double-quantised\n8-bit, blocks of {quant.SCALE_BLOCK}",
        f"bits per weight\n{quant.bits_per_param(block, True):.3f}",
    ]


def quantisation_pipeline(weights: torch.Tensor, block: int = quant.BLOCK, show_blocks: int = 4):
    """A strip of the stages (`pipeline_stages`), then four panels, each the real numbers of one
    step on `weights`: the first blocks with their absmax scales; one block divided by its scale
    against the 16 NF4 levels; that block's 4-bit codes; every block's scale before and after
    8-bit double quantisation. The title gives the storage per weight, 4 + 32/64 bits (fp32
    scales) or 4 + 8/64 + 32/(64·256) (double). `fig.stages` and `fig.bits` keep what it drew."""
    flat = weights.detach().float().reshape(-1)
    if flat.numel() < block:
        raise ValueError(f"need at least one block of {block} values, got {flat.numel()}")
    q = quant.quantize_blockwise(flat, quant.NF4_LEVELS, block)
    double = quant.double_quantize(q.absmax)
    bits = {"single": quant.bits_per_param(block), "double": quant.bits_per_param(block, True)}
    stages = pipeline_stages(flat.numel(), block)
    fig = plt.figure(figsize=(11, 8), dpi=80)
    grid = fig.add_gridspec(3, 2, height_ratios=(0.3, 1, 1))
    axes = [[fig.add_subplot(grid[r, c]) for c in range(2)] for r in (1, 2)]
    flow = fig.add_subplot(grid[0, :])  # created last: the four panels keep indices 0-3
    _panel_blocks(axes[0][0], flat, q, block, min(show_blocks, len(q.absmax)))
    _panel_levels(axes[0][1], flat[:block] / q.absmax[0])
    _panel_codes(axes[1][0], q.codes[0], block)
    _panel_scales(axes[1][1], q.absmax, double.dequantize())
    _panel_flow(flow, stages)
    fig.suptitle(
        f"{flat.numel():,} weights → {len(q.absmax):,} blocks of {block} → 4-bit NF4 codes\n"
        f"bits per weight: 4 + 32/{block} = {bits['single']:g} with fp32 scales;  "
        f"4 + 8/{block} + 32/({block}·{quant.SCALE_BLOCK}) = {bits['double']:.4f} double-quantised",
        fontsize=10,
    )
    fig.tight_layout()
    fig.bits, fig.stages = bits, stages
    plt.close(fig)
    return fig


def _panel_flow(ax, stages: list[str]) -> None:
    """The stages as boxes joined by arrows, left to right."""
    width = 1.0 / len(stages)
    for i, label in enumerate(stages):
        ax.text(
            (i + 0.5) * width,
            0.5,
            label,
            ha="center",
            va="center",
            fontsize=8.5,
            bbox=dict(boxstyle="round", facecolor="#fce5cd" if i == len(stages) - 1 else "#eeeeee"),
        )
        if i:
            ax.annotate(
                "",
                xy=((i + 0.5) * width - 0.075, 0.5),
                xytext=((i - 0.5) * width + 0.075, 0.5),
                arrowprops=dict(arrowstyle="->"),
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")


def _panel_blocks(ax, flat, q, block: int, n: int) -> None:
    x = torch.arange(n * block)
    ax.scatter(x, flat[: n * block], s=6, color="tab:blue")
    for i in range(n):
        s = q.absmax[i].item()
        ax.hlines([s, -s], i * block, (i + 1) * block - 1, color="tab:red", lw=1.2)
        ax.axvline(i * block - 0.5, color="#999999", lw=0.8, ls="--")
        ax.text((i + 0.5) * block, s, f"absmax {s:.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_title(
        f"1. the first {n} blocks of {block} weights, each with its own scale (red)", fontsize=9
    )
    ax.set_xlabel("weight index")
    top = q.absmax[:n].max().item()
    ax.set_ylim(-1.15 * top, 1.3 * top)  # room for the labels above the red lines


def _panel_levels(ax, scaled: torch.Tensor) -> None:
    ax.hist(scaled.numpy(), bins=32, range=(-1.05, 1.05), color="tab:blue", alpha=0.7)
    for level in quant.NF4_LEVELS.tolist():
        ax.axvline(level, color="tab:red", lw=0.8)
    ax.set_title("2. block 0 divided by its absmax, and the 16 NF4 levels (red)", fontsize=9)
    ax.set_xlabel("weight / absmax")
    ax.set_ylabel("weights")


def _panel_codes(ax, codes: torch.Tensor, block: int) -> None:
    cols = 16
    grid = codes[:block].reshape(-1, cols).int()
    ax.imshow(grid, cmap="coolwarm", vmin=0, vmax=15)
    for (i, j), c in zip(
        torch.cartesian_prod(torch.arange(grid.shape[0]), torch.arange(cols)).tolist(),
        grid.reshape(-1),
    ):
        ax.text(j, i, str(c.item()), ha="center", va="center", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(
        f"3. block 0 as {block} NF4 codes (0–15: 4 bits each; 7 is exactly zero)", fontsize=9
    )


def _panel_scales(ax, absmax: torch.Tensor, restored: torch.Tensor) -> None:
    n = min(len(absmax), 2 * quant.SCALE_BLOCK)
    ax.plot(absmax[:n].numpy(), lw=0.8, color="tab:blue", label="fp32 scale (32 bits)")
    ax.plot(
        restored[:n].numpy(),
        lw=0.8,
        ls="--",
        color="tab:red",
        label=f"8-bit code × scale of its {quant.SCALE_BLOCK} (+ mean)",
    )
    err = (restored - absmax).abs() / absmax
    ax.set_title(
        f"4. the first {n} of {len(absmax):,} scales, double-quantised\n(error: median "
        f"{100 * err.median():.2f} %, largest {100 * err.max():.2f} %)",
        fontsize=9,
    )
    ax.set_xlabel("block")
    ax.legend(fontsize=7, loc="upper right")


# --- forgetting: items lost and gained, beside the noise floor ---------------------------------

FATES = {  # (before, after) -> name, colour
    (True, True): ("kept right", "#b7d7a8"),
    (True, False): ("lost", "#cc0000"),
    (False, True): ("gained", "#3c78d8"),
    (False, False): ("kept wrong", "#d9d9d9"),
}


def _booleans(x) -> list[bool]:
    """Per-item correctness from a list of booleans, a ChoiceResult or an Evaluation (its probe)."""
    x = getattr(x, "probe", x)
    return [bool(v) for v in getattr(x, "correct", x)]


def flip_counts(before, after) -> dict[str, int]:
    """How many items stayed right, were lost, were gained, stayed wrong."""
    before, after = _booleans(before), _booleans(after)
    if len(before) != len(after):
        raise ValueError(
            f"before has {len(before)} items, after {len(after)}: score the same items"
        )
    counts = {name: 0 for name, _ in FATES.values()}
    for pair in zip(before, after):
        counts[FATES[pair][0]] += 1
    return counts


def forgetting_flips(before_correct, after_correct, floor_before=None, floor_after=None):
    """Every item's fate (kept right / lost / gained / kept wrong) for a run and, beside it, for
    its floor control run: forgetting is lost − gained, and the floor shows how many items flip
    anyway. Accepts per-item booleans, `ChoiceResult`s or `Evaluation`s (their probe)."""
    from tutorial_lib.evaluate import paired_stderr

    if (floor_before is None) != (floor_after is None):
        raise ValueError("give both floor_before and floor_after, or neither")
    runs = {"this run": (before_correct, after_correct)}
    if floor_before is not None:
        runs["floor (control run)"] = (floor_before, floor_after)
    fig, (grid, bars) = plt.subplots(
        2, 1, figsize=(9, 1.6 + 1.1 * len(runs)), dpi=80, height_ratios=[1, 1]
    )
    counts = {}
    for row, (label, (b, a)) in enumerate(runs.items()):
        b, a = _booleans(b), _booleans(a)
        counts[label] = flip_counts(b, a)
        for i, pair in enumerate(zip(b, a)):
            grid.add_patch(Rectangle((i, row), 0.9, 0.8, facecolor=FATES[pair][1], lw=0))
        _stacked(bars, row, counts[label])
        net = (counts[label]["lost"] - counts[label]["gained"]) / len(b)
        bars.text(
            len(b) * 1.01,
            row,
            f"forgot {100 * net:+.1f} ± {100 * paired_stderr(b, a):.1f} pts",
            va="center",
            fontsize=8,
        )
    n = len(_booleans(before_correct))
    for ax in (grid, bars):
        ax.set_yticks(range(len(runs)), list(runs))
        ax.set_ylim(len(runs) - 0.1, -0.3)
    grid.set_xlim(0, n * 1.25)  # the same scale as the bars below, so columns line up
    grid.set_title(
        f"each of {n} items: right → right, right → wrong (lost), wrong → right "
        "(gained), wrong → wrong",
        fontsize=9,
    )
    grid.set_xticks([])
    bars.set_xlim(0, n * 1.25)
    bars.set_xticks([t for t in bars.get_xticks() if t <= n])
    bars.set_xlabel("items")
    handles = [Rectangle((0, 0), 1, 1, facecolor=c) for _, c in FATES.values()]
    bars.legend(
        handles,
        [name for name, _ in FATES.values()],
        ncol=4,
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.45),
        frameon=False,
    )
    fig.tight_layout()
    fig.counts = counts
    plt.close(fig)
    return fig


def _stacked(ax, row: int, counts: dict[str, int]) -> None:
    left = 0
    for name, colour in FATES.values():
        k = counts[name]
        ax.barh(row, k, left=left, color=colour, height=0.6)
        if k:
            ax.text(
                left + k / 2,
                row,
                str(k),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if name in ("lost", "gained") else "black",
            )
        left += k
