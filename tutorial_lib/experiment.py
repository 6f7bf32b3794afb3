"""One experiment, end to end: evaluate the base, apply a method, train, evaluate again."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tutorial_lib import data
from tutorial_lib.config import Profile, get_profile
from tutorial_lib.evaluate import Evaluation, adapters_disabled, evaluate_model, forgetting_report
from tutorial_lib.forgetting import EWC, L2SP, encode_text, general_batches, mix_replay
from tutorial_lib.methods import apply_method, get_method
from tutorial_lib.models import DEFAULT_MODEL, load_base_model
from tutorial_lib.runspec import RunSpec
from tutorial_lib.scoring import quiet_progress
from tutorial_lib.train import TrainConfig, TrainResult, train


@dataclass
class Suite:
    """The evaluation items a profile asks for: probe, held-out domain questions, general text."""

    probe: list[dict]
    domain: list[dict]
    general: list[dict]

    @classmethod
    def from_profile(cls, profile: Profile, task: str = data.TASKS[0]) -> Suite:
        """The profile's items; `task` picks whose domain questions (general items are shared)."""
        return cls(
            probe=data.load_probe(limit=profile.probe_items),
            domain=data.load_domain_eval(facts=profile.domain_facts, task=task),
            general=data.load_general_text(limit=profile.general_items),
        )

    def subset(self, probe_items: int, general_items: int) -> Suite:
        """A cheaper suite for mid-run trajectory points: fewer probe items (every category
        kept) and passages, the same domain questions."""
        return Suite(
            probe=data._balanced(self.probe, probe_items),
            domain=self.domain,
            general=self.general[:general_items],
        )


def evaluate_suite(model, tokenizer, suite: Suite, batch_size: int = 32) -> Evaluation:
    """Evaluate on a suite; a peft model is measured with its adapters as they are."""
    return evaluate_model(model, tokenizer, suite.probe, suite.domain, suite.general, batch_size)


def evaluate_base(model, tokenizer, suite: Suite, batch_size: int = 32) -> Evaluation:
    """Evaluate the base model: any adapter is switched off, so "before" is never flattered."""
    with adapters_disabled(model):
        return evaluate_suite(model, tokenizer, suite, batch_size)


def save_trainable(model, path: Path) -> int:
    """Save only what training changed (safetensors) and return the file's size in bytes."""
    from safetensors.torch import save_file

    tensors = {
        name: p.detach().cpu().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }
    save_file(tensors, str(path))
    return Path(path).stat().st_size


def load_trainable(model, path: Path):
    """Load a `save_trainable` file into a model prepared with the same method (names must match).

    Strict both ways: a trained weight with no place in the model, or a trainable weight the
    file lacks, means the method or its config differ, and is an error rather than a silent skip.
    """
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit this model (same method and config?): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]} "
            f"({len(missing)} missing, {len(unexpected)} unexpected)"
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            if params[name].shape != tensor.shape:
                got, want = tuple(tensor.shape), tuple(params[name].shape)
                raise ValueError(f"{name}: the file has shape {got}, the model {want}")
            params[name].copy_(tensor)
    return model


def checkpoint_bytes(model) -> int:
    """Bytes that must be stored to reuse a run (the base model is shared and not counted)."""
    with tempfile.TemporaryDirectory() as tmp:
        return save_trainable(model, Path(tmp) / "trained.safetensors")


@dataclass
class ExperimentResult:
    """Everything a lesson or the CLI reports about one run; `model` is the trained model."""

    method: str
    lr: float
    train: TrainResult
    before: Evaluation
    after: Evaluation
    checkpoint_bytes: int
    model: object = field(repr=False, default=None)
    mitigation: dict = field(default_factory=dict)  # replay / l2sp / ewc settings of the run
    trajectory: list[dict] = field(default_factory=list)  # evaluations during training
    bf16: bool = False  # trained under bf16 autocast
    spec: RunSpec | None = None  # what was asked for (steps and lr as given, None = defaults)

    def summary(self) -> dict:
        """Flat metrics under the names the CLI's JSON promises."""
        b, a = self.before.summary(), self.after.summary()
        report = forgetting_report(self.before, self.after)
        return {
            "method": self.method,
            "lr": self.lr,
            "steps": self.train.steps_done,
            "interrupted": self.train.interrupted,
            "bf16": self.bf16,
            "trainable_params": self.train.trainable_params,
            "total_params": self.train.total_params,
            "trainable_percent": 100 * self.train.trainable_params / self.train.total_params,
            "peak_memory_bytes": self.train.peak_memory_bytes,
            "optimizer_state_bytes": self.train.optimizer_state_bytes,
            "sec_per_step": self.train.sec_per_step,
            "tokens_per_sec": self.train.tokens_per_sec,
            "loss_history": self.train.loss_history,
            "domain_accuracy_before": b["domain_accuracy"],
            "domain_accuracy_after": a["domain_accuracy"],
            "domain_n_items": a["domain_n_items"],
            "probe_accuracy_before": b["probe_accuracy"],
            "probe_accuracy_after": a["probe_accuracy"],
            "probe_accuracy_stderr": a["probe_accuracy_stderr"],
            "probe_n_items": a["probe_n_items"],
            "probe_accuracy_by_category_before": b["probe_accuracy_by_category"],
            "probe_accuracy_by_category_after": a["probe_accuracy_by_category"],
            "forgetting": report["forgetting"],
            "forgetting_stderr": report["forgetting_stderr"],
            "retention": report["retention"],
            "general_ce_before": b["general_ce"],
            "general_ce_after": a["general_ce"],
            "checkpoint_bytes": self.checkpoint_bytes,
            **self.mitigation,
            "trajectory": self.trajectory,
            "seed": self.spec.seed if self.spec else None,
            "spec": self.spec.to_dict() if self.spec else None,
        }


def trajectory_point(
    step: int, before: Evaluation, now: Evaluation, subset_before: Evaluation | None = None
) -> dict:
    """The numbers a learning-vs-forgetting plot needs, at one step of a run.

    With `subset_before` (the base model on the smaller suite `now` was measured on), the
    changes are measured on that subset and added to the full-suite base, so every point of a
    trajectory estimates the same quantities; the subset's wider error is recorded with them.
    """
    if subset_before is None:
        report = forgetting_report(before, now)
        probe_accuracy, general_ce = now.probe.accuracy, now.general_ce
    else:
        report = forgetting_report(subset_before, now)
        probe_accuracy = before.probe.accuracy - report["forgetting"]
        general_ce = before.general_ce + now.general_ce - subset_before.general_ce
    return {
        "step": step,
        "domain_accuracy": now.domain.accuracy,
        "probe_accuracy": probe_accuracy,
        "forgetting": report["forgetting"],
        "forgetting_stderr": report["forgetting_stderr"],
        "retention": report["retention"],
        "general_ce": general_ce,
        "probe_n_items": len(now.probe.ids),
    }


def build_penalties(model, tokenizer, profile: Profile, l2sp: float, ewc: float) -> list:
    """The pulls toward the original weights asked for (none by default)."""
    penalties = []
    if l2sp:
        penalties.append(L2SP(model, l2sp))
    if ewc:
        replay = data.load_replay_text(limit=profile.replay_items)
        batches = general_batches(tokenizer, replay, profile.max_length)
        penalties.append(EWC(model, ewc, batches))
    return penalties


def training_examples(
    tokenizer, profile: Profile, replay: float, seed: int, task: str = data.TASKS[0]
) -> list[dict]:
    """The task's domain chats, plus general text making up `replay` of the mixture (by examples)."""
    rows = data.load_domain_train(facts=profile.domain_facts, task=task)
    examples = data.encode_chats(tokenizer, rows, profile.max_length)
    if not replay:
        return examples
    # passages are cut to the longest chat, so replay adds no padding: a step costs the same
    longest = max(len(ex["input_ids"]) for ex in examples)
    pool = encode_text(tokenizer, data.load_replay_text(), longest)
    return mix_replay(examples, pool, replay, seed)


def run_experiment(
    method: str | RunSpec,
    *,
    profile: Profile | None = None,
    model_name: str = DEFAULT_MODEL,
    suite: Suite | None = None,
    before: Evaluation | None = None,
    trajectory_suite: Suite | None = None,
    trajectory_before: Evaluation | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    **spec_fields,
) -> ExperimentResult:
    """Load a fresh base model, measure it, train it as `method` describes, measure again.

    `method` is a `RunSpec`, or a method name with the spec's fields as keywords (`steps`, `lr`,
    `seed`, `method_config`, `replay`, `l2sp`, `ewc`, `eval_at`, `bf16`, `task`; see `RunSpec`).
    The spec's `task` picks the company trained on, and asked about unless `suite` is given.
    The rest says where it runs: `profile` sizes it; pass `before` (an earlier `evaluate_base`
    on the same `suite`) to skip re-measuring the base; `trajectory_suite` (e.g.
    `suite.subset(120, 40)`) measures the `eval_at` points more cheaply than the full before
    and after, and `trajectory_before`, the base on it, shares that measurement between runs;
    `checkpoint_dir` and `resume` go to `train` (checkpoint, continue an interrupted run).
    """
    if isinstance(method, RunSpec):
        if spec_fields:
            raise TypeError(f"give the run's knobs in the RunSpec, not as {sorted(spec_fields)}")
        spec = method
    else:
        spec = RunSpec(method, **spec_fields)
    profile = profile or get_profile()
    config = TrainConfig(
        steps=spec.steps or profile.train_steps,
        batch_size=profile.batch_size,
        lr=spec.lr if spec.lr is not None else get_method(spec.method).default_lr,
        seed=spec.seed,
        bf16=spec.bf16,
    )
    suite = suite or Suite.from_profile(profile, spec.task)
    model, tokenizer = load_base_model(model_name)
    examples = training_examples(tokenizer, profile, spec.replay, spec.seed, spec.task)
    if before is None:
        before = evaluate_base(model, tokenizer, suite, profile.eval_batch_size)
    if trajectory_suite is not None and spec.eval_at and trajectory_before is None:
        trajectory_before = evaluate_base(
            model, tokenizer, trajectory_suite, profile.eval_batch_size
        )
    # seeded here, so the method's random initial values are the same in every process
    model = apply_method(model, spec.method, spec.method_config, seed=spec.seed)
    penalties = build_penalties(model, tokenizer, profile, spec.l2sp, spec.ewc)
    trajectory = [trajectory_point(0, before, before)]

    def measure(step: int, trained) -> None:
        if step in spec.eval_at and step < config.steps:
            mid_suite = trajectory_suite or suite
            with quiet_progress():  # the training bar is already showing
                now = evaluate_suite(trained, tokenizer, mid_suite, profile.eval_batch_size)
            subset_before = trajectory_before if trajectory_suite is not None else None
            trajectory.append(trajectory_point(step, before, now, subset_before))

    result = train(
        model, examples, config, tokenizer.pad_token_id, checkpoint_dir, resume, penalties, measure
    )
    after = evaluate_suite(model, tokenizer, suite, profile.eval_batch_size)
    trajectory.append(trajectory_point(result.steps_done, before, after))
    return ExperimentResult(
        spec.method,
        config.lr,
        result,
        before,
        after,
        checkpoint_bytes(model),
        model=model,
        mitigation={"replay": spec.replay, "l2sp": spec.l2sp, "ewc": spec.ewc},
        trajectory=trajectory,
        bf16=spec.bf16,
        spec=spec,
    )


def summarised_run(
    label: str = "", group: str = "", save_as: str | Path | None = None, **kwargs
) -> dict:
    """One sweep run, returned as its JSON-able summary (not the model, so a sweep holds one
    model at a time). Bind what all runs share (profile, suite, `before`) with functools.partial;
    `label` and `group` name the run in tables and plots; `save_as` keeps its trained weights
    (`save_trainable`), e.g. to swap them in later."""
    with quiet_progress():  # one training bar per run; evaluation bars would pile up
        result = run_experiment(**kwargs)
    if save_as is not None:
        save_trainable(result.model, Path(save_as))
    return {**result.summary(), "label": label, "group": group}
