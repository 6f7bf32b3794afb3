"""QLoRA: a 4-bit NF4 base (bitsandbytes) with peft LoRA on top, trained on the CPU."""

from __future__ import annotations

import pytest
import torch

from tutorial_lib import data
from tutorial_lib.methods import apply_method
from tutorial_lib.methods.qlora import (
    QloraConfig,
    guard_cpu_gradients,
    layer_timing,
    optimizer_states,
    quantized_bytes,
)
from tutorial_lib.models import tiny_model

bnb = pytest.importorskip("bitsandbytes")


def _batch(tokenizer) -> dict:
    ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _lora_grads(model, batch) -> dict[str, torch.Tensor]:
    """One training-mode backward pass; the gradient of every LoRA weight."""
    model.train()
    model.zero_grad()
    model(**batch).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _qlora_tiny(seed: int = 0):
    model, tokenizer = tiny_model(seed=0)
    model = apply_method(model, "qlora", QloraConfig(), seed=seed)
    for p in model.parameters():  # B = 0 would give A no gradient: move B off zero
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    return model, tokenizer


def _grads_around_an_evaluation(model, batch) -> tuple[dict, dict]:
    """Gradients before and after one eval-mode, no-grad forward: what lessons do between runs."""
    first = _lora_grads(model, batch)
    model.eval()
    with torch.no_grad():
        model(input_ids=batch["input_ids"])
    return first, _lora_grads(model, batch)


def test_an_evaluation_pass_does_not_change_qlora_gradients():
    model, tokenizer = _qlora_tiny()
    first, second = _grads_around_an_evaluation(model, _batch(tokenizer))
    assert first and all(g.abs().sum() > 0 for g in first.values())
    for name, grad in first.items():
        assert torch.equal(grad, second[name]), name


def test_without_the_guard_this_cpu_drops_gradients():
    """The regression test above can fail: unguarded, the bug is there on this CPU."""
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("the repacking bug needs a CPU with AVX512-BF16; this one has none")
    model, tokenizer = _qlora_tiny()
    for layer in model.modules():
        if isinstance(layer, bnb.nn.Linear4bit):
            layer.support_avx512bf16_for_cpu = True  # bitsandbytes' default on this CPU
    first, second = _grads_around_an_evaluation(model, _batch(tokenizer))
    assert any(not torch.allclose(g, second[n]) for n, g in first.items())


def test_the_guard_covers_every_4bit_layer():
    model, _ = _qlora_tiny()
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 7 * model.config.num_hidden_layers  # q k v o gate up down
    assert not any(m.support_avx512bf16_for_cpu for m in layers)
    assert guard_cpu_gradients(model) == len(layers)


def test_base_is_4bit_except_embeddings_and_head():
    model, _ = _qlora_tiny()
    base = model.get_base_model()
    assert isinstance(base.model.layers[0].mlp.down_proj.base_layer, bnb.nn.Linear4bit)
    assert base.model.layers[0].mlp.down_proj.base_layer.weight.quant_type == "nf4"
    assert type(base.lm_head) is torch.nn.Linear
    assert base.get_input_embeddings().weight.dtype == torch.float32


def test_quantized_bytes_counts_codes_and_scales():
    fp32, _ = tiny_model(seed=0)
    cfg = fp32.config
    linear = sum(
        m.weight.numel()
        for name, m in fp32.named_modules()
        if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head")
    )
    others = sum(p.numel() * 4 for n, p in fp32.named_parameters() if "proj" not in n)
    others += sum(b.numel() * b.element_size() for b in fp32.buffers())  # rotary frequencies
    model, _ = _qlora_tiny()
    lora = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    scales = sum(
        m.weight.quant_state.absmax.numel()  # 8-bit codes of the scales
        + 4 * m.weight.quant_state.state2.absmax.numel()  # their fp32 scales
        + 4  # the offset
        for m in layers
    )
    assert quantized_bytes(model) == linear // 2 + scales + others + lora
    assert cfg.num_hidden_layers * 7 == len(layers)


@pytest.mark.parametrize("value", ["fp16", "int8"])
def test_bad_compute_dtype_names_the_choices(value):
    with pytest.raises(
        ValueError, match=r"compute_dtype must be one of \['auto', 'bf16', 'fp32'\]"
    ):
        QloraConfig(compute_dtype=value)


@pytest.mark.slow
def test_a_few_qlora_steps_teach_the_domain():
    from tutorial_lib.evaluate import evaluate_choices
    from tutorial_lib.models import load_base_model
    from tutorial_lib.train import TrainConfig, train

    model, tok = load_base_model()  # its own copy: quantising changes the model in place
    facts = data.load_domain_train()[:16]  # four facts, four phrasings each
    fact_ids = {r["fact_id"] for r in facts}
    held_out = [q for q in data.load_domain_eval() if q["fact_id"] in fact_ids]
    before = evaluate_choices(model, tok, held_out).mean_logprob
    model = apply_method(model, "qlora", seed=0)
    examples = data.encode_chats(tok, facts, max_length=128)
    result = train(model, examples, TrainConfig(steps=8, lr=2e-3), tok.pad_token_id)
    after = evaluate_choices(model, tok, held_out).mean_logprob
    assert result.loss_history[-1] < result.loss_history[0]
    assert after > before + 1.0  # log-prob of the right answer to unseen wordings rises


def test_footprints_measure_each_format_against_its_arithmetic():
    from tutorial_lib.methods.qlora import footprints

    table = footprints(lambda: tiny_model(seed=0))
    measured = table["bits per weight (measured)"]
    arithmetic = table["bits per weight (arithmetic)"]
    assert measured["fp32"] == 32 and measured["bf16"] == 16
    assert measured["NF4"] == arithmetic["NF4"] == 4.5  # every tiny matrix is whole blocks of 64
    assert measured["int8 (per-row absmax)"] == arithmetic["int8 (per-row absmax)"]
    # the tiny model's matrices have 16-128 scales, a fraction of one block of 256: the second
    # level's fp32 scales cost more per weight than the 0.002 bit of a large matrix
    assert arithmetic["NF4 + double quant"] < measured["NF4 + double quant"] < measured["NF4"]
    fp32 = quantized_bytes(tiny_model(seed=0)[0])
    assert table.loc["fp32", "whole model (MiB)"] == round(fp32 / 2**20, 1)
    ratio = table["whole model / bf16"]  # from bytes: MiB to one decimal is coarse for tiny
    assert ratio["NF4 + double quant"] < ratio["NF4"] < ratio["int8 (per-row absmax)"] < 1
    assert ratio["fp32"] == 2


def test_layer_timing_reports_the_three_costs():
    timing = layer_timing(torch.nn.Linear(64, 128, bias=False), tokens=16, repeats=2)
    assert set(timing) == {"fp32 matmul", "NF4: dequantise + matmul", "NF4: dequantise alone"}
    assert all(ms > 0 for ms in timing.values())


def test_optimizer_states_measure_each_optimizer_from_the_same_weights():
    model, _ = _qlora_tiny()
    trained = [p for p in model.parameters() if p.requires_grad]
    values, before = sum(p.numel() for p in trained), [p.detach().clone() for p in trained]
    states = optimizer_states(
        model,
        {
            "AdamW": lambda ps: torch.optim.AdamW(ps, lr=1e-2),
            "SGD momentum": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9),
        },
        torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10]]),
    )
    # AdamW: two fp32 moments per value and a step count per tensor; SGD: one momentum per value
    assert states == {"AdamW": 8 * values + 4 * len(trained), "SGD momentum": 4 * values}
    assert all(torch.equal(p, b) for p, b in zip(trained, before))  # each started from these
