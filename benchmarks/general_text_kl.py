"""What KL(base ‖ tuned) on general text adds to an evaluation, at lesson 07's full budget.

On the real model: the general-text pass as every evaluation runs it (per-passage cross-entropy,
`general_text.score_general`) without and with the base's log-probabilities on `--kl-passages`
passages, the one-off capture of those log-probabilities (`capture_base`, once per Baseline),
the bytes they take, and the process's peak resident set around each (the kernel's VmHWM). The
base against itself must give KL exactly 0; a model with one weight nudged, more.

    python benchmarks/general_text_kl.py --json benchmarks/results/general-text-kl.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path

import torch

from tutorial_lib import data
from tutorial_lib.general_text import capture_base, score_general
from tutorial_lib.models import load_base_model
from tutorial_lib.provenance import command_line, record
from tutorial_lib.scoring import HEAD_ROWS, quiet_progress


def peak_mib() -> float:
    """The kernel's high-water mark of this process's resident set, in MiB."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> float:
    """Start a new high-water mark at the current resident set; return that, in MiB."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return peak_mib()


def resident_mib() -> float:
    """This process's resident set now, in MiB."""
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn):
    """(seconds, peak MiB above the resident set at the start, result) of one call."""
    start = reset_peak()
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, peak_mib() - start, out


def kl_arithmetic_s(base, repeats: int = 5) -> float:
    """Best-of-`repeats` seconds of the arithmetic KL adds to a pass, alone (the same
    operations as `score_general` on every KL position, HEAD_ROWS at a time): short timings
    whose minimum a busy machine disturbs less than whole passes'."""
    from tutorial_lib.general_text import _slice_rows

    positions = sum(len(t) for t in base.logprobs)
    logp = torch.randn(1, base.logprobs[0].shape[1], HEAD_ROWS)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(0, positions, HEAD_ROWS):
            n = min(HEAD_ROWS, positions - i)
            mine = logp[0, :, :n].T.half().float()
            theirs = _slice_rows(base.logprobs, i, i + n).float()
            gap = theirs - mine
            gap.mul_(theirs.exp_()).sum(-1).double()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--general-items", type=int, default=16)  # lesson 07's full budget
    parser.add_argument("--kl-passages", type=int, default=16)  # the full profile's
    parser.add_argument("--batch-size", type=int, default=16)  # eval_batch_size 32 // 2
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = {k: getattr(args, k) for k in ("general_items", "kl_passages", "batch_size")}
    ran = record(command_line("python benchmarks/general_text_kl.py", argv), sizes, args.threads)
    model, tok = load_base_model()
    passages = data.load_general_text(limit=args.general_items)
    load_at_start = os.getloadavg()[0]
    out: dict = {"ran": ran.to_json(), "resident_after_load_mib": reset_peak()}
    with quiet_progress():
        score_general(model, tok, passages, args.batch_size)  # warm-up: first-call allocations
        before_capture = resident_mib()
        capture_s, capture_mib, base = timed(
            lambda: capture_base(model, tok, passages, args.kl_passages, args.batch_size)
        )
        held_mib = resident_mib() - before_capture
        plain_runs, kl_runs = [], []
        for _ in range(args.repeats):  # interleaved, so a busy machine slows both alike
            plain_runs.append(timed(lambda: score_general(model, tok, passages, args.batch_size)))
            kl_runs.append(
                timed(lambda: score_general(model, tok, passages, args.batch_size, base=base))
            )
        plain, with_kl = plain_runs[-1][2], kl_runs[-1][2]
        with torch.no_grad():
            weight = model.model.layers[0].mlp.down_proj.weight
            weight.add_(1e-3 * torch.randn_like(weight))
        nudged = score_general(model, tok, passages, args.batch_size, base=base).kl()
        arithmetic_s = kl_arithmetic_s(base)
    plain_s = [t for t, _, _ in plain_runs]
    kl_s = [t for t, _, _ in kl_runs]
    added = sorted(k - p for p, k in zip(plain_s, kl_s))
    positions = sum(len(t) for t in base.logprobs)
    out.update(
        {
            "general_passages": len(passages),
            "kl_passages": len(base.ids),
            "kl_positions": positions,
            "vocab": int(base.logprobs[0].shape[1]),
            "base_logprobs_bytes": base.nbytes,
            "base_logprobs_mib": base.nbytes / 2**20,
            "general_pass_s": plain_s,
            "general_pass_with_kl_s": kl_s,
            "kl_added_s_per_evaluation_median": added[len(added) // 2],
            "kl_added_s_per_evaluation_min_to_min": min(kl_s) - min(plain_s),
            "kl_arithmetic_s_per_evaluation_best_of_5": arithmetic_s,
            "capture_base_s_once": capture_s,
            "capture_base_held_resident_mib": held_mib,
            "capture_base_peak_above_start_mib": capture_mib,
            "general_pass_peak_above_start_mib": max(m for _, m, _ in plain_runs),
            "general_pass_with_kl_peak_above_start_mib": max(m for _, m, _ in kl_runs),
            "load_average_at_start": load_at_start,
            "general_ce": plain.ce,
            "general_ce_with_kl_pass": with_kl.ce,
            "kl_base_vs_itself": with_kl.kl().value,
            "kl_one_weight_nudged": nudged.value,
            "kl_one_weight_nudged_stderr": nudged.stderr,
            "note": "seconds per pass, interleaved; peak MiB above the resident set at each "
            "pass's start; the base's log-probabilities (base_logprobs_mib) stay held from the "
            "capture on (capture_base_held_resident_mib: the resident set it added)",
        }
    )
    text = json.dumps(out, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return out


if __name__ == "__main__":
    main()
