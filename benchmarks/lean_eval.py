"""Lean evaluation: what evaluating and loading the base model cost, before and after a change.

Each measurement runs in a fresh Python process and reads the process's own peak resident set
from the kernel: loading the cached model, converting it the first time (in a temporary cache
that holds a copy of the downloaded wheel only), and evaluating the base on the `quick`
profile's suite (peak after loading and during the evaluation, and the seconds of each part).
`--before DIR` names the root of an older checkout (e.g. `git archive REV tutorial_lib | tar -x
-C DIR`): every measurement then runs with its `tutorial_lib` too, interleaved with this one's.

    python benchmarks/lean_eval.py --before OLD --json benchmarks/results/lean-eval.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tutorial_lib.provenance import command_line, record

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import gc, json, resource, sys, time

def peak_mib():  # the kernel's high-water mark of this process's resident set
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

def reset_peak():
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")

import tutorial_lib
from tutorial_lib.models import load_base_model

mode = sys.argv[1]
t0 = time.perf_counter()
model, tok = load_base_model()
out = {"load_s": time.perf_counter() - t0, "load_peak_mib": peak_mib()}
out["package"] = tutorial_lib.__file__
if mode == "evaluate":
    from tutorial_lib import data, evaluate
    from tutorial_lib.config import get_profile

    p = get_profile("quick")
    probe = data.load_probe(limit=p.probe_items)
    domain = data.load_domain_eval(facts=p.domain_facts)
    general = data.load_general_text(limit=p.general_items)
    reset_peak()
    from tutorial_lib.scoring import quiet_progress

    with quiet_progress():
        t = time.perf_counter()
        pr = evaluate.evaluate_choices(model, tok, probe, 32, "probe", evaluate.PROBE_STYLE)
        out["probe_s"] = time.perf_counter() - t
        t = time.perf_counter()
        do = evaluate.evaluate_choices(model, tok, domain, 32, "domain", evaluate.DOMAIN_STYLE)
        out["domain_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ce = evaluate.general_cross_entropy(model, tok, general, 16)
        out["general_ce_s"] = time.perf_counter() - t
    out["evaluate_peak_mib"] = peak_mib()
    out["numbers"] = {
        "probe_accuracy": pr.accuracy,
        "probe_mean_logprob": pr.mean_logprob,
        "domain_accuracy": do.accuracy,
        "domain_mean_logprob": do.mean_logprob,
        "general_ce": ce,
    }
out["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def run_child(source: Path, mode: str, cache: str | None = None) -> dict:
    """One fresh process importing `source`'s tutorial_lib; its JSON line."""
    env = {**os.environ, "PYTHONPATH": str(source), "TUTORIAL_PROFILE": "quick"}
    if cache:
        env["TUTORIAL_LIB_CACHE"] = cache
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        env=env,
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise RuntimeError(f"{mode} child failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result.pop("package").startswith(str(Path(source).resolve())):
        raise RuntimeError(f"the {mode} child imported another tutorial_lib than {source}'s")
    return result


def first_conversion(source: Path) -> dict:
    """Load in a fresh cache that holds only the downloaded wheel: the conversion runs."""
    from tutorial_lib.models import DEFAULT_MODEL, MANIFEST, cache_dir

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(cache_dir() / "downloads", Path(tmp) / "downloads")
        result = run_child(source, "load", cache=tmp)
        manifest = Path(tmp) / "models" / DEFAULT_MODEL / MANIFEST
        result["converted_sha256"] = json.loads(manifest.read_text())["sha256"]
        return result


def measure(sources: dict[str, Path], repeats: int) -> dict:
    """Every measurement for every source, interleaved so that the machine's load hits both."""
    results: dict[str, dict] = {name: {"evaluate": [], "load": []} for name in sources}
    for name, source in sources.items():
        results[name]["convert"] = first_conversion(source)
    for _ in range(repeats):
        for name, source in sources.items():
            results[name]["load"].append(run_child(source, "load"))
            results[name]["evaluate"].append(run_child(source, "evaluate"))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="root of an older checkout to compare with")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sources = {"after": ROOT} if args.before is None else {"before": args.before, "after": ROOT}
    ran = record(command_line("python benchmarks/lean_eval.py", argv), {"profile": "quick"})
    load_avg = os.getloadavg()
    result = {"ran": ran.to_json(), "load_average_at_start": load_avg}
    result["results"] = measure(sources, args.repeats)
    result["load_average_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
