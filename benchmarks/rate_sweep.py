"""A fair default learning rate per method: three rates each on the lessons' budget, chosen by
a rule written down before the sweep (`rates.RATE_RULE`), with recall by generation.

Every method trains on the method lessons' `full` budget (`config.METHOD_LESSON`: 14 facts, 28
steps of 8 chats, seed 0) at the three rates in `RATES` (four where the first
three put the choice at the sweep's top edge), and each run is evaluated as a lesson
evaluates it: recall on every held-out wording (56 questions), multiple choice and its control,
the probe with losses and gains, general-text cross-entropy and KL to the base. No mid-run
points: the rule reads the end of each run. The runs are cached in a JSONL file, so a stopped
sweep resumes where it stopped (`--runs`, committed beside the record so a later session
continues it); `--record` writes the chosen rates for every method whose three rates are done.

    python benchmarks/rate_sweep.py --runs benchmarks/results/rate-sweep-runs.jsonl \
        --json benchmarks/results/learning-rates.json

The rates bracket each method's earlier default (the best by domain accuracy of two rates,
`git log benchmarks/results/learning-rates.json`) by a factor of about three on either side.
Methods that share another's rate by construction are not swept: `lora-scratch` (lora),
`prompt-scratch` (prompt-tuning), `chosen-layers` (top-layers); `bitfit` has no biases to train
on this model. Time it alone: the record keeps the load average beside each run's step time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path

from tutorial_lib import provenance
from tutorial_lib.baseline import Baseline
from tutorial_lib.compare import run_one
from tutorial_lib.config import get_profile, lesson_profile
from tutorial_lib.rates import RATE_RULE, choose_rate
from tutorial_lib.sweeps import read_cache, run_sweep

RATES: dict[str, tuple[float, ...]] = {  # the headline methods first; a fourth rate where the
    # first three put the rule's choice at the sweep's top edge
    "full": (3e-5, 1e-4, 3e-4, 1e-3),
    "lora": (1e-3, 3e-3, 1e-2),
    "qlora": (1e-3, 3e-3, 1e-2),
    "adapter": (3e-3, 1e-2, 3e-2),
    "ia3": (3e-2, 1e-1, 3e-1),
    "ln-tuning": (3e-3, 1e-2, 3e-2),
    "top-layers": (3e-4, 1e-3, 3e-3, 1e-2),
    "dora": (1e-3, 3e-3, 1e-2),
    "prompt-tuning": (1e-1, 3e-1, 1.0),
    "prefix-tuning": (3e-2, 1e-1, 3e-1),
    "bias-added": (1e-3, 3e-3, 1e-2),
}
SHARED = {"lora-scratch": "lora", "prompt-scratch": "prompt-tuning", "chosen-layers": "top-layers"}
KEPT = (  # per rate, what the record keeps of a run
    "lr",
    "domain_recall_after",
    "domain_recall_after_stderr",
    "domain_accuracy_after",
    "domain_control_accuracy_after",
    "forgetting",
    "forgetting_stderr",
    "probe_lost",
    "probe_gained",
    "probe_sign_test_p",
    "general_ce_change",
    "general_ce_change_stderr",
    "kl_to_base",
    "kl_to_base_stderr",
    "sec_per_step",
    "load_average",
)
BUDGET = ("steps", "seed", "domain_n_items", "probe_n_items")


def configs(methods: list[str], steps: int) -> list[dict]:
    """One sweep config per method and rate, seed 0, no mid-run points."""
    return [
        {"method": m, "seed": 0, "lr": lr, "steps": steps, "eval_at": []}
        for m in methods
        for lr in RATES[m]
    ]


def with_load(run):
    """`run`, its record stamped with the load average at its end (a busy machine's step
    times are not this method's)."""

    def timed(**config):
        return {**run(**config), "load_average": os.getloadavg()[0]}

    return timed


def record(runs: list[dict]) -> dict:
    """Per method whose rates are all measured: the rule's choice and every rate's numbers."""
    done = [r for r in runs if "error" not in r and r.get("domain_recall_after") is not None]
    complete = [m for m in RATES if {r["lr"] for r in done if r["method"] == m} >= set(RATES[m])]
    chosen = choose_rate([r for r in done if r["method"] in complete])
    out = {}
    for method in complete:
        tried = sorted((r for r in done if r["method"] == method), key=lambda r: r["lr"])
        pick = chosen[method]
        out[method] = {
            "chosen_lr": pick["lr"],
            "best_lr": pick["best_lr"],
            "margin": pick["margin"],
            "at_the_sweeps_edge": pick["lr"] in (min(RATES[method]), max(RATES[method])),
            "domain_accuracy_before": tried[0]["domain_accuracy_before"],
            "domain_recall_before": tried[0].get("domain_recall_before"),
            "budget": {key: tried[0][key] for key in BUDGET},
            "rates": [{key: r.get(key) for key in KEPT} for r in tried],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="the sweep's JSONL cache")
    parser.add_argument("--json", type=Path, help="write the chosen rates here")
    parser.add_argument("--methods", help="comma-separated (default: every swept method)")
    parser.add_argument("--profile", default="full", help="full (the record) or quick (a try)")
    parser.add_argument(
        "--record-only", action="store_true", help="train nothing: write what the cache holds"
    )
    args = parser.parse_args(argv)
    methods = args.methods.split(",") if args.methods else list(RATES)
    unknown = sorted(set(methods) - set(RATES))
    if unknown:
        parser.error(f"not swept: {unknown}; swept: {', '.join(RATES)}")
    profile = lesson_profile("07", get_profile(args.profile))
    baseline = Baseline(profile)
    sweep = configs(methods, profile.train_steps)
    if args.record_only:
        cache = read_cache(args.runs) if args.runs.exists() else {}
        runs = [row["result"] for row in cache.values()]
    else:
        baseline.measure(trajectory=False)  # once, shared by every run
        run = with_load(partial(run_one, baseline, on_run=_say))
        run_sweep(sweep, run, args.runs, where=baseline.identity())
        # the record covers every method the cache holds, not only those swept this time
        runs = [row["result"] for row in read_cache(args.runs).values()]
    chosen = record(runs)
    for method, row in chosen.items():
        tried = ", ".join(f"{r['lr']:g}: {r['domain_recall_after']:.3f}" for r in row["rates"])
        print(f"{method:<14} chosen {row['chosen_lr']:<7g} (recall by rate: {tried})")
    if args.json:
        ran = provenance.record(provenance.command_line("python benchmarks/rate_sweep.py", argv))
        out = {"rule": RATE_RULE, "rates": RATES, "shared": SHARED, "methods": chosen}
        args.json.write_text(json.dumps(out | {"ran": ran.to_json()}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def _say(method: str, seed: int) -> None:
    print(f"run: {method}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
