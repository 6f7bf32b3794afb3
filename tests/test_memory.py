"""The memory ledger against real tensors, 4-bit counting, and the preflight that stops a run."""

from __future__ import annotations

import time

import pytest
import torch

from tutorial_lib import memory
from tutorial_lib.memory import (
    LIMIT_ENV,
    WontFitError,
    count_params,
    estimate_training_memory,
    logical_numel,
    preflight,
    storage_bytes,
)
from tutorial_lib.methods import apply_method
from tutorial_lib.train import TrainConfig, train


@pytest.mark.parametrize("method", ["full", "lora"])
def test_ledger_matches_real_gradients_and_optimizer_state(tiny, tiny_examples, method):
    model, tok = tiny
    model = apply_method(model, method)
    ledger = estimate_training_memory(model, batch=8, seq_len=64)
    result = train(model, tiny_examples, TrainConfig(steps=1, batch_size=8), tok.pad_token_id)
    n_tensors = sum(1 for p in model.parameters() if p.requires_grad)
    assert (
        result.optimizer_state_bytes == ledger.optimizer + 4 * n_tensors
    )  # + AdamW's step scalars
    trained = [p for p in model.parameters() if p.requires_grad]
    assert ledger.gradients == sum(p.numel() * p.element_size() for p in trained)
    assert ledger.weights == sum(p.numel() * p.element_size() for p in model.parameters())
    assert ledger.total == ledger.weights + ledger.gradients + ledger.optimizer + ledger.activations


def test_lora_needs_far_less_than_full(tiny):
    from tutorial_lib.models import tiny_model

    model, _ = tiny
    full = estimate_training_memory(apply_method(model, "full"), batch=8, seq_len=64)
    lora = estimate_training_memory(apply_method(tiny_model()[0], "lora"), batch=8, seq_len=64)
    assert lora.gradients + lora.optimizer < 0.2 * (full.gradients + full.optimizer)


def test_activations_grow_with_batch_and_length(tiny):
    model, _ = tiny
    small = estimate_training_memory(model, batch=2, seq_len=32).activations
    assert estimate_training_memory(model, batch=4, seq_len=32).activations == 2 * small
    assert estimate_training_memory(model, batch=2, seq_len=64).activations == 2 * small


def test_four_bit_weights_count_two_values_per_byte():
    bnb = pytest.importorskip("bitsandbytes")
    layer = bnb.nn.Linear4bit(64, 32, bias=False, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(32, 64), requires_grad=False, quant_type="nf4")
    layer = layer.to("cpu")  # quantises
    assert logical_numel(layer.weight) == 64 * 32
    assert storage_bytes(layer.weight) == 64 * 32 // 2
    assert count_params(layer) == (0, 64 * 32)


def test_preflight_stops_a_run_that_cannot_fit(tiny, tiny_examples, monkeypatch):
    model, tok = tiny
    model = apply_method(model, "full")
    before = [p.detach().clone() for p in model.parameters()]
    monkeypatch.setenv(LIMIT_ENV, "1")  # rehearse a machine with 1 MiB free
    with pytest.raises(WontFitError) as err:
        train(model, tiny_examples, TrainConfig(steps=2), tok.pad_token_id)
    message = str(err.value)
    assert "MiB beyond the loaded weights" in message and "only 1 MiB" in message
    assert "LoRA" in message and "optimizer state" in message
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # nothing ran


def test_preflight_passes_when_there_is_room(tiny, monkeypatch):
    model, _ = tiny
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    preflight(estimate_training_memory(model, batch=2, seq_len=16), torch.device("cpu"))


def test_architecture_counts_match_a_real_model(tiny):
    from tutorial_lib.memory import Architecture

    model, _ = tiny
    c = model.config
    arch = Architecture(
        "tiny",
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.vocab_size,
        True,
    )
    assert arch.n_params == count_params(model)[1]


def test_published_sizes_and_full_finetuning_arithmetic():
    from tutorial_lib.memory import ARCHITECTURES, full_finetune_ledger

    assert round(ARCHITECTURES["SmolLM2-135M"].n_params / 1e6, 1) == 134.5
    assert round(ARCHITECTURES["Llama-2-7B"].n_params / 1e9, 2) == 6.74
    seventy = full_finetune_ledger(ARCHITECTURES["Llama-2-70B"], batch=1, seq_len=512)
    assert (
        seventy.weights + seventy.gradients + seventy.optimizer
        == 16 * ARCHITECTURES["Llama-2-70B"].n_params
    )


def _touch(megabytes: int, hold: float = 0.0) -> None:
    """Allocate and write `megabytes` of memory, hold it `hold` seconds, then free it."""
    block = bytearray(megabytes * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    time.sleep(hold)
    del block


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel-peak", "sampled"])
def test_peak_memory_sees_a_spike_freed_inside_the_block(kernel, monkeypatch):
    if not kernel:
        monkeypatch.setattr(memory, "_reset_high_water", lambda: False)
    elif not memory._reset_high_water():
        pytest.skip("this kernel does not let a process reset its peak")
    _touch(200)  # an earlier, larger spike must not count in the next block
    with memory.PeakMemory(torch.device("cpu"), interval=0.001) as mem:
        _touch(80, hold=0.05)  # the sampling thread needs a moment to see it
    assert mem.method == ("kernel" if kernel else "sampled")
    assert mem.peak_bytes - mem.start_bytes > 60 * 2**20
    if kernel:  # exact: the 200 MiB before the block are not counted
        assert mem.peak_bytes - mem.start_bytes < 150 * 2**20


def test_nested_peak_memory_keeps_the_outer_peak():
    if not memory._reset_high_water():
        pytest.skip("this kernel does not let a process reset its peak")
    with memory.PeakMemory(torch.device("cpu")) as outer:
        _touch(120)
        with memory.PeakMemory(torch.device("cpu")) as inner:
            _touch(10)
    assert outer.peak_bytes - outer.start_bytes > 100 * 2**20
    assert inner.peak_bytes - inner.start_bytes < 60 * 2**20


def test_scaling_table_gives_each_architecture_in_both_precisions():
    from tutorial_lib.memory import ARCHITECTURES, scaling_table

    table = scaling_table(batch=8, seq_len=128)
    assert len(table) == 2 * len(ARCHITECTURES)
    n = ARCHITECTURES["Llama-2-7B"].n_params
    fp32, bf16 = table.loc[("Llama-2-7B", "fp32")], table.loc[("Llama-2-7B", "bf16 + fp32 Adam")]
    assert fp32["weights (GiB)"] == round(4 * n / 2**30, 1)
    assert bf16["weights (GiB)"] == round(2 * n / 2**30, 1)
    assert fp32["optimizer state (GiB)"] == bf16["optimizer state (GiB)"] == round(8 * n / 2**30, 1)


def test_trainable_table_says_where_an_adapters_weights_sit(tiny):
    from tutorial_lib.memory import count_params, trainable_table, trainable_where
    from tutorial_lib.methods import apply_method

    model, _ = tiny
    adapted = apply_method(model, "adapter")  # pfeiffer: one adapter after every block's MLP
    where = trainable_where(adapted)
    assert set(where) == {
        f"layers.*.mlp.adapter.{p}.{w}" for p in ("down", "up") for w in ("weight", "bias")
    }
    hidden, layers, b = adapted.config.hidden_size, adapted.config.num_hidden_layers, 16
    assert where["layers.*.mlp.adapter.down.weight"] == layers * hidden * b
    assert sum(where.values()) == count_params(adapted)[0]
    table = trainable_table({"adapter": adapted})
    assert table.loc["adapter", "trainable params"] == count_params(adapted)[0]
    assert "layers.*.mlp.adapter.up.weight" in table.loc["adapter", "where (params)"]


@pytest.mark.parametrize(
    "limit, usage, left",
    [
        ("2147483648", "536870912", 1536 * 2**20),  # a 2 GiB container using 0.5 GiB
        ("max", "536870912", None),  # cgroup v2 without a limit
        ("9223372036854771712", "1", None),  # cgroup v1's "unlimited"
    ],
)
def test_a_containers_memory_limit_caps_what_a_run_may_use(
    tmp_path, monkeypatch, limit, usage, left
):
    from tutorial_lib import memory

    (tmp_path / "max").write_text(limit + "\n")
    (tmp_path / "current").write_text(usage + "\n")
    files = (
        (str(tmp_path / "none"), str(tmp_path / "none")),
        (str(tmp_path / "max"), str(tmp_path / "current")),
    )
    monkeypatch.setattr(
        memory, "CGROUP_FILES", files
    )  # the first pair is absent: the second is read
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    assert memory.container_memory_left() == left
    available = memory.available_memory(torch.device("cpu"))
    assert available <= left if left is not None else available > 0


def test_preflight_refuses_a_run_a_small_container_would_kill(tiny, monkeypatch, tmp_path):
    from tutorial_lib import memory

    (tmp_path / "max").write_text(str(64 * 2**20))  # a 64 MiB container, already full
    (tmp_path / "current").write_text(str(64 * 2**20))
    monkeypatch.setattr(
        memory, "CGROUP_FILES", ((str(tmp_path / "max"), str(tmp_path / "current")),)
    )
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    model, _ = tiny
    with pytest.raises(WontFitError, match="only 0 MiB"):
        preflight(estimate_training_memory(model, batch=2, seq_len=16), torch.device("cpu"))
