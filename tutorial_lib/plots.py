"""Plots the lessons share; each returns the matplotlib Figure so a notebook can show or save it."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt

CHANCE = 0.25  # four choices


def category_accuracy(results: dict[str, Any], title: str = "Probe accuracy by category"):
    """Grouped bars: accuracy per category for each labelled result, with ±1 standard error.

    A result is anything with `by_category()` and `categories` (an `evaluate.ChoiceResult`)."""
    labels = list(results)
    categories = list(next(iter(results.values())).by_category())
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=80)
    for k, label in enumerate(labels):
        result = results[label]
        accs = result.by_category()
        counts = {c: result.categories.count(c) for c in categories}
        heights = [accs[c] for c in categories]
        errors = [(accs[c] * (1 - accs[c]) / counts[c]) ** 0.5 for c in categories]
        xs = [i + (k - (len(labels) - 1) / 2) * width for i in range(len(categories))]
        ax.bar(xs, heights, width, yerr=errors, capsize=2, label=label)
    ax.axhline(CHANCE, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(categories)), [c.replace("_", " ") for c in categories], rotation=30)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # the notebook displays the returned figure once, not twice
    return fig


def loss_curve(histories: dict[str, list[float]], title: str = "Training loss"):
    """Training loss per optimizer step for one or more runs."""
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    for label, losses in histories.items():
        ax.plot(range(1, len(losses) + 1), losses, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def training_trajectory(
    trajectory: list[dict], title: str = "Learning and forgetting during one run"
):
    """Domain accuracy and probe retention (left) and general-text cross-entropy (right) by step."""
    steps = [p["step"] for p in trajectory]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3), dpi=80)
    left.plot(steps, [p["domain_accuracy"] for p in trajectory], "o-", label="domain accuracy")
    left.plot(steps, [p["retention"] for p in trajectory], "s-", label="probe retention")
    left.plot(steps, [p["probe_accuracy"] for p in trajectory], "^--", label="probe accuracy")
    left.set_ylim(0, 1.05)
    left.set_xlabel("step")
    left.legend(fontsize=8)
    right.plot(steps, [p["general_ce"] for p in trajectory], "o-", color="tab:red")
    right.set_xlabel("step")
    right.set_ylabel("general-text cross-entropy (nats/token)")
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _end_point(run: dict) -> dict:
    """A run summary's end-of-run numbers under the plain names a point needs."""
    point = dict(run)
    for key in ("domain_accuracy", "domain_recall", "general_ce"):
        if f"{key}_after" in run:
            point[key] = run[f"{key}_after"]
    return point


def _label_offsets(xs: list[float], ys: list[float]) -> list[tuple[int, int]]:
    """Offsets (in points) that move a label away from labels of nearby points."""
    x_span = (max(xs) - min(xs)) or 1.0
    y_span = (max(ys) - min(ys)) or 1.0
    offsets: list[tuple[int, int]] = []
    placed: list[tuple[float, float]] = []
    for x, y in zip(xs, ys):
        near = sum(abs(x - px) < 0.08 * x_span and abs(y - py) < 0.08 * y_span for px, py in placed)
        offsets.append((4, 4 - 9 * near) if near % 2 == 0 else (4, 4 + 9 * near))
        placed.append((x, y))
    return offsets


LEARNING_AXES = {  # what the x axis of `learning_vs_forgetting` measures, and its label
    "domain_accuracy": "domain accuracy (held-out questions)",
    "domain_recall": "domain recall (greedy reply states the value)",
}


def learning_vs_forgetting(
    runs: list[dict], title: str = "Learning vs forgetting", learning: str = "domain_accuracy"
):
    """One point per run: domain accuracy (learned) against probe retention (kept).

    Each run is a summary from `experiment.summarised_run` (its `_after` numbers are plotted)
    or a dict with `label`, `group`, `domain_accuracy`, `retention` and optionally
    `general_ce`; runs of one group share a colour. Up and to the right is better.
    `learning="domain_recall"` puts recall by generation on the x axis instead.
    """
    if learning not in LEARNING_AXES:
        raise ValueError(f"learning must be one of {sorted(LEARNING_AXES)}, got {learning!r}")
    runs = [_end_point(run) for run in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=80)
    groups = list(dict.fromkeys(run["group"] for run in runs))
    markers = "osD^vP*Xh"
    for k, group in enumerate(groups):
        members = [run for run in runs if run["group"] == group]
        for ax, key in ((left, "retention"), (right, "general_ce")):
            if any(key not in run for run in members):
                continue
            ax.scatter(
                [run[learning] for run in members],
                [run[key] for run in members],
                marker=markers[k % len(markers)],
                s=40,
                label=group,
            )
    for ax, key in ((left, "retention"), (right, "general_ce")):
        shown = [run for run in runs if key in run]
        if not shown:
            continue
        xs, ys = [r[learning] for r in shown], [r[key] for r in shown]
        for run, x, y, offset in zip(shown, xs, ys, _label_offsets(xs, ys)):
            ax.annotate(run["label"], (x, y), fontsize=7, xytext=offset, textcoords="offset points")
    left.set_ylabel("probe retention (share of known items kept)")
    right.set_ylabel("general-text cross-entropy (lower is better)")
    for ax in (left, right):
        ax.set_xlabel(LEARNING_AXES[learning])
    left.legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def weight_histogram(weights, title: str = "One weight matrix", bins: int = 200):
    """A weight matrix's values (log counts, so the rare outliers show) with its ±absmax."""
    values = weights.detach().float().reshape(-1)
    top = values.abs().max().item()
    fig, ax = plt.subplots(figsize=(7, 2.8), dpi=80)
    ax.hist(values.numpy(), bins=bins, log=True, color="tab:blue")
    for x in (-top, top):
        ax.axvline(x, color="tab:red", linestyle="--", linewidth=1)
    ax.set_xlabel("weight value (red: ±absmax, where a per-tensor grid must reach)")
    ax.set_ylabel("count (log)")
    ax.set_title(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def code_books(books: dict, title: str = "The values a 4-bit number can stand for"):
    """Each code book's levels on [-1, 1], one row per book, over a standard normal's shape."""
    import math

    fig, ax = plt.subplots(figsize=(8, 2.6), dpi=80)
    xs = [i / 100 for i in range(-100, 101)]
    top = 1.8481  # NF4's outermost quantile, in standard deviations: where ±1 sits
    density = [math.exp(-((x * top) ** 2) / 2) for x in xs]
    ax.fill_between(xs, 0, [len(books) * d for d in density], color="lightgrey", label="N(0, 1)")
    for row, (name, levels) in enumerate(books.items()):
        values = sorted({round(v, 6) for v in levels.tolist()})
        ax.plot(values, [row + 0.5] * len(values), "|", markersize=18, mew=2, label=name)
    ax.set_yticks([row + 0.5 for row in range(len(books))], list(books))
    ax.set_xlabel("level (a block's values divided by its absmax)")
    ax.set_title(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def spectrum_energy(
    spectra_by_run: dict, energy: float = 0.9, title: str = "How many directions hold an update"
):
    """For each run's matrices, given their singular values (largest first): the share of the
    squared sum held by the k largest, against k (log scale). Thin lines are single matrices, the
    thick line their median; a curve that reaches the dashed line at small k is low-rank."""
    import torch

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=80)
    for k, (label, spectra) in enumerate(spectra_by_run.items()):
        color = f"C{k}"
        curves = []
        for s in spectra:
            power = s**2
            total = power.sum()
            curve = torch.cumsum(power, 0) / total if total > 0 else torch.zeros_like(power)
            curves.append(curve)
            ax.plot(range(1, len(curve) + 1), curve, color=color, alpha=0.12, linewidth=0.7)
        width = max(len(c) for c in curves)
        padded = torch.stack([torch.cat([c, c.new_full((width - len(c),), 1.0)]) for c in curves])
        median = padded.median(dim=0).values
        ax.plot(range(1, width + 1), median, color=color, linewidth=2.2, label=f"{label} (median)")
    ax.axhline(energy, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k, the number of largest singular values kept")
    ax.set_ylabel("share of ‖ΔW‖² they hold")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    plt.close(fig)
    return fig


def accuracy_and_retention(
    runs: list[dict], xs: list[float], xlabel: str, title: str, log2_x: bool = False
):
    """Domain accuracy and probe retention of each run against one setting of it (depth, rank):
    what a structural sweep buys and what it costs, on one pair of axes. The dashed line is the
    base model's domain accuracy; the base's retention is 1 by definition."""
    if len(runs) != len(xs) or not runs:
        raise ValueError(f"need one x per run, got {len(xs)} for {len(runs)} runs")
    order = sorted(range(len(xs)), key=xs.__getitem__)
    xs, runs = [xs[i] for i in order], [runs[i] for i in order]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=80)
    ax.plot(xs, [run["domain_accuracy_after"] for run in runs], "o-", label="domain accuracy")
    ax.plot(xs, [run["retention"] for run in runs], "s-", label="probe retention")
    ax.axhline(
        runs[0]["domain_accuracy_before"], color="grey", linestyle="--", label="base domain acc."
    )
    if log2_x:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:g}" for x in xs])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    plt.close(fig)  # the notebook displays the returned figure once, not twice
    return fig


AXES = {  # summary key -> (axis label, scale, higher is better)
    "domain_recall_after": ("recall (held-out questions, greedy reply)", 1, True),
    "general_ce_change": ("ΔCE on general text (nats/token)", 1, False),
    "kl_to_base": ("KL(base ‖ tuned) on general text (nats/token)", 1, False),
    "domain_accuracy_after": ("domain accuracy (held-out questions)", 1, True),
    "retention": ("probe retention (share of known items kept)", 1, True),
    "retention_at_target": ("retention at matched domain accuracy", 1, True),
    "general_ce_after": ("general-text cross-entropy", 1, False),
    "peak_memory_bytes": ("peak process memory (GiB)", 2**-30, False),
    "training_memory_bytes": ("training memory, fresh process (GiB)", 2**-30, False),
    "sec_per_step": ("seconds per step", 1, False),
    "trainable_percent": ("trainable parameters (%)", 1, False),
    "checkpoint_bytes": ("checkpoint (MiB)", 2**-20, False),
}


def method_scatter(summary: list[dict], x: str, y: str, title: str = "", front: list[str] = ()):
    """One point per method (a comparison's summary): the mean, with a bar of ± one standard
    deviation where a method ran several seeds; methods in `front` are ringed. Families share a
    colour, so the three families of the curriculum can be told apart."""
    for key in (x, y):
        if key not in AXES:
            raise ValueError(f"axis must be one of {', '.join(AXES)}; got {key!r}")
    rows = [
        r for r in summary if r["seeds"] and r[x]["mean"] is not None and r[y]["mean"] is not None
    ]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=80)
    families = list(dict.fromkeys(r["family"] for r in rows))
    (xl, xs_, _), (yl, ys_, _) = AXES[x], AXES[y]
    for k, family in enumerate(families):
        members = [r for r in rows if r["family"] == family]
        ax.errorbar(
            [r[x]["mean"] * xs_ for r in members],
            [r[y]["mean"] * ys_ for r in members],
            xerr=[(r[x]["std"] or 0) * xs_ for r in members],
            yerr=[(r[y]["std"] or 0) * ys_ for r in members],
            fmt="osD^v"[k % 5],
            capsize=2,
            label=family,
        )
    px = [r[x]["mean"] * xs_ for r in rows]
    py = [r[y]["mean"] * ys_ for r in rows]
    for r, px_, py_, offset in zip(rows, px, py, _label_offsets(px, py)):
        ax.annotate(r["method"], (px_, py_), fontsize=7, xytext=offset, textcoords="offset points")
        if r["method"] in front:
            ax.scatter([px_], [py_], s=160, facecolors="none", edgecolors="black", linewidths=0.8)
    ax.set_xlabel(xl + ("" if AXES[x][2] else ", lower is better"))
    ax.set_ylabel(yl + ("" if AXES[y][2] else ", lower is better"))
    ax.set_title(title or f"{yl} against {xl}")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    plt.close(fig)
    return fig


def rate_sweep(runs: list[dict], chosen: dict[str, float] | None = None, title: str = ""):
    """Recall and the general-text cost (ΔCE) against the learning rate, one line per method
    (`method`, `lr`, `domain_recall_after`, `general_ce_change` of each run; the rate on a log
    axis), each method's `chosen` rate ringed: what choosing a rate trades."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=80)
    methods = list(dict.fromkeys(run["method"] for run in runs))
    markers = "osD^vP*Xh"
    for k, method in enumerate(methods):
        points = sorted((r for r in runs if r["method"] == method), key=lambda r: r["lr"])
        for ax, key in ((left, "domain_recall_after"), (right, "general_ce_change")):
            xs, ys = [r["lr"] for r in points], [r[key] for r in points]
            (line,) = ax.plot(xs, ys, marker=markers[k % len(markers)], label=method)
            if chosen and method in chosen:
                at = [y for x, y in zip(xs, ys) if x == chosen[method]]
                ax.scatter(
                    [chosen[method]] * len(at),
                    at,
                    s=160,
                    facecolors="none",
                    edgecolors=line.get_color(),
                    linewidths=1.5,
                )
    left.set_ylabel("recall (greedy reply states the value)")
    right.set_ylabel("ΔCE on general text (nats/token)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
    left.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def probe_vs_suite(agreement: dict, title: str = ""):
    """The runs of a comparison (`rank_agreement.probe_vs_suite`): the suite's mean accuracy drop
    across, the probe's net forgetting (left) and the general-text ΔCE (right) up, each panel
    titled with its Spearman ρ and 95 % interval; floors hollow, runs filled, one colour per
    method. Points that agree in rank lie along a rising line."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=80)
    points = agreement["points"]
    methods = list(dict.fromkeys(p["method"] for p in points))
    colours = plt.get_cmap("tab20")
    for ax, key, label in (
        (axes[0], "probe", "probe: net items forgotten (share)"),
        (axes[1], "ce", "ΔCE on general text (nats/token)"),
    ):
        for k, method in enumerate(methods):
            for floor in (False, True):
                mine = [p for p in points if p["method"] == method and p["floor"] == floor]
                if not mine:
                    continue
                colour = colours(k % 20)
                ax.scatter(
                    [p["suite"] for p in mine],
                    [p[key] for p in mine],
                    s=28,
                    facecolors="none" if floor else colour,
                    edgecolors=colour,
                    label=None if floor or ax is axes[1] else method,
                )
        a = agreement[key]
        lo, hi = a["spearman_ci95"]
        ax.set_title(f"ρ = {a['spearman']:.2f} (95 % CI {lo:.2f} to {hi:.2f}), {a['n']} runs")
        ax.set_xlabel("suite: mean accuracy drop (before − after)")
        ax.set_ylabel(label)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
    axes[0].legend(fontsize=6, ncol=2, loc="best")
    fig.suptitle(
        title or "Does the probe order the runs as the published suite does? (hollow: floors)"
    )
    fig.tight_layout()
    plt.close(fig)
    return fig
