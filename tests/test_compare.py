"""`compare`: every method on one budget, cached and resumable, errors recorded, seeds summarised."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import SUMMARY_KEYS
from tutorial_lib import compare as cmp
from tutorial_lib import experiment, results
from tutorial_lib.baseline import Baseline
from tutorial_lib.methods import REGISTRY, Method, get_method

ADDED_KEYS = {"forgetting", "domain_gain", "family", "target", "retention_at_target"}
ADDED_KEYS |= {"step_at_target", "forgetting_at_target", "general_ce_at_target"}

# --- a fake run: the comparison's logic without training ----------------------------------------


def fake_summary(method: str, seed: int, lr: float, steps: int, **_) -> dict:
    """A run summary whose numbers are known: domain accuracy rises with the seed."""
    after = {"full": 0.9, "lora": 0.5, "ia3": 0.3}[method] + 0.1 * seed
    return {
        "method": method,
        "lr": lr,
        "seed": seed,
        "steps": steps,
        "interrupted": False,
        "domain_accuracy_before": 0.3,
        "domain_accuracy_after": after,
        "forgetting": 0.1 * seed,
        "retention": 1 - 0.1 * seed,
        "general_ce_after": 3.0,
        "sec_per_step": 1.0,
        "peak_memory_bytes": 2**20,
        "trainable_percent": 1.0,
        "checkpoint_bytes": 2**20,
        "trajectory": [
            {
                "step": 0,
                "domain_accuracy": 0.3,
                "forgetting": 0.0,
                "retention": 1.0,
                "general_ce": 3.0,
            },
            {
                "step": steps,
                "domain_accuracy": after,
                "forgetting": 0.2,
                "retention": 0.8,
                "general_ce": 3.4,
            },
        ],
    }


@pytest.fixture
def fake_runs(monkeypatch):
    """Replace training with `fake_summary`; returns the list of (method, seed) actually run."""
    calls = []

    def summarised_run(baseline, **kwargs):
        calls.append((kwargs["method"], kwargs["seed"]))
        return fake_summary(**kwargs)

    monkeypatch.setattr(experiment, "summarised_run", summarised_run)
    monkeypatch.setattr(Baseline, "measure", lambda self, *args, **kwargs: self)
    return calls


def test_each_method_runs_at_its_default_rate_on_the_same_budget(
    fake_runs, small_profile, tmp_path
):
    result = cmp.compare(
        methods=("full", "lora"),
        steps=4,
        baseline=Baseline(small_profile),
        results_path=tmp_path / "r.jsonl",
    )
    assert [r["method"] for r in result.records] == ["full", "lora"]
    assert [r["lr"] for r in result.records] == [get_method(m).default_lr for m in ("full", "lora")]
    assert {r["steps"] for r in result.records} == {4}
    assert result.records[0]["domain_gain"] == pytest.approx(0.6)
    assert result.records[1]["family"] == "reparameterization"


def test_given_learning_rates_override_the_defaults(fake_runs, small_profile, tmp_path):
    spec = cmp.ComparisonSpec(methods=("full", "lora"), steps=4, lrs={"lora": 1e-2})
    result = cmp.compare(spec, baseline=Baseline(small_profile), results_path=tmp_path / "r.jsonl")
    assert [r["lr"] for r in result.records] == [get_method("full").default_lr, 1e-2]


def test_an_interrupted_comparison_resumes_without_rerunning(
    fake_runs, small_profile, tmp_path, monkeypatch
):
    path = tmp_path / "r.jsonl"
    cmp.compare(methods=("full",), steps=4, baseline=Baseline(small_profile), results_path=path)
    result = cmp.compare(
        methods=("full", "lora"), steps=4, baseline=Baseline(small_profile), results_path=path
    )
    assert fake_runs == [("full", 0), ("lora", 0)]  # full came from the file
    assert len(result.records) == 2
    cmp.compare(methods=("full",), steps=5, baseline=Baseline(small_profile), results_path=path)
    assert fake_runs[-1] == ("full", 0) and len(fake_runs) == 3  # another budget: run again


def test_ctrl_c_during_a_run_keeps_the_finished_ones_and_caches_no_partial_run(
    fake_runs, small_profile, tmp_path, monkeypatch
):
    def interrupted(baseline, **kwargs):
        fake_runs.append((kwargs["method"], kwargs["seed"]))
        summary = fake_summary(**kwargs)
        return {**summary, "interrupted": kwargs["method"] == "lora"}

    monkeypatch.setattr(experiment, "summarised_run", interrupted)
    path = tmp_path / "r.jsonl"
    with pytest.raises(KeyboardInterrupt):
        cmp.compare(
            methods=("full", "lora"), steps=4, baseline=Baseline(small_profile), results_path=path
        )
    assert [json.loads(line)["config"]["method"] for line in path.read_text().splitlines()] == [
        "full"
    ]


def test_a_method_that_raises_is_recorded_and_the_others_run(
    fake_runs, small_profile, tmp_path, monkeypatch
):
    def broken(baseline, **kwargs):
        fake_runs.append((kwargs["method"], kwargs["seed"]))
        if kwargs["method"] == "ia3":
            raise RuntimeError("boom | twice\nover")
        return fake_summary(**kwargs)

    monkeypatch.setattr(experiment, "summarised_run", broken)
    path = tmp_path / "r.jsonl"
    result = cmp.compare(
        methods=("ia3", "lora"), baseline=Baseline(small_profile), results_path=path
    )
    failed, done = result.records
    assert failed["error"] == {"type": "RuntimeError", "message": "boom | twice\nover"}
    assert done["domain_accuracy_after"] == 0.5 and result.failed == [failed]
    assert "| ia3 | additive |" in result.markdown()
    assert "error: RuntimeError: boom / twice over |" in result.markdown()  # one table-safe line
    cmp.compare(methods=("ia3", "lora"), baseline=Baseline(small_profile), results_path=path)
    assert fake_runs.count(("ia3", 0)) == 1  # a recorded failure is not rerun by default...
    cmp.compare(
        methods=("ia3", "lora"),
        baseline=Baseline(small_profile),
        results_path=path,
        retry_failed=True,
    )
    assert fake_runs.count(("ia3", 0)) == 2 and fake_runs.count(("lora", 0)) == 1  # ...unless


def test_seeds_give_a_record_each_and_a_mean_and_spread(fake_runs, small_profile, tmp_path):
    result = cmp.compare(
        methods=("full", "lora"),
        seeds=3,
        baseline=Baseline(small_profile),
        results_path=tmp_path / "r",
    )
    assert sorted(fake_runs) == [(m, s) for m in ("full", "lora") for s in range(3)]
    full = result.summary()[0]
    assert full["method"] == "full" and full["seeds"] == 3
    assert full["domain_accuracy_after"]["mean"] == pytest.approx(1.0)  # 0.9, 1.0, 1.1
    assert full["domain_accuracy_after"]["std"] == pytest.approx(0.1)
    assert (full["forgetting"]["min"], full["forgetting"]["max"]) == pytest.approx((0.0, 0.2))
    assert "| 1.000 ± 0.100 |" in result.markdown()  # full's domain accuracy
    table = result.table()
    assert table.loc["lora", "domain acc"] == pytest.approx(0.6)
    assert table.loc["lora", "domain acc ±"] == pytest.approx(0.1)


def test_matched_numbers_are_read_where_each_run_reached_the_target():
    records = [fake_summary("full", 0, 1e-4, 10), fake_summary("lora", 0, 3e-3, 10)]
    result = cmp.Comparison.of(records)  # auto: halfway from 0.3 to the best, 0.9
    assert result.target == pytest.approx(0.6)
    full, lora = result.records
    assert full["step_at_target"] == pytest.approx(5.0)  # 0.3 -> 0.9 in 10 steps: 0.6 at 5
    assert full["retention_at_target"] == pytest.approx(0.9)
    assert lora["retention_at_target"] is None  # reached 0.5 only: no number is invented
    assert cmp.Comparison.of(records, target=0.4).records[1]["step_at_target"] == pytest.approx(5)
    flat = [{**r, "domain_accuracy_after": 0.3} for r in records]
    assert cmp.Comparison.of(flat).target is None  # nothing learned: nothing to match


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"methods": ("nope",)}, "unknown method 'nope'; available:"),
        ({"methods": ("lora", "lora")}, "more than once"),
        ({"seeds": 0}, "seeds must be a positive integer"),
        ({"steps": -1}, "steps must be a positive integer"),
        ({"lrs": {"lora": -1.0}}, "learning rates must be positive"),
        ({"lrs": {"nope": 1e-3}}, "unknown method 'nope'"),
        ({"target": 1.5}, "target must be a domain accuracy"),
        ({"task": "acme"}, "unknown task 'acme'"),
    ],
)
def test_bad_specs_are_refused_with_what_is_allowed(fields, message):
    with pytest.raises(ValueError, match=message):
        cmp.ComparisonSpec(**fields)


def test_no_methods_means_every_registered_one():
    assert cmp.ComparisonSpec().methods == tuple(sorted(REGISTRY))


# --- real runs on the tiny model ----------------------------------------------------------------


def test_tiny_model_comparison_shares_data_and_seed(tiny_folder, small_profile, tmp_path):
    """Same data, seed and budget: LoRA starts as the base (B = 0), so the first loss is equal."""
    result = cmp.compare(
        methods=("full", "lora"),
        steps=2,
        baseline=Baseline(small_profile, tiny_folder),
        results_path=tmp_path / "r.jsonl",
    )
    full, lora = result.records
    for record in (full, lora):
        assert SUMMARY_KEYS | ADDED_KEYS <= set(record), SUMMARY_KEYS | ADDED_KEYS - set(record)
        assert [p["step"] for p in record["trajectory"]] == [0, 1, 2]
        assert record["domain_gain"] == pytest.approx(
            record["domain_accuracy_after"] - record["domain_accuracy_before"]
        )
    assert full["loss_history"][0] == pytest.approx(lora["loss_history"][0], rel=1e-5)
    assert full["domain_accuracy_before"] == lora["domain_accuracy_before"]  # one base measurement
    assert lora["trainable_params"] < full["trainable_params"]
    json.dumps(result.to_json())


def test_a_method_that_fails_on_the_tiny_model_is_recorded(
    tiny_folder, small_profile, tmp_path, monkeypatch
):
    def apply(model, config):
        raise NotImplementedError("this method is not written yet")

    monkeypatch.setitem(REGISTRY, "broken", Method("broken", "test", dict, apply, 1e-3, ""))
    result = cmp.compare(
        methods=("broken", "lora"),
        steps=1,
        baseline=Baseline(small_profile, tiny_folder),
        results_path=tmp_path / "r.jsonl",
    )
    assert result.records[0]["error"]["type"] == "NotImplementedError"
    assert result.records[1]["steps"] == 1 and math.isfinite(result.records[1]["loss_history"][0])


# --- the command ---------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tutorial_lib", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def test_compare_command_writes_json_and_markdown(tiny_folder, tmp_path):
    out, md, runs = tmp_path / "out.json", tmp_path / "out.md", tmp_path / "runs.jsonl"
    args = ["compare", "--methods", "full,lora", "--seeds", "2", "--steps", "1"]
    args += ["--model", tiny_folder, "--profile", "quick", "--runs", str(runs)]
    proc = cli(*args, "--json", str(out), "--markdown", str(md))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [(r["method"], r["seed"]) for r in result["records"]] == [
        ("full", 0),
        ("lora", 0),
        ("full", 1),
        ("lora", 1),
    ]
    assert SUMMARY_KEYS <= set(result["records"][0])
    assert [row["seeds"] for row in result["summary"]] == [2, 2]
    table = md.read_text()
    assert table.startswith("| method | lr | seeds | recall |")  # the new measures first
    assert "| method | family | lr | seeds |" in table and "| lora |" in table  # then costs
    assert [row["seeds"] for row in result["measures"]] == [2, 2]
    assert table in proc.stdout and "runs cached in" in proc.stderr
    assert proc.stderr.count("run: ") == 4
    again = cli(*args, "--json", str(out))  # everything cached: no training bar, same records
    assert again.returncode == 0 and "run: " not in again.stderr
    assert json.loads(out.read_text())["records"] == result["records"]
    ran = json.loads(out.read_text())["ran"]  # how to run it again, and where it ran
    assert ran["command"].startswith("tutorial-lib compare --methods full,lora")
    assert ran["profile"]["name"] == "quick" and ran["machine"]["physical_cores"] >= 1
    assert "torch" in ran["versions"]


def test_compare_command_sizes_the_budget_and_seeds_per_method(tiny_folder, tmp_path):
    out, runs = tmp_path / "out.json", tmp_path / "runs.jsonl"
    args = ["compare", "--methods", "ia3", "--seeds-for", "lora=2", "--steps", "2", "--no-mid-run"]
    args += ["--facts", "1", "--probe-items", "4", "--general-items", "1"]
    args += ["--model", tiny_folder, "--profile", "quick", "--runs", str(runs)]
    proc = cli(*args, "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [(r["method"], r["seed"]) for r in result["records"]] == [
        ("ia3", 0),
        ("lora", 0),
        ("lora", 1),
    ]
    assert {r["probe_n_items"] for r in result["records"]} == {4}
    assert {r["domain_n_items"] for r in result["records"]} == {2}  # 1 fact, quick asks 2 wordings
    assert all(r["load_average"] >= 0 for r in result["records"])  # beside each step time
    assert {len(r["trajectory"]) for r in result["records"]} == {2}  # steps 0 and 1: no halfway
    sizes = result["ran"]["profile"]
    assert (sizes["domain_facts"], sizes["probe_items"], sizes["general_items"]) == (1, 4, 1)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "full,nope"], "unknown method 'nope'"),
        (["--methods", ""], "give at least one method"),
        (["--seeds", "0"], "must be a positive integer"),
        (["--markdown", "/no/such/dir/t.md"], "cannot write"),
        (["--profile", "huge"], "invalid choice"),
        (["--seeds-for", "lora=0"], "must be a positive integer"),
        (["--seeds-for", "nope=2"], "unknown method 'nope'"),
        (["--facts", "0"], "must be a positive integer"),
    ],
)
def test_compare_command_refuses_bad_arguments_in_one_line(args, message):
    proc = cli("compare", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


# --- seeds per method, supported rankings, the Pareto front, a committed comparison -------------


def test_seeds_for_gives_some_methods_more_seeds(fake_runs, small_profile, tmp_path):
    spec = cmp.ComparisonSpec(methods=("full", "lora", "ia3"), seeds_for={"lora": 3})
    result = cmp.compare(spec, baseline=Baseline(small_profile), results_path=tmp_path / "r.jsonl")
    assert fake_runs == [("full", 0), ("lora", 0), ("ia3", 0), ("lora", 1), ("lora", 2)]
    assert [row["seeds"] for row in result.summary()] == [1, 3, 1]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"methods": ("full",), "seeds_for": {"lora": 2}}, r"not compared: \['lora'\]"),
        ({"methods": ("full",), "seeds_for": {"full": 0}}, "positive integers"),
        ({"seeds_for": {"nope": 2}}, "unknown method 'nope'"),
    ],
)
def test_seeds_for_refuses_what_cannot_run(fields, message):
    with pytest.raises(ValueError, match=message):
        cmp.ComparisonSpec(**fields)


def _record(method: str, seed: int, acc: float, retention: float = 0.9) -> dict:
    return {"method": method, "seed": seed, "domain_accuracy_after": acc, "retention": retention}


def test_a_ranking_needs_every_seed_to_agree_and_two_standard_errors():
    records = [_record("a", s, acc) for s, acc in enumerate([0.8, 0.85, 0.9])]
    records += [_record("b", s, acc) for s, acc in enumerate([0.5, 0.6, 0.55])]
    records += [_record("c", s, acc) for s, acc in enumerate([0.9, 0.5, 0.6])]
    records += [_record("d", 0, 0.1)]  # one seed: nothing can be said
    diffs = {
        (d["a"], d["b"]): d
        for d in results.paired_differences(records, "domain_accuracy_after", ["a", "b", "c", "d"])
    }
    ab = diffs[("a", "b")]
    assert ab["seeds"] == 3 and ab["mean"] == pytest.approx(0.3) and ab["supported"]
    assert ab["se"] == pytest.approx(math.sqrt(0.0025 / 3))  # differences 0.3, 0.25, 0.35
    assert not diffs[("a", "c")]["supported"]  # -0.1, +0.35, +0.3: the seeds disagree
    assert diffs[("a", "d")]["seeds"] == 1 and not diffs[("a", "d")]["supported"]
    table = results.ranking_table(records, "domain_accuracy_after", ["a", "b", "c"])
    assert table.loc["a − b", "what the seeds support"] == "a higher on every seed"
    assert table.loc["b − c", "what the seeds support"].startswith("no ranking")


def _row(method: str, x: float, y: float, seeds: int = 1) -> dict:
    stats = lambda v: {"mean": v, "std": None, "min": v, "max": v}  # noqa: E731
    return {"method": method, "seeds": seeds, "x": stats(x), "y": stats(y)}


def test_the_pareto_front_keeps_what_nothing_beats_on_both_axes():
    rows = [_row("a", 0.9, 0.7), _row("b", 0.6, 0.9), _row("c", 0.5, 0.6), _row("d", 0.9, 0.7)]
    rows.append(_row("failed", 1.0, 1.0, seeds=0))  # no finished run: not a point
    assert results.pareto_front(rows, "x", "y") == ["a", "b", "d"]  # c is beaten by both; a = d
    memory = [_row("small", 1.0, 0.5), _row("big", 3.0, 0.9), _row("worse", 3.0, 0.4)]
    assert results.pareto_front(memory, "x", "y", higher=(False, True)) == ["small", "big"]


def test_a_missing_committed_comparison_says_how_to_make_one(monkeypatch, tmp_path):
    monkeypatch.setenv("TUTORIAL_LIB_DATA", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match="benchmarks/README.md gives the command"):
        results.committed()


def test_repeated_runs_sit_beside_their_committed_twins():
    saved = [_record("a", 0, 0.5) | {"general_ce_after": 3.0, "sec_per_step": 1.0}]
    live = [_record("a", 0, 0.5) | {"general_ce_after": 3.0, "sec_per_step": 1.4}]
    table = results.side_by_side(live, saved)
    assert table.loc[("a", 0, "domain_accuracy_after"), "here"] == 0.5
    assert table.loc[("a", 0, "sec_per_step"), "committed"] == 1.0
    assert table.loc[("a", 0, "sec_per_step"), "here"] == 1.4


def test_the_spread_of_infinite_values_is_undefined_not_an_error():
    assert results.spread([math.inf, math.inf])["mean"] == math.inf
    assert math.isnan(results.spread([math.inf, math.inf])["std"])
    assert results.spread([1.0, 3.0])["std"] == pytest.approx(math.sqrt(2))


def test_fresh_process_memory_joins_the_summary_by_method():
    rows = [{"method": "a", "seeds": 1}, {"method": "b", "seeds": 1}]
    runs = [
        {"method": "a", "batch": 8, "model_bytes": 100, "measured": 50},
        {"method": "a", "batch": 4, "model_bytes": 100, "measured": 20},
        {"method": "b", "batch": 8, "error": "refused"},
    ]
    a, b = results.with_fresh_memory(rows, runs)
    assert a["training_memory_bytes"]["mean"] == 150
    assert b["training_memory_bytes"]["mean"] is None


# --- a method that cannot apply to the model ----------------------------------------------------


def test_a_method_that_does_not_apply_is_reported_not_failed(
    fake_runs, small_profile, tmp_path, monkeypatch
):
    def refuses(baseline, **kwargs):
        fake_runs.append((kwargs["method"], kwargs["seed"]))
        if kwargs["method"] == "ia3":
            raise experiment.NotApplicable("ia3", "this model has no such layers")
        return fake_summary(**kwargs)

    monkeypatch.setattr(experiment, "summarised_run", refuses)
    path = tmp_path / "r.jsonl"
    result = cmp.compare(
        methods=("ia3", "lora"), baseline=Baseline(small_profile), results_path=path
    )
    assert result.failed == [] and [r["method"] for r in result.not_applicable] == ["ia3"]
    assert "| ia3 | additive | 0.1 | 0 | not applicable: this model has no such layers |" in (
        result.markdown()
    )
    assert result.table().loc["ia3", "error"] == "not applicable: this model has no such layers"
    cmp.compare(
        methods=("ia3", "lora"),
        baseline=Baseline(small_profile),
        results_path=path,
        retry_failed=True,
    )
    assert fake_runs.count(("ia3", 0)) == 1  # it would not apply again: not retried


def test_compare_on_the_tiny_llama_reports_bitfit_and_succeeds_but_a_crash_fails(
    tiny_folder, tmp_path, capsys, monkeypatch
):
    from tutorial_lib.cli import main

    md = tmp_path / "t.md"
    args = ["compare", "--methods", "bitfit,ln-tuning", "--steps", "1", "--facts", "1"]
    args += ["--probe-items", "4", "--general-items", "1", "--model", tiny_folder]
    args += ["--profile", "quick", "--runs", str(tmp_path / "runs.jsonl")]
    assert main([*args, "--markdown", str(md)]) == 0
    err = capsys.readouterr().err
    assert "not applicable: bitfit: " in err and "bias-added" in err and "failed:" not in err
    table = md.read_text()
    assert "| bitfit |" in table and "not applicable: bitfit trains existing bias terms" in table
    assert "| ln-tuning |" in table

    def apply(model, config):
        raise NotImplementedError("this method is not written yet")

    monkeypatch.setitem(REGISTRY, "broken", Method("broken", "test", dict, apply, 1e-3, ""))
    assert main([*args[:2], "broken", *args[3:]]) == 1
    assert "failed: broken seed 0: NotImplementedError" in capsys.readouterr().err
