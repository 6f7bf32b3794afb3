"""One explicit training loop for every method: it trains whatever parameters require grad."""

from __future__ import annotations

import atexit
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tutorial_lib import stopwatch
from tutorial_lib.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from tutorial_lib.data import collate
from tutorial_lib.device import get_device, set_seed
from tutorial_lib.memory import (
    PeakMemory,
    count_params,
    estimate,
    optimizer_state_bytes,
    preflight,
    setup_for,
)
from tutorial_lib.progress import bar as progress_bar
from tutorial_lib.scoring import prepends_virtual_tokens


@dataclass
class TrainConfig:
    """Knobs of one run; every lesson builds one of these (usually from its profile)."""

    steps: int = 80  # optimizer steps
    batch_size: int = 8  # sequences per optimizer step, summed over accumulation and processes
    grad_accum: int = 1  # micro-batches per optimizer step (memory for time)
    lr: float = 1e-4  # peak learning rate; methods have their own defaults
    warmup_steps: int | None = None  # linear warm-up; None = 10 % of steps
    weight_decay: float = 0.0  # AdamW decoupled decay on the trained parameters
    max_grad_norm: float = 1.0  # clip the global gradient norm (0 = no clipping)
    bf16: bool = False  # bf16 autocast (faster on CPUs/GPUs that support it)
    seed: int = 0  # model-independent: data order and dropout
    save_every: int = 0  # checkpoint every N steps when a checkpoint folder is given (0 = end only)
    labelled_logits_only: bool = True  # output head only where a label is trained (same loss)

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"steps must be > 0, got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.batch_size <= 0 or self.grad_accum <= 0 or self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a positive multiple of "
                f"grad_accum ({self.grad_accum})"
            )
        if self.max_grad_norm < 0 or self.weight_decay < 0 or self.save_every < 0:
            raise ValueError("max_grad_norm, weight_decay and save_every must be >= 0")

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else max(1, self.steps // 10)


@dataclass
class TrainResult:
    """What a run did and what it cost; `interrupted` runs keep their history."""

    loss_history: list[float] = field(default_factory=list)
    steps_done: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    sec_per_step: float = float("nan")
    tokens_per_sec: float = float("nan")
    peak_memory_bytes: int = 0
    memory_at_start_bytes: int = 0  # what was in use before the run (model, earlier cells...)
    trainable_params: int = 0
    total_params: int = 0
    optimizer_state_bytes: int = 0
    world_size: int = 1

    def summary(self) -> dict:
        return asdict(self)


def lr_lambda(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to the peak, then linear decay to 10 % of it."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.1, 1.0 - 0.9 * progress)


def _labelled_only_loss(model, batch: dict) -> torch.Tensor | None:
    """The loss with logits computed only where a label is trained; None where the model can't."""
    if prepends_virtual_tokens(model):
        return None  # virtual tokens are prepended inside the model: positions would not line up
    targets = batch["labels"][:, 1:]
    keep = torch.zeros_like(batch["labels"], dtype=torch.bool)
    keep[:, :-1] = targets != -100  # position t predicts token t + 1
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    try:
        logits = model(**inputs, logits_to_keep=keep).logits
    except (TypeError, IndexError):  # no `logits_to_keep`, or one that takes no boolean mask
        return None
    if logits.dim() != 2 or logits.shape[0] != int(keep.sum()):
        return None
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep[:, :-1]])


@dataclass
class NextTokenLoss:
    """The causal-LM loss of a batch, with the output head run only on the trained positions.

    A chat's prompt tokens carry no label (-100): in the domain chats about 70 % of positions.
    The head (hidden x vocabulary: a fifth of SmolLM2-135M's weights) and the softmax over its
    49k words would still run on them, and their result be thrown away. transformers' boolean
    `logits_to_keep` makes the model compute logits only where a label is trained, so the loss
    equals `model(**batch).loss` at a lower cost. Models that cannot (older transformers, soft
    prompts) get the plain loss, decided once, on the first batch.
    """

    labelled_only: bool = True

    def __call__(self, model, batch: dict) -> torch.Tensor:
        if self.labelled_only:
            loss = _labelled_only_loss(model, batch)
            if loss is not None:
                return loss
            self.labelled_only = False
        return model(**batch).loss


def make_accelerator(config: TrainConfig):
    """An Accelerator for this run; one process on a laptop, many under `torchrun`."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    was_initialized = torch.distributed.is_initialized()
    if AcceleratorState._shared_state and not was_initialized:
        AcceleratorState._reset_state()  # let a notebook switch bf16 on and off between runs
    acc = Accelerator(
        cpu=get_device().type == "cpu",  # without it, accelerate ignores torchrun's CPU processes
        mixed_precision="bf16" if config.bf16 else "no",
        gradient_accumulation_steps=config.grad_accum,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if torch.distributed.is_initialized() and not was_initialized:
        _shut_down_at_exit()
    return acc


_SHUTDOWN_REGISTERED = False


def shutdown_process_group() -> bool:
    """Destroy the process group the library started; True if there was one to destroy.

    Left to the interpreter's exit, the group's communication threads are torn down in an
    arbitrary order, and one run in six aborted ("terminate called without an active
    exception") after finishing its work. Runs at exit on its own; call it to finish earlier.
    """
    if not torch.distributed.is_initialized():
        return False
    torch.distributed.destroy_process_group()
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # a later run starts a new group
    return True


def _shut_down_at_exit() -> None:
    """Register `shutdown_process_group` once, for the group the library itself initialised."""
    global _SHUTDOWN_REGISTERED
    if not _SHUTDOWN_REGISTERED:
        atexit.register(shutdown_process_group)
        _SHUTDOWN_REGISTERED = True


def _batches(loader, skip: int = 0):
    """Endless batches, reshuffled (seeded) each epoch; `skip` resumes mid-stream exactly."""
    epoch, skip = divmod(skip, len(loader))
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for batch in loader:
            if skip:
                skip -= 1
                continue
            yield batch
        epoch += 1


def _check_finite(loss: torch.Tensor, step: int, lr: float) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"loss became {loss.item()} at step {step} (lr={lr:.2e}). Likely causes: a learning "
            "rate too high for this method, bf16 overflow, or a batch with no trained tokens. "
            "The weights are those of the last finite step."
        )


def train(
    model,
    examples: list[dict],
    config: TrainConfig,
    pad_id: int,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    penalties: list[Callable[[torch.nn.Module], torch.Tensor]] | None = None,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
) -> TrainResult:
    """Train `model` in place on encoded examples; Ctrl-C stops cleanly with what was trained.

    With `checkpoint_dir`, the run is checkpointed every `config.save_every` steps, at the end
    and on Ctrl-C; `resume=True` continues from the newest checkpoint there, if any.
    `penalties` (e.g. `forgetting.L2SP`) are added to the loss; the history logs the data loss.
    `on_step(steps_done, model)` runs after every optimizer step (e.g. to evaluate mid-run);
    its time is left out of the run's speed figures.
    """
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("no parameter requires grad: apply a method (e.g. 'lora') first")
    set_seed(config.seed)
    acc = make_accelerator(config)
    micro = config.batch_size // config.grad_accum // acc.num_processes
    if micro < 1:
        raise ValueError(
            f"batch_size {config.batch_size} is too small for {acc.num_processes} processes"
        )
    seq_len = max(len(ex["input_ids"]) for ex in examples)
    setup = setup_for(
        model, batch=micro, seq_len=seq_len, compute_dtype="bf16" if config.bf16 else None
    )
    preflight(estimate(model.config, setup), acc.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_lambda, warmup=config.warmup, total=config.steps)
    )
    loader = DataLoader(
        examples,
        batch_size=micro,
        shuffle=True,
        drop_last=len(examples) >= micro,
        collate_fn=partial(collate, pad_id=pad_id),
    )
    result = TrainResult(world_size=acc.num_processes)
    next_token_loss = NextTokenLoss(labelled_only=config.labelled_logits_only)
    first = 0
    found = latest_checkpoint(checkpoint_dir) if (resume and checkpoint_dir) else None
    if found:
        first, result.loss_history = load_checkpoint(found, model, optimizer, scheduler)
        result.steps_done = first
    was_training = model.training
    model.train()
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    result.trainable_params, result.total_params = count_params(acc.unwrap_model(model))
    batches, tokens, step_times = _batches(loader, skip=first * config.grad_accum), 0, []
    hook_seconds = 0.0
    saved_at = first

    def checkpoint() -> None:
        nonlocal saved_at
        saved_at = result.steps_done
        acc.wait_for_everyone()
        if checkpoint_dir and acc.is_main_process:
            save_checkpoint(
                Path(checkpoint_dir),
                result.steps_done,
                acc.unwrap_model(model),
                optimizer.optimizer,
                scheduler,
                result.loss_history,
            )

    bar = progress_bar(
        total=config.steps, initial=first, desc="training", disable=not acc.is_main_process
    )
    with PeakMemory(acc.device) as mem:
        start = time.perf_counter()
        try:
            for step in range(first, config.steps):
                t0, losses = time.perf_counter(), []
                for _ in range(config.grad_accum):
                    batch = next(batches)
                    with acc.accumulate(model):
                        loss = next_token_loss(model, batch)
                        total = loss + sum(pen(acc.unwrap_model(model)) for pen in penalties or [])
                        _check_finite(total, step, scheduler.get_last_lr()[0])
                        acc.backward(total)
                        if acc.sync_gradients and config.max_grad_norm:
                            acc.clip_grad_norm_(params, config.max_grad_norm)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    losses.append(acc.gather(loss.detach()[None]).mean().item())
                    tokens += int(acc.gather(batch["attention_mask"].sum()[None]).sum())
                scheduler.step()
                step_times.append(time.perf_counter() - t0)
                result.loss_history.append(sum(losses) / len(losses))
                result.steps_done = step + 1
                bar.update(1)
                bar.set_postfix(loss=f"{result.loss_history[-1]:.3f}")
                if config.save_every and result.steps_done % config.save_every == 0:
                    checkpoint()
                if on_step is not None:
                    t_hook = time.perf_counter()
                    on_step(result.steps_done, acc.unwrap_model(model))
                    hook_seconds += time.perf_counter() - t_hook
        except KeyboardInterrupt:
            result.interrupted = True  # keep the weights and history trained so far
        finally:
            bar.close()
            result.seconds = time.perf_counter() - start - hook_seconds
            stopwatch.add("training", result.seconds)
    if checkpoint_dir and result.steps_done > saved_at:
        checkpoint()  # the end of the run, or the moment Ctrl-C arrived
    timed = step_times[1:] or step_times  # the first step pays one-time warm-up costs
    if timed:
        result.sec_per_step = sum(timed) / len(timed)
        result.tokens_per_sec = tokens / result.seconds if result.seconds else float("nan")
    result.peak_memory_bytes = mem.peak_bytes
    result.memory_at_start_bytes = mem.start_bytes
    result.optimizer_state_bytes = optimizer_state_bytes(optimizer.optimizer)
    acc.unwrap_model(model).train(was_training)
    return result
