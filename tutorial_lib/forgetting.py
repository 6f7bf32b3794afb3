"""Tools against catastrophic forgetting: replay of general text, and pulls toward the original
weights (L2-SP, EWC) that plug into the one training loop as penalties."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from tutorial_lib.data import collate


def encode_text(tokenizer, passages: list[dict], max_length: int) -> list[dict[str, list[int]]]:
    """Plain language-modelling examples: every token is trained. Passages longer than
    max_length keep their first max_length tokens (replay needs text, not whole passages)."""
    examples = []
    for passage in passages:
        ids = tokenizer(passage["text"], add_special_tokens=False)["input_ids"][:max_length]
        examples.append({"input_ids": ids, "labels": list(ids)})
    return examples


def mix_replay(
    domain: list[dict], general: list[dict], fraction: float, seed: int = 0
) -> list[dict]:
    """Domain examples plus enough general ones that they make up `fraction` of the mixture.

    The count is exact when fraction × total is a whole number (e.g. 0.25 of 40 = 10 general
    among 30 domain examples); the training loop's seeded shuffle then spreads them out.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"replay fraction must be in [0, 1), got {fraction}")
    n_general = round(fraction * len(domain) / (1 - fraction))
    if n_general > len(general):
        raise ValueError(
            f"replay fraction {fraction} needs {n_general} general examples; only {len(general)}"
        )
    picked = random.Random(seed).sample(general, n_general)
    return domain + picked


class L2SP:
    """Penalty weight/2 · Σ‖θ − θ₀‖² over trained parameters: a spring back to the start point."""

    def __init__(self, model: torch.nn.Module, weight: float):
        if weight < 0:
            raise ValueError(f"L2-SP weight must be >= 0, got {weight}")
        self.weight = weight
        self.anchor = {
            n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        }

    def importance(self, name: str) -> torch.Tensor | float:
        return 1.0

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        total = None
        for name, p in model.named_parameters():
            if name in self.anchor:
                term = (self.importance(name) * (p - self.anchor[name]).pow(2)).sum()
                total = term if total is None else total + term
        return 0.5 * self.weight * total


class EWC(L2SP):
    """L2-SP weighted per parameter by a diagonal Fisher estimate on general text: parameters
    that general knowledge depends on are held more firmly."""

    def __init__(self, model, weight: float, batches: Iterable[dict[str, torch.Tensor]]):
        super().__init__(model, weight)
        self.fisher = {n: torch.zeros_like(t) for n, t in self.anchor.items()}
        params = dict(model.named_parameters())
        count = 0
        for batch in batches:
            model.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            for name in self.fisher:
                if params[name].grad is not None:
                    self.fisher[name] += params[name].grad.detach().pow(2)
            count += 1
        model.zero_grad(set_to_none=True)
        if count == 0:
            raise ValueError("EWC needs at least one batch of general text to estimate the Fisher")
        total = sum(f.sum().item() for f in self.fisher.values())
        mean = total / sum(f.numel() for f in self.fisher.values()) or 1.0
        for name in self.fisher:  # mean importance 1: at equal weight, EWC pulls as hard as L2-SP
            self.fisher[name] /= mean  # in total, but where general text needs it

    def importance(self, name: str) -> torch.Tensor:
        return self.fisher[name]


def general_batches(tokenizer, passages: list[dict], max_length: int, batch_size: int = 4):
    """Batches of general text for the Fisher estimate."""
    examples = encode_text(tokenizer, passages, max_length)
    pad = tokenizer.pad_token_id
    return [collate(examples[i : i + batch_size], pad) for i in range(0, len(examples), batch_size)]


# --- sweeps that survive interruption ------------------------------------------------------------


def run_sweep(
    configs: list[dict], run: Callable[..., dict], results_path: str | Path
) -> list[dict]:
    """Run `run(**config)` for each config, appending each finished result to a JSONL file.

    Configs already in the file are skipped, so an interrupted sweep resumes where it stopped
    and never loses a finished run. Returns every result, in the order of `configs`.
    """
    path = Path(results_path)
    path.parent.mkdir(parents=True, exist_ok=True)  # a fresh clone has no runs/ folder yet
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[json.dumps(row["config"], sort_keys=True)] = row
    for config in configs:
        key = json.dumps(config, sort_keys=True)
        if key in done:
            continue
        row = {"config": config, "result": run(**config)}
        with open(path, "a") as fh:  # one line per finished run, flushed before the next starts
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        done[key] = row
    return [done[json.dumps(c, sort_keys=True)]["result"] for c in configs]


# --- comparing runs ------------------------------------------------------------------------------


def at_domain_accuracy(trajectory: list[dict], target: float) -> dict | None:
    """A run's numbers at the moment its domain accuracy first reached `target`, interpolated
    linearly between measured steps; None if it never did.

    Comparing methods at equal steps flatters whichever learned less; comparing them at equal
    domain accuracy asks what each paid in forgetting for the same learning.
    """
    if trajectory and trajectory[0]["domain_accuracy"] >= target:
        return {k: v for k, v in trajectory[0].items() if isinstance(v, (int, float))}
    for prev, point in zip(trajectory, trajectory[1:]):
        if point["domain_accuracy"] >= target:
            lo, hi = prev["domain_accuracy"], point["domain_accuracy"]
            t = (target - lo) / (hi - lo)
            return {
                key: prev[key] + t * (point[key] - prev[key])
                for key in point
                if isinstance(point[key], (int, float))
            }
    return None


def comparison_table(runs: list[dict], target: float | None = None):
    """One row per run (summaries from `experiment.summarised_run`): what it learned and what it
    kept at the end, and, with `target`, both again at the step it reached that domain accuracy."""
    import pandas as pd

    rows = []
    for run in runs:
        row = {
            "run": run["label"],
            "domain acc": run["domain_accuracy_after"],
            "probe acc": run["probe_accuracy_after"],
            "forgetting (pts)": 100 * run["forgetting"],
            "± (pts)": 100 * run["forgetting_stderr"],
            "retention": run["retention"],
            "general CE": run["general_ce_after"],
            "s/step": run["sec_per_step"],
        }
        if target is not None:
            at = at_domain_accuracy(run["trajectory"], target)
            row[f"step to {target:.0%}"] = at["step"] if at else None
            row[f"retention at {target:.0%}"] = at["retention"] if at else None
            row[f"CE at {target:.0%}"] = at["general_ce"] if at else None
        rows.append(row)
    return pd.DataFrame(rows).set_index("run").round(3)


def best_per_method(runs: list[dict]) -> dict[str, dict]:
    """Each method's run that learned most at the shared budget (ties: the one that kept more),
    which is how a learning rate is calibrated per method rather than shared."""
    best: dict[str, dict] = {}
    for run in runs:
        key = (run["domain_accuracy_after"], run["retention"])
        kept = best.get(run["method"])
        if kept is None or key > (kept["domain_accuracy_after"], kept["retention"]):
            best[run["method"]] = run
    return best


def learning_rate_path(runs: list[dict]) -> list[dict]:
    """One method's runs as a path from the base (lr 0) through rising learning rates, in the
    shape `at_domain_accuracy` reads, so methods can be compared at matched domain accuracy
    without extra evaluations: the gentlest rate that learns this much, and what it kept."""
    ordered = sorted(runs, key=lambda run: run["lr"])
    first = ordered[0]
    base = {
        "lr": 0.0,
        "domain_accuracy": first["domain_accuracy_before"],
        "retention": 1.0,
        "general_ce": first["general_ce_before"],
    }
    return [base] + [
        {
            "lr": run["lr"],
            "domain_accuracy": run["domain_accuracy_after"],
            "retention": run["retention"],
            "general_ce": run["general_ce_after"],
        }
        for run in ordered
    ]


def matched_table(runs: list[dict], target: float):
    """Per method: its best run at the budget, and its retention and cross-entropy where its
    learning-rate path first reached `target` domain accuracy (empty where it never did)."""
    import pandas as pd

    rows = []
    for method, best in best_per_method(runs).items():
        path = learning_rate_path([run for run in runs if run["method"] == method])
        at = at_domain_accuracy(path, target)
        rows.append(
            {
                "method": method,
                "best lr": best["lr"],
                "domain acc": best["domain_accuracy_after"],
                "retention": best["retention"],
                "general CE": best["general_ce_after"],
                f"lr to {target:.0%}": at["lr"] if at else None,
                f"retention at {target:.0%}": at["retention"] if at else None,
                f"CE at {target:.0%}": at["general_ce"] if at else None,
            }
        )
    table = pd.DataFrame(rows).set_index("method")
    rates = ["best lr", f"lr to {target:.0%}"]  # rounding would show 3e-5 as 0.0
    return table.round({c: 4 for c in table.columns if c not in rates})


def costs_table(runs: list[dict]):
    """What each run cost: trainable share, optimizer state, peak memory, time, file size."""
    import pandas as pd

    rows = [
        {
            "run": run.get("label") or run["method"],
            "trainable params": run["trainable_params"],
            "trainable %": run["trainable_percent"],
            "optimizer state (MB)": run["optimizer_state_bytes"] / 1e6,
            "peak memory (GB)": run["peak_memory_bytes"] / 1e9
            if run["peak_memory_bytes"]
            else None,
            "s/step": run["sec_per_step"],
            "checkpoint (MB)": run["checkpoint_bytes"] / 1e6,
        }
        for run in runs
    ]
    return pd.DataFrame(rows).set_index("run").round(3)
