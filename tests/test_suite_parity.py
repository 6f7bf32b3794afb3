"""benchmarks/suite_parity.py: the lm-eval tasks built from the suite's rows, and the comparison.

Runs without lm-eval (the task building and the per-item comparison); with lm-eval installed,
lm-eval itself builds the requests from the written tasks and they must be the suite's own.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tutorial_lib import published
from tutorial_lib.published_tasks import SUITE_TASKS, TASKS
from tutorial_lib.suite import load_suite

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None


@pytest.fixture(scope="module")
def sp():
    """benchmarks/suite_parity.py, imported as its siblings import it."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("suite_parity")
    finally:
        sys.path.remove(str(BENCHMARKS))
        for name in ("suite_parity", "probe_bench", "timing", "common"):
            sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def published_data():
    return published.fetch_published()


@pytest.fixture(scope="module")
def suite(published_data):
    return load_suite(3)


def test_every_published_task_has_an_lm_eval_yaml(sp):
    assert set(sp.LM_EVAL_YAML) == set(TASKS)


def test_rows_are_the_suite_items_rows(sp, suite):
    """The raw rows written for lm-eval become, through the project's conversion, exactly the
    items the suite scores, in the same order."""
    for task, items in suite.items():
        rows = sp.suite_rows(task, [item["id"] for item in items])
        for row, item in zip(rows, items, strict=True):
            again = TASKS[task].to_item(row, 0)
            assert {k: v for k, v in again.items() if k != "id"} == {
                k: v for k, v in item.items() if k != "id"
            }
    with pytest.raises(ValueError, match="not in the pinned data"):
        sp.suite_rows("piqa", ["piqa-999999"])


def test_task_config_is_lm_evals_yaml_on_local_rows(sp, tmp_path):
    config = sp.suite_task_config("hellaswag", tmp_path / "hellaswag.jsonl", tmp_path / "tasks")
    assert config["include"] == str(tmp_path / "tasks" / "hellaswag" / "hellaswag.yaml")
    assert config["task"] == "suite_hellaswag"
    # local JSON only (no hub), scored on it as the validation split, zero-shot, no fewshot pool
    assert config["dataset_path"] == "json" and config["dataset_name"] is None
    assert config["dataset_kwargs"] == {
        "data_files": {"validation": str(tmp_path / "hellaswag.jsonl")}
    }
    assert config["validation_split"] == "validation" and config["num_fewshot"] == 0
    assert config["training_split"] is config["test_split"] is config["fewshot_split"] is None
    # the prompt is not restated here: it comes from the included YAML
    assert not {"doc_to_text", "doc_to_choice", "doc_to_target", "process_docs"} & set(config)


def test_write_suite_tasks(sp, suite, tmp_path):
    names = sp.write_suite_tasks(suite, tmp_path, tmp_path / "tasks")
    assert names == [f"suite_{t}" for t in SUITE_TASKS]
    for task, items in suite.items():
        lines = (tmp_path / f"{task}.jsonl").read_text().splitlines()
        assert len(lines) == len(items)
        written = yaml.safe_load((tmp_path / f"suite_{task}.yaml").read_text())
        assert written == sp.suite_task_config(task, tmp_path / f"{task}.jsonl", tmp_path / "tasks")


def test_logged_arguments_in_both_formats(sp):
    pairs = [["Question: q\nAnswer:", " a"], ["Question: q\nAnswer:", " b"]]
    new = {f"gen_args_{i}": {"arg_0": c, "arg_1": t} for i, (c, t) in enumerate(pairs)}
    assert sp.lm_eval_requests({"arguments": new}) == pairs
    assert sp.lm_eval_requests({"arguments": [tuple(p) for p in pairs]}) == pairs


def _sample(lls: list[float], answer: int, requests) -> dict:
    pick = max(range(len(lls)), key=lls.__getitem__)
    return {
        "filtered_resps": [[x, False] for x in lls],
        "acc": float(pick == answer),
        "acc_norm": float(pick == answer),
        "arguments": [tuple(r) for r in requests],
    }


def test_compare_task_finds_a_disagreeing_item(sp):
    items = [
        {"id": f"x{i}", "task": "piqa", "requests": [["Q", " ab"], ["Q", " cd"]]}
        | {"choices": ["ab", "cd"], "answer": 0}
        for i in range(2)
    ]
    ours = SimpleNamespace(
        predictions=[0, 1],
        predictions_norm=[0, 1],
        correct_logprobs=[-1.0, -3.0],
        accuracy=0.5,
        accuracy_norm=0.5,
    )
    results = {"acc,none": 0.5, "acc_norm,none": 0.5}
    same = [
        _sample([-1.0, -2.0], 0, items[0]["requests"]),
        _sample([-3.0, -2.0], 0, items[1]["requests"]),
    ]
    row = sp.compare_task(ours, items, results, same)
    assert row["identical_per_item"] and row["prompts_identical"] and not row["disagreeing_items"]
    assert row["max_abs_gold_loglik_diff"] == 0
    flipped = [same[0], _sample([-3.0, -4.0], 0, [["Q", "ab"], ["Q", "cd"]])]  # no delimiter
    row = sp.compare_task(ours, items, results, flipped)
    assert not row["identical_per_item"] and row["prompts_identical_items"] == 1
    assert [d["id"] for d in row["disagreeing_items"]] == ["x1"]


@pytest.mark.skipif(not HAS_LM_EVAL, reason="lm-eval is not installed (the bench extra)")
def test_lm_eval_builds_the_suites_own_requests(sp, suite, tmp_path, monkeypatch):
    """lm-eval, reading the written tasks with its own YAML, asks exactly the (context,
    continuation) pairs the project scores: prompt, target delimiter, HellaSwag's cleanup and
    WinoGrande's partial scoring included. No model, no hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lm_eval.tasks import TaskManager, get_task_dict

    names = sp.write_suite_tasks(suite, tmp_path, sp.lm_eval_tasks_dir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tasks = get_task_dict(
            names, TaskManager(include_path=str(tmp_path), include_defaults=False)
        )
    for task, items in suite.items():
        lm_task = tasks[sp.PREFIX + task]
        lm_task.build_all_requests(limit=None, rank=0, world_size=1)
        asked = sorted(lm_task.instances, key=lambda x: (x.doc_id, x.idx))
        per_doc = [[list(x.arguments) for x in asked if x.doc_id == d] for d in range(len(items))]
        assert per_doc == [item["requests"] for item in items], task
