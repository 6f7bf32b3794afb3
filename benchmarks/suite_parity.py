"""Parity of the published suite's scoring with lm-evaluation-harness, for the base model and a
short LoRA run: per task acc and acc_norm from both tools, per item agreement, seconds per item.

    python benchmarks/suite_parity.py [--items 100] [--tasks arc_easy,piqa] [--steps 48]
                                      [--out benchmarks/results/suite-parity.json]

The same rows: each task's first N recorded items (`suite.load_suite(N)`, the lessons' ids), as
the raw rows of the pinned validation split, written to a local JSONL file. The task config
`include`s the installed lm-eval's own YAML for that task (arc_easy, hellaswag with its
`process_docs`, piqa, winogrande's partial scoring, ...) and overrides only where the rows come
from, so the prompts are lm-eval's, not a copy of them. Nothing is read from a hub: the model is
the offline folder (`models.resolve_model`), the trained run's LoRA adapter is saved to a local
folder and passed to lm-eval's HFLM as `peft=` (unmerged, as our scorer sees it).
Shares probe_bench's lm-eval helpers; the entry point is this file's `main`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from probe_bench import (
    lm_eval_task_run,
    load_hflm,
    predictions,
    write_jsonl,
    write_task_yaml,
)
from timing import timed

from tutorial_lib.published import read_rows
from tutorial_lib.published_tasks import SUITE_TASKS, get_task
from tutorial_lib.suite import load_suite

OUT = Path(__file__).resolve().parent / "results" / "suite-parity.json"
PREFIX = "suite_"  # our local tasks' names: suite_arc_easy, ... (lm-eval's own names stay free)
LM_EVAL_YAML = {  # each published task's YAML in the installed lm_eval/tasks
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "piqa": "piqa/piqa.yaml",
    "winogrande": "winogrande/default.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
}


# --- the lm-eval tasks: lm-eval's YAML, our rows --------------------------------------------


def lm_eval_tasks_dir() -> Path | None:
    """The installed lm_eval package's task folder (found without importing it), or None."""
    spec = importlib.util.find_spec("lm_eval")
    return Path(spec.origin).parent / "tasks" if spec and spec.origin else None


def suite_rows(task: str, ids: list[str]) -> list[dict]:
    """The raw rows of the pinned split behind these item ids, in the ids' order."""
    spec = get_task(task)
    by_id = {spec.to_item(row, i)["id"]: row for i, row in enumerate(read_rows(spec.folder))}
    if missing := [i for i in ids if i not in by_id]:
        raise ValueError(f"{task}: ids not in the pinned data: {missing[:5]}")
    return [by_id[i] for i in ids]


def suite_task_config(task: str, data_file: Path, tasks_dir: Path) -> dict:
    """lm-eval's own task (`include` of its YAML) reading `data_file` as its validation split:
    no training or test split (so no few-shot pool), zero-shot, scored on validation."""
    return {
        "include": str(tasks_dir / LM_EVAL_YAML[task]),
        "task": PREFIX + task,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"validation": str(data_file)}},
        "training_split": None,
        "validation_split": "validation",
        "test_split": None,
        "fewshot_split": None,
        "num_fewshot": 0,
    }


def write_suite_tasks(suite: dict[str, list[dict]], folder: Path, tasks_dir: Path) -> list[str]:
    """Every task's rows as `{task}.jsonl` and its config as YAML in `folder`: the task names."""
    names = []
    for task, items in suite.items():
        data_file = write_jsonl(
            suite_rows(task, [i["id"] for i in items]), folder / f"{task}.jsonl"
        )
        write_task_yaml(suite_task_config(task, data_file, tasks_dir), folder)
        names.append(PREFIX + task)
    return names


def lm_eval_requests(sample: dict) -> list[list[str]]:
    """The (context, continuation) pairs lm-eval scored for one logged sample."""
    args = sample["arguments"]
    if isinstance(args, dict):  # 0.4.4+: {"gen_args_0": {"arg_0": ctx, "arg_1": cont}, ...}
        return [[a["arg_0"], a["arg_1"]] for a in args.values()]
    return [list(a) for a in args]


# --- one model, both tools ------------------------------------------------------------------


def load_now() -> float:
    return os.getloadavg()[0]


def compare_task(ours, items: list[dict], results: dict, samples: list[dict]) -> dict:
    """Per item: both tools' verdicts (acc, acc_norm), the prompts, the gold log-likelihood."""
    norm = "acc_norm" in get_task(items[0]["task"]).metrics
    lls = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    plain, per_char = predictions(lls, items)
    disagree, prompts_same, diffs = [], 0, []
    for i, (item, sample) in enumerate(zip(items, samples)):
        ours_v = [ours.predictions[i] == item["answer"]]
        theirs_v = [bool(sample["acc"])]
        if norm:
            ours_v.append(ours.predictions_norm[i] == item["answer"])
            theirs_v.append(bool(sample["acc_norm"]))
        prompts_same += lm_eval_requests(sample) == item["requests"]
        diffs.append(abs(ours.correct_logprobs[i] - lls[i][item["answer"]]))
        ours_p = [ours.predictions[i], ours.predictions_norm[i]]
        if ours_v != theirs_v or ours_p != [plain[i], per_char[i] if norm else plain[i]]:
            disagree.append(
                {
                    "id": item["id"],
                    "ours": ours_p,
                    "lm_eval": [plain[i], per_char[i]],
                    "lls": lls[i],
                }
            )
    n = len(items)
    return {
        "n": n,
        "ours": {"acc": ours.accuracy, "acc_norm": ours.accuracy_norm if norm else None},
        "lm_eval": {"acc": results["acc,none"], "acc_norm": results.get("acc_norm,none")},
        "identical_per_item": not disagree,
        "prompts_identical": prompts_same == n,
        "prompts_identical_items": prompts_same,
        "max_abs_gold_loglik_diff": max(diffs),
        "disagreeing_items": disagree,
    }


def measure_model(model, tokenizer, lm, tasks, suite, args, rows: dict, save) -> None:
    """Every suite task scored by us (`suite_eval.evaluate_task`) and by lm-eval, timed apart,
    into `rows` (task -> comparison), calling `save()` after each task."""
    from tutorial_lib.suite_eval import evaluate_task

    batch_size, threads = args.batch_size, args.threads
    for task, items in suite.items():
        torch.set_num_threads(threads)
        load_start = load_now()
        ours, ours_s = timed(evaluate_task, model, tokenizer, items, batch_size)
        torch.set_num_threads(threads)  # lm-eval may change it
        results, samples, lm_s = lm_eval_task_run(lm, tasks, PREFIX + task)
        load_end = load_now()
        row = compare_task(ours, items, results, samples)
        row.update(
            ours_seconds_per_item=ours_s / len(items),
            lm_eval_seconds_per_item=lm_s / len(items),
            load_average=[load_start, load_end],
            under_load=max(load_start, load_end) > threads,
        )
        rows[task] = row
        save()
        print(
            f"  {task:<14} ours {row['ours']['acc']:.3f}/{row['ours']['acc_norm'] or 0:.3f}"
            f" lm-eval {row['lm_eval']['acc']:.3f}/{row['lm_eval']['acc_norm'] or 0:.3f}"
            f" identical {row['identical_per_item']} prompts {row['prompts_identical']}"
            f" s/item {row['ours_seconds_per_item']:.3f} vs {row['lm_eval_seconds_per_item']:.3f}"
            f" (load {load_start:.1f}-{load_end:.1f})",
            flush=True,
        )


def trained_lora(steps: int, folder: Path):
    """A short LoRA run through the library (`experiment.train_only`, quick profile), its
    adapter saved to `folder` (safetensors): (model, tokenizer, record of the run)."""
    from tutorial_lib.config import get_profile
    from tutorial_lib.experiment import train_only
    from tutorial_lib.models import load_base_model

    model, result = train_only("lora", get_profile("quick"), steps=steps)
    model.save_pretrained(folder, safe_serialization=True)
    run = {
        "method": "lora",
        "profile": "quick",
        "steps": result.steps_done,
        "final_loss": result.loss_history[-1] if result.loss_history else None,
        "given_to_lm_eval_as": "HFLM(pretrained=<offline base folder>, peft=<saved adapter folder>)",
    }
    return model.eval(), load_base_model()[1], run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100, help="items per task (1-100)")
    parser.add_argument("--tasks", default=",".join(SUITE_TASKS), help="comma-separated")
    parser.add_argument("--steps", type=int, default=48, help="LoRA steps (0: base model only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="both tools")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    from lm_eval.tasks import TaskManager

    from tutorial_lib.models import load_base_model
    from tutorial_lib.provenance import command_line, record

    args = parse_args(argv)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    import importlib.metadata as md

    sizes = {"items_per_task": args.items, "lora_steps": args.steps, "batch_size": args.batch_size}
    report = {
        "ran": record(
            command_line("python benchmarks/suite_parity.py", argv),
            sizes,
            args.threads,
            {"lm_eval": md.version("lm_eval")},
        ).to_json(),
        "what": "suite items scored by tutorial_lib.suite_eval and by lm-evaluation-harness "
        "(local tasks including lm-eval's own YAML, same rows), float32, zero-shot",
        "under_load_means": "1-minute load average above the thread count at a task's start or end",
        "models": {"base": {}, **({"lora": {}} if args.steps else {})},
    }

    def save() -> None:
        rows = [r for model_rows in report["models"].values() for r in model_rows.values()]
        report["parity"] = all(r["identical_per_item"] and r["prompts_identical"] for r in rows)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")

    suite = load_suite(args.items, tasks=tuple(args.tasks.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        names = write_suite_tasks(suite, Path(tmp), lm_eval_tasks_dir())
        tasks = TaskManager(include_path=tmp, include_defaults=False)
        missing = [n for n in names if n not in tasks.all_tasks]
        if missing:
            raise RuntimeError(f"lm-eval did not find the local tasks {missing}")
        torch.set_num_threads(args.threads)
        model, tokenizer = load_base_model()
        lm, _ = load_hflm(args.batch_size)
        print("base model", flush=True)
        measure_model(model, tokenizer, lm, tasks, suite, args, report["models"]["base"], save)
        del model, lm
        if args.steps:
            adapter = Path(tmp) / "lora-adapter"
            model, tokenizer, report["trained"] = trained_lora(args.steps, adapter)
            lm, _ = load_hflm(args.batch_size, peft=adapter)
            print("LoRA run", flush=True)
            measure_model(model, tokenizer, lm, tasks, suite, args, report["models"]["lora"], save)
    print(f"parity {report['parity']}; wrote {args.out}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["parity"] else 1)
