"""One unit family for bytes: binary MiB and GiB, and keys that name their unit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tutorial_lib.units import format_bytes, gib, mib

ROOT = Path(__file__).resolve().parent.parent


def test_mib_and_gib_are_binary():
    assert mib(3 * 2**20) == 3 and gib(3 * 2**30) == 3
    assert gib(24e9) == pytest.approx(22.35, abs=0.01)  # a 24 GB card's GiB


def test_format_bytes_picks_the_unit_a_reader_wants():
    assert format_bytes(730 * 2**20) == "730.0 MiB"
    assert format_bytes(4.5 * 2**30) == "4.5 GiB"
    assert format_bytes(2**30, digits=2) == "1.00 GiB"
    with pytest.raises(ValueError, match="negative"):
        format_bytes(-1)


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").glob("*.json")))
def test_committed_results_name_bytes_in_one_unit_family(path):
    """No decimal `_mb`/`_gb` keys: sizes are `_bytes`, `_mib` or `_gib`."""
    keys = _keys(json.loads(path.read_text()))
    assert not [k for k in keys if re.search(r"_(mb|gb)$", k, re.I)], path.name


def test_the_tables_byte_columns_are_in_mib_and_gib():
    """A known byte count reads as its binary figure in every table that shows a size."""
    from tutorial_lib.lowrank import gpt3_lora_figures, lora_trainable, rank_costs
    from tutorial_lib.memory import ARCHITECTURES
    from tutorial_lib.results import costs_table

    run = {"method": "m", "trainable_params": 1, "trainable_percent": 1.0, "sec_per_step": 1.0}
    run |= {"optimizer_state_bytes": 3 * 2**20, "peak_memory_bytes": 3 * 2**29}
    row = costs_table([run | {"checkpoint_bytes": 2**19}]).loc["m"]
    assert row["optimizer state (MiB)"] == 3 and row["peak memory (GiB)"] == 1.5
    assert row["checkpoint (MiB)"] == 0.5
    smol = ARCHITECTURES["SmolLM2-135M"]
    n = lora_trainable(smol, 8, "attention")
    costs = rank_costs(smol, ranks=(8,), targets=("attention",)).loc[("attention", 8)]
    assert costs["AdamW state (MiB)"] == round(8 * n / 2**20, 2)
    assert costs["adapter file (MiB)"] == round(4 * n / 2**20, 2)
    paper = {(r["matrices"], r["r"]): r for r in gpt3_lora_figures().to_dict("records")}
    assert paper[("W_q, W_v", 4)]["fp16 (MiB)"] == 36.0  # 37,748,736 bytes; the paper: "35MB"
