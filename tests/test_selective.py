"""Selective methods: which existing weights train (top-layers, ln-tuning, bitfit)."""

from __future__ import annotations

import pytest

from tutorial_lib.methods import REGISTRY, apply_method
from tutorial_lib.methods.selective import TopLayersConfig


def _trainable_names(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_selective_methods_are_labelled_selective():
    families = {name: REGISTRY[name].family for name in ("top-layers", "ln-tuning", "bitfit")}
    assert set(families.values()) == {"selective"}


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_top_layers_k_must_be_a_positive_integer(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        TopLayersConfig(k=k)


def test_top_layers_k_above_the_layer_count_names_the_range(tiny):
    with pytest.raises(ValueError, match=r"k=3 but the model has 2 decoder layers.*1\.\.2"):
        apply_method(tiny[0], "top-layers", TopLayersConfig(k=3))


def test_top_layers_trains_the_last_blocks_and_the_final_norm(tiny):
    model = apply_method(tiny[0], "top-layers", TopLayersConfig(k=1))
    names = _trainable_names(model)
    assert names and all(n.startswith("model.layers.1.") or n == "model.norm.weight" for n in names)
    assert "model.norm.weight" in names
    assert not model.get_input_embeddings().weight.requires_grad  # tied to the output head


def test_ln_tuning_trains_only_norm_gains(tiny):
    model = apply_method(tiny[0], "ln-tuning")
    names = _trainable_names(model)
    assert len(names) == 2 * model.config.num_hidden_layers + 1
    assert all("norm" in n and n.endswith("weight") for n in names)


def test_bitfit_trains_only_the_existing_biases(tiny_biased):
    model = apply_method(tiny_biased[0], "bitfit")
    names = _trainable_names(model)
    assert len(names) == 7 * model.config.num_hidden_layers  # q k v o gate up down
    assert all(n.endswith(".bias") for n in names)
