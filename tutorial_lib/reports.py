"""A run's before/after as `tutorial-lib train` prints it, from `ExperimentResult.summary()`:
learning first (recall, then MC accuracy), then forgetting led by the continuous measures
(general-text CE change, KL to the base), items lost and gained, retention, the suite."""

from __future__ import annotations

from tutorial_lib.units import mib

RETENTION_MEANING = ": share of the items the base got right still right"


def _error_text(
    value: float, stderr: float | None, n: int | None, unit: str, sign: str = "+"
) -> str:
    if stderr is None:
        return f"{value:{sign}.4f} {unit}, no error estimate ({n} passage{'' if n == 1 else 's'})"
    return f"{value:{sign}.4f} ± {stderr:.4f} {unit} over {n} passages"


def _ce_change_text(s: dict) -> str:
    """`  (change +0.012 ± 0.004 nats/token over 16 passages)`, or nothing in older summaries."""
    if s.get("general_n_passages") is None:
        return ""
    change = _error_text(
        s["general_ce_change"], s["general_ce_change_stderr"], s["general_n_passages"], "nats/token"
    )
    return f"  (change {change})"


def _paired_lines(s: dict) -> list[str]:
    """KL to the base and the probe's items lost and gained: the lines between general text and
    probe accuracy in `run_report` (none for a summary from before they were measured)."""
    if "probe_lost" not in s:
        return []
    if s.get("kl_to_base") is None:
        kl = "not measured (no base log-probabilities)"
    else:
        kl = _error_text(
            s["kl_to_base"], s["kl_to_base_stderr"], s["kl_n_passages"], "nats/token", sign=""
        )
    return [
        f"KL(base ‖ tuned) {kl}",
        f"probe items      {s['probe_lost']} lost, {s['probe_gained']} gained"
        f" (sign test p = {s['probe_sign_test_p']:.3g}); log-prob of the correct answers"
        f" {s['probe_logprob_shift']:+.3f}"
        + (f" ± {err:.3f}" if (err := s["probe_logprob_shift_stderr"]) is not None else ""),
    ]


def _suite_lines(s: dict) -> list[str]:
    from tutorial_lib.suite import suite_report_lines

    return suite_report_lines(s)


def run_report(s: dict, task: str) -> str:
    """A run's before/after as `tutorial-lib train` prints it, from `ExperimentResult.summary()`."""
    options = "".join(f"  {k} {s[k]:g}" for k in ("replay", "l2sp", "ewc") if s[k])
    return "\n".join(
        [
            f"method {s['method']}  task {task}  lr {s['lr']:g}  steps {s['steps']}"
            + options
            + ("  bf16 autocast" if s["bf16"] else "")
            + ("  (interrupted)" if s["interrupted"] else ""),
            f"trainable        {s['trainable_params']:,} of {s['total_params']:,} "
            f"({s['trainable_percent']:.2f} %)",
            f"loss             {s['loss_history'][0]:.3f} -> {s['loss_history'][-1]:.3f}",
            *_recall_lines(s),
            f"domain accuracy  {s['domain_accuracy_before']:.3f} -> {s['domain_accuracy_after']:.3f}",
            f"general text CE  {s['general_ce_before']:.3f} -> {s['general_ce_after']:.3f}"
            + _ce_change_text(s),
            *_paired_lines(s),
            f"probe accuracy   {s['probe_accuracy_before']:.3f} -> {s['probe_accuracy_after']:.3f}"
            f"  (retention {s['retention']:.3f}"
            + (RETENTION_MEANING if "probe_lost" in s else "")
            + ")",
            *_suite_lines(s),
            f"time             {s['sec_per_step']:.2f} s/step, {s['tokens_per_sec']:.0f} tokens/s",
            f"peak memory      {mib(s['peak_memory_bytes']):.0f} MiB;"
            f" checkpoint {mib(s['checkpoint_bytes']):.1f} MiB",
        ]
    )


def _recall_lines(s: dict) -> list[str]:
    """The run report's recall line (above MC accuracy), when the run measured recall."""
    if "domain_recall_after" not in s:
        return []
    line = (
        f"domain recall    {s['domain_recall_before']:.3f} -> {s['domain_recall_after']:.3f}"
        f"  ({s['domain_recall_change']:+.3f} ± {s['domain_recall_change_stderr']:.3f};"
        f" {s['domain_recall_gained']} gained, {s['domain_recall_lost']} lost"
        f" of {s['domain_recall_n_items']})"
    )
    if "domain_control_accuracy_after" in s:
        line += (
            f"\ncontrol accuracy {s['domain_control_accuracy_before']:.3f} ->"
            f" {s['domain_control_accuracy_after']:.3f}  (choices after an unrelated question)"
        )
    return [line]
