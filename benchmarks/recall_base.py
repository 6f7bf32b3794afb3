"""Recall on the base model: greedy recall of the method lessons' held-out questions, MC
accuracy and the recognition control on the same items, and the time each part of one
evaluation takes (so what recall adds to an evaluation is measured, not guessed).

    python benchmarks/recall_base.py --json benchmarks/results/recall-base.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from tutorial_lib import data, evaluate, recall
from tutorial_lib.config import METHOD_LESSON
from tutorial_lib.models import DEFAULT_MODEL, load_base_model
from tutorial_lib.provenance import command_line, record
from tutorial_lib.scoring import quiet_progress

# process CPU time per part: steadier than wall time on a shared machine
CPU_SECONDS: dict[str, float] = {}


def timed(fn, *args, **kwargs):
    """(result, wall seconds) of one call; its CPU seconds are added to CPU_SECONDS."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    wall = time.perf_counter() - start
    CPU_SECONDS[fn.__name__ + str(len(CPU_SECONDS))] = time.process_time() - cpu
    print(f"{fn.__name__}: {wall:.1f} s", file=sys.stderr, flush=True)
    return out, wall


def measure(threads: int, examples: int) -> dict:
    torch.set_num_threads(threads)
    sizes = METHOD_LESSON["full"]
    model, tok = load_base_model(DEFAULT_MODEL)
    domain = data.load_domain_eval(facts=sizes["domain_facts"])
    probe = data.load_probe(limit=sizes["probe_items"])
    general = data.load_general_text(limit=sizes["general_items"])
    with quiet_progress():
        pr, probe_s = timed(evaluate.evaluate_choices, model, tok, probe, 32, "probe", "plain")
        mc, domain_s = timed(evaluate.evaluate_choices, model, tok, domain, 32, "domain", "chat")
        ce, general_s = timed(evaluate.general_cross_entropy, model, tok, general, 16)
        rc, recall_s = timed(recall.evaluate_recall, model, tok, domain)
        ctl, control_s = timed(recall.evaluate_control, model, tok, domain, 32)
    without = probe_s + domain_s + general_s
    first = [i for i, item in enumerate(domain) if item["id"].endswith("-e")]
    return {
        "sizes": sizes,
        "domain_facts": sizes["domain_facts"],
        "domain_n_items": len(domain),
        "domain_recall": rc.accuracy,
        "domain_recall_stderr": rc.stderr,
        "domain_recall_correct": sum(rc.correct),
        "domain_recall_first_wording_only": sum(rc.correct[i] for i in first) / len(first),
        "domain_accuracy": mc.accuracy,
        "domain_accuracy_stderr": mc.stderr,
        "domain_accuracy_first_wording_only": sum(mc.correct[i] for i in first) / len(first),
        "domain_control_accuracy": ctl.accuracy,
        "domain_control_accuracy_stderr": ctl.stderr,
        "probe_accuracy": pr.accuracy,
        "general_ce": ce,
        "seconds": {
            "probe": probe_s,
            "domain_mc": domain_s,
            "general_ce": general_s,
            "recall": recall_s,
            "control": control_s,
            "evaluation_without_recall": without,
            "added_by_recall_and_control": recall_s + control_s,
            "added_fraction": (recall_s + control_s) / without,
        },
        "cpu_seconds": dict(
            zip(("probe", "domain_mc", "general_ce", "recall", "control"), CPU_SECONDS.values())
        ),
        "load_average_after": os.getloadavg()[0],
        "max_new_tokens": recall.MAX_NEW_TOKENS,
        "recall_batch": recall.RECALL_BATCH,
        "example_replies": [
            {"id": i, "value": v, "reply": r, "recalled": c}
            for i, v, r, c in list(zip(rc.ids, rc.values, rc.replies, rc.correct))[:examples]
        ],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--examples", type=int, default=12, help="replies kept in the result")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    result = measure(args.threads, args.examples)
    ran = record(command_line("python benchmarks/recall_base.py", argv), threads=args.threads)
    result = {"ran": ran.to_json(), **result}
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
