"""`tutorial-lib`: fetch the model, list methods, measure the baseline, train headless."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict
from pathlib import Path

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
    add_compare_parser(sub)
    return parser


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


def _write_json(path: Path | None, payload: dict) -> None:
    if path:
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")


def cmd_fetch_model(args) -> None:
    from tutorial_lib.models import DEFAULT_MODEL, fetch_model

    print(fetch_model(args.model or DEFAULT_MODEL))


def cmd_prefetch(args) -> None:
    from tutorial_lib.delivery import prefetch
    from tutorial_lib.models import CACHE_ENV

    for folder in prefetch(args.dir):
        print(f"ready: {folder}")
    print(f"offline use: {CACHE_ENV}={args.dir.expanduser().resolve()} jupyter lab notebooks/")


def cmd_methods(args) -> None:
    from tutorial_lib.methods import REGISTRY

    width = max(len(name) for name in REGISTRY)  # the columns line up whatever names exist
    for m in sorted(REGISTRY.values(), key=lambda m: m.name):
        print(f"{m.name:<{width}} {m.family:<18} lr={m.default_lr:<8g} {m.description}")


def cmd_baseline(args) -> None:
    from tutorial_lib.config import get_profile
    from tutorial_lib.experiment import Suite, evaluate_base
    from tutorial_lib.models import DEFAULT_MODEL, load_base_model

    profile = get_profile(args.profile)
    suite = Suite.from_profile(profile)
    model, tokenizer = load_base_model(args.model or DEFAULT_MODEL)
    summary = evaluate_base(model, tokenizer, suite, profile.eval_batch_size).summary()
    print(f"profile {profile.name}")
    print(
        f"probe accuracy   {summary['probe_accuracy']:.3f} ± {summary['probe_accuracy_stderr']:.3f}"
        f"  ({summary['probe_n_items']} items, chance 0.25)"
    )
    for cat, acc in summary["probe_accuracy_by_category"].items():
        print(f"  {cat:<16} {acc:.3f}")
    print(f"domain accuracy  {summary['domain_accuracy']:.3f}  ({summary['domain_n_items']} items)")
    print(f"general text CE  {summary['general_ce']:.3f} nats/token")
    _write_json(args.json, summary)


def cmd_train(args) -> None:
    from tutorial_lib.config import get_profile
    from tutorial_lib.data import TASKS
    from tutorial_lib.device import fast_bf16
    from tutorial_lib.evaluate import run_report
    from tutorial_lib.experiment import run_experiment
    from tutorial_lib.methods import get_method
    from tutorial_lib.models import DEFAULT_MODEL
    from tutorial_lib.runspec import RunSpec

    get_method(args.method)  # unknown names fail here, before the model loads
    if args.resume and not args.checkpoint_dir:
        raise ValueError("--resume needs --checkpoint-dir (the folder of the run to continue)")
    if args.bf16 and not fast_bf16():
        print(
            "note: this machine has no bf16 instructions; bf16 will run, but slower than fp32",
            file=sys.stderr,
        )
    spec = RunSpec(
        args.method,
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        replay=args.replay,
        l2sp=args.l2sp,
        ewc=args.ewc,
        bf16=args.bf16,
        task=args.task or TASKS[0],
    )
    print(f"run: {spec}", file=sys.stderr)
    sizes = {"batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size}
    result = run_experiment(
        spec,
        profile=get_profile(args.profile).with_overrides(
            **{k: v for k, v in sizes.items() if v is not None}
        ),
        model_name=args.model or DEFAULT_MODEL,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
    )
    s = result.summary()
    print(run_report(s, spec.task))
    _write_json(args.json, s)


def cmd_compare(args) -> int:
    """Run the comparison, print its table, write the files; exit 1 if any method failed."""
    from tutorial_lib.compare import ComparisonSpec, compare
    from tutorial_lib.config import get_profile
    from tutorial_lib.data import TASKS
    from tutorial_lib.models import DEFAULT_MODEL

    sizes = {"domain_facts": args.facts, "probe_items": args.probe_items}
    sizes["general_items"] = args.general_items
    profile = get_profile(args.profile).with_overrides(
        **{k: v for k, v in sizes.items() if v is not None}
    )
    methods = args.methods or ()
    if args.seeds_for and methods:
        methods = (*methods, *(m for m in args.seeds_for if m not in methods))
    spec = ComparisonSpec(
        methods=methods,
        seeds=args.seeds,
        seeds_for=args.seeds_for,
        steps=args.steps,
        task=args.task or TASKS[0],
    )
    runs = args.runs or Path(f"compare-{profile.name}-runs.jsonl")
    print(f"runs cached in {runs} (delete it to start over)", file=sys.stderr)
    result = compare(
        spec,
        results_path=runs,
        profile=profile,
        model_name=args.model or DEFAULT_MODEL,
        retry_failed=args.retry_failed,
        on_run=lambda method, seed: print(f"run: {method}, seed {seed}", file=sys.stderr),
    )
    table = result.markdown()
    print(table, end="")
    _write_json(args.json, {**result.to_json(), "ran": _how_it_ran(profile)})
    if args.markdown:
        args.markdown.write_text(table)
        print(f"wrote {args.markdown}")
    for record in result.failed:
        error = record["error"]
        print(
            f"failed: {record['method']} seed {record['seed']}: {error['type']}: "
            f"{error['message']}",
            file=sys.stderr,
        )
    return 1 if result.failed else 0


def _how_it_ran(profile) -> dict:
    """The command, sizes and machine beside a result, so that a reader can run it again."""
    from tutorial_lib.provenance import command_line, record

    return record(command_line("tutorial-lib"), asdict(profile)).to_json()


COMMANDS = {
    "fetch-model": cmd_fetch_model,
    "prefetch": cmd_prefetch,
    "methods": cmd_methods,
    "baseline": cmd_baseline,
    "train": cmd_train,
    "compare": cmd_compare,
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
