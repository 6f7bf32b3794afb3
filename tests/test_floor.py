"""The noise floor: the same run trained on general text, and where a committed one is found."""

from __future__ import annotations

import json

import pytest

from tutorial_lib import config, data, experiment, results, sweeps
from tutorial_lib.baseline import Baseline
from tutorial_lib.methods import get_method
from tutorial_lib.runspec import RunSpec


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


def recorded_training(monkeypatch) -> list[list[dict]]:
    """The examples each `train` call of `experiment` gets, in order."""
    seen: list[list[dict]] = []
    real_train = experiment.train

    def recording_train(model, examples, *args, **kwargs):
        seen.append(examples)
        return real_train(model, examples, *args, **kwargs)

    monkeypatch.setattr(experiment, "train", recording_train)
    return seen


def test_train_floor_runs_the_control_on_replay_text_and_reports_it_beside_the_run(
    tiny_folder, small_profile, tmp_path, capsys, monkeypatch
):
    from tutorial_lib.cli import main

    monkeypatch.setattr(config, "get_profile", lambda name=None: small_profile)
    seen = recorded_training(monkeypatch)
    out = tmp_path / "run.json"
    args = ["train", "--method", "lora", "--model", tiny_folder, "--steps", "1", "--floor"]
    assert main([*args, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    floor = result["floor"]
    assert floor["train_on"] == "general" and result["train_on"] == "domain"
    assert (floor["lr"], floor["steps"], floor["seed"]) == (result["lr"], 1, 0)
    assert floor["probe_accuracy_before"] == result["probe_accuracy_before"]  # measured alike
    assert "loss_history" not in floor and "forgetting_stderr" in floor
    printed = capsys.readouterr()
    assert "the same run on general text" in printed.out and "its floor" in printed.out
    assert "trained on general text (noise floor)" in printed.err

    chats, control = seen  # the run, then its control: which rows did each see?
    _, tokenizer = experiment.load_base_model(tiny_folder)
    replay = [p["text"] for p in data.load_replay_text()]
    measured = [p["text"] for p in data.load_general_text()]
    assert len(control) > len(replay)  # every passage, cut into windows: more rows than passages
    for ex in control:
        assert ex["labels"] == ex["input_ids"]  # every token is trained
        assert len(ex["input_ids"]) <= max(len(c["input_ids"]) for c in chats)  # the chats' rule
        text = tokenizer.decode(ex["input_ids"])
        assert any(text in passage for passage in replay)
        assert not any(text in passage for passage in measured)  # never the CE passages
    assert all(-100 in ex["labels"] for ex in chats)  # the run itself trained on chats


def fake_committed(tmp_path, monkeypatch, floors: list[dict]) -> None:
    """A committed comparison holding `floors`, where `compare.committed` looks."""
    (tmp_path / "compare-lesson.json").write_text(
        json.dumps({"records": [], "ran": {"profile": {"domain_facts": 14}}, "floors": floors})
    )
    monkeypatch.setattr(data, "results_dir", lambda: tmp_path)


def test_without_a_committed_floor_the_lookup_says_why(tmp_path, monkeypatch):
    from tutorial_lib.floor import committed_floor_note

    fake_committed(tmp_path, monkeypatch, [])
    assert results.committed_floor("lora") is None
    assert "none committed for lora: compare-lesson.json holds no floor" in (
        committed_floor_note("lora")
    )
    monkeypatch.setattr(data, "results_dir", lambda: tmp_path / "missing")
    assert "not in this copy" in committed_floor_note("lora")


def test_the_committed_floor_is_named_with_its_budget(tmp_path, monkeypatch):
    from tutorial_lib.floor import committed_floor_note

    floor = {"method": "lora", "seed": 0, "lr": 1e-3, "steps": 28, "probe_n_items": 120}
    floor |= {"forgetting": 0.025, "forgetting_stderr": 0.01, "train_on": "general"}
    failed = {"method": "full", "seed": 0, "lr": 1e-5, "error": {"type": "X", "message": "m"}}
    fake_committed(tmp_path, monkeypatch, [floor, failed])
    assert results.committed_floor("lora")["forgetting"] == 0.025
    assert results.committed_floor("full") is None  # a failed floor is no floor
    note = committed_floor_note("lora", {"lr": 1e-3, "steps": 28})
    assert "lr 0.001, 28 steps, 14 facts, 120 probe items): forgetting +2.5 ± 1.0 pts" in note
    assert "differs" not in note
    assert "this run differs (lr 0.003, 28 steps)" in committed_floor_note(
        "lora", {"lr": 3e-3, "steps": 28}
    )


def test_compare_runs_one_floor_per_method_kept_apart_from_its_runs(small_profile, tmp_path):
    from test_compare import fake_summary

    from tutorial_lib import compare as cmp

    calls = []

    def summarised_run(baseline, **kwargs):
        calls.append(kwargs)
        return {**fake_summary(**kwargs), "train_on": kwargs["train_on"], "forgetting_stderr": 0.01}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiment, "summarised_run", summarised_run)
        mp.setattr(Baseline, "measure", lambda self, *args, **kwargs: self)
        spec = cmp.ComparisonSpec(methods=("full", "lora"), seeds=2, steps=4, floors=True)
        path = tmp_path / "r.jsonl"
        result = cmp.compare(spec, baseline=Baseline(small_profile), results_path=path)
        plain = cmp.ComparisonSpec(methods=("full", "lora"), seeds=2, steps=4)
        again = cmp.compare(plain, baseline=Baseline(small_profile), results_path=path)
    floors = [(c["method"], c["seed"], c["lr"]) for c in calls if c["train_on"] == "general"]
    assert floors == [(m, 0, get_method(m).default_lr) for m in ("full", "lora")]
    assert len(calls) == 6  # and the floorless comparison after it was read back, not rerun
    order = [(c["method"], c["seed"], c["train_on"]) for c in calls]  # floors after seed 0
    assert [o[2] for o in order] == ["domain"] * 2 + ["general"] * 2 + ["domain"] * 2
    assert [r["method"] for r in result.floors] == ["full", "lora"] and not again.floors
    assert all(r["train_on"] == "domain" for r in result.records)
    assert result.summary() == again.summary()  # floors never join a method's seeds
    assert "| noise floor of |" in result.markdown() and "noise floor" not in again.markdown()
    assert cmp.of_json(json.loads(json.dumps(result.to_json()))).floors == result.floors


def test_a_run_is_judged_against_its_floor_with_the_difference_s_error():
    from tutorial_lib.floor import beyond_floor, floor_table

    floor = {"label": "floor", "method": "full", "general_ce_change": -0.05}
    floor |= {"general_ce_change_stderr": 0.02, "forgetting": 0.01, "forgetting_stderr": 0.02}
    floor |= {"probe_lost": 20, "probe_gained": 24}
    run = {"label": "run", "method": "full", "general_ce_change": 0.30}
    run |= {"general_ce_change_stderr": 0.03, "forgetting": 0.03, "forgetting_stderr": 0.02}
    run |= {"probe_lost": 31, "probe_gained": 37}
    ce = beyond_floor(run, floor, "general_ce_change")
    assert ce["difference"] == pytest.approx(0.35) and ce["verdict"] == "beyond"
    assert ce["se"] == pytest.approx((0.02**2 + 0.03**2) ** 0.5)
    assert beyond_floor(run, floor, "forgetting")["verdict"] == "within"  # 2 pts, se 2.8
    assert beyond_floor(floor, run, "general_ce_change")["verdict"] == "below"
    assert beyond_floor(run, floor, "kl_to_base")["verdict"] == "not measured"
    shift = {"probe_logprob_shift_stderr": 0.01}
    worse = beyond_floor(
        run | shift | {"probe_logprob_shift": -0.2},
        floor | shift | {"probe_logprob_shift": 0.0},
        "probe_logprob_shift",
    )
    assert worse["verdict"] == "beyond"  # right answers less likely: worse
    table = floor_table([run], floor)
    assert list(table.index) == ["floor", "run"]
    assert table.loc["run", "lost / gained"] == "31 / 37"
    assert table.loc["run", "net forgot − floor"] == pytest.approx(2.0)  # in points
    assert table.loc["floor", "ΔCE"] == "within"


def test_a_run_is_read_against_its_floor_in_the_direction_of_damage():
    from tutorial_lib.floor import against_floor

    run = {
        "general_ce_change": 0.30, "general_ce_change_stderr": 0.03,
        "kl_to_base": 0.12, "kl_to_base_stderr": 0.04,
        "probe_logprob_shift": -0.50, "probe_logprob_shift_stderr": 0.05,
        "forgetting": -0.02, "forgetting_stderr": 0.03,
    }  # fmt: skip
    floor = {
        "general_ce_change": 0.10, "general_ce_change_stderr": 0.04,
        "kl_to_base": 0.10, "kl_to_base_stderr": 0.03,
        "probe_logprob_shift": 0.10, "probe_logprob_shift_stderr": 0.05,
        "forgetting": 0.05, "forgetting_stderr": 0.03,
    }  # fmt: skip
    table = against_floor(run, floor)
    verdicts = dict(zip(table.index, table["verdict"]))
    assert list(verdicts.values()) == [
        "beyond the floor",  # 0.20 against 2 x 0.05
        "within the floor",  # 0.02 against 2 x 0.05
        "beyond the floor",  # the answers' log-prob fell 0.60 more than the floor's
        "within the floor",  # gained more than lost, but -0.07 is within 2 x 0.042
    ]
    assert table["±"].iloc[0] == pytest.approx(0.05)
    assert table["damage beyond floor"].iloc[2] == pytest.approx(0.60)
    better = against_floor({**run, "forgetting": -0.20}, floor)
    assert better["verdict"].iloc[-1] == "below the floor"


def test_a_measure_without_an_error_or_a_value_is_said_so_or_left_out():
    from tutorial_lib.floor import against_floor

    run = {"general_ce_change": 0.3, "general_ce_change_stderr": None, "kl_to_base": 0.1}
    table = against_floor(run, {"general_ce_change": 0.1, "general_ce_change_stderr": 0.01})
    assert list(table.index) == ["ΔCE on general text (nats/token)"]
    assert table["verdict"].iloc[0] == "no error estimate"


def test_a_longer_comparison_caps_its_floors_steps_and_keys_them_apart():
    import tutorial_lib.compare as cmp
    from tutorial_lib.floor import FLOOR_MAX_PASSES, floor_step_cap

    spec = cmp.ComparisonSpec(methods=("lora",), steps=112, floors=True, floor_steps=31)
    runs = spec.runs(config.get_profile("quick"))
    assert [(r["steps"], r.get("train_on", "domain")) for r in runs] == [
        (112, "domain"),
        (31, "general"),
    ]
    uncapped = cmp.ComparisonSpec(methods=("lora",), steps=112, floors=True).runs(
        config.get_profile("quick")
    )
    where = {"model": "m"}
    assert sweeps.cache_key(runs[1], where) != sweeps.cache_key(uncapped[1], where)
    # the rule: at most 1.25 passes over the pool (200 windows of 8 a step: 31 steps)
    assert FLOOR_MAX_PASSES == 1.25 and floor_step_cap(200, 8) == 31
    assert floor_step_cap(182, 8) == 28 and floor_step_cap(3, 8) == 1
    with pytest.raises(ValueError, match="must be positive"):
        floor_step_cap(0, 8)
    with pytest.raises(ValueError, match="give floors=True too"):
        cmp.ComparisonSpec(methods=("lora",), steps=112, floor_steps=31)
    with pytest.raises(ValueError, match=r"floor_steps \(200\) is more than the runs' steps"):
        cmp.ComparisonSpec(methods=("lora",), steps=112, floors=True, floor_steps=200)
    with pytest.raises(ValueError, match="floor_steps must be a positive integer"):
        cmp.ComparisonSpec(methods=("lora",), floors=True, floor_steps=0)


def test_pool_windows_counts_what_a_floor_trains_on(tiny, small_profile):
    from tutorial_lib.floor import pool_windows

    tokenizer = tiny[1]
    examples = experiment.training_examples(tokenizer, small_profile, 0.0, 0, train_on="general")
    assert pool_windows(tokenizer, small_profile) == len(examples) > 0


def test_compare_floor_steps_auto_is_parsed_and_a_bad_value_refused(capsys):
    from tutorial_lib.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["compare", "--floors", "--floor-steps", "auto"])
    assert args.floor_steps == "auto"
    assert parser.parse_args(["compare", "--floors", "--floor-steps", "31"]).floor_steps == 31
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", "--floors", "--floor-steps", "many"])
    assert "must be a positive integer, got 'many'" in capsys.readouterr().err


def test_a_floor_past_its_pool_is_capped_by_floor_spec_and_refused_on_any_other_path(
    tiny_folder, small_profile
):
    from dataclasses import replace

    from tutorial_lib.floor import floor_spec, floor_step_cap, pool_windows

    where = Baseline(profile=small_profile, model_name=tiny_folder)
    _, tokenizer = experiment.load_base_model(tiny_folder)
    windows = pool_windows(tokenizer, small_profile)
    cap = floor_step_cap(windows, small_profile.batch_size)
    long = RunSpec("lora", lr=1e-3, steps=cap + 5, seed=3)
    floor = floor_spec(long, where)
    assert (floor.steps, floor.train_on, floor.lr, floor.seed) == (cap, "general", 1e-3, 3)
    assert floor_spec(replace(long, steps=1), where).steps == 1  # within the cap: as given
    beyond = replace(floor, steps=cap + 1)
    with pytest.raises(ValueError, match=rf"{cap + 1} steps of .* at most 1.25 passes \({cap} "):
        experiment.train_only(beyond, small_profile, tiny_folder)  # refused before training
    experiment.train_only(replace(floor, steps=1), small_profile, tiny_folder)  # within: trains
    domain = replace(long, steps=cap + 1)  # a run on the chats is not a floor: never capped
    *_, examples = experiment._loaded(domain, small_profile, tiny_folder)
    assert examples and all(-100 in ex["labels"] for ex in examples)
