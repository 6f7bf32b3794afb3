"""The published record the curriculum sets its own numbers beside.

`data/literature.json` holds results copied from elsewhere, each with its source: peft's
method comparison (Llama-3.2-3B fine-tuned on MetaMathQA, scored on GSM8K, forgetting as the
cross-entropy change on Wikipedia text, one results file per run at a named commit) and the
headline findings of papers on LoRA and forgetting. Nothing here is re-derived: the loader
checks the file's shape and that every entry names where it came from.

With only a handful of methods in common, one rank correlation says little, so the comparison
is made method pair by method pair (`pairwise_agreement`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from tutorial_lib.data import data_dir

LITERATURE_FILE = "literature.json"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# what each measure rewards: learning and accuracy up, forgetting and cost down
HIGHER_IS_BETTER = {"test_accuracy": True, "forgetting_ce": False, "peak_memory_bytes": False}


class LiteratureError(ValueError):
    """The published-results file is malformed; the message names the entry and field."""


@dataclass(frozen=True)
class PublishedRun:
    """One run of peft's method comparison, as its results file reports it."""

    method: str  # the curriculum's name for the method family
    library_method: str  # the registry entry that runs it here
    config: str  # peft's experiment name
    lr: float
    steps: int
    batch_size: int
    test_accuracy: float
    forgetting_ce: float  # Wikipedia CE after minus before, nats per token
    peak_memory_bytes: int
    file_size_bytes: int
    trainable_params: int
    total_params: int
    train_time_s: float
    source: dict  # repository, path, commit


@dataclass(frozen=True)
class Finding:
    """A paper's headline claim, with the scale it was measured at and where it says so."""

    id: str
    claim: str
    scale: str
    source: dict  # paper, where


def _require(entry: dict, keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if key not in entry or entry[key] in (None, ""):
            raise LiteratureError(f"{where}: missing field {key!r}")


def _run(row: dict, where: str) -> PublishedRun:
    names = tuple(PublishedRun.__dataclass_fields__)
    _require(row, names, where)
    source = row["source"]
    _require(source, ("repository", "path", "commit"), f"{where}, source")
    if not _COMMIT.match(source["commit"]):
        raise LiteratureError(f"{where}, source: commit {source['commit']!r} is not 40 hex digits")
    if not 0.0 <= row["test_accuracy"] <= 1.0:
        raise LiteratureError(f"{where}: test_accuracy {row['test_accuracy']} is not in [0, 1]")
    for key in ("peak_memory_bytes", "file_size_bytes", "trainable_params", "total_params"):
        if not isinstance(row[key], int) or row[key] <= 0:
            raise LiteratureError(f"{where}: {key} must be a positive integer, got {row[key]!r}")
    return PublishedRun(**{k: row[k] for k in names})


def load(path: Path | None = None) -> tuple[list[PublishedRun], list[Finding]]:
    """peft's runs and the papers' findings, checked: a bad entry names itself and its field."""
    path = path or data_dir() / LITERATURE_FILE
    doc = json.loads(path.read_text())
    rows = doc.get("peft_method_comparison", {}).get("runs")
    if not rows:
        raise LiteratureError(f"{path.name}: no peft_method_comparison runs")
    runs = [
        _run(row, f"{path.name}, run {i} ({row.get('config', '?')})") for i, row in enumerate(rows)
    ]
    findings = []
    for i, entry in enumerate(doc.get("findings", [])):
        where = f"{path.name}, finding {i} ({entry.get('id', '?')})"
        _require(entry, ("id", "claim", "scale", "source"), where)
        _require(entry["source"], ("paper", "where"), f"{where}, source")
        findings.append(Finding(**{k: entry[k] for k in ("id", "claim", "scale", "source")}))
    return runs, findings


def best_runs(runs: list[PublishedRun]) -> dict[str, PublishedRun]:
    """Each method's run with the highest test accuracy: peft's own reading of its table."""
    best: dict[str, PublishedRun] = {}
    for run in runs:
        if run.method not in best or run.test_accuracy > best[run.method].test_accuracy:
            best[run.method] = run
    return best


def pairwise_agreement(ours: dict[str, float], theirs: dict[str, float]) -> list[dict]:
    """For every pair of methods both sides measured: which one each side puts first.

    `ours` and `theirs` map a method to one measure (higher or lower, the same direction on
    both sides). A pair agrees when both order it the same way; a tie on either side is
    reported as such, never counted as agreement.
    """
    shared = [m for m in ours if m in theirs]
    rows = []
    for a, b in combinations(shared, 2):
        ours_sign = (ours[a] > ours[b]) - (ours[a] < ours[b])
        theirs_sign = (theirs[a] > theirs[b]) - (theirs[a] < theirs[b])
        verdict = (
            "tie"
            if 0 in (ours_sign, theirs_sign)
            else ("agree" if ours_sign == theirs_sign else "disagree")
        )
        rows.append(
            {"pair": f"{a} vs {b}", "ours": ours_sign, "theirs": theirs_sign, "verdict": verdict}
        )
    return rows


def peft_table(runs: list[PublishedRun] | None = None):
    """peft's runs as a table (one row per run, peft's experiment name beside our method name)."""
    import pandas as pd

    runs = runs if runs is not None else load()[0]
    return pd.DataFrame(
        [
            {
                "method": r.method,
                "peft experiment": r.config,
                "lr": r.lr,
                "GSM8K accuracy": r.test_accuracy,
                "forgetting (ΔCE, nats/token)": r.forgetting_ce,
                "peak memory (GiB)": r.peak_memory_bytes / 2**30,
                "file (MiB)": r.file_size_bytes / 2**20,
                "trainable params": r.trainable_params,
            }
            for r in runs
        ]
    )


AGAINST = {  # measure: (our summary key, peft's field); both sides "better" the same way
    "learning": ("domain_recall_after", "test_accuracy"),
    "forgetting (ΔCE)": ("general_ce_change", "forgetting_ce"),
    "memory": ("training_memory_bytes", "peak_memory_bytes"),
}


def against_comparison(summary: list[dict], runs: list[PublishedRun] | None = None):
    """Our comparison (`compare.with_fresh_memory` summary: per method, the mean over seeds)
    beside peft's best run per method: for every method pair both ran, which side each puts
    first on learning, forgetting and memory, and whether they agree (`pairwise_agreement`).
    The last row counts the agreements per measure."""
    import pandas as pd

    theirs_runs = best_runs(runs if runs is not None else load()[0])
    columns = {}
    for measure, (ours_key, theirs_key) in AGAINST.items():
        ours = {
            r["method"]: r[ours_key]["mean"]
            for r in summary
            if r["seeds"] and (r.get(ours_key) or {}).get("mean") is not None
        }
        theirs = {m: getattr(run, theirs_key) for m, run in theirs_runs.items()}
        for row in pairwise_agreement(ours, theirs):
            columns.setdefault(row["pair"], {})[measure] = row["verdict"]
    table = pd.DataFrame.from_dict(columns, orient="index")[list(AGAINST)]
    table.loc["agree / pairs"] = [
        f"{(table[m] == 'agree').sum()} / {table[m].notna().sum()}" for m in AGAINST
    ]
    return table
