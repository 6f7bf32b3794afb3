"""Speed benchmarks of tutorial_lib on this machine, in one run.

    python benchmarks/run.py [--quick] [--notebooks] --json PATH [--only NAME,...]

Every key, convention and target is explained in benchmarks/README.md. The numbers mean something
only on a quiet machine: the load average at start and end is recorded beside them.
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tutorial_lib import data
from tutorial_lib.device import get_device, physical_cores, set_threads, versions
from tutorial_lib.evaluate import PROBE_STYLE, ChoiceResult, evaluate_choices, question_prompt
from tutorial_lib.memory import count_params
from tutorial_lib.methods import apply_method, get_method
from tutorial_lib.models import DEFAULT_MODEL, load_base_model, resolve_model
from tutorial_lib.scoring import eval_mode, score_choices
from tutorial_lib.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
LM_EVAL_TASK = "tutorial_probe"


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run; `quick` and `full` run the same code."""

    name: str
    train_steps: int  # optimizer steps per training run (Trainer comparison, MFU)
    trainer_repeats: int  # (ours, Trainer) pairs per method, interleaved, order flipped each time
    block_steps: int  # steps per block when full and LoRA steps are interleaved
    block_repeats: int  # (full block, LoRA block) pairs per sequence length
    probe_items: int | None  # probe items scored (None = all 360)
    warmup_skip: int = 2  # first steps of every training timing left out (allocations, caches)
    batch_size: int = 8  # sequences per optimizer step
    max_length: int = 128  # token limit of the encoded domain chats (the profiles' value)
    step_lengths: tuple[int, ...] = (128, 32)  # fixed sequence lengths for LoRA vs full
    eval_batch_size: int = 32  # sequences per forward pass, ours and lm-eval's alike
    matmul_size: int = 2048  # square matmul that stands in for the machine's peak FLOP/s
    matmul_repeats: int = 5  # best of this many timings

    def __post_init__(self) -> None:
        if self.train_steps < self.warmup_skip + 2:
            raise ValueError(
                f"train_steps ({self.train_steps}) must be >= warmup_skip + 2 "
                f"({self.warmup_skip + 2}): the first {self.warmup_skip} steps are not timed and "
                "the last has no end mark"
            )
        for name in ("trainer_repeats", "block_steps", "block_repeats", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"Settings.{name} must be >= 1, got {getattr(self, name)}")
        if self.probe_items is not None and self.probe_items < 1:
            raise ValueError(f"probe_items must be >= 1 or None (all), got {self.probe_items}")


SETTINGS = {
    # a smoke run: every measurement once, tiny sizes, numbers not to be quoted
    "quick": Settings(
        "quick", train_steps=5, trainer_repeats=1, block_steps=2, block_repeats=2, probe_items=40
    ),
    # about 12-15 minutes on 2 CPU cores
    "full": Settings(
        "full", train_steps=10, trainer_repeats=2, block_steps=3, block_repeats=3, probe_items=None
    ),
}

TARGETS: dict[str, tuple[str, float | bool]] = {
    "trainer_ratio_full": (">=", 1.0),
    "trainer_ratio_lora": (">=", 1.0),
    "mfu_full_fp32": (">=", 0.5),
    "lora_over_full_step_time_128": ("<=", 0.8),
    "probe_eval_speedup": (">=", 3.0),
    "lm_eval_time_ratio": ("<=", 1.0),
    "lm_eval_parity": ("==", True),
    "quick_profile_notebooks_seconds": ("<=", 25 * 60),
    "quick_profile_notebooks_passed": ("==", True),
}


# --- shared state ---------------------------------------------------------------------------


@dataclass
class Bench:
    """What the measurements share: settings, the pinned thread count, one base model, results."""

    settings: Settings
    threads: int
    memo: dict[str, Any] = field(default_factory=dict)  # results one measurement hands another
    _base: tuple | None = None

    @property
    def base(self) -> tuple:
        """(model, tokenizer) of the offline base model, loaded once, never trained."""
        if self._base is None:
            self._base = load_base_model(DEFAULT_MODEL)
        return self._base

    @property
    def examples(self) -> list[dict]:
        """The domain chats, encoded once: what every training-loop comparison trains on."""
        if "examples" not in self.memo:
            rows = data.load_domain_train()
            self.memo["examples"] = data.encode_chats(self.base[1], rows, self.settings.max_length)
        return self.memo["examples"]

    def fresh(self, method: str):
        """A copy of the base model with `method` applied, in train mode; the base stays as is."""
        return apply_method(copy.deepcopy(self.base[0]), method).train()

    def settle(self) -> None:
        """Before each timed run: re-pin threads (a library may have changed the count) and free
        the previous run's model and optimizer state (Accelerate's reference cycles hold them)."""
        torch.set_num_threads(self.threads)
        gc.collect()


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min, max and count: the spread to quote beside a repeated number."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings mean something off the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()


# --- peak matmul FLOP/s ---------------------------------------------------------------------


def matmul_flops(
    n: int, dtype: torch.dtype, repeats: int = 5, min_seconds: float = 0.3, device=None
) -> list[float]:
    """FLOP/s of repeated n x n matmuls, one figure per timing: the best is MFU's denominator."""
    device = device or get_device()
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    out = torch.mm(a, b)  # warm-up: thread pool, kernel selection
    rates = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - start < min_seconds:
            torch.mm(a, b, out=out)
            calls += 1
        sync(device)
        rates.append(2 * n**3 * calls / (time.perf_counter() - start))
    return rates


def measure_matmul(bench: Bench) -> dict:
    """The machine's achievable fp32 and bf16 matmul FLOP/s, at the benchmark's thread count.

    Measured again by each caller; the peak kept is the best seen in the run, since a busy
    moment can only lower it.
    """
    s, peaks, detail = bench.settings, bench.memo.setdefault("peaks", {}), {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rates = matmul_flops(s.matmul_size, dtype, s.matmul_repeats)
        key = f"matmul_flops_{name}"
        peaks[key] = max(peaks.get(key, 0.0), *rates)
        detail[key] = {"size": s.matmul_size, **spread(rates)}
    return {**peaks, "detail": detail}


# --- training steps, measured from outside the loop ------------------------------------------


@dataclass
class StepTimes:
    """Seconds and (unpadded) tokens of each timed optimizer step."""

    seconds: list[float]
    tokens: list[int]
    warmup_seconds: list[float] = field(default_factory=list)  # the untimed first steps

    @property
    def tokens_per_sec(self) -> float:
        return sum(self.tokens) / sum(self.seconds)


def step_times(starts: list[float], tokens: list[int], skip: int) -> StepTimes:
    """Step i lasts from its forward's start to the next forward's start. The first `skip` steps
    pay one-time costs and the last has no end mark, so both are left out."""
    seconds = [b - a for a, b in zip(starts, starts[1:])]
    return StepTimes(seconds[skip:], tokens[skip : len(seconds)], seconds[:skip])


class StepClock:
    """A forward pre-hook that stamps each step's start and counts its tokens (attention-mask
    sum): one instrument for our loop and Trainer alike, with no change to either."""

    def __init__(self, model: torch.nn.Module):
        self.starts: list[float] = []
        self.tokens: list[int] = []
        self._handle = model.register_forward_pre_hook(self._stamp, with_kwargs=True)

    def _stamp(self, module, args, kwargs) -> None:
        self.starts.append(time.perf_counter())
        self.tokens.append(int(kwargs["attention_mask"].sum()))

    def stop(self, skip: int) -> StepTimes:
        self._handle.remove()
        return step_times(self.starts, self.tokens, skip)


def time_ours(bench: Bench, method: str, bf16: bool = False) -> StepTimes:
    """`tutorial_lib.train.train` on a fresh copy of the base model."""
    s, (_, tokenizer) = bench.settings, bench.base
    model = bench.fresh(method)
    config = TrainConfig(
        steps=s.train_steps,
        batch_size=s.batch_size,
        lr=get_method(method).default_lr,
        warmup_steps=s.warmup_skip,
        bf16=bf16,
    )
    clock = StepClock(model)
    train(model, bench.examples, config, pad_id=tokenizer.pad_token_id)
    return clock.stop(s.warmup_skip)


def trainer_args(settings: Settings, lr: float, output_dir: str):
    """Trainer set up as our loop runs: same batch, steps, lr, warm-up, clipping, AdamW
    implementation; no eval, saving, logging or progress bar."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir,
        use_cpu=get_device().type == "cpu",
        max_steps=settings.train_steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=lr,
        lr_scheduler_type="linear",
        warmup_steps=settings.warmup_skip,
        max_grad_norm=1.0,
        weight_decay=0.0,
        optim="adamw_torch",  # transformers 5 defaults to the fused AdamW; ours is torch's default
        seed=0,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
    )


def time_trainer(bench: Bench, method: str) -> StepTimes:
    """`transformers.Trainer` on a fresh copy of the base model, with our collate."""
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    s, (_, tokenizer) = bench.settings, bench.base
    model = bench.fresh(method)
    clock = StepClock(model)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=trainer_args(s, get_method(method).default_lr, out),
            train_dataset=bench.examples,
            data_collator=partial(data.collate, pad_id=tokenizer.pad_token_id),
        )
        trainer.remove_callback(PrinterCallback)  # it prints the end-of-run metrics dict
        trainer.train()
    return clock.stop(s.warmup_skip)


def measure_trainer(bench: Bench) -> dict:
    """Our loop's tokens/s over Trainer's, for full fine-tuning and LoRA, runs interleaved."""
    result: dict[str, Any] = {"detail": {}}
    for method in ("full", "lora"):
        runs: dict[str, list[StepTimes]] = {"ours": [], "trainer": []}
        for repeat in range(bench.settings.trainer_repeats):
            order = [("ours", time_ours), ("trainer", time_trainer)]
            for who, timer in order if repeat % 2 == 0 else order[::-1]:
                bench.settle()
                runs[who].append(timer(bench, method))
        ratios = [
            a.tokens_per_sec / b.tokens_per_sec for a, b in zip(runs["ours"], runs["trainer"])
        ]
        result[f"trainer_ratio_{method}"] = statistics.median(ratios)
        result["detail"][f"trainer_ratio_{method}"] = {
            "ratio": spread(ratios),
            **{f"{who}_tokens_per_sec": [r.tokens_per_sec for r in rs] for who, rs in runs.items()},
            **{f"{who}_step_seconds": [r.seconds for r in rs] for who, rs in runs.items()},
            **{f"{who}_warmup_seconds": [r.warmup_seconds for r in rs] for who, rs in runs.items()},
        }
        if method == "full":
            bench.memo["ours_full_fp32"] = runs["ours"]  # MFU reuses these runs
    return result


# --- model FLOP utilisation -----------------------------------------------------------------


def training_flops_per_token(n_params: int) -> int:
    """6·N: forward 2·N, backward 4·N per token; attention's own FLOPs are left out."""
    return 6 * n_params


def mfu(tokens_per_sec: float, n_params: int, peak_flops: float) -> float:
    """Achieved model FLOP/s as a fraction of the measured matmul peak."""
    return training_flops_per_token(n_params) * tokens_per_sec / peak_flops


def measure_mfu(bench: Bench) -> dict:
    """MFU of full fine-tuning in fp32 and in bf16 autocast, each against its own matmul peak."""
    peaks = {k: v for k, v in measure_matmul(bench).items() if k != "detail"}  # best so far
    n_params = count_params(bench.base[0])[1]
    reused = "ours_full_fp32" in bench.memo  # the Trainer comparison's fp32 runs of our loop
    fp32_runs = bench.memo["ours_full_fp32"] if reused else [time_ours(bench, "full")]
    bench.settle()
    runs = {"fp32": fp32_runs, "bf16": [time_ours(bench, "full", bf16=True)]}
    result: dict[str, Any] = {
        **peaks,
        "detail": {"n_params": n_params, "flops_per_token": "6*N", "fp32_runs_reused": reused},
    }
    for name, timed in runs.items():
        rates = [r.tokens_per_sec for r in timed]
        per_step = [t / s for r in timed for t, s in zip(r.tokens, r.seconds)]
        peak = peaks[f"matmul_flops_{name}"]
        result[f"mfu_full_{name}"] = mfu(statistics.median(rates), n_params, peak)
        result["detail"][f"mfu_full_{name}"] = {
            "tokens_per_sec": rates,
            "per_step_tokens_per_sec": spread(per_step),
            "model_flops_per_sec": training_flops_per_token(n_params) * statistics.median(rates),
            "peak_matmul_flops": peak,
        }
    return result


# --- LoRA vs full step time at fixed lengths ---------------------------------------------------


def synthetic_batches(tokenizer, length: int, batch_size: int, count: int = 4) -> list[dict]:
    """Batches of exactly `length` tokens of domain text, every token labelled, no padding: both
    methods do the same work in every step."""
    text = " ".join(m["content"] for row in data.load_domain_train() for m in row["messages"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    need = length * batch_size * count
    ids = (ids * math.ceil(need / len(ids)))[:need]  # repeat a short corpus (tiny tests)
    blocks = torch.tensor(ids).view(count, batch_size, length)
    return [
        {"input_ids": b, "labels": b.clone(), "attention_mask": torch.ones_like(b)} for b in blocks
    ]


@dataclass
class Trainee:
    """A model and its AdamW, stepped the way `train` steps them (fp32, one process)."""

    model: torch.nn.Module
    lr: float
    params: list = field(init=False)
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=self.lr, weight_decay=0.0)

    def step(self, batch: dict) -> float:
        """Forward, backward, clip to norm 1, AdamW step, zero_grad: one step of `train`."""
        device = self.params[0].device
        loss = self.model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


def interleaved_step_times(
    trainees: dict[str, Trainee], batches: list[dict], block_steps: int, repeats: int, warmup: int
) -> dict[str, list[list[float]]]:
    """Seconds per step, block by block, alternating models (order flipped each repeat) so a
    change in machine load hits every model alike."""
    feed = itertools.cycle(batches)
    for trainee in trainees.values():
        for _ in range(warmup):
            trainee.step(next(feed))
    times: dict[str, list[list[float]]] = {name: [] for name in trainees}
    names = list(trainees)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            block = []
            for _ in range(block_steps):
                start = time.perf_counter()
                trainees[name].step(next(feed))
                block.append(time.perf_counter() - start)
            times[name].append(block)
    return times


def measure_lora_vs_full(bench: Bench) -> dict:
    """LoRA's step time over full fine-tuning's at fixed batch shapes, steps interleaved."""
    s, tokenizer = bench.settings, bench.base[1]
    trainees = {m: Trainee(bench.fresh(m), get_method(m).default_lr) for m in ("full", "lora")}
    result: dict[str, Any] = {"detail": {"loop": "Trainee.step (train's step, no Accelerate)"}}
    for length in s.step_lengths:
        bench.settle()
        batches = synthetic_batches(tokenizer, length, s.batch_size)
        times = interleaved_step_times(
            trainees, batches, s.block_steps, s.block_repeats, s.warmup_skip
        )
        per_block = {m: [statistics.mean(b) for b in blocks] for m, blocks in times.items()}
        ratios = [lo / fu for lo, fu in zip(per_block["lora"], per_block["full"])]
        result[f"lora_over_full_step_time_{length}"] = statistics.median(ratios)
        result["detail"][f"lora_over_full_step_time_{length}"] = {
            "shape": [s.batch_size, length],
            "ratio": spread(ratios),
            "full_sec_per_step": spread(per_block["full"]),
            "lora_sec_per_step": spread(per_block["lora"]),
        }
    return result


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


def timed(fn: Callable, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


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


def write_lm_eval_task(items: list[dict], folder: Path) -> Path:
    """The items as JSONL plus the task YAML beside them; lm-eval reads both offline."""
    import yaml

    data_file = folder / "probe.jsonl"
    data_file.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    task_file = folder / f"{LM_EVAL_TASK}.yaml"
    task_file.write_text(yaml.safe_dump(lm_eval_task_config(data_file), sort_keys=False))
    return task_file


def run_lm_eval(items: list[dict], batch_size: int) -> dict:
    """Per-item log-likelihoods and accuracies from lm-eval, and its load and eval seconds."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        write_lm_eval_task(items, Path(tmp))
        tasks = TaskManager(include_path=tmp, include_defaults=False)
        lm, load_s = timed(
            HFLM,
            pretrained=resolve_model(DEFAULT_MODEL),
            batch_size=batch_size,
            device=str(get_device()),
            dtype="float32",
        )
        out, eval_s = timed(
            simple_evaluate,
            model=lm,
            tasks=[LM_EVAL_TASK],
            task_manager=tasks,
            log_samples=True,
            bootstrap_iters=0,
            verbosity="WARNING",
        )
    samples = sorted(out["samples"][LM_EVAL_TASK], key=lambda x: x["doc_id"])
    return {
        "lls": [[float(r[0]) for r in sample["filtered_resps"]] for sample in samples],
        "acc": out["results"][LM_EVAL_TASK]["acc,none"],
        "acc_norm": out["results"][LM_EVAL_TASK]["acc_norm,none"],
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


# --- notebooks --------------------------------------------------------------------------------


def measure_notebooks(bench: Bench) -> dict:
    """Wall time of every notebook under nbval in the quick profile, as CI runs them."""
    env = {**os.environ, "TUTORIAL_PROFILE": "quick", "TUTORIAL_THREADS": str(bench.threads)}
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "notebooks/"]
    proc, seconds = timed(subprocess.run, cmd, cwd=ROOT, env=env)
    return {
        "quick_profile_notebooks_seconds": seconds,
        "quick_profile_notebooks_passed": proc.returncode == 0,  # a failed run's time means little
        "detail": {"returncode": proc.returncode},
    }


MEASUREMENTS: dict[str, Callable[[Bench], dict]] = {
    "matmul": measure_matmul,
    "trainer": measure_trainer,
    "mfu": measure_mfu,
    "lora_vs_full": measure_lora_vs_full,
    "probe": measure_probe,
    "lm_eval": measure_lm_eval,
    "notebooks": measure_notebooks,
}


# --- the run ----------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's marketing name (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_context(threads: int) -> dict:
    """Where and with what the numbers were measured."""
    import importlib.metadata as md

    try:
        lm_eval_version = md.version("lm_eval")
    except md.PackageNotFoundError:
        lm_eval_version = "not installed"
    return {
        "cpu_model": cpu_model(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        **versions(),
        "lm_eval": lm_eval_version,
        "load_average_at_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run(selected: list[str], bench: Bench, json_path: Path) -> dict:
    """Run the selected measurements in order, writing the JSON after each (a crash keeps what
    was measured); a failing measurement is recorded and the others still run."""
    report: dict[str, Any] = {
        "context": machine_context(bench.threads),
        "settings": asdict(bench.settings),
        "detail": {},
        "skipped": {},
        "errors": {},
    }
    for name in selected:
        print(f"== {name}", flush=True)
        bench.settle()
        start = time.perf_counter()
        try:
            found = MEASUREMENTS[name](bench)
        except Exception:  # one failure must not lose a 15-minute run
            traceback.print_exc()
            report["errors"][name] = traceback.format_exc(limit=3)
            found = {}
        if "skipped" in found:
            report["skipped"][name] = found.pop("skipped")
            print(f"   skipped: {report['skipped'][name]}")
        report["detail"][name] = {**found.pop("detail", {}), "seconds": time.perf_counter() - start}
        report.update(found)
        if torch.get_num_threads() != bench.threads:
            report["detail"][name]["threads_changed_to"] = torch.get_num_threads()
        report["context"]["load_average_at_end"] = os.getloadavg()
        json_path.write_text(json.dumps(report, indent=1, default=str))
    return report


def summary_table(report: dict) -> str:
    """The headline keys, their targets and whether they are met, as aligned text."""
    rows = []
    for key, value in report.items():
        if isinstance(value, (bool, int, float)):
            target = TARGETS.get(key)
            met = ""
            if target:
                op, goal = target
                ok = {">=": value >= goal, "<=": value <= goal, "==": value == goal}[op]
                met = "yes" if ok else "NO"
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            rows.append((key, shown, f"{target[0]} {target[1]}" if target else "", met))
    width = max((len(r[0]) for r in rows), default=10)
    lines = [f"{'key':<{width}}  {'value':>10}  {'target':<10}  met"]
    lines += [f"{k:<{width}}  {v:>10}  {t:<10}  {m}" for k, v, t, m in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--notebooks", action="store_true", help="also time the notebooks")
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}")
    parser.add_argument("--threads", type=int, help="torch threads (default: physical cores)")
    parser.add_argument("--steps", type=int, help="override the training runs' step count")
    parser.add_argument("--items", type=int, help="override the probe item count")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else [m for m in MEASUREMENTS if m != "notebooks"]
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown:
        parser.error(f"unknown measurement(s) {unknown}; allowed: {', '.join(MEASUREMENTS)}")
    if args.notebooks and "notebooks" not in names:
        names.append("notebooks")
    args.selected = [m for m in MEASUREMENTS if m in names]  # dependency order
    args.settings = SETTINGS["quick" if args.quick else "full"]
    try:
        if args.steps:
            args.settings = replace(args.settings, train_steps=args.steps)
        if args.items:
            args.settings = replace(args.settings, probe_items=args.items)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")  # everything is local; never wait on a hub
    bench = Bench(args.settings, threads=set_threads(args.threads))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = run(args.selected, bench, args.json)
    print(summary_table(report))
    for name in report["errors"]:
        print(f"FAILED: {name} (traceback in the JSON under errors.{name})")
    print(f"written to {args.json}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
