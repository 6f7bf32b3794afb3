"""The published record: every entry has its source, its numbers have their shape."""

from __future__ import annotations

import json

import pytest

from tutorial_lib import literature
from tutorial_lib.literature import LiteratureError, best_runs, pairwise_agreement
from tutorial_lib.methods.registry import REGISTRY


def test_the_committed_record_loads_with_sources():
    runs, findings = literature.load()
    assert {"full", "lora", "dora", "ia3", "ln-tuning", "prompt-tuning", "prefix-tuning"} <= {
        r.method for r in runs
    }
    for run in runs:
        assert run.library_method in REGISTRY, run.config
        assert run.source["repository"] == "huggingface/peft"
        assert run.source["path"].endswith(f"{run.config}.json")
        assert run.trainable_params <= run.total_params
    full = next(r for r in runs if r.method == "full")
    assert full.trainable_params > 0.99 * full.total_params  # full fine-tuning trains everything
    assert {f.id.split("-")[0] for f in findings} >= {"biderman2024", "shuttleworth2024"}
    assert all(f.source["paper"] and f.scale for f in findings)


def test_best_runs_pick_the_highest_accuracy_per_method():
    runs, _ = literature.load()
    best = best_runs(runs)
    for run in runs:
        assert run.test_accuracy <= best[run.method].test_accuracy


def _write(tmp_path, change):
    doc = json.loads((literature.data_dir() / literature.LITERATURE_FILE).read_text())
    change(doc)
    path = tmp_path / "literature.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["peft_method_comparison"]["runs"][0]["source"].pop("commit"), "'commit'"),
        (lambda d: d["peft_method_comparison"]["runs"][0]["source"].update(commit="abc"), "40 hex"),
        (lambda d: d["peft_method_comparison"]["runs"][1].update(test_accuracy=47.8), "[0, 1]"),
        (lambda d: d["peft_method_comparison"]["runs"][2].update(file_size_bytes=0), "positive"),
        (lambda d: d["findings"][0]["source"].pop("paper"), "'paper'"),
        (lambda d: d["peft_method_comparison"].update(runs=[]), "no peft_method_comparison"),
    ],
)
def test_a_malformed_entry_names_itself_and_its_field(tmp_path, change, message):
    with pytest.raises(LiteratureError, match=message.replace("[", r"\[").replace("]", r"\]")):
        literature.load(_write(tmp_path, change))


def test_pairwise_agreement_orders_each_shared_pair():
    ours = {"full": 0.9, "lora": 0.5, "ia3": 0.5, "adapter": 0.1}
    theirs = {"full": 0.47, "lora": 0.48, "ia3": 0.31}
    rows = {r["pair"]: r["verdict"] for r in pairwise_agreement(ours, theirs)}
    assert rows == {"full vs lora": "disagree", "full vs ia3": "agree", "lora vs ia3": "tie"}


def test_peft_table_has_a_row_per_run():
    runs, _ = literature.load()
    table = literature.peft_table(runs)
    assert len(table) == len(runs) and table["peak memory (GiB)"].gt(1).all()


def test_against_comparison_marks_each_shared_pair_and_counts_agreements():
    def stat(v):
        return {"mean": v, "std": None}

    def ours(method, recall, ce, mem):
        return {
            "method": method,
            "seeds": 1,
            "domain_recall_after": stat(recall),
            "general_ce_change": stat(ce),
            "training_memory_bytes": stat(mem),
        }

    summary = [ours("full", 0.9, 0.3, 3.0), ours("lora", 0.6, 0.4, 2.0), ours("adapter", 0.7, 1, 2)]
    summary.append({"method": "bitfit", "seeds": 0})  # refused: no numbers, no pairs
    runs, _ = literature.load()
    table = literature.against_comparison(summary, runs)
    best = best_runs(runs)
    assert list(table.index) == ["full vs lora", "agree / pairs"]  # the only pair peft ran too
    peft_puts_lora_first = best["full"].test_accuracy < best["lora"].test_accuracy  # ours: full
    assert table.loc["full vs lora", "learning"] == (
        "disagree" if peft_puts_lora_first else "agree"
    )
    assert table.loc["agree / pairs", "memory"] == "1 / 1"  # full needs more memory on both
