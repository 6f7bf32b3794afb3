"""A run's description: validated, printable, and the same after a round trip through JSON."""

from __future__ import annotations

import json

import pytest

from tutorial_lib.methods.lora import LoraMethodConfig
from tutorial_lib.runspec import RunSpec


def test_a_spec_survives_json_and_prints_its_knobs():
    spec = RunSpec(
        "lora", steps=48, lr=3e-3, seed=2, method_config=LoraMethodConfig(r=4), replay=0.25
    )
    again = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.method_config == LoraMethodConfig(r=4)
    assert str(spec) == "lora, lr 0.003, 48 steps, seed 2, replay 0.25"


def test_a_spec_keeps_its_task_through_json_and_names_it():
    spec = RunSpec("lora", steps=48, task="brimvale")
    again = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.task == "brimvale"
    assert str(spec) == "lora on brimvale, 48 steps, seed 0"
    assert again != RunSpec("lora", steps=48)  # the default task is tarnwick
    older = {k: v for k, v in RunSpec("lora").to_dict().items() if k != "task"}
    assert RunSpec.from_dict(older).task == "tarnwick"  # results saved before tasks existed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="nope"), "unknown method 'nope'; available: .*full"),
        (dict(method="full", steps=0), "steps must be a positive integer"),
        (dict(method="full", lr=float("nan")), "lr must be a positive number"),
        (dict(method="full", replay=1.0), r"replay must be a fraction in \[0, 1\)"),
        (dict(method="full", ewc=-1.0), "l2sp and ewc must be >= 0"),
        (dict(method="full", task="acme"), "unknown task 'acme'; allowed: 'tarnwick', 'brimvale'"),
    ],
)
def test_bad_specs_are_refused_with_the_allowed_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RunSpec(**kwargs)


def test_a_method_config_of_another_method_is_refused():
    with pytest.raises(TypeError, match="full needs a FullConfig"):
        RunSpec("full", method_config=LoraMethodConfig())


def test_eval_steps_are_kept_sorted_and_unique():
    assert RunSpec("full", eval_at=(24, 12, 24)).eval_at == (12, 24)


def test_run_experiment_takes_a_spec_or_its_fields_not_both():
    from tutorial_lib.experiment import run_experiment

    with pytest.raises(TypeError, match="in the RunSpec"):
        run_experiment(RunSpec("full"), steps=3)


def test_a_sweep_row_names_its_method_by_keyword(tiny_folder, small_profile):
    """Sweep configs say method="..."; summarised_run passes them on as they are."""
    from tutorial_lib.baseline import Baseline
    from tutorial_lib.experiment import summarised_run

    row = summarised_run(Baseline(small_profile, tiny_folder), label="x", method="full", steps=2)
    assert row["spec"]["method"] == "full" and row["seed"] == 0 and row["label"] == "x"
