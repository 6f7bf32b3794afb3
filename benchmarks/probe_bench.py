"""Scoring measurements: the probe against a naive loop, and parity with lm-evaluation-harness.

Part of benchmarks/run.py (the entry point); conventions and keys are in benchmarks/README.md.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from common import Bench
from timing import timed
from tqdm.auto import tqdm

from tutorial_lib import data
from tutorial_lib.device import get_device
from tutorial_lib.evaluate import PROBE_STYLE, ChoiceResult, evaluate_choices, question_prompt
from tutorial_lib.models import DEFAULT_MODEL, resolve_model
from tutorial_lib.scoring import eval_mode, score_choices

LM_EVAL_TASK = "tutorial_probe"


# --- probe evaluation: ours vs a naive loop ---------------------------------------------------


def naive_choice_scores(model, tokenizer, items: list[dict]) -> list[list[float]]:
    """The loop one writes first: one batch-1 forward per (item, choice) over context+choice,
    summing the choice tokens' log-probabilities (context/choice split as lm-eval splits it)."""
    device = next(model.parameters()).device
    scores = []
    with eval_mode(model):
        for item in tqdm(items, desc="naive scoring", leave=False):
            context, sep = question_prompt(tokenizer, item["question"], PROBE_STYLE)
            n_ctx = len(tokenizer(context, add_special_tokens=False)["input_ids"])
            row = []
            for choice in item["choices"]:
                ids = tokenizer(context + sep + choice, add_special_tokens=False)["input_ids"]
                ids = torch.tensor([ids], device=device)
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
                targets = ids[0, n_ctx:, None]
                row.append(logp[n_ctx - 1 :].gather(1, targets).sum().item())
            scores.append(row)
    return scores


def argmax(values: list[float]) -> int:
    """Index of the largest value (the first, on a tie)."""
    return max(range(len(values)), key=values.__getitem__)


def predictions(scores: list[list[float]], items: list[dict]) -> tuple[list[int], list[int]]:
    """Argmax of summed log-prob, and of log-prob per character (acc_norm), per item."""
    plain = [argmax(row) for row in scores]
    norm = [
        argmax([s / len(c) for s, c in zip(row, it["choices"])]) for row, it in zip(scores, items)
    ]
    return plain, norm


def agreement(ours: ChoiceResult, plain: list[int], norm: list[int]) -> float:
    """Fraction of items where both predictions (acc and acc_norm) match ours."""
    same = [
        a == b and c == d
        for a, b, c, d in zip(ours.predictions, plain, ours.predictions_norm, norm)
    ]
    return sum(same) / len(same)


def measure_probe(bench: Bench) -> dict:
    """Seconds to score the probe with `evaluate_choices`, and its speed-up over the naive loop."""
    (model, tokenizer), s = bench.base, bench.settings
    items = data.load_probe(limit=s.probe_items)
    ours, ours_s = timed(
        evaluate_choices, model, tokenizer, items, s.eval_batch_size, "probe", PROBE_STYLE
    )
    naive, naive_s = timed(naive_choice_scores, model, tokenizer, items)
    agree = agreement(ours, *predictions(naive, items))
    if agree < 1:
        print(
            f"WARNING: the naive loop disagrees with evaluate_choices on {1 - agree:.1%} of items"
        )
    return {
        "probe_eval_seconds": ours_s,
        "probe_eval_speedup": naive_s / ours_s,
        "probe_naive_agreement": agree,
        "detail": {"items": len(items), "style": PROBE_STYLE, "naive_seconds": naive_s},
    }


# --- lm-evaluation-harness parity -------------------------------------------------------------


def lm_eval_task_config(data_file: Path) -> dict:
    """An lm-eval task asking the probe exactly as `question_prompt(..., "plain")` does."""
    return {
        "task": LM_EVAL_TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "answer",
        "target_delimiter": " ",
        "num_fewshot": 0,
        "metric_list": [
            {"metric": m, "aggregation": "mean", "higher_is_better": True}
            for m in ("acc", "acc_norm")
        ],
        "metadata": {"version": 1.0},
    }


def write_jsonl(rows: list[dict], path: Path) -> Path:
    """Rows as JSON lines (what lm-eval's local `json` dataset reads)."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_task_yaml(config: dict, folder: Path) -> Path:
    """An lm-eval task config as `{task}.yaml` in `folder` (what `TaskManager(include_path=)`
    finds)."""
    import yaml

    task_file = folder / f"{config['task']}.yaml"
    task_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return task_file


def write_lm_eval_task(items: list[dict], folder: Path) -> Path:
    """The items as JSONL plus the task YAML beside them; lm-eval reads both offline."""
    data_file = write_jsonl(items, folder / "probe.jsonl")
    return write_task_yaml(lm_eval_task_config(data_file), folder)


def load_hflm(batch_size: int, peft: Path | None = None):
    """lm-eval's HF model on the offline base model's folder (with a peft adapter folder, if
    given), in float32 on our device: (model, seconds to load)."""
    from lm_eval.models.huggingface import HFLM

    extra = {"peft": str(peft)} if peft else {}
    return timed(
        HFLM,
        pretrained=resolve_model(DEFAULT_MODEL),
        batch_size=batch_size,
        device=str(get_device()),
        dtype="float32",
        **extra,
    )


def lm_eval_task_run(lm, tasks, name: str) -> tuple[dict, list[dict], float]:
    """One task through `simple_evaluate`: (its results, its samples by doc_id, seconds)."""
    from lm_eval import simple_evaluate

    out, seconds = timed(
        simple_evaluate,
        model=lm,
        tasks=[name],
        task_manager=tasks,
        log_samples=True,
        bootstrap_iters=0,
        verbosity="WARNING",
    )
    samples = sorted(out["samples"][name], key=lambda x: x["doc_id"])
    return out["results"][name], samples, seconds


def run_lm_eval(items: list[dict], batch_size: int) -> dict:
    """Per-item log-likelihoods and accuracies from lm-eval, and its load and eval seconds."""
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        write_lm_eval_task(items, Path(tmp))
        tasks = TaskManager(include_path=tmp, include_defaults=False)
        lm, load_s = load_hflm(batch_size)
        results, samples, eval_s = lm_eval_task_run(lm, tasks, LM_EVAL_TASK)
    return {
        "lls": [[float(r[0]) for r in sample["filtered_resps"]] for sample in samples],
        "acc": results["acc,none"],
        "acc_norm": results["acc_norm,none"],
        "load_seconds": load_s,
        "eval_seconds": eval_s,
    }


def our_choice_scores(model, tokenizer, items: list[dict], batch_size: int) -> list[list[float]]:
    """Our log-likelihood of every choice (the groups `evaluate_choices` builds)."""
    prompts = [question_prompt(tokenizer, item["question"], PROBE_STYLE) for item in items]
    groups = [(ctx, [sep + c for c in item["choices"]]) for (ctx, sep), item in zip(prompts, items)]
    return [[lp for lp, _ in row] for row in score_choices(model, tokenizer, groups, batch_size)]


def measure_lm_eval(bench: Bench) -> dict:
    """Time and parity of our probe scoring against lm-evaluation-harness on the same items."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return {"skipped": 'lm-eval is not installed (pip install -e ".[bench]")'}
    (model, tokenizer), s = bench.base, bench.settings
    items = data.load_probe(limit=s.probe_items)
    ours, ours_s = timed(
        evaluate_choices, model, tokenizer, items, s.eval_batch_size, "probe", PROBE_STYLE
    )
    our_lls = our_choice_scores(model, tokenizer, items, max(1, s.eval_batch_size // 2))
    theirs = run_lm_eval(items, s.eval_batch_size)
    bench.settle()
    plain, norm = predictions(theirs["lls"], items)
    agree = agreement(ours, plain, norm)
    diffs = [abs(a - b) for r, q in zip(our_lls, theirs["lls"]) for a, b in zip(r, q)]
    parity = (
        agree == 1
        and abs(ours.accuracy - theirs["acc"]) < 1e-9
        and abs(ours.accuracy_norm - theirs["acc_norm"]) < 1e-9
    )
    return {
        "lm_eval_time_ratio": ours_s / theirs["eval_seconds"],
        "lm_eval_parity": parity,
        "lm_eval_agreement": agree,
        "detail": {
            "items": len(items),
            "ours": {"acc": ours.accuracy, "acc_norm": ours.accuracy_norm, "seconds": ours_s},
            "lm_eval": {k: v for k, v in theirs.items() if k != "lls"},
            "max_abs_loglik_diff": max(diffs),
            # [acc, acc_norm] predictions and every choice's log-likelihood: a near-tie shows as
            # two log-likelihoods closer than max_abs_loglik_diff
            "disagreeing_items": [
                {"id": item["id"], "ours": [a, c], "lm_eval": [b, d], "lls": [mine, other]}
                for item, a, b, c, d, mine, other in zip(
                    items,
                    ours.predictions,
                    plain,
                    ours.predictions_norm,
                    norm,
                    our_lls,
                    theirs["lls"],
                )
                if (a, c) != (b, d)
            ],
        },
    }
