"""What describes one run, in one value: built by lessons, sweeps and the CLI, saved with results."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from tutorial_lib.data import TASKS, check_task
from tutorial_lib.methods import get_method

# What a run trains on: the task's domain chats, or, for the noise floor, general text of the
# replay pool's kind (never the passages that measure cross-entropy): the same method, rate,
# steps, batch and seed on text that should teach nothing new shows how far numbers move anyway.
TRAIN_ON = ("domain", "general")

# A floor must not memorise its small pool (see `floor`): it passes over it at most this often.
FLOOR_MAX_PASSES = 1.25  # (the 1× floors: 1.12)


def floor_step_cap(windows: int, batch: int, passes: float = FLOOR_MAX_PASSES) -> int:
    """The most steps a floor trains: `passes` over a pool of `windows` sequences, `batch` a step
    (at least one step)."""
    if windows <= 0 or batch <= 0 or passes <= 0:
        raise ValueError(
            f"windows, batch and passes must be positive, got {windows, batch, passes}"
        )
    return max(1, math.floor(passes * windows / batch))


def check_floor_steps(steps: int, windows: int, batch: int) -> None:
    """Refuse a floor (train_on="general") of more steps than `floor_step_cap` allows: every run
    builds its examples through this check, so no floor anywhere overfits its pool."""
    cap = floor_step_cap(windows, batch)
    if steps > cap:
        raise ValueError(
            f"a noise floor of {steps} steps of {batch} would pass over its pool of {windows} "
            f"general-text windows {steps * batch / windows:.2f} times, and memorise it; at most "
            f"{FLOOR_MAX_PASSES:g} passes ({cap} steps) measure churn: build the floor with "
            "floor.floor_spec(spec, baseline), which caps its steps"
        )


@dataclass(frozen=True)
class RunSpec:
    """A run's method and knobs; where it runs (profile, model, suite) is not part of it.

    `steps` and `lr` left as None take the profile's steps and the method's default rate.
    """

    method: str
    steps: int | None = None
    lr: float | None = None
    seed: int = 0  # data order and the method's random initial values
    method_config: Any = field(default=None, compare=False)  # the method's config dataclass
    replay: float = 0.0  # share of general text mixed into training
    l2sp: float = 0.0  # weight of the pull toward the original weights
    ewc: float = 0.0  # weight of the Fisher-weighted pull
    eval_at: tuple[int, ...] = ()  # steps measured during training (the trajectory)
    bf16: bool = False  # bf16 autocast for training; evaluation stays fp32
    task: str = TASKS[0]  # whose support data is trained on and asked about (data.TASKS)
    train_on: str = "domain"  # "general": the noise-floor control, trained on replay text
    train_file: str | None = None  # a learner's own chats (own_data), not the task's

    def __post_init__(self) -> None:
        spec = get_method(self.method)  # unknown names fail here, listing the known ones
        check_task(self.task)
        if self.train_on not in TRAIN_ON:
            allowed = ", ".join(map(repr, TRAIN_ON))
            raise ValueError(f"train_on must be one of {allowed}, got {self.train_on!r}")
        if self.train_on == "general" and self.replay:
            raise ValueError(
                "replay mixes general text into domain chats; a run on general text "
                "(train_on='general') has no chats to mix it into: give replay=0"
            )
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps <= 0):
            raise ValueError(f"steps must be a positive integer or None, got {self.steps!r}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number or None, got {self.lr!r}")
        if not 0 <= self.replay < 1:
            raise ValueError(f"replay must be a fraction in [0, 1), got {self.replay}")
        if self.l2sp < 0 or self.ewc < 0:
            raise ValueError(f"l2sp and ewc must be >= 0, got {self.l2sp} and {self.ewc}")
        if self.method_config is not None and not isinstance(self.method_config, spec.config_cls):
            raise TypeError(
                f"{self.method} needs a {spec.config_cls.__name__}, "
                f"got {type(self.method_config).__name__}"
            )
        object.__setattr__(self, "eval_at", tuple(sorted(set(self.eval_at))))
        if self.train_file is not None:
            object.__setattr__(self, "train_file", str(self.train_file))

    def to_dict(self) -> dict:
        """JSON-able form (the method config as its fields), stored beside a run's results."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["eval_at"] = list(self.eval_at)
        config = self.method_config
        out["method_config"] = asdict(config) if is_dataclass(config) else None
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RunSpec:
        """Rebuild a spec from `to_dict` (e.g. to rerun a row of a results file)."""
        data = dict(data)
        config = data.pop("method_config", None)
        if config is not None:
            config = get_method(data["method"]).config_cls(**config)
        data["eval_at"] = tuple(data.get("eval_at", ()))
        return cls(**data, method_config=config)

    def __str__(self) -> str:
        parts = [self.method if self.task == TASKS[0] else f"{self.method} on {self.task}"]
        parts += [f"lr {self.lr:g}"] if self.lr is not None else []
        parts += [f"{self.steps} steps"] if self.steps is not None else []
        parts += [f"seed {self.seed}"]
        parts += [
            f"{k} {getattr(self, k):g}" for k in ("replay", "l2sp", "ewc") if getattr(self, k)
        ]
        parts += ["bf16"] if self.bf16 else []
        parts += ["trained on general text (noise floor)"] if self.train_on == "general" else []
        own = self.train_file and self.train_on == "domain"
        parts += [f"trained on {self.train_file}"] if own else []
        return ", ".join(parts)
