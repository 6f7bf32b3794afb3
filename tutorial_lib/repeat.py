"""Does a committed run repeat? A run re-trained here beside the record it should reproduce.

On the CPU a run was recorded on, training and evaluation repeat to the digit (same data, seed and
order; torch's CPU kernels are deterministic). On another CPU, kernels chosen by the processor's
instruction set (bitsandbytes' 4-bit matrix products among them) round differently, and a greedy
reply or a multiple-choice answer near a tie can flip. So each measure is marked *exact* (counts
equal, means to 1e-4) and *within errors* (the difference within two of the committed run's
standard errors): the second is what a different machine must meet, the first what the same one
must.
"""

from __future__ import annotations

import math

MEASURES = ("domain_recall_after", "domain_accuracy_after", "general_ce_change", "kl_to_base")
_EXACT = 1e-4  # means over ~3,000 tokens agree to the 6th digit on the same CPU


def _stderr(run: dict, key: str) -> float | None:
    if run.get(f"{key}_stderr") is not None:
        return run[f"{key}_stderr"]
    if key == "domain_accuracy_after" and run.get("domain_n_items"):  # a share of n items
        p = run[key]
        return math.sqrt(p * (1 - p) / run["domain_n_items"])
    return None


def against_committed(live: list[dict], committed: list[dict], measures=MEASURES):
    """Per re-run method and measure: here, committed, the difference, the committed run's
    standard error, and whether the two are exact and within two standard errors."""
    import pandas as pd

    saved = {(r["method"], r["seed"]): r for r in committed if "error" not in r}
    rows = []
    for run in live:
        old = saved[(run["method"], run["seed"])]
        for key in measures:
            diff = run[key] - old[key]
            se = _stderr(old, key)
            rows.append(
                {
                    "method": run["method"],
                    "measure": key,
                    "here": run[key],
                    "committed": old[key],
                    "difference": diff,
                    "se": se,
                    "exact": abs(diff) < _EXACT,
                    "within errors": abs(diff) <= 2 * se if se else abs(diff) < _EXACT,
                }
            )
    return pd.DataFrame(rows).set_index(["method", "measure"])
