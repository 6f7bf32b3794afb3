"""Each method's default learning rate, read from the lessons' measured sweeps.

A shared default rate makes some methods look useless (a soft prompt needs steps a hundred times
larger than full fine-tuning's). The lessons sweep every method's rate on one budget; this
script reads those sweeps (the JSONL files `sweeps.run_sweep` writes, which
`run.py --lessons` keeps beside the executed notebooks) and writes, per method, every rate tried
with what it bought and the best one (`results.best_per_method`: most domain accuracy, then
most retention). `tests/test_learning_rates.py` checks that the registry's defaults are these.

    python benchmarks/learning_rates.py RUNS.jsonl ... --json benchmarks/results/learning-rates.json

Only runs of a method's default config count (top-layers k = 2, not k = 8): a default rate is
for the default method.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from tutorial_lib import provenance
from tutorial_lib.methods import get_method
from tutorial_lib.results import best_per_method

KEPT = ("lr", "domain_accuracy_after", "retention", "general_ce_after", "sec_per_step")
BUDGET = ("steps", "seed", "domain_n_items", "probe_n_items")  # what every rate shared


def read_runs(paths: list[Path]) -> list[dict]:
    """Every finished run summary in the sweep files, in file order."""
    runs = []
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "result" not in row:
                raise ValueError(f"{path}, line {number}: not a sweep row (no 'result')")
            runs.append(row["result"])
    return runs


def with_default_config(run: dict) -> bool:
    """Whether a run trained its method's default config (None stored means the default)."""
    stored = (run.get("spec") or {}).get("method_config")
    if stored is None:
        return True
    default = asdict(get_method(run["method"]).config_cls())
    return json.loads(json.dumps(stored)) == json.loads(json.dumps(default))


def record(runs: list[dict]) -> dict:
    """Per method: the budget, every rate tried with its numbers, and the best rate."""
    runs = [run for run in runs if "error" not in run and with_default_config(run)]
    best = best_per_method(runs)
    out = {}
    for method, chosen in sorted(best.items()):
        tried = sorted((r for r in runs if r["method"] == method), key=lambda r: r["lr"])
        out[method] = {
            "best_lr": chosen["lr"],
            "domain_accuracy_before": chosen["domain_accuracy_before"],
            "budget": {key: chosen[key] for key in BUDGET},
            "rates": [{key: r[key] for key in KEPT} for r in tried],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep JSONL files")
    parser.add_argument("--json", type=Path, required=True, help="where to write the record")
    args = parser.parse_args(argv)
    rates = record(read_runs(args.sweeps))
    ran = provenance.record(provenance.command_line("python benchmarks/learning_rates.py", argv))
    args.json.write_text(json.dumps({"methods": rates, "ran": ran.to_json()}, indent=1) + "\n")
    for method, row in rates.items():
        tried = ", ".join(f"{r['lr']:g}: {r['domain_accuracy_after']:.3f}" for r in row["rates"])
        print(f"{method:<14} best {row['best_lr']:<8g} (domain accuracy by rate: {tried})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
