"""The estimate of a loaded model against real tensors, 4-bit counting, the peak of a block, and
the preflight that stops a run, on a machine whose free memory the tests set."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tutorial_lib import memory
from tutorial_lib.memory import (
    LIMIT_ENV,
    WontFitError,
    count_params,
    estimate,
    logical_numel,
    preflight,
    setup_for,
    storage_bytes,
)
from tutorial_lib.memory import machine as machine_module
from tutorial_lib.memory import measure as measure_module
from tutorial_lib.methods import apply_method
from tutorial_lib.train import TrainConfig, train

GiB = 2**30
CPU = torch.device("cpu")


def estimate_of(model, batch: int, seq_len: int):
    """What the preflight in `train` estimates for `model` as it is prepared now."""
    return estimate(model.config, setup_for(model, batch=batch, seq_len=seq_len))


def fake_machine(monkeypatch, tmp_path, available: int, total: int = 64 * GiB, cgroup=None):
    """A machine with `available` bytes of free RAM, and a container limit (limit, usage) or none."""
    import psutil

    vm = SimpleNamespace(total=total, available=available)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: vm)
    files = ((str(tmp_path / "absent"), str(tmp_path / "absent")),)
    if cgroup is not None:
        (tmp_path / "max").write_text(f"{cgroup[0]}\n")
        (tmp_path / "current").write_text(f"{cgroup[1]}\n")
        files += ((str(tmp_path / "max"), str(tmp_path / "current")),)
    monkeypatch.setattr(machine_module, "CGROUP_FILES", files)  # the first pair is absent
    monkeypatch.delenv(LIMIT_ENV, raising=False)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_estimate_matches_real_gradients_and_optimizer_state(tiny, tiny_examples, method):
    model, tok = tiny
    model = apply_method(model, method)
    ledger = estimate_of(model, batch=8, seq_len=64)
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
    full = estimate_of(apply_method(model, "full"), batch=8, seq_len=64)
    lora = estimate_of(apply_method(tiny_model()[0], "lora"), batch=8, seq_len=64)
    assert lora.gradients + lora.optimizer < 0.2 * (full.gradients + full.optimizer)


def test_activations_grow_with_batch_and_length(tiny):
    model, _ = tiny
    small = estimate_of(model, batch=2, seq_len=32).activations
    assert estimate_of(model, batch=4, seq_len=32).activations == 2 * small
    assert estimate_of(model, batch=2, seq_len=64).activations == 2 * small


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


def test_preflight_passes_with_room_and_stops_just_short_of_it(tiny, monkeypatch, tmp_path):
    """The line is the estimate beyond the loaded weights, with 10 % of the free memory spare."""
    model, _ = tiny
    needed = estimate_of(model, batch=2, seq_len=16).beyond_weights
    enough = math.ceil(needed / 0.9) + 1
    fake_machine(monkeypatch, tmp_path, available=enough)
    preflight(estimate_of(model, batch=2, seq_len=16), CPU)
    fake_machine(monkeypatch, tmp_path, available=enough - 2**16)
    with pytest.raises(WontFitError, match=f"needs about {needed / 2**20:,.0f} MiB"):
        preflight(estimate_of(model, batch=2, seq_len=16), CPU)
    fake_machine(monkeypatch, tmp_path, available=100 * GiB)  # roomy, but the variable caps it
    monkeypatch.setenv(LIMIT_ENV, str(enough / 2**20))
    preflight(estimate_of(model, batch=2, seq_len=16), CPU)
    monkeypatch.setenv(LIMIT_ENV, str((enough - 2**16) / 2**20))
    with pytest.raises(WontFitError):
        preflight(estimate_of(model, batch=2, seq_len=16), CPU)


@pytest.mark.parametrize("method, k", [("top-layers", 1), ("adapter", None)])
def test_the_preflight_counts_only_the_activations_a_method_keeps(
    tiny, tiny_examples, monkeypatch, method, k
):
    """Top-layers tuning keeps nothing below its lowest trained layer; an adapter keeps no input
    of a frozen linear layer: `train`'s preflight estimates less than full fine-tuning's."""
    from tutorial_lib import train as train_module
    from tutorial_lib.methods.selective import TopLayersConfig
    from tutorial_lib.models import tiny_model

    checked = []
    monkeypatch.setattr(train_module, "preflight", lambda needed, device: checked.append(needed))
    model, tok = tiny
    config = TopLayersConfig(k=k) if k else None
    model = apply_method(model, method, config)
    train(model, tiny_examples, TrainConfig(steps=1, batch_size=4), tok.pad_token_id)
    seq_len = max(len(e["input_ids"]) for e in tiny_examples)
    full = estimate_of(apply_method(tiny_model()[0], "full"), batch=4, seq_len=seq_len)
    (needed,) = checked
    assert needed.setup == setup_for(model, batch=4, seq_len=seq_len)
    assert needed.setup.method == "peft" and needed.trainable_params == count_params(model)[0]
    assert 0 < needed.activations < full.activations
    assert needed.beyond_weights < full.beyond_weights


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


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_published_sizes_and_full_finetuning_arithmetic(dtype):
    """fp32, and mixed precision with its fp32 master copy: 16 bytes a parameter either way."""
    from tutorial_lib.memory import ARCHITECTURES

    assert round(ARCHITECTURES["SmolLM2-135M"].n_params / 1e6, 1) == 134.5
    assert round(ARCHITECTURES["Llama-2-7B"].n_params / 1e9, 2) == 6.74
    seventy = estimate("Llama-2-70B", method="full", dtype=dtype, batch=1, seq_len=512)
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
        monkeypatch.setattr(measure_module, "_reset_high_water", lambda: False)
    elif not measure_module._reset_high_water():
        pytest.skip("this kernel does not let a process reset its peak")
    _touch(200)  # an earlier, larger spike must not count in the next block
    with memory.PeakMemory(torch.device("cpu"), interval=0.001) as mem:
        _touch(80, hold=0.2)  # the sampling thread needs a moment to see it (more when busy)
    assert mem.method == ("kernel" if kernel else "sampled")
    assert mem.peak_bytes - mem.start_bytes > 60 * 2**20
    if kernel:  # exact: the 200 MiB before the block are not counted
        assert mem.peak_bytes - mem.start_bytes < 150 * 2**20


def test_a_reset_logs_the_peak_it_erases(monkeypatch, tmp_path):
    """The lesson benchmark watches a kernel's high-water mark from outside; each block resets
    it, so the block first writes the mark it erases to $TUTORIAL_PEAK_LOG."""
    if not measure_module._reset_high_water():
        pytest.skip("this kernel does not let a process reset its peak")
    log = tmp_path / "peaks"
    monkeypatch.setenv(measure_module.PEAK_LOG_ENV, str(log))
    before = measure_module._rss_bytes()
    _touch(300)  # a spike before the block, which the block's reset erases
    with memory.PeakMemory(torch.device("cpu")):
        pass
    assert measure_module._high_water_bytes() - before < 150 * 2**20  # erased here...
    assert max(int(line) for line in log.read_text().split()) - before > 250 * 2**20  # ...kept


def test_nested_peak_memory_keeps_the_outer_peak():
    if not measure_module._reset_high_water():
        pytest.skip("this kernel does not let a process reset its peak")
    with memory.PeakMemory(torch.device("cpu")) as outer:
        _touch(120)
        with memory.PeakMemory(torch.device("cpu")) as inner:
            _touch(10)
    assert outer.peak_bytes - outer.start_bytes > 100 * 2**20
    assert inner.peak_bytes - inner.start_bytes < 60 * 2**20


def test_scaling_table_gives_each_architecture_in_both_recipes():
    """Mixed precision halves weights and gradients and adds an fp32 master copy to the
    optimizer's state: 16 bytes a parameter, as fp32; it saves on activations only."""
    from tutorial_lib.memory import ARCHITECTURES, RECIPES, scaling_table

    table = scaling_table(batch=8, seq_len=128)
    assert len(table) == len(RECIPES) * len(ARCHITECTURES)
    n = ARCHITECTURES["Llama-2-7B"].n_params
    fp32 = table.loc[("Llama-2-7B", "fp32")]
    mixed = table.loc[("Llama-2-7B", "bf16 mixed, fp32 master")]
    assert fp32["weights (GiB)"] == round(4 * n / 2**30, 1)
    assert mixed["weights (GiB)"] == round(2 * n / 2**30, 1)
    assert fp32["optimizer state (GiB)"] == round(8 * n / 2**30, 1)
    assert mixed["optimizer state (GiB)"] == round(12 * n / 2**30, 1)  # AdamW + master copy
    assert (table["states (B/param)"] == 16).all()
    assert mixed["activations (GiB)"] < fp32["activations (GiB)"]
    est = estimate("Llama-2-7B", method="full", dtype="bf16", batch=8, seq_len=128)
    assert mixed["total (GiB)"] == round(est.total / 2**30, 1)


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
        ("2147483648", "4294967296", 0),  # past its limit: nothing left, not a negative
        ("max", "536870912", None),  # cgroup v2 without a limit
        ("9223372036854771712", "1", None),  # cgroup v1's "unlimited"
    ],
)
def test_a_containers_memory_limit_caps_what_a_run_may_use(
    tmp_path, monkeypatch, limit, usage, left
):
    fake_machine(monkeypatch, tmp_path, available=3 * GiB, cgroup=(limit, usage))
    assert memory.container_memory_left() == left
    assert memory.available_memory(CPU) == (3 * GiB if left is None else left)
    monkeypatch.setenv(LIMIT_ENV, "1024")  # a rehearsed 1 GiB machine caps it further
    assert memory.available_memory(CPU) == min(GiB, 3 * GiB if left is None else left)


def test_preflight_refuses_a_run_a_small_container_would_kill(tiny, monkeypatch, tmp_path):
    full = 64 * 2**20  # a 64 MiB container, already full, on a machine with RAM to spare
    fake_machine(monkeypatch, tmp_path, available=8 * GiB, cgroup=(full, full))
    model, _ = tiny
    with pytest.raises(WontFitError, match="only 0 MiB"):
        preflight(estimate_of(model, batch=2, seq_len=16), CPU)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_releasing_memory_hands_freed_heap_pages_back_to_the_os():
    import psutil

    from tutorial_lib.memory.machine import release_memory

    blocks = [bytearray(1000) for _ in range(200_000)]  # ~200 MB of small heap blocks
    keep = blocks[::500]  # a few survivors pin the heap's top, so it cannot simply shrink
    del blocks
    held = psutil.Process().memory_info().rss
    assert release_memory()
    assert psutil.Process().memory_info().rss < held - 100 * 2**20
    assert len(keep) == 400


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_an_evaluation_entry_point_hands_its_freed_pages_back_even_when_it_fails():
    import psutil

    from tutorial_lib.memory.machine import hands_memory_back

    kept = []

    @hands_memory_back
    def scoring(fail: bool) -> int:
        blocks = [bytearray(1000) for _ in range(200_000)]  # ~200 MB of small heap blocks
        kept.append(blocks[::500])  # survivors pin the heap's top, as a model's tensors do
        del blocks
        kept.append(psutil.Process().memory_info().rss)
        if fail:
            raise ValueError("a bad item")
        return 7

    assert scoring(False) == 7
    assert psutil.Process().memory_info().rss < kept[1] - 100 * 2**20
    kept.clear()
    with pytest.raises(ValueError, match="a bad item"):
        scoring(True)
    assert psutil.Process().memory_info().rss < kept[1] - 100 * 2**20


def test_every_evaluation_entry_point_hands_memory_back():
    from tutorial_lib import choices, evaluate, general_text, own_data, recall, suite_eval

    entry_points = [
        choices.evaluate_choices,
        evaluate.evaluate_model,
        general_text.capture_base,
        general_text.score_general,
        own_data.heldout_loss,
        recall.evaluate_recall,
        recall.evaluate_control,
        suite_eval.evaluate_published,
    ]
    for function in entry_points:
        assert function.__wrapped__.__name__ == function.__name__, function.__name__


def _file_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges where this process maps the file `path` (Linux); other tests' models may
    map files of the same name, so the whole path is matched."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(" " + str(path.resolve())):
            start, end = line.split()[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc")
def test_owning_parameters_lets_go_of_the_weights_file_and_keeps_every_value(tmp_path):
    """A safetensors load reads weights straight from the mapped file; after quantisation only
    the embeddings and norms point there, yet they keep every page read counted (lesson 06's
    peak in a 2 GB session). `own_parameters` copies them so the mapping goes."""
    from transformers import AutoModelForCausalLM

    from tutorial_lib.memory.machine import own_parameters
    from tutorial_lib.models import tiny_model

    tiny_model(seed=0)[0].save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, use_safetensors=True
    )
    weights = tmp_path / "model.safetensors"
    mapped = _file_ranges(weights)

    def in_file() -> list[str]:
        return [
            name
            for name, p in model.named_parameters()
            if any(a <= p.data_ptr() < b for a, b in mapped)
        ]

    assert mapped and in_file(), "the load maps the file (else this test shows nothing)"
    values = {name: p.detach().clone() for name, p in model.named_parameters()}
    copied = own_parameters(model)
    assert in_file() == [] and _file_ranges(weights) == []
    assert copied == sum(v.numel() * v.element_size() for v in values.values())
    assert all(torch.equal(values[name], p) for name, p in model.named_parameters())
