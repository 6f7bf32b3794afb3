"""What the benchmark modules share: a run's sizes (`Settings`), its state (`Bench`), its data.

run.py (the entry point), training.py and probe_bench.py all import from here, and this module
imports none of them.
"""

from __future__ import annotations

import copy
import gc
from dataclasses import dataclass, field
from typing import Any

import torch

from tutorial_lib import data
from tutorial_lib.methods import apply_method
from tutorial_lib.models import DEFAULT_MODEL, load_base_model


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run; `quick` and `full` run the same code."""

    name: str
    train_steps: int  # optimizer steps per training run (Trainer comparison, MFU)
    trainer_repeats: int  # (ours, ours with the plain loss, Trainer) runs per method, interleaved
    lora_repeats: int  # (full run, LoRA run) pairs per sequence length, interleaved
    probe_items: int | None  # probe items scored (None = all 360)
    warmup_skip: int = 2  # first steps of every training timing left out (allocations, caches)
    batch_size: int = 8  # sequences per optimizer step
    max_length: int = 128  # token limit of the encoded domain chats (the profiles' value)
    pack_length: int = 64  # tokens per packed training example (the chats average 66)
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
        for name in ("trainer_repeats", "lora_repeats", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"Settings.{name} must be >= 1, got {getattr(self, name)}")
        if self.probe_items is not None and self.probe_items < 1:
            raise ValueError(f"probe_items must be >= 1 or None (all), got {self.probe_items}")


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
        """The domain chats, encoded once and packed (`packed_examples`): what every
        training-loop comparison trains on."""
        if "examples" not in self.memo:
            rows = data.load_domain_train()
            chats = data.encode_chats(self.base[1], rows, self.settings.max_length)
            self.memo["examples"] = packed_examples(chats, self.settings.pack_length)
        return self.memo["examples"]

    def fresh(self, method: str):
        """A copy of the base model with `method` applied, in train mode; the base stays as is."""
        return apply_method(copy.deepcopy(self.base[0]), method).train()

    def settle(self) -> None:
        """Before each timed run: re-pin threads (a library may have changed the count) and free
        the previous run's model and optimizer state (Accelerate's reference cycles hold them)."""
        torch.set_num_threads(self.threads)
        gc.collect()


# --- training data: packed, so every order of the same examples is the same work -------------


def packed_examples(examples: list[dict], length: int, label_all: bool = False) -> list[dict]:
    """Encoded chats laid end to end and cut into blocks of exactly `length` tokens.

    Our loop and Trainer shuffle with different samplers; with padded chats each would train
    batches of different widths (here 8 chats fill 85-95 % of a padded batch), and a 7-step
    timing would compare padding, not loops. Packed blocks need no padding: any order is the
    same work. Labels stay the chats' own (prompt tokens -100) unless `label_all`."""
    ids = [t for ex in examples for t in ex["input_ids"]]
    labels = ids if label_all else [t for ex in examples for t in ex["labels"]]
    return [
        {"input_ids": ids[i : i + length], "labels": labels[i : i + length]}
        for i in range(0, len(ids) - length + 1, length)
    ]
