"""Structure sweeps: configs by their fields, one row per config, accuracy against depth."""

from __future__ import annotations

import json

import matplotlib
import pytest

matplotlib.use("Agg")

from tutorial_lib import depth, results, sweeps  # noqa: E402
from tutorial_lib.methods import REGISTRY  # noqa: E402
from tutorial_lib.methods.selective import ChosenLayersConfig, TopLayersConfig  # noqa: E402


def _run(method: str, fields: dict | None, domain: float, retention: float, lr=1e-4) -> dict:
    """The parts of a `summarised_run` summary these helpers read."""
    return {
        "label": f"{method} {fields}",
        "method": method,
        "lr": lr,
        "spec": {"method": method, "method_config": fields},
        "domain_accuracy_before": 0.3,
        "domain_accuracy_after": domain,
        "retention": retention,
        "general_ce_before": 2.9,
        "general_ce_after": 3.0,
    }


def test_configured_builds_the_methods_config_from_json_fields():
    seen = {}
    run = sweeps.configured(lambda **kwargs: seen.update(kwargs) or {})
    run(method="top-layers", method_fields={"k": 4}, lr=1e-4)
    assert seen["method_config"] == TopLayersConfig(k=4) and seen["lr"] == 1e-4
    run(method="chosen-layers", method_fields=json.loads('{"layers": [9]}'))
    assert seen["method_config"] == ChosenLayersConfig(layers=(9,))
    run(method="ln-tuning")
    assert seen["method_config"] is None  # the method's default config


def test_sweep_configs_round_trip_through_json_to_the_methods_config():
    seen = {}
    run = sweeps.configured(lambda **kwargs: seen.update(kwargs) or {})
    for config, expected in (
        (sweeps.top_layers(1, 1e-3), TopLayersConfig(k=1)),
        (sweeps.one_block(9, 3e-4), ChosenLayersConfig(layers=(9,))),
    ):
        stored = json.loads(json.dumps(config))  # as the sweep's cache keeps it
        run(**stored)
        assert seen["method_config"] == expected and seen["lr"] == config["lr"]
    assert sweeps.top_layers(1, 1e-3)["label"] == "top-layers k=1, lr 0.001"  # lesson 04's rows
    assert sweeps.one_block(29, 1e-3)["label"] == "block 29"


def test_each_config_is_its_own_variant():
    runs = [
        _run("top-layers", {"k": 1}, 0.5, 0.9),
        _run("chosen-layers", {"layers": [0, 9]}, 0.5, 0.9),
        _run("ln-tuning", {}, 0.5, 0.9),
    ]
    assert [sweeps.variant(r) for r in runs] == [
        "top-layers k=1",
        "chosen-layers layers=0,9",
        "ln-tuning",
    ]
    assert [r["method"] for r in runs] == ["top-layers", "chosen-layers", "ln-tuning"]  # copies


def test_matched_table_by_variant_gives_one_row_per_config():
    runs = [_run("top-layers", {"k": k}, 0.4 + 0.1 * k, 0.9) for k in (1, 2)]
    table = results.matched_table(sweeps.by_variant(runs), target=0.5)
    assert list(table.index) == ["top-layers k=1", "top-layers k=2"]


def test_by_depth_plots_accuracy_and_retention_in_depth_order():
    runs = [
        _run("chosen-layers", {"layers": [29]}, 0.6, 0.95),
        _run("chosen-layers", {"layers": [0]}, 0.4, 0.8),
    ]
    ax = depth.by_depth(runs).axes[0]
    domain, retention = ax.lines[:2]
    assert list(domain.get_xdata()) == [0, 29] and list(domain.get_ydata()) == [0.4, 0.6]
    assert list(retention.get_ydata()) == [0.8, 0.95]


@pytest.mark.parametrize(
    "run, message",
    [
        (_run("top-layers", {"k": 1}, 0.5, 0.9), "not a one-block chosen-layers run"),
        (_run("chosen-layers", {"layers": [0, 1]}, 0.5, 0.9), "not a one-block"),
        (_run("chosen-layers", {"layers": [-1]}, 0.5, 0.9), "counted from the input"),
    ],
)
def test_by_depth_refuses_runs_without_one_depth(run, message):
    with pytest.raises(ValueError, match=message):
        depth.by_depth([run])


def test_a_cached_depth_sweep_on_the_tiny_model(tiny_folder, small_profile, tmp_path):
    """The lesson's path end to end: JSON configs, run_sweep's cache, variants, the depth plot."""
    from tutorial_lib.baseline import Baseline
    from tutorial_lib.experiment import Runner

    run = Runner(Baseline(small_profile, tiny_folder), steps=1)
    configs = [sweeps.one_block(i, REGISTRY["chosen-layers"].default_lr) for i in (0, 1)]
    fresh = sweeps.run_sweep(configs, run, tmp_path / "runs.jsonl")
    rerun = lambda **_: pytest.fail("rerun")  # noqa: E731
    cached = sweeps.run_sweep(configs, rerun, tmp_path / "runs.jsonl", where=run.where())
    for runs in (fresh, cached):
        assert [sweeps.variant(r) for r in runs] == [
            "chosen-layers layers=0",
            "chosen-layers layers=1",
        ]
        assert list(depth.by_depth(runs).axes[0].lines[0].get_xdata()) == [0, 1]
    assert fresh[0]["trainable_params"] == fresh[1]["trainable_params"]  # one block each
