"""Where runs happen: the profile that sizes them, the model, the task and its evaluation suites,
and the base model measured on those suites once, on first need, then shared by every run.

One `Baseline` is what a sweep, a comparison, the CLI and `experiment.run_experiment` share;
`identity()` is what of it changes a run's numbers (for the sweep cache's key).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from tutorial_lib import data
from tutorial_lib.config import Profile, get_profile
from tutorial_lib.evaluate import Evaluation, adapters_disabled, evaluate_model
from tutorial_lib.general_text import BaseLogprobs, capture_base, kl_count
from tutorial_lib.models import DEFAULT_MODEL


@dataclass
class Suite:
    """The evaluation items a profile asks for: probe, held-out domain questions, general text."""

    probe: list[dict]
    domain: list[dict]
    general: list[dict]
    published: dict[str, list[dict]] | None = None  # task -> published-suite items (`suite`)

    @classmethod
    def from_profile(cls, profile: Profile, task: str = data.TASKS[0]) -> Suite:
        """The profile's items; `task` picks whose domain questions (general items are shared)."""
        return cls(
            probe=data.load_probe(limit=profile.probe_items),
            domain=data.load_domain_eval(
                facts=profile.domain_facts, task=task, wordings=profile.heldout_wordings
            ),
            general=data.load_general_text(limit=profile.general_items),
            published=_published_items(profile),
        )

    def subset(self, probe_items: int, general_items: int) -> Suite:
        """A cheaper suite for mid-run trajectory points: fewer probe items (every category
        kept) and passages, the same domain questions."""
        return Suite(
            probe=data._balanced(self.probe, probe_items),
            domain=self.domain,
            general=self.general[:general_items],
        )

    def digest(self) -> str:
        """A short hash of every item: two suites with the same digest ask the same questions."""
        fields = asdict(self)
        if not fields["published"]:  # a suite without them hashes as before they existed
            del fields["published"]
        text = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def evaluate_suite(
    model,
    tokenizer,
    suite: Suite,
    batch_size: int = 32,
    base_logprobs: BaseLogprobs | None = None,
    recall: bool = True,
) -> Evaluation:
    """Evaluate on a suite; a peft model is measured with its adapters as they are. With the
    base's log-probabilities on the suite's first passages, KL(base ‖ model) is measured too;
    `recall` adds greedy recall and the recognition control (mid-run points leave them out);
    the published suite is scored when the profile asks for it."""
    published = None
    if suite.published:
        from tutorial_lib import stopwatch
        from tutorial_lib.suite_eval import evaluate_published

        with stopwatch.timed("evaluation"):
            published = evaluate_published(model, tokenizer, suite.published, batch_size)
    return evaluate_model(
        model,
        tokenizer,
        suite.probe,
        suite.domain,
        suite.general,
        batch_size,
        base_logprobs,
        recall=recall,
        published=published,
    )


def evaluate_base(
    model, tokenizer, suite: Suite, batch_size: int = 32, recall: bool = True
) -> Evaluation:
    """Evaluate the base model: any adapter is switched off, so "before" is never flattered."""
    with adapters_disabled(model):
        return evaluate_suite(model, tokenizer, suite, batch_size, recall=recall)


@dataclass
class Baseline:
    """What every run of a sweep shares, and the base model's numbers on it.

    `suite` defaults to the profile's items for `task` (what runs are asked about; the spec's
    own task says what they train on). `trajectory_suite` (e.g. `suite.subset(120, 16)`)
    measures mid-run points more cheaply. `before` and `trajectory_before` are the base on
    those suites: give them if measured already, else they are measured once, on first need.
    """

    profile: Profile | None = None  # None: $TUTORIAL_PROFILE
    model_name: str = DEFAULT_MODEL
    task: str = data.TASKS[0]
    suite: Suite | None = None
    trajectory_suite: Suite | None = None
    before: Evaluation | None = None
    trajectory_before: Evaluation | None = None
    # the base's fp16 log-probabilities on the first `profile.kl_passages` general passages, for
    # KL(base ‖ tuned): captured with `before`, held in memory only (never written to disk)
    base_logprobs: BaseLogprobs | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        data.check_task(self.task)
        self.profile = self.profile or get_profile()
        self.suite = self.suite or Suite.from_profile(self.profile, self.task)

    def with_trajectory(self, probe_items: int, general_items: int) -> Baseline:
        """A copy whose mid-run points use at most this many probe items and passages (none
        needed, so none set, when the suite is no bigger)."""
        probe, general = (
            min(probe_items, len(self.suite.probe)),
            min(general_items, len(self.suite.general)),
        )
        if (probe, general) == (len(self.suite.probe), len(self.suite.general)):
            return replace(self, trajectory_suite=None, trajectory_before=None)
        return replace(
            self, trajectory_suite=self.suite.subset(probe, general), trajectory_before=None
        )

    def measure(self, model=None, tokenizer=None, trajectory: bool = True) -> Baseline:
        """Measure whatever base numbers are missing (on `model`, or a freshly loaded base)."""
        want_mid = trajectory and self.trajectory_suite is not None
        n_kl = kl_count(self.profile.kl_passages, len(self.suite.general))
        if model is not None and n_kl and self.base_logprobs is None:
            self.capture_logprobs(model, tokenizer, n_kl)
        if self.before is not None and (self.trajectory_before is not None or not want_mid):
            return self
        if model is None:
            from tutorial_lib.models import load_base_model

            model, tokenizer = load_base_model(self.model_name)
        batch = self.profile.eval_batch_size
        if self.before is None:
            self.before = evaluate_base(model, tokenizer, self.suite, batch)
            if n_kl and self.base_logprobs is None:
                self.capture_logprobs(model, tokenizer, n_kl)
        if want_mid and self.trajectory_before is None:
            self.trajectory_before = evaluate_base(
                model, tokenizer, self.trajectory_suite, batch, recall=False
            )  # mid-run points measure no recall (generation is too slow to repeat)
        return self

    def capture_logprobs(self, model, tokenizer, n: int) -> None:
        """Keep the base's log-probabilities on the first `n` general passages, read in the
        batches `evaluate_model` reads them in (so the base against itself is exactly 0)."""
        batch = self.profile.eval_batch_size // 2 or 1
        with adapters_disabled(model):
            self.base_logprobs = capture_base(model, tokenizer, self.suite.general, n, batch)

    def measured(self) -> tuple[Evaluation, Evaluation | None]:
        """(before, before on the mid-run suite or None), measured now if not yet."""
        self.measure()
        return self.before, self.trajectory_before

    def identity(self) -> dict:
        """What of this baseline changes a run's numbers: sizes, model, task, the suites' items,
        the data files. Not the profile's name, nor the measured numbers (they follow)."""
        sizes = {k: v for k, v in asdict(self.profile).items() if k != "name"}
        if sizes.get("suite_items") == 0:  # no suite: the same key as before the field existed
            del sizes["suite_items"]
        if sizes.get("heldout_wordings") is None:  # all wordings: the key from before the field
            del sizes["heldout_wordings"]
        mid = self.trajectory_suite.digest() if self.trajectory_suite is not None else None
        return {
            "profile": sizes,
            "model": self.model_name,
            "task": self.task,
            "suite": self.suite.digest(),
            "trajectory_suite": mid,
            "data": data_digest(),
        }


def _published_items(profile: Profile) -> dict[str, list[dict]] | None:
    """The profile's published-suite items (None when it asks for none; fetched if needed)."""
    if profile.suite_items == 0:
        return None
    from tutorial_lib.suite import load_suite

    return load_suite(profile.suite_items)


def data_digest() -> str:
    """A short hash of every data file (`data.data_dir()`): edited data means new runs."""
    folder = data.data_dir()
    digest = hashlib.sha256()
    # the published suite's selection counts through Suite.digest, only where a run scores it
    files = (p for p in folder.rglob("*") if p.is_file() and p.suffix != ".md")
    for path in sorted(p for p in files if p.name != "suite_items.json"):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
