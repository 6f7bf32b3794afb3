"""Selective methods: which existing weights train (top-layers, chosen-layers, ln-tuning, bitfit)."""

from __future__ import annotations

import pytest

from tutorial_lib.methods import REGISTRY, apply_method
from tutorial_lib.methods.selective import ChosenLayersConfig, TopLayersConfig


def _trainable_names(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_selective_methods_are_labelled_selective():
    names = ("top-layers", "chosen-layers", "ln-tuning", "bitfit")
    families = {name: REGISTRY[name].family for name in names}
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


def _block_params(model, index: int) -> int:
    return sum(p.numel() for p in model.model.layers[index].parameters())


@pytest.mark.parametrize("layers", [(0,), (1,), (0, 1)])
def test_chosen_layers_trains_exactly_the_chosen_blocks(tiny, layers):
    model = apply_method(tiny[0], "chosen-layers", ChosenLayersConfig(layers=layers))
    names = _trainable_names(model)
    assert {n.split(".")[2] for n in names} == {str(i) for i in layers}
    assert all(n.startswith("model.layers.") for n in names)  # not the final norm, nor embeddings
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(_block_params(model, i) for i in layers)


def test_chosen_layers_counts_negative_indices_from_the_top(tiny):
    model = apply_method(tiny[0], "chosen-layers", ChosenLayersConfig(layers=(-2,)))
    assert {n.split(".")[2] for n in _trainable_names(model)} == {"0"}  # 2 blocks: -2 is the first


def test_chosen_layers_shares_top_layers_rate():
    assert REGISTRY["chosen-layers"].default_lr == REGISTRY["top-layers"].default_lr


def test_chosen_layers_accepts_a_list_as_from_json():
    assert ChosenLayersConfig(layers=[3, 1]).layers == (3, 1)


@pytest.mark.parametrize(
    "layers, message",
    [
        ((), "at least one decoder block"),
        ((0, 0), "must not repeat a block"),
        ((1.0,), "integer block indices"),
        ((True,), "integer block indices"),
    ],
)
def test_bad_chosen_layers_config_is_rejected(layers, message):
    with pytest.raises(ValueError, match=message):
        ChosenLayersConfig(layers=layers)


@pytest.mark.parametrize("index", [2, -3])
def test_chosen_layer_out_of_range_names_the_allowed_range(tiny, index):
    with pytest.raises(
        ValueError, match=rf"index {index} is out of range.*2 decoder layers.*0\.\.1.*-2\.\.-1"
    ):
        apply_method(tiny[0], "chosen-layers", ChosenLayersConfig(layers=(index,)))


def test_chosen_layers_refuses_one_block_named_twice(tiny):
    with pytest.raises(ValueError, match="name the same block twice on a 2-layer model"):
        apply_method(tiny[0], "chosen-layers", ChosenLayersConfig(layers=(1, -1)))
