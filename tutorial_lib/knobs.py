"""Every knob of a run, read from the configs the library trains with (issue 24, item 5).

A lesson's Knobs cell printed sizes and rates; the schedule, warm-up, clipping, weight decay,
dropout and optimizer that shape every run lived only in `train.py` and the methods. `knobs`
reads them from the same `TrainConfig` that `run_experiment` builds (`experiment.train_config`)
and from the method's config, so what it prints is what trains (tests/test_knobs.py builds the
optimizer and scheduler of a real run and reads them back).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from tutorial_lib.config import Profile, get_profile
from tutorial_lib.runspec import RunSpec
from tutorial_lib.train import lr_lambda

SCHEDULE = "linear warm-up, then linear decay to 10 % of the peak"  # train.lr_lambda


def _adamw_defaults() -> dict:
    """The betas and eps `torch.optim.AdamW` uses when `train` gives only lr and weight decay."""
    return torch.optim.AdamW([torch.zeros(1, requires_grad=True)]).defaults


@dataclass(frozen=True)
class Knobs:
    """What one run trains with: sizes, rate and everything that shapes the updates."""

    method: str
    lr: float  # peak learning rate
    steps: int  # optimizer steps
    batch_size: int  # sequences per optimizer step
    grad_accum: int  # micro-batches per step
    schedule: str  # how the rate moves (train.lr_lambda)
    warmup_steps: int  # steps of linear warm-up
    max_grad_norm: float  # global gradient-norm clipping (0: none)
    weight_decay: float  # AdamW's decoupled decay on the trained weights
    optimizer: str  # the optimizer and its constants
    dropout: float | None  # the method's own dropout (LoRA's lora_dropout); None: it has none
    model_dropout: float | None  # the model's attention_dropout; None: no model config given
    bf16: bool  # bf16 autocast while training
    seed: int  # data order, dropout and the method's random start
    compute_dtype: str | None = None  # a 4-bit base's compute dtype (QLoRA); None: no 4-bit base

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0-based)."""
        return self.lr * lr_lambda(step, self.warmup_steps, self.steps)

    def trainer_kwargs(self) -> dict:
        """The keywords of `practitioner.training_arguments` that give a Trainer these knobs."""
        return dict(
            steps=self.steps,
            lr=self.lr,
            batch_size=self.batch_size,
            grad_accum=self.grad_accum,
            warmup_steps=self.warmup_steps,
            max_grad_norm=self.max_grad_norm,
            weight_decay=self.weight_decay,
            seed=self.seed,
        )

    def summary(self) -> dict:
        return asdict(self)


def knobs(spec: RunSpec | str, profile: Profile | None = None, model_config=None) -> Knobs:
    """The knobs of `spec` (or a method name) at `profile`'s sizes (default: `get_profile()`;
    a lesson passes `lesson_profile("05")`). `model_config` adds the model's own dropout."""
    from tutorial_lib.experiment import train_config
    from tutorial_lib.methods import get_method

    spec = spec if isinstance(spec, RunSpec) else RunSpec(spec)
    config = train_config(spec, profile or get_profile())
    method_config = spec.method_config or get_method(spec.method).config_cls()
    adamw = _adamw_defaults()
    dropout = getattr(method_config, "dropout", None)
    model_dropout = getattr(model_config, "attention_dropout", None) if model_config else None
    compute_dtype = None
    if hasattr(method_config, "compute_dtype"):  # QLoRA: what its 4-bit layers compute in here
        from tutorial_lib.device import get_device
        from tutorial_lib.methods.qlora import compute_dtype_for

        compute_dtype = str(compute_dtype_for(method_config, get_device())).removeprefix("torch.")
    return Knobs(
        method=spec.method,
        lr=config.lr,
        steps=config.steps,
        batch_size=config.batch_size,
        grad_accum=config.grad_accum,
        schedule=SCHEDULE,
        warmup_steps=config.warmup,
        max_grad_norm=config.max_grad_norm,
        weight_decay=config.weight_decay,
        optimizer=f"AdamW (betas {tuple(adamw['betas'])}, eps {adamw['eps']:g})",
        dropout=None if dropout is None else float(dropout),
        model_dropout=None if model_dropout is None else float(model_dropout),
        bf16=config.bf16,
        seed=config.seed,
        compute_dtype=compute_dtype,
    )


LABELS = {  # row labels of the notebook table, in the order a learner reads them
    "lr": "peak learning rate",
    "steps": "optimizer steps",
    "batch_size": "batch (sequences per step)",
    "grad_accum": "gradient accumulation",
    "schedule": "schedule",
    "warmup_steps": "warm-up steps",
    "max_grad_norm": "gradient clipping (max norm)",
    "weight_decay": "weight decay",
    "optimizer": "optimizer",
    "dropout": "method dropout",
    "model_dropout": "model dropout (attention)",
    "bf16": "bf16 autocast",
    "seed": "seed",
    "compute_dtype": "4-bit base compute dtype",
}


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def knobs_table(*specs: RunSpec | str, profile: Profile | None = None, model_config=None):
    """One column per run, one row per knob: the Knobs cell of a lesson."""
    import pandas as pd

    columns = {}
    for spec in specs:
        k = knobs(spec, profile, model_config)
        label = str(spec) if isinstance(spec, RunSpec) else spec
        label += f", {k.compute_dtype} compute" if k.compute_dtype else ""  # QLoRA's two runs
        columns[label] = {LABELS[name]: _shown(getattr(k, name)) for name in LABELS}
    return pd.DataFrame(columns)
