"""One experiment, end to end: evaluate the base, apply a method, train, evaluate again.

`run_experiment(spec, baseline)`: the spec says what to run, the `baseline.Baseline` where (profile,
model, suites, the base's numbers). `Runner` is the same for a sweep: `Runner(baseline, steps=...)`
is the `run` that `sweeps.run_sweep` calls once per config, and that its cache is keyed on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from tutorial_lib import data
from tutorial_lib.baseline import Baseline, Suite, evaluate_base, evaluate_suite
from tutorial_lib.checkpoint import checkpoint_bytes, save_trainable
from tutorial_lib.config import Profile
from tutorial_lib.evaluate import Evaluation, forgetting_report, run_report
from tutorial_lib.forgetting import (
    EWC,
    L2SP,
    encode_text,
    encode_windows,
    general_batches,
    mix_replay,
)
from tutorial_lib.methods import apply_method, get_method
from tutorial_lib.models import DEFAULT_MODEL, load_base_model
from tutorial_lib.recall import recall_change
from tutorial_lib.runspec import RunSpec, check_floor_steps
from tutorial_lib.scoring import quiet_progress
from tutorial_lib.suite import suite_summary
from tutorial_lib.train import TrainConfig, TrainResult, train

__all__ = [  # with `Suite` and `evaluate_base` from `baseline`: lesson 00 imports them here
    "ExperimentResult",
    "NotApplicable",
    "Runner",
    "Suite",
    "evaluate_base",
    "run_experiment",
    "summarised_run",
]


PAIRED_KEYS = (  # forgetting counted both ways and measured continuously (`paired_measures`)
    "probe_lost",
    "probe_gained",
    "probe_sign_test_p",
    "probe_logprob_shift",
    "probe_logprob_shift_stderr",
    "general_ce_change",
    "general_ce_change_stderr",
    "general_ce_change_ci95",
    "general_n_passages",
    "kl_to_base",
    "kl_to_base_stderr",
    "kl_to_base_ci95",
    "kl_n_passages",
)


class NotApplicable(ValueError):
    """The method cannot be applied to this model (e.g. BitFit on a model without biases):
    known before any training, so a comparison reports it rather than failing."""

    def __init__(self, method: str, reason: str):
        super().__init__(reason)
        self.method, self.reason = method, reason


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

    def report(self) -> str:
        """Before and after, one number per line, as `tutorial-lib train` prints it."""
        return run_report(self.summary(), self.spec.task if self.spec else data.TASKS[0])

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
            **{key: report[key] for key in PAIRED_KEYS},
            "checkpoint_bytes": self.checkpoint_bytes,
            **self.mitigation,
            "trajectory": self.trajectory,
            "seed": self.spec.seed if self.spec else None,
            "train_on": self.spec.train_on if self.spec else "domain",
            "spec": self.spec.to_dict() if self.spec else None,
            **recall_change(self.before, self.after),  # empty when recall was not measured
            **suite_summary(self.before.suite, self.after.suite),
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
    tokenizer,
    profile: Profile,
    replay: float,
    seed: int,
    task: str = data.TASKS[0],
    train_on: str = "domain",
    train_file: str | None = None,
) -> list[dict]:
    """The task's domain chats, plus general text making up `replay` of the mixture (by examples).

    `train_on="general"` (the noise floor) trains on the replay pool instead, cut into windows
    as long as the longest chat, so a step holds as many sequences of the same length; every
    token is trained. The cross-entropy passages (`general_text.jsonl`) are never trained on.
    `train_file` (a learner's JSONL or CSV, `own_data`) replaces the task's chats by its train split.
    """
    if train_file is not None:
        from tutorial_lib import own_data

        examples = own_data.training_examples(tokenizer, train_file, profile.max_length)
    else:
        rows = data.load_domain_train(facts=profile.domain_facts, task=task)
        examples = data.encode_chats(tokenizer, rows, profile.max_length)
    # general text is cut to the longest chat, so it adds no padding: a step costs the same
    longest = max(len(ex["input_ids"]) for ex in examples)
    if train_on == "general":
        return encode_windows(tokenizer, data.load_replay_text(), longest)
    if not replay:
        return examples
    pool = encode_text(tokenizer, data.load_replay_text(), longest)
    return mix_replay(examples, pool, replay, seed)


WHERE_IT_RUNS = {  # the old keywords of run_experiment, now the Baseline's fields
    "profile",
    "model_name",
    "suite",
    "before",
    "trajectory_suite",
    "trajectory_before",
}


def run_spec(method: str | RunSpec, spec_fields: dict) -> RunSpec:
    """`method` as a RunSpec: itself, or a method name with the spec's fields as keywords."""
    moved = sorted(set(spec_fields) & WHERE_IT_RUNS)
    if moved:
        raise TypeError(
            f"{', '.join(moved)} say where a run happens: give them to a Baseline, "
            f"run_experiment(spec, Baseline(profile, ...))"
        )
    if not isinstance(method, RunSpec):
        return RunSpec(method, **spec_fields)
    if spec_fields:
        raise TypeError(f"give the run's knobs in the RunSpec, not as {sorted(spec_fields)}")
    return method


def train_config(spec: RunSpec, profile: Profile) -> TrainConfig:
    """The training loop's settings: the spec's, else the profile's and the method's defaults."""
    return TrainConfig(
        steps=spec.steps or profile.train_steps,
        batch_size=profile.batch_size,
        lr=spec.lr if spec.lr is not None else get_method(spec.method).default_lr,
        seed=spec.seed,
        bf16=spec.bf16,
    )


def applied(model, spec: RunSpec):
    """The model prepared as the spec's method; a method that refuses it is `NotApplicable`."""
    try:  # seeded here, so the method's random initial values are the same in every process
        return apply_method(model, spec.method, spec.method_config, seed=spec.seed)
    except ValueError as exc:
        raise NotApplicable(spec.method, str(exc)) from exc


def trajectory_recorder(spec: RunSpec, steps: int, baseline: Baseline, tokenizer, points: list):
    """The `train` callback that appends a `trajectory_point` at each of the spec's `eval_at`
    steps, on the baseline's mid-run suite when it has one."""
    mid = baseline.trajectory_suite
    batch = baseline.profile.eval_batch_size

    def measure(step: int, trained) -> None:
        if step in spec.eval_at and step < steps:
            with quiet_progress():  # the training bar is already showing
                fast = mid or replace(baseline.suite, published=None)  # mid-run: no suite
                now = evaluate_suite(trained, tokenizer, fast, batch, recall=False)
            subset_before = baseline.trajectory_before if mid is not None else None
            points.append(trajectory_point(step, baseline.before, now, subset_before))

    return measure


def run_experiment(
    method: str | RunSpec,
    baseline: Baseline | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    **spec_fields,
) -> ExperimentResult:
    """Load a fresh base model, measure it, train it as `method` describes, measure again.

    `method` is a `RunSpec`, or a method name with the spec's fields as keywords (`steps`, `lr`,
    `seed`, `method_config`, `replay`, `l2sp`, `ewc`, `eval_at`, `bf16`, `task`, `train_on`; see
    `RunSpec`).
    The spec's `task` picks the company trained on. `baseline` says where it runs and what it
    is asked (default: this profile's items for the spec's task); its base numbers are measured
    on this run's model if it has none yet, and kept for the next run. `checkpoint_dir` and
    `resume` go to `train` (checkpoint, continue an interrupted run).
    """
    spec = run_spec(method, spec_fields)
    baseline = baseline or Baseline(task=spec.task)
    profile, config = baseline.profile, train_config(spec, baseline.profile)
    model, tokenizer, examples = _loaded(spec, profile, baseline.model_name)
    before = baseline.measure(model, tokenizer, trajectory=bool(spec.eval_at)).before
    trajectory = [trajectory_point(0, before, before)]
    measure = trajectory_recorder(spec, config.steps, baseline, tokenizer, trajectory)
    model, result = _trained(
        model, tokenizer, examples, spec, profile, config, checkpoint_dir, resume, measure
    )
    batch, base_logprobs = profile.eval_batch_size, baseline.base_logprobs
    after = evaluate_suite(model, tokenizer, baseline.suite, batch, base_logprobs)
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


def train_only(
    method: str | RunSpec, profile: Profile, model_name: str = DEFAULT_MODEL, **spec_fields
):
    """Train as `run_experiment` does, measuring nothing: (model, `TrainResult`). For a run that
    only supplies weights (a file to swap in, say), where two evaluations would be wasted."""
    spec = run_spec(method, spec_fields)
    model, tokenizer, examples = _loaded(spec, profile, model_name)
    return _trained(model, tokenizer, examples, spec, profile, train_config(spec, profile))


def _loaded(spec: RunSpec, profile: Profile, model_name: str):
    """A fresh base model, its tokenizer, and the spec's encoded training examples; a noise
    floor longer than its pool allows is refused here (`runspec.check_floor_steps`)."""
    model, tokenizer = load_base_model(model_name)
    examples = training_examples(
        tokenizer, profile, spec.replay, spec.seed, spec.task, spec.train_on, spec.train_file
    )
    if spec.train_on == "general":
        check_floor_steps(train_config(spec, profile).steps, len(examples), profile.batch_size)
    return model, tokenizer, examples


def _trained(
    model,
    tokenizer,
    examples,
    spec,
    profile,
    config,
    checkpoint_dir=None,
    resume=False,
    on_step=None,
):
    """The model prepared as the spec's method (with its penalties) and trained: (model, result)."""
    model = applied(model, spec)
    penalties = build_penalties(model, tokenizer, profile, spec.l2sp, spec.ewc)
    pad = tokenizer.pad_token_id
    return model, train(model, examples, config, pad, checkpoint_dir, resume, penalties, on_step)


def summarised_run(
    baseline: Baseline | None = None,
    *,
    label: str = "",
    group: str = "",
    save_as: str | Path | None = None,
    **spec_fields,
) -> dict:
    """One sweep run, returned as its JSON-able summary (not the model, so a sweep holds one
    model at a time). `label` and `group` name the run in tables and plots; `save_as` keeps its
    trained weights (`save_trainable`), e.g. to swap them in later."""
    with quiet_progress():  # one training bar per run; evaluation bars would pile up
        result = run_experiment(baseline=baseline, **spec_fields)
    if save_as is not None:
        save_trainable(result.model, Path(save_as))
    return {**result.summary(), "label": label, "group": group}


class Runner:
    """A sweep's `run`: `summarised_run` on one baseline with the fields every run shares
    (`Runner(baseline, steps=28, seed=0)`); each config adds its own. A config may give the
    method's config as plain JSON fields, `method_fields={"k": 4}`, so that it can be cached.
    `where()` is what the sweep cache keys on besides each config."""

    def __init__(self, baseline: Baseline, **shared):
        self.baseline, self.shared = baseline, shared

    def __call__(self, method_fields: dict | None = None, **config) -> dict:
        fields = {**self.shared, **config}
        if method_fields is not None:
            method_config = get_method(fields["method"]).config_cls(**method_fields)
            fields["method_config"] = method_config
        return summarised_run(self.baseline, **fields)

    def where(self) -> dict:
        """The baseline's identity and the shared fields (as JSON: tuples become lists)."""
        shared = {k: list(v) if isinstance(v, tuple) else v for k, v in self.shared.items()}
        return {**self.baseline.identity(), "shared": shared}
