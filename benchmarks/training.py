"""Training-speed measurements: peak matmul FLOP/s, our loop vs Trainer, MFU, LoRA vs full.

Part of benchmarks/run.py (the entry point); conventions and keys are in benchmarks/README.md.
"""

from __future__ import annotations

import itertools
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from timing import spread, sync

from tutorial_lib import data
from tutorial_lib.device import get_device
from tutorial_lib.memory import count_params
from tutorial_lib.methods import get_method
from tutorial_lib.train import TrainConfig, train

if TYPE_CHECKING:
    from run import Bench, Settings


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
