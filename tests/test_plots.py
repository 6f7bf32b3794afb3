"""Plots take what the library returns and draw what it measured."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from tutorial_lib import plots  # noqa: E402


def _summary(label: str, domain: float, retention: float, ce: float) -> dict:
    return {
        "label": label,
        "group": "g",
        "domain_accuracy_before": 0.3,
        "domain_accuracy_after": domain,
        "retention": retention,
        "general_ce_before": 2.9,
        "general_ce_after": ce,
    }


def test_learning_vs_forgetting_plots_the_end_of_each_run():
    runs = [_summary("a", 0.9, 0.8, 3.1), _summary("b", 0.5, 0.95, 3.0)]
    fig = plots.learning_vs_forgetting(runs)
    left, right = fig.axes[:2]
    assert left.collections[0].get_offsets().tolist() == [[0.9, 0.8], [0.5, 0.95]]
    assert right.collections[0].get_offsets().tolist() == [[0.9, 3.1], [0.5, 3.0]]


def test_labels_of_nearby_points_do_not_overlap():
    runs = [_summary(name, 0.75, 0.9, 3.0) for name in ("a", "b", "c")]
    fig = plots.learning_vs_forgetting(runs)
    offsets = [text.xyann for text in fig.axes[0].texts]
    assert len(set(offsets)) == 3  # the same point, three labels, three positions


def test_learning_vs_forgetting_can_put_recall_on_the_x_axis():
    runs = [
        _summary("a", 0.9, 0.8, 3.1) | {"domain_recall_after": 0.4},
        _summary("b", 0.5, 0.95, 3.0) | {"domain_recall_after": 0.1},
    ]
    fig = plots.learning_vs_forgetting(runs, learning="domain_recall")
    left = fig.axes[0]
    assert left.collections[0].get_offsets().tolist() == [[0.4, 0.8], [0.1, 0.95]]
    assert "recall" in left.get_xlabel()
    import pytest

    with pytest.raises(ValueError, match="learning must be one of"):
        plots.learning_vs_forgetting(runs, learning="loss")


def test_rate_sweep_draws_recall_and_cost_against_rate_and_rings_the_chosen_rate():
    def run(method, lr, recall, ce):
        return {"method": method, "lr": lr, "domain_recall_after": recall, "general_ce_change": ce}

    runs = [run("ia3", 0.3, 0.5, 6.0), run("ia3", 0.03, 0.6, 0.5), run("adapter", 0.01, 0.7, 1.1)]
    fig = plots.rate_sweep(runs, chosen={"ia3": 0.03})
    left, right = fig.axes[:2]
    assert left.get_xscale() == "log"
    ia3 = left.lines[0]  # the methods in order of first appearance, each line sorted by rate
    assert list(ia3.get_xdata()) == [0.03, 0.3] and list(ia3.get_ydata()) == [0.6, 0.5]
    assert list(right.lines[1].get_ydata()) == [1.1]
    assert left.collections[0].get_offsets().tolist() == [[0.03, 0.6]]  # the ring
    assert right.collections[0].get_offsets().tolist() == [[0.03, 0.5]]
    assert len(left.collections) == 1  # adapter has no chosen rate given: no ring


def test_probe_vs_suite_plots_every_run_with_floors_hollow_and_titles_the_correlation():
    from tutorial_lib.rank_agreement import probe_vs_suite

    def run(method, floor, before, after, probe, ce):
        return {
            "method": method,
            "train_on": "general" if floor else "domain",
            "suite_accuracy_before": {"arc_easy": before},
            "suite_accuracy_after": {"arc_easy": after},
            "forgetting": probe,
            "general_ce_change": ce,
        }

    records = [
        run("full", False, 0.5, 0.45, 0.04, 0.3),
        run("lora", False, 0.5, 0.40, 0.06, 0.4),
        run("ia3", False, 0.5, 0.30, 0.10, 2.4),
        run("full", True, 0.5, 0.52, -0.01, -0.1),
    ]
    fig = plots.probe_vs_suite(probe_vs_suite(records))
    left, right = fig.axes[:2]
    offsets = [c.get_offsets().tolist() for c in left.collections]
    drawn = sorted(tuple(round(v, 9) for v in p) for o in offsets for p in o)
    assert drawn == sorted([(0.05, 0.04), (0.1, 0.06), (0.2, 0.1), (-0.02, -0.01)])
    assert left.get_title().startswith("ρ = 1.00") and "4 runs" in left.get_title()
    hollow = [c for c in left.collections if c.get_facecolors()[:, 3].max(initial=0) == 0]
    assert [len(c.get_offsets()) for c in hollow] == [1]  # the floor
    assert round(hollow[0].get_offsets()[0][0], 9) == -0.02
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["full", "lora", "ia3"]
    assert right.get_ylabel().startswith("ΔCE")
