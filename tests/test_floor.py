"""The noise floor: the same run trained on general text, and where a committed one is found."""

from __future__ import annotations

import json

import pytest

from tutorial_lib import data, experiment, sweeps
from tutorial_lib.baseline import Baseline
from tutorial_lib.runspec import RunSpec


def test_the_control_run_trains_only_on_replay_text(tiny_folder, small_profile, monkeypatch):
    seen: list[list[dict]] = []
    real_train = experiment.train

    def recording_train(model, examples, *args, **kwargs):
        seen.append(examples)
        return real_train(model, examples, *args, **kwargs)

    monkeypatch.setattr(experiment, "train", recording_train)
    where = Baseline(small_profile, tiny_folder)
    row = experiment.summarised_run(where, method="full", steps=2, train_on="general")
    assert row["train_on"] == "general" and row["spec"]["train_on"] == "general"
    (examples,) = seen
    _, tokenizer = experiment.load_base_model(tiny_folder)
    replay = [p["text"] for p in data.load_replay_text()]
    measured = [p["text"] for p in data.load_general_text()]
    chats = data.encode_chats(tokenizer, data.load_domain_train(facts=1), 128)
    assert len(examples) > len(replay)  # every passage, cut into windows: more rows than passages
    for ex in examples:
        assert ex["labels"] == ex["input_ids"]  # every token is trained
        assert len(ex["input_ids"]) <= max(len(c["input_ids"]) for c in chats)  # the chats' rule
        text = tokenizer.decode(ex["input_ids"])
        assert any(text in passage for passage in replay)
        assert not any(text in passage for passage in measured)  # never the CE passages


def test_train_on_round_trips_names_itself_and_is_validated():
    spec = RunSpec("lora", lr=1e-3, steps=28, train_on="general")
    again = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again != RunSpec("lora", lr=1e-3, steps=28)
    assert str(spec).endswith("trained on general text (noise floor)")
    older = {k: v for k, v in RunSpec("lora").to_dict().items() if k != "train_on"}
    assert RunSpec.from_dict(older).train_on == "domain"  # results saved before floors existed
    with pytest.raises(ValueError, match="train_on must be one of 'domain', 'general', got 'web'"):
        RunSpec("lora", train_on="web")
    with pytest.raises(ValueError, match="give replay=0"):
        RunSpec("lora", train_on="general", replay=0.25)


def test_the_sweep_cache_keeps_a_floor_apart_from_its_run():
    where = {"model": "m"}
    run = {"method": "lora", "lr": 1e-3, "steps": 28, "seed": 0}
    floor = {**run, "train_on": "general"}
    assert sweeps.cache_key(floor, where) != sweeps.cache_key(run, where)
    spec_keys = {sweeps.cache_key(s.to_dict(), where) for s in (RunSpec(**run), RunSpec(**floor))}
    assert len(spec_keys) == 2
