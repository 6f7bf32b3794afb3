"""Sweeps that survive interruption, and a cache that cannot return a stale run.

`run_sweep(configs, run, path)` calls `run(**config)` for each config and appends each finished
result to a JSONL file. A run is read back instead of rerun only when its key matches: the key
(`cache_key`) holds everything that changes a run's numbers (the config, and `run.where()`: the
shared spec fields, profile sizes, model, task, the suites' items, a hash of the data files) and
a results-schema version, and nothing that does not (labels, save paths). `experiment.Runner`
is such a `run`. Also here: configs for sweeps over a method's structure (`top_layers`,
`one_block`) and `by_variant`, which makes each config its own row in a table.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from tutorial_lib.memory.machine import release_memory
from tutorial_lib.methods import get_method

SCHEMA = 1  # the results' version: raise it when a summary changes meaning, and every run reruns
NAMES = ("label", "group", "save_as")  # name a run or where its weights go: never its numbers
SHOWN = ("label", "group")  # names a cached result takes from the config that asked for it


def cache_key(config: dict, where: dict | None = None) -> str:
    """The one key of a run in any sweep's cache: its config less its names, where it ran, and
    the schema version."""
    numbers = {k: v for k, v in config.items() if k not in NAMES}
    if numbers.get("train_file"):  # a learner's own file: its contents, not only its name
        numbers["train_file_sha256"] = file_digest(numbers["train_file"])
    key = {"config": numbers, "where": where or {}, "schema": SCHEMA}
    text = json.dumps(key, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, so a file edited in place is a different run's input."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def where_of(run: Callable[..., dict]) -> dict:
    """What `run` says it runs on (`run.where()`, e.g. an `experiment.Runner`); {} if nothing."""
    where = getattr(run, "where", None)
    return where() if callable(where) else {}


def read_cache(path: Path) -> dict[str, dict]:
    """The rows of a sweep file by key; rows without a key (an older format) are not trusted."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if "key" in row:
                    done[row["key"]] = row
    return done


def append_row(path: Path, row: dict) -> None:
    """Append one line and flush it to disk before the next run starts."""
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def run_sweep(
    configs: list[dict],
    run: Callable[..., dict],
    results_path: str | Path,
    where: dict | None = None,
) -> list[dict]:
    """Run `run(**config)` for each config, appending each finished result to a JSONL file.

    Runs already in the file under the same `cache_key` are read back, so an interrupted sweep
    resumes where it stopped and never loses a finished run; `where` (default: `run.where()`)
    is what the runs share. Returns every result, in the order of `configs`, named by its config.
    """
    path = Path(results_path)
    path.parent.mkdir(parents=True, exist_ok=True)  # a fresh clone has no runs/ folder yet
    where = where_of(run) if where is None else where
    done = read_cache(path)
    out = []
    for config in configs:
        key = cache_key(config, where)
        if key not in done:
            done[key] = {"key": key, "config": config, "result": run(**config)}
            append_row(path, done[key])
            release_memory()  # a run's model lives in reference cycles: free it before the next
        result = done[key]["result"]
        out.append({**result, **{k: config[k] for k in SHOWN if k in config and k in result}})
    return out


# --- sweeps over a method's structure ------------------------------------------------------------


def configured(run: Callable[..., dict]) -> Callable[..., dict]:
    """`run` taking the method's config as plain fields, `method_fields={"k": 4}`, so every
    sweep config stays JSON and can be cached (`experiment.Runner` does this itself)."""

    def wrapped(method: str, method_fields: dict | None = None, **kwargs) -> dict:
        config = None if method_fields is None else get_method(method).config_cls(**method_fields)
        return run(method=method, method_config=config, **kwargs)

    wrapped.where = getattr(run, "where", None)
    return wrapped


def top_layers(k: int, lr: float) -> dict:
    """A `run_sweep` config training the last k blocks; one (k, rate) is one label, trained once."""
    return {
        "label": f"top-layers k={k}, lr {lr:.2g}",
        "group": "top-layers",
        "method": "top-layers",
        "method_fields": {"k": k},
        "lr": lr,
    }


def one_block(block: int, lr: float) -> dict:
    """A `run_sweep` config training only `block` (0 = input side), for `depth.by_depth`."""
    return {
        "label": f"block {block}",
        "group": "one block",
        "method": "chosen-layers",
        "method_fields": {"layers": [block]},  # a list: the sweep's configs are JSON
        "lr": lr,
    }


def method_fields(run: dict) -> dict:
    """A run summary's method config, as stored with it (`RunSpec.to_dict`); {} for none."""
    return (run.get("spec") or {}).get("method_config") or {}


def variant(run: dict) -> str:
    """A run's method and config: "top-layers k=4", "chosen-layers layers=9", "ln-tuning"."""

    def text(value) -> str:
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    fields = method_fields(run).items()
    return " ".join([run["method"], *(f"{k}={text(v)}" for k, v in fields)])


def by_variant(runs: list[dict]) -> list[dict]:
    """Copies of `runs` whose "method" is their `variant`, so that `results.best_per_method`
    and `matched_table` treat each config as its own method: two values of k at one learning
    rate are two methods, not two points on one method's learning-rate path."""
    return [{**run, "method": variant(run)} for run in runs]
