"""The sweep cache: a run is read back only when nothing that changes its numbers has changed."""

from __future__ import annotations

import json
import shutil

import pytest

from tutorial_lib import data, sweeps
from tutorial_lib.baseline import Baseline
from tutorial_lib.experiment import Runner


class FakeRunner(Runner):
    """A `Runner` that records its calls instead of training: its cache key is the real one."""

    def __init__(self, baseline: Baseline, calls: list, **shared):
        super().__init__(baseline, **shared)
        self.calls = calls

    def __call__(self, method_fields=None, **config) -> dict:
        self.calls.append(config)
        return {"label": config.get("label", ""), "group": config.get("group", ""), "score": 1.0}


@pytest.fixture
def sweep(small_profile, tmp_path):
    """`sweep(**changes)` runs one config through the cache; returns how many runs it trained."""
    calls: list = []
    path = tmp_path / "runs.jsonl"

    def run(config=None, seed=0, **baseline_fields) -> int:
        before = len(calls)
        where = Baseline(**{"profile": small_profile, **baseline_fields})
        config = config or {"label": "lora", "method": "lora", "lr": 3e-3}
        sweeps.run_sweep([config], FakeRunner(where, calls, steps=2, seed=seed), path)
        return len(calls) - before

    return run


def test_an_unchanged_sweep_is_read_back_without_running(sweep):
    assert sweep() == 1
    assert sweep() == 0


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},
        {"config": {"label": "lora", "method": "lora", "lr": 1e-3}},
        {"task": "brimvale"},
        {"model_name": "another-model"},
    ],
)
def test_changing_what_a_run_depends_on_reruns_it(sweep, change):
    assert sweep() == 1
    assert sweep(**change) == 1
    assert sweep(**change) == 0  # and the new run is cached in turn


@pytest.mark.parametrize("sizes", [{"domain_facts": 2}, {"probe_items": 4}, {"max_length": 64}])
def test_changing_a_size_reruns(sweep, small_profile, sizes):
    assert sweep() == 1
    assert sweep(profile=small_profile.with_overrides(**sizes)) == 1


def test_the_profiles_name_alone_does_not_rerun(sweep, small_profile):
    assert sweep() == 1
    assert sweep(profile=small_profile.with_overrides(name="full")) == 0


def test_edited_data_files_rerun(sweep, tmp_path, monkeypatch):
    copy = tmp_path / "data"
    shutil.copytree(data.data_dir(), copy)
    monkeypatch.setenv(data.DATA_ENV, str(copy))
    assert sweep() == 1
    general = copy / "general_text.jsonl"
    general.write_text(general.read_text().replace("coffee", "tea", 1))
    assert sweep() == 1


def test_a_new_results_schema_reruns(sweep, monkeypatch):
    assert sweep() == 1
    monkeypatch.setattr(sweeps, "SCHEMA", sweeps.SCHEMA + 1)
    assert sweep() == 1


def test_a_new_label_or_save_path_is_read_back_under_its_new_name(sweep, tmp_path):
    base = {"label": "lora", "group": "a", "method": "lora", "lr": 3e-3}
    assert sweep(config=base) == 1
    renamed = {**base, "label": "LoRA r=8", "group": "b", "save_as": str(tmp_path / "w.st")}
    assert sweep(config=renamed) == 0


def test_a_cached_run_takes_the_names_of_the_config_that_asked(small_profile, tmp_path):
    calls: list = []
    run = FakeRunner(Baseline(small_profile), calls, steps=2)
    path = tmp_path / "runs.jsonl"
    sweeps.run_sweep([{"label": "old", "group": "g", "method": "lora"}], run, path)
    [again] = sweeps.run_sweep([{"label": "new", "group": "h", "method": "lora"}], run, path)
    assert len(calls) == 1 and (again["label"], again["group"]) == ("new", "h")


def test_rows_of_an_older_format_are_not_trusted(small_profile, tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps({"config": {"method": "lora"}, "result": {"score": 0}}) + "\n")
    calls: list = []
    [result] = sweeps.run_sweep(
        [{"method": "lora"}], FakeRunner(Baseline(small_profile), calls), path
    )
    assert len(calls) == 1 and result["score"] == 1.0


def test_a_learners_file_edited_in_place_reruns_its_run(sweep, tmp_path):
    own = tmp_path / "chats.jsonl"
    own.write_text('{"messages": [{"role": "user", "content": "a"}]}\n')
    config = {"label": "mine", "method": "lora", "lr": 3e-3, "train_file": str(own)}
    assert sweep(config) == 1
    assert sweep(config) == 0  # the same file: read back
    own.write_text('{"messages": [{"role": "user", "content": "b"}]}\n')
    assert sweep(config) == 1  # the same name, new contents: a new run


def test_a_runs_cyclic_garbage_is_freed_before_the_next_run(tmp_path):
    import weakref

    class Model:  # a trained model: objects that refer to each other, freed only by gc
        pass

    alive = []

    def run(name: str) -> dict:
        assert all(ref() is None for ref in alive), "the previous run's model is still alive"
        model = Model()
        model.self = model
        alive.append(weakref.ref(model))
        return {"name": name}

    import gc

    gc.disable()  # only run_sweep's own collection may free it
    try:
        sweeps.run_sweep([{"name": "a"}, {"name": "b"}], run, tmp_path / "r.jsonl", where={})
    finally:
        gc.enable()
    assert len(alive) == 2
