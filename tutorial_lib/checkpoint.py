"""Saved weights: a run's trained weights alone (`save_trainable`, `load_trainable`), and
checkpoints of a training run (trainable weights, optimizer, scheduler, RNG, step, history).

Safetensors for tensors and JSON for everything else: nothing is pickled. Each checkpoint is
written to a temporary folder and renamed into place, so a crash never leaves a half-written one;
a reader only ever sees complete `step-NNNNNN` folders. Both readers are strict about names.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TENSORS, META = "state.safetensors", "state.json"


def trainable_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The parameters training changes, by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def check_names(path, trainable, saved) -> None:
    """Refuse a file whose weight names differ from the model's trainable ones, either way: a
    trained weight with no place in the model, or a trainable weight the file lacks, means the
    method or its config differ, and is an error rather than a silent skip."""
    missing, unexpected = sorted(set(trainable) - set(saved)), sorted(set(saved) - set(trainable))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit this model (made with another method or config?): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]} "
            f"({len(missing)} missing, {len(unexpected)} unexpected)"
        )


def save_trainable(model, path: Path) -> int:
    """Save only what training changed (safetensors) and return the file's size in bytes."""
    tensors = {n: p.detach().cpu().contiguous() for n, p in trainable_parameters(model).items()}
    save_file(tensors, str(path))
    return Path(path).stat().st_size


def load_trainable(model, path: Path):
    """Load a `save_trainable` file into a model prepared with the same method (names and
    shapes must match: `check_names`)."""
    tensors = load_file(str(path))
    params = trainable_parameters(model)
    check_names(path, params, tensors)
    with torch.no_grad():
        for name, tensor in tensors.items():
            if params[name].shape != tensor.shape:
                got, want = tuple(tensor.shape), tuple(params[name].shape)
                raise ValueError(f"{name}: the file has shape {got}, the model {want}")
            params[name].copy_(tensor)
    return model


def checkpoint_bytes(model) -> int:
    """Bytes that must be stored to reuse a run (the base model is shared and not counted)."""
    with tempfile.TemporaryDirectory() as tmp:
        return save_trainable(model, Path(tmp) / "trained.safetensors")


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into flat tensors and a JSON-able remainder."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Rebuild an optimizer state dict from `_optimizer_parts` output."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    folder: Path, step: int, model, optimizer, scheduler, history: list[float]
) -> Path:
    """Write `folder/step-NNNNNN` atomically and delete older checkpoints; return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"param.{name}": p.detach().cpu().contiguous()
        for name, p in trainable_parameters(model).items()
    }
    optim_tensors, optim_meta = _optimizer_parts(optimizer)
    tensors.update(optim_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "step": step,
        "loss_history": history,
        "optimizer": optim_meta,
        "scheduler": scheduler.state_dict(),
    }
    final = folder / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".writing-"))
    try:
        save_file(tensors, str(tmp / TENSORS))
        (tmp / META).write_text(json.dumps(meta))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)  # atomic: readers see the whole checkpoint or none of it
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in folder.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder`, or None."""
    done = sorted(p for p in Path(folder).glob("step-*") if (p / META).exists())
    return done[-1] if done else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, list[float]]:
    """Restore a checkpoint into model, optimizer and scheduler; return (step, loss history)."""
    tensors = load_file(str(Path(path) / TENSORS))
    meta = json.loads((Path(path) / META).read_text())
    trainable = trainable_parameters(model)
    saved = {k[len("param.") :] for k in tensors if k.startswith("param.")}
    check_names(f"checkpoint {path}", trainable, saved)
    with torch.no_grad():
        for name, p in trainable.items():
            p.copy_(tensors[f"param.{name}"])
    optimizer.load_state_dict(_optimizer_state(tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    return meta["step"], meta["loss_history"]
