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
from tutorial_lib.scoring import quiet_progress
from tutorial_lib.train import TrainConfig, TrainResult, train


@dataclass
class Suite:
    """The evaluation items a profile asks for: probe, held-out domain questions, general text."""

    probe: list[dict]
    domain: list[dict]
    general: list[dict]

    @classmethod
    def from_profile(cls, profile: Profile) -> Suite:
        return cls(
            probe=data.load_probe(limit=profile.probe_items),
            domain=data.load_domain_eval(facts=profile.domain_facts),
            general=data.load_general_text(limit=profile.general_items),
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
        }


def trajectory_point(step: int, before: Evaluation, now: Evaluation) -> dict:
    """The numbers a learning-vs-forgetting plot needs, at one step of a run."""
    report = forgetting_report(before, now)
    return {
        "step": step,
        "domain_accuracy": now.domain.accuracy,
        "probe_accuracy": now.probe.accuracy,
        "forgetting": report["forgetting"],
        "forgetting_stderr": report["forgetting_stderr"],
        "retention": report["retention"],
        "general_ce": now.general_ce,
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


def training_examples(tokenizer, profile: Profile, replay: float, seed: int) -> list[dict]:
    """The domain chats, plus general text making up `replay` of the mixture (by examples)."""
    rows = data.load_domain_train(facts=profile.domain_facts)
    examples = data.encode_chats(tokenizer, rows, profile.max_length)
    if not replay:
        return examples
    # passages are cut to the longest chat, so replay adds no padding: a step costs the same
    longest = max(len(ex["input_ids"]) for ex in examples)
    pool = encode_text(tokenizer, data.load_replay_text(), longest)
    return mix_replay(examples, pool, replay, seed)


def run_experiment(
    method: str,
    steps: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    profile: Profile | None = None,
    model_name: str = DEFAULT_MODEL,
    method_config: object = None,
    before: Evaluation | None = None,
    suite: Suite | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    replay: float = 0.0,
    l2sp: float = 0.0,
    ewc: float = 0.0,
    eval_at: tuple[int, ...] = (),
    bf16: bool = False,
) -> ExperimentResult:
    """Load a fresh base model, measure it, train it with `method`, measure again.

    Pass `before` (an earlier `evaluate_base` on the same suite) to skip re-measuring the base;
    `checkpoint_dir` and `resume` go to `train` (checkpoint, continue an interrupted run).
    Against forgetting: `replay` mixes in that fraction of general text, `l2sp` and `ewc` add
    a pull toward the original weights of that weight. `eval_at` lists steps at which the
    suite is also measured during training (the run's trajectory). `bf16` trains under bf16
    autocast (see `device.fast_bf16`); evaluation stays in fp32.
    """
    spec = get_method(method)
    profile = profile or get_profile()
    config = TrainConfig(
        steps=steps or profile.train_steps,
        batch_size=profile.batch_size,
        lr=lr if lr is not None else spec.default_lr,
        seed=seed,
        bf16=bf16,
    )
    suite = suite or Suite.from_profile(profile)
    model, tokenizer = load_base_model(model_name)
    examples = training_examples(tokenizer, profile, replay, seed)
    if before is None:
        before = evaluate_base(model, tokenizer, suite, profile.eval_batch_size)
    model = apply_method(model, method, method_config, seed=seed)  # same init in every process
    penalties = build_penalties(model, tokenizer, profile, l2sp, ewc)
    trajectory = [trajectory_point(0, before, before)]

    def measure(step: int, trained) -> None:
        if step in eval_at and step < config.steps:
            with quiet_progress():  # the training bar is already showing
                now = evaluate_suite(trained, tokenizer, suite, profile.eval_batch_size)
            trajectory.append(trajectory_point(step, before, now))

    result = train(
        model, examples, config, tokenizer.pad_token_id, checkpoint_dir, resume, penalties, measure
    )
    after = evaluate_suite(model, tokenizer, suite, profile.eval_batch_size)
    trajectory.append(trajectory_point(result.steps_done, before, after))
    return ExperimentResult(
        method,
        config.lr,
        result,
        before,
        after,
        checkpoint_bytes(model),
        model=model,
        mitigation={"replay": replay, "l2sp": l2sp, "ewc": ewc},
        trajectory=trajectory,
        bf16=bf16,
    )


def summarised_run(label: str = "", group: str = "", **kwargs) -> dict:
    """One sweep run, returned as its JSON-able summary (not the model, so a sweep holds one
    model at a time). Bind what all runs share (profile, suite, `before`) with functools.partial;
    `label` and `group` name the run in tables and plots."""
    with quiet_progress():  # one training bar per run; evaluation bars would pile up
        return {**run_experiment(**kwargs).summary(), "label": label, "group": group}
