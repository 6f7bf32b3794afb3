"""Which of lesson 07's verdicts hold at 4× and 16× its budget (issue 25): `tutorial_lib.scale`
on whichever comparisons exist, nothing trained.

    python benchmarks/scale_study.py [--input 4×=path/to/compare-4x-runs.jsonl] [--out STEM]

Each budget is read from its summary, `compare-lesson.json` (1×), `compare-4x.json`,
`compare-16x.json` in `benchmarks/results/`; where a summary is not written yet, from its runs
cache (`compare-4x-runs.jsonl`, read as `tutorial-lib compare` reads it back). A budget with
neither is named as missing; methods and seeds a budget lacks are named in the output. Writes
`STEM.json` (everything `verdicts.study` returns, with the inputs and how it ran) and `STEM.md`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from tutorial_lib import provenance, scale, verdicts
from tutorial_lib.compare import Comparison, of_json
from tutorial_lib.transfer import mean_pm

RESULTS = Path(__file__).resolve().parent / "results"


def read_budget(path: Path) -> tuple[Comparison, dict | None]:
    """A comparison from a summary (.json, with its "ran" record) or a runs cache (.jsonl)."""
    if path.suffix == ".jsonl":
        return scale.from_runs(path), None
    saved = json.loads(path.read_text())
    return of_json(saved), saved.get("ran")


def inputs(results: Path, given: dict[str, Path]) -> tuple[dict[str, Path], list[str]]:
    """Each budget's file (given, else its summary, else its runs cache) and those with none."""
    found, missing = {}, []
    for name, stem in scale.BUDGETS.items():
        candidates = [given[name]] if name in given else []
        candidates += [results / f"{stem}.json", results / f"{stem}-runs.jsonl"]
        path = next((p for p in candidates if p.exists()), None)
        (found.__setitem__(name, path) if path else missing.append(name))
    return found, missing


def load_note(comparison: Comparison, ran: dict | None) -> dict:
    """The highest load average a run ended under, against the machine's cores."""
    loads = [r["load_average"] for r in comparison.records if r.get("load_average")]
    cores = ((ran or {}).get("machine") or {}).get("logical_cpus") or os.cpu_count()
    top = max(loads, default=None)
    return {"max_load_average": top, "cores": cores, "under_load": bool(top and top > cores)}


def no_nan(value):
    """`value` with every NaN as None (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    return [no_nan(v) for v in value] if isinstance(value, (list, tuple)) else value


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _floor(row: dict) -> str:
    """A floor's ΔCE with its steps, which may be fewer than its run's (`floor.FLOOR_MAX_PASSES`)."""
    steps = f" ({row['floor_steps']})" if row.get("floor_steps") else ""
    return _num(row["floor_ce"], ".3f") + (steps if row["floor_ce"] is not None else "")


def markdown(doc: dict) -> str:
    """The study as Markdown: inputs, per-budget table, rank agreement, verdicts."""
    lines = ["# Does the toy predict the big? (issue 25)", "", f"`{doc['ran']['command']}`", ""]
    lines += ["| budget | read from | runs | floors | failed | missing methods | note |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for name, info in doc["budgets"].items():
        note = "measured under load" if info["load"]["under_load"] else ""
        fewer = ", ".join(f"{m} seeds {s}" for m, s in info["fewer_seeds"].items())
        note = "; ".join(x for x in (note, f"fewer seeds: {fewer}" if fewer else "") if x)
        missing = ", ".join(info["missing_methods"]) or "none"
        lines.append(
            f"| {name} | {doc['inputs'][name]} | {info['runs']} | {info['floors']} | "
            f"{info['failed']} | {missing} | {note} |"
        )
    lines += [f"\nNo input for: {', '.join(doc['not_found']) or 'none'}."]
    lines += [f"Suite drop over the tasks above chance: {', '.join(doc['suite_tasks'])}."]
    lines += ["Errors: ± the mean's standard error over seeds; one seed: the run's own error.", ""]
    for name, info in doc["budgets"].items():
        lines += [f"## {name}", ""]
        lines += [
            "| method | seeds | recall | ΔCE | KL | suite drop | floor ΔCE (steps) | s/step | "
        ]
        lines[-1] += "peak MiB | trainable | max load |"
        lines += ["|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in info["rows"]:
            mib = None if r["peak_memory_bytes"] is None else r["peak_memory_bytes"] / 2**20
            lines.append(
                f"| {r['method']} | {len(r['seeds'])} | {mean_pm(r['recall'])} | {mean_pm(r['ce'])} | "
                f"{mean_pm(r['kl'])} | {mean_pm(r['suite_drop'])} | {_floor(r)} | "
                f"{_num(r['sec_per_step'], '.2f')} | {_num(mib, '.0f')} | "
                f"{_num(r['trainable_params'], ',.0f')} | {_num(r['max_load_average'], '.1f')} |"
            )
        lines.append("")
    lines += ["## Rank agreement between budgets", ""]
    lines += ["| budgets | measure | methods | Kendall τ | 95 % (bootstrap over) | se if "]
    lines[-1] += "independent | same / opposite order (opposite beyond both errors) |"
    lines += ["|---|---|---|---|---|---|---|"]
    for pair, measures in doc["agreement"].items():
        for measure, a in measures.items():
            ci = "–" if a["ci95"] is None else f"{a['ci95'][0]:.2f} to {a['ci95'][1]:.2f}"
            lines.append(
                f"| {pair} | {measure} | {a['n']} | {_num(a['tau'], '.2f')} | {ci} "
                f"({a['bootstrap']}) | {_num(a['se_null'], '.2f')} | {a['same_order']} / "
                f"{a['opposite_order']} ({a['opposite_beyond_both']}) |"
            )
    lines += ["", "## Seeds' spread beside a run's own error", ""]
    lines += ["Per budget with seeds: the median over methods of (sd over seeds) / (a run's own "]
    lines[-1] += "error). A one-seed budget's errors, widened by √(1 + the largest ratio²), "
    lines[-1] += "test whether a verdict there rests on its one seed."
    lines += [""]
    lines += ["| budget | " + " | ".join(doc["widening"]) + " |"]
    lines += ["|---|" + "---|" * len(doc["widening"])]
    for name, spread in doc["seed_spread"].items():
        cells = " | ".join(_num(spread.get(m), ".2f") for m in doc["widening"])
        lines.append(f"| {name} | {cells} |")
    factors = " | ".join(f"× {f:.2f}" for f in doc["widening"].values())
    lines.append(f"| widening a one-seed error | {factors} |")
    sections = [(n, g, "") for n, g in doc["verdicts"].items()]
    sections += [(n, g, ", one-seed errors widened") for n, g in doc["verdicts_widened"].items()]
    for name, got, how in sections:
        lines += ["", f"## Lesson 07's verdicts at {name}{how} (on {', '.join(got['methods'])})"]
        lines += [""]
        lines += [
            "| verdict | lesson | status | claims: base → larger (status) |",
            "|---|---|---|---|",
        ]
        for v in got["checked"]:
            claims = "; ".join(
                f"{c['claim']}: {c['base']:.3f} → {c['larger']:.3f} ({c['status']})"
                for c in v["claims"]
            )
            lines.append(f"| {v['says']} | {v['where']} | **{v['status']}** | {claims} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the budgets are")
    parser.add_argument(
        "--input", action="append", default=[], metavar="BUDGET=PATH",
        help="read this budget from PATH (.json summary or .jsonl runs cache)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "scale-study", help="file stem")
    args = parser.parse_args(argv)
    given = dict(item.split("=", 1) for item in args.input)
    unknown = set(given) - set(scale.BUDGETS)
    if unknown:
        parser.error(f"unknown budgets {sorted(unknown)}; known: {list(scale.BUDGETS)}")
    found, not_found = inputs(args.results, {k: Path(v) for k, v in given.items()})
    if "1×" not in found or len(found) < 2:
        parser.error(f"need 1× and one larger budget; found {list(found)}")
    read = {name: read_budget(path) for name, path in found.items()}
    doc = verdicts.study({name: c for name, (c, _) in read.items()}, base="1×")
    for name, (c, ran) in read.items():
        doc["budgets"][name]["load"] = load_note(c, ran)
    command = provenance.command_line("python benchmarks/scale_study.py")
    doc = {
        "ran": provenance.record(command).to_json(),
        "inputs": {name: path.name for name, path in found.items()},
        "not_found": not_found,
        **doc,
    }
    text = markdown(doc)
    args.out.with_suffix(".json").write_text(
        json.dumps(no_nan(doc), indent=1, allow_nan=False) + "\n"
    )
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return doc


if __name__ == "__main__":
    main(sys.argv[1:])
