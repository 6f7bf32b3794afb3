"""Plots the lessons share; each returns the matplotlib Figure so a notebook can show or save it."""

from __future__ import annotations

import matplotlib.pyplot as plt

from tutorial_lib.evaluate import ChoiceResult

CHANCE = 0.25  # four choices


def category_accuracy(results: dict[str, ChoiceResult], title: str = "Probe accuracy by category"):
    """Grouped bars: accuracy per category for each labelled result, with ±1 standard error."""
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
