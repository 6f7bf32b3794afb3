"""Task swapping: saved weights load in turn into one model; switched off, it is the base."""

from __future__ import annotations

import copy

import pytest
import torch

from tutorial_lib import data, swap
from tutorial_lib.checkpoint import save_trainable
from tutorial_lib.methods import apply_method


def _trained_adapter(model, seed: int):
    """An adapter with non-zero weights (as after training), from `seed`."""
    adapted = apply_method(model, "adapter", seed=seed)
    with torch.no_grad():
        for p in adapted.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.5)
    return adapted


def test_switched_off_adapter_gives_the_base_bit_for_bit(tiny):
    model, tokenizer = tiny
    base = copy.deepcopy(model)
    adapted = _trained_adapter(model, seed=1)
    assert swap.base_outputs_unchanged(adapted, base, tokenizer, "Hello there")
    kept = swap.base_logits(base, tokenizer, "Hello there")  # the base need not stay loaded
    assert swap.base_outputs_unchanged(adapted, kept, tokenizer, "Hello there")
    # and the check can fail: a changed base weight is seen
    with torch.no_grad():
        adapted.model.norm.weight.add_(0.1)
    assert not swap.base_outputs_unchanged(adapted, base, tokenizer, "Hello there")
    assert not swap.base_outputs_unchanged(adapted, kept, tokenizer, "Hello there")


def test_swap_table_loads_each_file_into_the_same_model(tiny, tmp_path, monkeypatch):
    model, tokenizer = tiny
    questions = {"t": data.load_domain_eval(facts=4)}
    files = {}
    for seed in (1, 2):
        files[f"seed {seed}"] = tmp_path / f"{seed}.safetensors"
        save_trainable(_trained_adapter(copy.deepcopy(model), seed), files[f"seed {seed}"])
    one = _trained_adapter(copy.deepcopy(model), seed=3)
    seen = []

    def accuracy(m, tok, qs, batch_size=32):  # records which weights are loaded when asked
        seen.append(next(p for n, p in m.named_parameters() if p.requires_grad).sum().item())
        return float(len(seen))

    monkeypatch.setattr(swap, "domain_accuracy", accuracy)
    table = swap.swap_table(one, tokenizer, files, questions)
    assert list(table.index) == ["none (method off)", "seed 1", "seed 2"]
    assert seen[1] != seen[2]  # a different file was loaded for each row
    reloaded = _trained_adapter(copy.deepcopy(model), seed=1)
    first = next(p for n, p in reloaded.named_parameters() if p.requires_grad)
    assert seen[1] == pytest.approx(first.sum().item())  # and it was that file's weights


def test_swap_table_refuses_a_file_from_another_method(tiny, tmp_path):
    model, tokenizer = tiny
    path = tmp_path / "lora.safetensors"
    save_trainable(apply_method(copy.deepcopy(model), "lora"), path)
    with pytest.raises(ValueError, match="does not fit this model"):
        swap.swap_table(
            _trained_adapter(model, 1),
            tokenizer,
            {"lora": path},
            {"t": data.load_domain_eval(facts=1)},
        )
