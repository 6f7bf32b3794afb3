"""What each `tutorial-lib` command does, given its parsed arguments (`cli` reads them).

Each command returns its exit status (None is 0); a user error raises, and `cli.main` reports it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path


def _write_json(path: Path | None, payload: dict) -> None:
    if path:
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")


def fetch_model(args) -> None:
    from tutorial_lib.models import DEFAULT_MODEL, fetch_model

    print(fetch_model(args.model or DEFAULT_MODEL))
    if args.four_bit:
        from tutorial_lib.four_bit import saved_four_bit

        print(saved_four_bit(args.model or DEFAULT_MODEL))


def prefetch(args) -> None:
    from tutorial_lib.delivery import prefetch
    from tutorial_lib.models import CACHE_ENV

    for folder in prefetch(args.dir):  # every offline model, and lesson 06's 4-bit base
        print(f"ready: {folder}")
    from tutorial_lib.published import prefetch_published

    print(f"ready: {prefetch_published(args.dir)}")
    print(f"offline use: {CACHE_ENV}={args.dir.expanduser().resolve()} jupyter lab notebooks/")


def fetch_suite(args) -> None:
    from tutorial_lib.published import fetch_published

    print(fetch_published())


def methods(args) -> None:
    from tutorial_lib.methods import REGISTRY

    width = max(len(name) for name in REGISTRY)  # the columns line up whatever names exist
    for m in sorted(REGISTRY.values(), key=lambda m: m.name):
        print(f"{m.name:<{width}} {m.family:<18} lr={m.default_lr:<8g} {m.description}")


def baseline(args) -> None:
    from tutorial_lib.baseline import Baseline
    from tutorial_lib.config import get_profile
    from tutorial_lib.models import DEFAULT_MODEL

    profile = get_profile(args.profile)
    before, _ = Baseline(profile, args.model or DEFAULT_MODEL).measured()
    summary = before.summary()
    print(f"profile {profile.name}")
    print(
        f"probe accuracy   {summary['probe_accuracy']:.3f} ± {summary['probe_accuracy_stderr']:.3f}"
        f"  ({summary['probe_n_items']} items, chance 0.25)"
    )
    for cat, acc in summary["probe_accuracy_by_category"].items():
        print(f"  {cat:<16} {acc:.3f}")
    if "domain_recall" in summary:
        print(
            f"domain recall    {summary['domain_recall']:.3f} ± {summary['domain_recall_stderr']:.3f}"
            f"  ({summary['domain_recall_n_items']} items; control accuracy"
            f" {summary['domain_control_accuracy']:.3f})"
        )
    print(f"domain accuracy  {summary['domain_accuracy']:.3f}  ({summary['domain_n_items']} items)")
    print(f"general text CE  {summary['general_ce']:.3f} nats/token")
    if before.suite:
        from tutorial_lib.suite import headroom_table

        print(headroom_table(before.suite))
    _write_json(args.json, summary)


def train(args) -> None:
    from tutorial_lib import experiment
    from tutorial_lib.baseline import Baseline
    from tutorial_lib.config import get_profile
    from tutorial_lib.data import TASKS
    from tutorial_lib.device import fast_bf16
    from tutorial_lib.methods import get_method
    from tutorial_lib.models import DEFAULT_MODEL
    from tutorial_lib.runspec import RunSpec

    get_method(args.method)  # unknown names fail here, before the model loads
    own = None
    if getattr(args, "data", None):
        from tutorial_lib.own_data import OwnData

        own = OwnData.load(args.data)  # a bad row fails here, with file, line and field
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
        train_file=str(args.data) if own else None,
    )
    print(f"run: {spec}", file=sys.stderr)
    sizes = {"batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size}
    sizes["suite_items"] = getattr(args, "suite_items", None)
    sizes["domain_facts"] = getattr(args, "facts", None)
    profile = get_profile(args.profile).with_overrides(
        **{k: v for k, v in sizes.items() if v is not None}
    )
    where = Baseline(profile, args.model or DEFAULT_MODEL, task=spec.task)
    heldout = _own_before(own, where) if own else None
    result = experiment.run_experiment(
        spec, where, checkpoint_dir=args.checkpoint_dir, resume=args.resume
    )
    summary = result.summary()
    print(result.report())
    if own:
        summary.update(_own_after(heldout, own, result.model))
    if args.floor:
        summary["floor"] = _floor_run(spec, where, summary)
    else:
        from tutorial_lib.floor import committed_floor_note

        print(committed_floor_note(spec.method, summary))
    _write_json(args.json, summary)


def _own_before(own, where) -> dict:
    """The base model's held-out loss on the learner's file, with the sizes the report needs
    and the tokenizer (`_own_after` takes it); every chat's length is checked first."""
    from tutorial_lib.models import load_base_model
    from tutorial_lib.own_data import assistant_tokens, heldout_loss

    if not own.test:
        raise ValueError(f"{own.path}: no held-out chats; give two or more, or mark some 'test'")
    print(
        f"note: domain accuracy below is {where.task}'s questions; your data is measured by "
        "its held-out loss",
        file=sys.stderr,
    )
    model, tokenizer = load_base_model(where.model_name)
    own.check_lengths(tokenizer, where.profile.max_length)
    return {
        "train_file": str(own.path),
        "train_chats": len(own.train),
        "heldout_chats": len(own.test),
        "heldout_tokens": assistant_tokens(tokenizer, own.test),
        "heldout_recall_items": len(own.recall_items()),
        "heldout_loss_before": heldout_loss(model, tokenizer, own.test),
        "tokenizer": tokenizer,
    }


def _own_after(before: dict, own, model) -> dict:
    """`before` with the trained model's held-out loss (JSON-able), printed."""
    from tutorial_lib.own_data import heldout_loss

    numbers = {k: v for k, v in before.items() if k != "tokenizer"}
    numbers["heldout_loss_after"] = a = heldout_loss(model, before["tokenizer"], own.test)
    b = numbers["heldout_loss_before"]
    print(
        f"your data        {numbers['train_file']}: trained on {numbers['train_chats']} chats, "
        f"{numbers['heldout_chats']} held out ({numbers['heldout_tokens']} assistant tokens)\n"
        f"held-out loss    {b:.3f} -> {a:.3f} nats/token ({a - b:+.3f})"
    )
    return numbers


def _floor_run(spec, where, summary: dict) -> dict:
    """The control run of `spec` on the same baseline, printed beside the run's numbers."""
    from tutorial_lib import experiment
    from tutorial_lib.floor import floor_lines, floor_numbers, floor_spec

    control = floor_spec(spec, where)  # at most FLOOR_MAX_PASSES passes over its pool
    print(f"run: {control}", file=sys.stderr)
    floor = floor_numbers(experiment.run_experiment(control, where).summary())
    print(floor_lines(summary, floor))
    return floor


def _floor_steps(args, profile) -> int | None:
    """The floors' steps: as given, or "auto" (the default where floors run): the runs' steps
    capped at `FLOOR_MAX_PASSES` passes over the pool (which takes the model's tokenizer to
    count)."""
    if args.floor_steps is None and args.floors:
        args.floor_steps = "auto"
    if args.floor_steps != "auto":
        return args.floor_steps
    from tutorial_lib.floor import FLOOR_MAX_PASSES, floor_cap
    from tutorial_lib.models import DEFAULT_MODEL

    cap, windows = floor_cap(profile, args.model or DEFAULT_MODEL, args.task)
    steps = min(cap, args.steps or profile.train_steps)
    print(
        f"noise floors: {steps} steps ({windows} general-text windows, at most "
        f"{FLOOR_MAX_PASSES:g} passes of {profile.batch_size})",
        file=sys.stderr,
    )
    return steps


def compare(args) -> int:
    """Run the comparison, print its table, write the files; exit 1 if any method failed (a
    method that cannot apply to the model is reported, and is no failure)."""
    from tutorial_lib.baseline import Baseline
    from tutorial_lib.compare import ComparisonSpec
    from tutorial_lib.compare import compare as run_comparison
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
        floors=args.floors,
        floor_steps=_floor_steps(args, profile),
        steps=args.steps,
        eval_at=() if args.no_mid_run else None,
        task=args.task or TASKS[0],
    )
    runs = args.runs or Path(f"compare-{profile.name}-runs.jsonl")
    print(f"runs cached in {runs} (delete it to start over)", file=sys.stderr)
    result = run_comparison(
        spec,
        results_path=runs,
        baseline=Baseline(profile, args.model or DEFAULT_MODEL, task=spec.task),
        retry_failed=args.retry_failed,
        on_run=lambda method, seed: print(f"run: {method}, seed {seed}", file=sys.stderr),
    )
    from tutorial_lib import method_table

    rows = method_table.method_rows(result.records, result.floors)  # the new measures per method
    table = method_table.markdown(rows) + "\n" + method_table.floor_markdown(rows)
    table += "\n" + method_table.suite_markdown(rows) if any(r["suite"] for r in rows) else ""
    table += "\n" + result.markdown()  # costs, and the older measures
    print(table, end="")
    saved = {**result.to_json(), "measures": rows, "ran": _how_it_ran(profile)}
    _write_json(args.json, saved)
    if args.markdown:
        args.markdown.write_text(table)
        print(f"wrote {args.markdown}")
    _report_problems(result)
    return 1 if result.failed else 0


def _report_problems(result) -> None:
    """One line on stderr per method that does not apply, and per run that failed."""
    for record in result.not_applicable:
        print(f"not applicable: {record['method']}: {record['error']['message']}", file=sys.stderr)
    for record in result.failed:
        error = record["error"]
        print(
            f"failed: {record['method']} seed {record['seed']}: {error['type']}: "
            f"{error['message']}",
            file=sys.stderr,
        )


def _how_it_ran(profile) -> dict:
    """The command, sizes and machine beside a result, so that a reader can run it again."""
    from tutorial_lib.provenance import command_line, record

    return record(command_line("tutorial-lib"), asdict(profile)).to_json()
