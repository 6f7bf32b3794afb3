"""How a result was made, in one record beside it: the command, the sizes, the machine, the
versions and the date, so that a reader can run it again and knows what to compare it with.

The CLI (`tutorial-lib compare --json`) and every benchmark write it under the key "ran".
Results written before this record existed keep their own fields; `read` accepts them too.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field

DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


@dataclass(frozen=True)
class Provenance:
    """One result's provenance. `profile` holds the sizes it ran at: a `Profile`'s fields for
    the CLI, a benchmark's settings for a benchmark (None where a run has no sizes)."""

    command: str
    profile: dict | None
    machine: dict = field(default_factory=dict)  # cpu, physical_cores, logical_cpus, threads, ...
    versions: dict[str, str] = field(default_factory=dict)
    date: str | None = None  # when it started; None in results written before the date was kept

    def __post_init__(self) -> None:
        if not self.command.strip():
            raise ValueError("a provenance record needs the command that made the result")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, ran: dict) -> Provenance:
        """This record, or one of the older shapes (the CLI's before it had a date, the small-
        memory benchmark's {cpu, cores, versions}); unknown fields are refused by name."""
        if "machine" in ran or "command" in ran:
            return cls(**ran)
        legacy = {"cpu": ran.get("cpu"), "physical_cores": ran.get("cores")}
        return cls("not recorded", None, legacy, ran.get("versions", {}))


def _machine(threads: int | None) -> dict:
    import torch

    from tutorial_lib.device import cpu_name, physical_cores

    return {
        "cpu": cpu_name(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "platform": platform.platform(),
    }


def command_line(program: str, argv: list[str] | None = None) -> str:
    """`program` and its arguments as typed (default: this process's), quoted for a shell."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join([program, *(shlex.quote(a) for a in args)])


def record(
    command: str,
    sizes: dict | None = None,
    threads: int | None = None,
    extra_versions: dict[str, str] | None = None,
) -> Provenance:
    """This process's provenance now: `command` (see `command_line`), the sizes it runs at, the
    machine and thread count, the versions (`device.versions()` and any `extra_versions`)."""
    from tutorial_lib.device import versions

    return Provenance(
        command=command,
        profile=sizes,
        machine=_machine(threads),
        versions={**versions(), **(extra_versions or {})},
        date=time.strftime(DATE_FORMAT),
    )


def _from_context(context: dict) -> Provenance:
    """The benchmarks' older flat `context` (cpu_model, physical_cores, versions inline...)."""
    machine_keys = ("physical_cores", "logical_cpus", "threads", "platform")
    machine = {"cpu": context.get("cpu_model"), **{k: context.get(k) for k in machine_keys}}
    skip = {"cpu_model", "started", *machine_keys}
    versions = {
        k: v for k, v in context.items() if k not in skip and not k.startswith("load_average")
    }
    return Provenance("not recorded", None, machine, versions, context.get("started"))


def read(result: dict) -> Provenance:
    """The provenance of a saved result: its "ran" record, or an older benchmark's "context"."""
    if "ran" in result:
        return Provenance.from_json(result["ran"])
    if "context" in result and "cpu_model" in result["context"]:
        return _from_context(result["context"])
    raise ValueError(f"no provenance in this result (keys: {', '.join(sorted(result))})")
