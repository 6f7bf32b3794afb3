"""Do the practitioner's peft + Trainer code and the library's `apply_method` + `train` agree?

Both paths load the same model, see the same chats (the same first batch, the same system
prompt, loss on the assistant's tokens only) and train with the same knobs. `agreement` reports
what each trains (the count `print_trainable_parameters` prints beside the library's) and the
loss of their first steps: step 1's loss is computed before any update, so it checks the model,
the method's starting point, the data and the labels; step 2's loss, on the same batch, checks
the first update too (optimizer, rate, warm-up, clipping).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field

import torch

from tutorial_lib import data, practitioner
from tutorial_lib.device import get_device
from tutorial_lib.memory.machine import release_memory
from tutorial_lib.methods import apply_method, get_method
from tutorial_lib.models import DEFAULT_MODEL, load_base_model

FIRST_STEP_RTOL = 1e-5  # step 1: the same numbers, summed in another order (measured <= 2e-7)
AFTER_UPDATE_RTOL = 1e-5  # step 2: the same update (measured <= 2e-7; LoRA seeded apart: 5e-4)


def library_method(method: str, tokenizer, compute_dtype: str = "auto") -> tuple[str, object]:
    """The registered method and its config that `practitioner.peft_config(method)` mirrors."""
    from tutorial_lib.methods.lora import LoraMethodConfig
    from tutorial_lib.methods.prompts import PrefixConfig, PromptConfig
    from tutorial_lib.methods.qlora import QloraConfig
    from tutorial_lib.methods.selective import TopLayersConfig

    configs = {
        "lora": ("lora", LoraMethodConfig()),
        "dora": ("dora", LoraMethodConfig()),
        "rslora": ("lora", LoraMethodConfig(rslora=True)),
        "qlora": ("qlora", QloraConfig(compute_dtype=compute_dtype)),
        "prompt-tuning": ("prompt-tuning", PromptConfig(tokenizer=tokenizer)),
        "prefix-tuning": ("prefix-tuning", PrefixConfig()),
        "prefix-tuning-mlp": ("prefix-tuning", PrefixConfig(projection=True)),
        "ia3": ("ia3", None),
        "ln-tuning": ("ln-tuning", None),
        "full": ("full", None),  # no peft: transformers' model as loaded (`practitioner`)
        "top-layers": ("top-layers", TopLayersConfig()),  # no peft: requires_grad by hand
    }
    if method not in configs:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(configs)}")
    return configs[method]


@dataclass
class Agreement:
    """Trainable counts and per-step losses of the two paths, for one method."""

    method: str
    lr: float
    library_trainable: int
    peft_trainable: int
    library_losses: list[float] = field(default_factory=list)
    peft_losses: list[float] = field(default_factory=list)

    @staticmethod
    def _gap(a: float, b: float) -> float:
        return abs(a - b) / max(abs(a), abs(b), 1e-12)

    @property
    def first_step_gap(self) -> float:
        """Relative difference of the first step's loss (before any update)."""
        return self._gap(self.library_losses[0], self.peft_losses[0])

    @property
    def after_update_gap(self) -> float:
        """Relative difference of the second step's loss (after one update); nan with one step."""
        if min(len(self.library_losses), len(self.peft_losses)) < 2:
            return math.nan
        return self._gap(self.library_losses[1], self.peft_losses[1])

    @property
    def agrees(self) -> bool:
        """Same count, first loss within FIRST_STEP_RTOL, second within AFTER_UPDATE_RTOL."""
        second = self.after_update_gap
        return (
            self.library_trainable == self.peft_trainable
            and self.first_step_gap <= FIRST_STEP_RTOL
            and (math.isnan(second) or second <= AFTER_UPDATE_RTOL)
        )

    def row(self) -> dict:
        """One line of `agreement_table`."""
        return {
            "method": self.method,
            "trainable (library)": self.library_trainable,
            "trainable (peft)": self.peft_trainable,
            "step-1 loss (library)": round(self.library_losses[0], 6),
            "step-1 loss (peft + Trainer)": round(self.peft_losses[0], 6),
            "step-1 relative gap": f"{self.first_step_gap:.1e}",
            "step-2 relative gap": f"{self.after_update_gap:.1e}",
            "agree": self.agrees,
        }


def first_batch(facts: int | None = 1, batch_size: int = 2) -> list[dict]:
    """The chats both paths train on: the first `batch_size` of the lesson's training chats."""
    rows = data.load_domain_train(facts=facts)[:batch_size]
    if len(rows) < batch_size:
        raise ValueError(f"only {len(rows)} chats for a batch of {batch_size}: ask for more facts")
    return rows


def _library_run(method, name, rows, steps, lr, seed, max_length, compute_dtype):
    from tutorial_lib.memory import count_params
    from tutorial_lib.train import TrainConfig, train

    model, tokenizer = load_base_model(name)
    registered, config = library_method(method, tokenizer, compute_dtype)
    model = apply_method(model, registered, config, seed=seed)
    examples = data.encode_chats(tokenizer, rows, max_length)
    config = TrainConfig(steps=steps, batch_size=len(rows), lr=lr, seed=seed)
    result = train(model, examples, config, tokenizer.pad_token_id)
    return count_params(model)[0], result.loss_history


def _peft_run(method, name, rows, steps, lr, seed, max_length, compute_dtype):
    model, tokenizer = practitioner.peft_model(method, name, compute_dtype, seed=seed)
    trainable = practitioner.trainable_count(model)  # what print_trainable_parameters prints
    dataset = practitioner.chat_dataset(tokenizer, rows, max_length=max_length)
    with tempfile.TemporaryDirectory() as out:
        args = practitioner.training_arguments(
            out, steps=steps, lr=lr, batch_size=len(rows), seed=seed
        )
        losses = practitioner.train_with_trainer(model, tokenizer, dataset, args)
    return trainable, losses


def agreement(
    method: str,
    name: str = DEFAULT_MODEL,
    rows: list[dict] | None = None,
    steps: int = 2,
    lr: float | None = None,
    seed: int = 0,
    max_length: int = 128,
) -> Agreement:
    """Train `method` both ways for `steps` steps on one batch (`rows`, default `first_batch()`).

    Every step sees that same batch, so step 2's loss measures the first update. `lr` defaults
    to the method's registered rate. Both paths seed torch with `seed` just before the method
    is applied: LoRA's A, a prefix and its MLP start random, and only then start equal.
    QLoRA computes in the dtype the library picks for this machine (bf16 where it is fast).
    """
    from tutorial_lib.methods.qlora import QloraConfig, compute_dtype_for

    rows = rows if rows is not None else first_batch()
    registered = library_method(method, None)[0]
    lr = lr if lr is not None else get_method(registered).default_lr
    dtype = compute_dtype_for(QloraConfig(), get_device())
    dtype_name = {torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    run = (method, name, rows, steps, lr, seed, max_length)
    library = _library_run(*run, dtype_name)
    release_memory()  # the library's model lives in reference cycles: gone before peft's loads
    practice = _peft_run(*run, dtype)
    return Agreement(method, lr, library[0], practice[0], library[1], practice[1])


def agreement_table(results: list[Agreement]):
    """The agreements as a table for a notebook."""
    import pandas as pd

    return pd.DataFrame([r.row() for r in results]).set_index("method")
