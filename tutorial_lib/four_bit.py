"""A 4-bit base quantised once and saved, then loaded from the saved copy: what the Hub's
"-bnb-4bit" repositories hold.

Quantising on load (`from_pretrained(..., quantization_config=BitsAndBytesConfig(...))`) reads
every full-precision weight and holds it while bitsandbytes packs it. On this model that read is
the whole 513 MiB fp32 file and about 11 s on 2 cores, and it is the peak of lesson 06 in a small
session. `model.save_pretrained` after that load writes the packed weights and their scales
(safetensors, about 161 MiB here), and loading them reads only those. So lesson 06's practitioner
cells load a saved copy, built the first time it is asked for, or beforehand by
`tutorial-lib fetch-model --four-bit` (Binder's image build runs it).

The copy is a cache: its folder is named by everything that decides its bytes (the source
model's file hashes, the quantisation settings, the bitsandbytes and transformers versions) and
its manifest records those and the hash of every file it wrote. A copy whose files do not match
is rebuilt, and one made with other settings is never returned.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from tutorial_lib import cached_folder
from tutorial_lib.models import (
    DEFAULT_MODEL,
    _quiet_progress,
    cache_dir,
    load_causal_lm,
    resolve_model,
)

MANIFEST = "four_bit_manifest.json"


def four_bit_config(compute_dtype: torch.dtype = torch.float32):
    """NF4 weights, double-quantised scales, computing in `compute_dtype` (bf16 where the
    machine is fast at it, as lesson 06's Knobs cell prints)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def _source_identity(path: str) -> dict:
    """What identifies the weights being quantised: each safetensors file's hash for a folder
    (the offline model's converted folder, or a learner's), the id for a Hub model."""
    folder = Path(path)
    if not folder.is_dir():
        return {"hub_id": path}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors file in {folder}: a 4-bit copy is made from one")
    return {"sha256": {f.name: cached_folder.cached_sha256(f) for f in files}}


def settings(name: str = DEFAULT_MODEL, compute_dtype: torch.dtype = torch.float32) -> dict:
    """Everything that decides a saved copy's bytes (and so its folder's name)."""
    import bitsandbytes
    import transformers

    config = four_bit_config(compute_dtype)
    return {
        "source": _source_identity(resolve_model(name)),
        "quant_type": config.bnb_4bit_quant_type,
        "double_quant": config.bnb_4bit_use_double_quant,
        "compute_dtype": str(compute_dtype).removeprefix("torch."),
        "bitsandbytes": bitsandbytes.__version__,
        "transformers": transformers.__version__,
    }


def folder_for(name: str, wanted: dict) -> Path:
    """Where the copy of `name` with these settings lives in the library's cache."""
    digest = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
    label = Path(name).name if Path(name).is_dir() else name.replace("/", "--")
    return cache_dir() / "four-bit" / f"{label}-{digest}"


def verified(folder: Path, wanted: dict) -> bool:
    """True when the folder's manifest names these settings and every file it lists matches."""
    return cached_folder.matches(folder, MANIFEST, settings=wanted)


def saved_four_bit(name: str = DEFAULT_MODEL, compute_dtype: torch.dtype = torch.float32) -> Path:
    """The folder of `name` quantised by `four_bit_config(compute_dtype)` and saved
    with `save_pretrained` (safetensors); quantised here the first time, reused after."""
    wanted = settings(name, compute_dtype)

    def build(staged: Path) -> None:
        quantise_and_save(name, compute_dtype, staged)

    return cached_folder.build_once(
        folder_for(name, wanted), build, manifest=MANIFEST, settings=wanted
    )


def quantise_and_save(name: str, compute_dtype: torch.dtype, folder: Path) -> None:
    """The practitioner's two lines, a 4-bit load and `save_pretrained`, written to `folder`."""
    from tutorial_lib.memory.machine import release_memory

    print(f"Quantising {name} to 4 bits once, and saving it (about 15 s on 2 cores)")
    model, tokenizer = load_causal_lm(name, quantization_config=four_bit_config(compute_dtype))
    with _quiet_progress(True):  # no "Writing model shards" bar in a lesson's output
        model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    del model
    release_memory()


def _safetensors_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def describe(name: str = DEFAULT_MODEL, compute_dtype: torch.dtype = torch.float32) -> str:
    """One line: the saved copy's size against the full-precision files it replaces in a load."""
    copy = _safetensors_bytes(saved_four_bit(name, compute_dtype)) / 2**20
    source = Path(resolve_model(name))
    read = f"the {_safetensors_bytes(source) / 2**20:.0f} MiB model" if source.is_dir() else name
    return f"saved 4-bit copy: {copy:.0f} MiB of safetensors, read instead of {read}"
