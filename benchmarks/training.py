"""Training-speed measurements: peak matmul FLOP/s, our loop vs Trainer, MFU, LoRA vs full.

Part of benchmarks/run.py (the entry point); conventions and keys are in benchmarks/README.md.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from common import Bench, Settings, packed_examples
from timing import spread, sync

from tutorial_lib import data
from tutorial_lib.device import get_device
from tutorial_lib.memory import count_params
from tutorial_lib.methods import get_method
from tutorial_lib.train import TrainConfig, train

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
    losses: list[float] = field(default_factory=list)  # every step's training loss (ours only)

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


def time_ours(
    bench: Bench,
    method: str,
    bf16: bool = False,
    labelled_logits_only: bool = True,
    examples: list[dict] | None = None,
) -> StepTimes:
    """`tutorial_lib.train.train` on a fresh copy of the base model."""
    s, (_, tokenizer) = bench.settings, bench.base
    model = bench.fresh(method)
    config = TrainConfig(
        steps=s.train_steps,
        batch_size=s.batch_size,
        lr=get_method(method).default_lr,
        warmup_steps=s.warmup_skip,
        bf16=bf16,
        labelled_logits_only=labelled_logits_only,
    )
    clock = StepClock(model)
    result = train(model, examples or bench.examples, config, pad_id=tokenizer.pad_token_id)
    timed = clock.stop(s.warmup_skip)
    timed.losses = result.loss_history
    return timed


def time_ours_plain_loss(bench: Bench, method: str) -> StepTimes:
    """Our loop computing logits at every position, as Trainer does: the loops alone compared."""
    return time_ours(bench, method, labelled_logits_only=False)


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


TIMERS: dict[str, Callable[[Bench, str], StepTimes]] = {
    "ours": time_ours,
    "ours_plain_loss": time_ours_plain_loss,
    "trainer": time_trainer,
}


def interleaved_runs(
    bench: Bench,
    timers: dict[str, Callable[[Bench, str], StepTimes]],
    repeats: int,
    method: str | None = None,
) -> dict[str, list[StepTimes]]:
    """Each timer once per repeat, the order reversed every other repeat (a, b, b, a, ...), so
    a change in machine load hits every side alike. Timers get `method`, or their own name."""
    runs: dict[str, list[StepTimes]] = {name: [] for name in timers}
    names = list(timers)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            bench.settle()
            runs[name].append(timers[name](bench, method or name))
    return runs


def measure_trainer(bench: Bench) -> dict:
    """Our loop's tokens/s over Trainer's, for full fine-tuning and LoRA, runs interleaved.

    The headline is the library as a learner gets it; `ours_plain_loss` (logits at every position,
    as Trainer computes them) separates what the loop itself costs from what the loss saves."""
    result: dict[str, Any] = {"detail": {}}
    for method in ("full", "lora"):
        runs = interleaved_runs(bench, TIMERS, bench.settings.trainer_repeats, method)
        key = f"trainer_ratio_{method}"
        detail: dict[str, Any] = {}
        for who in ("ours", "ours_plain_loss"):
            ratios = [
                a.tokens_per_sec / b.tokens_per_sec for a, b in zip(runs[who], runs["trainer"])
            ]
            detail["ratio" if who == "ours" else f"ratio_{who}"] = spread(ratios)
        result[key] = detail["ratio"]["median"]
        result["detail"][key] = {
            **detail,
            **{f"{who}_tokens_per_sec": [r.tokens_per_sec for r in rs] for who, rs in runs.items()},
            **{f"{who}_step_seconds": [r.seconds for r in rs] for who, rs in runs.items()},
            **{f"{who}_warmup_seconds": [r.warmup_seconds for r in rs] for who, rs in runs.items()},
        }
    return result


# --- model FLOP utilisation -----------------------------------------------------------------


def training_flops_per_token(n_params: int) -> int:
    """6·N: forward 2·N, backward 4·N per token; attention's own FLOPs are left out."""
    return 6 * n_params


def mfu(tokens_per_sec: float, n_params: int, peak_flops: float) -> float:
    """Achieved model FLOP/s as a fraction of the measured matmul peak."""
    return training_flops_per_token(n_params) * tokens_per_sec / peak_flops


def loss_gap(bf16: list[float], fp32: list[float]) -> dict[str, float]:
    """How far bf16 training's losses stray from fp32's on the same batches: relative to fp32,
    the gap of the run's mean loss, of its last loss, and the largest at any one step."""
    rel = [abs(b - f) / f for b, f in zip(bf16, fp32)]
    mean_b, mean_f = statistics.mean(bf16), statistics.mean(fp32)
    return {
        "bf16_mean_loss_rel_diff": abs(mean_b - mean_f) / mean_f,
        "bf16_final_loss_rel_diff": rel[-1],
        "bf16_max_step_loss_rel_diff": max(rel),
    }


def measure_mfu(bench: Bench) -> dict:
    """MFU of full fine-tuning in fp32 and in bf16 autocast, each against its own matmul peak,
    and how close bf16's losses stay to fp32's (same seed, same batches in the same order).

    Every token is labelled here, so the output head runs at every position and 6·N per token
    is the work actually done (on chats our loss skips the head at prompt tokens)."""
    peaks = {k: v for k, v in measure_matmul(bench).items() if k != "detail"}  # best so far
    n_params = count_params(bench.base[0])[1]
    examples = packed_examples(bench.examples, bench.settings.pack_length, label_all=True)
    runs: dict[str, list[StepTimes]] = {"fp32": [], "bf16": []}
    for name in ("fp32", "bf16"):
        bench.settle()
        runs[name].append(time_ours(bench, "full", bf16=name == "bf16", examples=examples))
    gap = loss_gap(runs["bf16"][0].losses, runs["fp32"][0].losses)
    result: dict[str, Any] = {
        **peaks,
        "bf16_mean_loss_rel_diff": gap["bf16_mean_loss_rel_diff"],
        "detail": {
            "n_params": n_params,
            "flops_per_token": "6*N",
            "every_token_labelled": True,
            "losses": {name: timed[0].losses for name, timed in runs.items()},
            **gap,
        },
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


def fixed_length_examples(tokenizer, length: int, count: int) -> list[dict]:
    """`count` examples of exactly `length` tokens of domain text, every token labelled: no
    padding and the head at every position, so both methods do the same work in every step."""
    text = " ".join(m["content"] for row in data.load_domain_train() for m in row["messages"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    need = length * count
    ids = (ids * math.ceil(need / len(ids)))[:need]  # repeat a short corpus (tiny tests)
    return packed_examples([{"input_ids": ids, "labels": ids}], length)


def step_time_ratio(bench: Bench, numerator: str, denominator: str, key: str) -> dict:
    """Seconds per step of method `numerator` over `denominator` at fixed batch shapes: whole
    runs of `train`, one model alive at a time (as in a lesson), the two methods alternating."""
    s, tokenizer = bench.settings, bench.base[1]
    result: dict[str, Any] = {"detail": {"loop": "tutorial_lib.train.train, fresh model per run"}}
    for length in s.step_lengths:
        examples = fixed_length_examples(tokenizer, length, s.batch_size * 4)
        timers = {m: partial(time_ours, examples=examples) for m in (denominator, numerator)}
        runs = interleaved_runs(bench, timers, s.lora_repeats)
        per_run = {m: [statistics.mean(r.seconds) for r in rs] for m, rs in runs.items()}
        ratios = [a / b for a, b in zip(per_run[numerator], per_run[denominator])]
        result[f"{key}_{length}"] = statistics.median(ratios)
        result["detail"][f"{key}_{length}"] = {
            "shape": [s.batch_size, length],
            "ratio": spread(ratios),
            **{f"{m}_sec_per_step": spread(per_run[m]) for m in (denominator, numerator)},
            "step_seconds": {m: [r.seconds for r in rs] for m, rs in runs.items()},
        }
    return result


def measure_lora_vs_full(bench: Bench) -> dict:
    """LoRA's seconds per step over full fine-tuning's: what LoRA saves per step."""
    return step_time_ratio(bench, "lora", "full", "lora_over_full_step_time")


def measure_lora_scratch_vs_peft(bench: Bench) -> dict:
    """Our LoRA's (lora-scratch) seconds per step over peft's: same arithmetic, bit for bit
    (tests/test_lora_scratch.py), so any gap is peft's bookkeeping per adapted layer, or ours."""
    return step_time_ratio(bench, "lora-scratch", "lora", "lora_scratch_over_peft_step_time")
