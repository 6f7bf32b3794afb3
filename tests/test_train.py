"""The training loop: it learns, it is reproducible, it stops cleanly, it refuses nonsense."""

from __future__ import annotations

import pytest
import torch

from tutorial_lib.methods import apply_method
from tutorial_lib.train import TrainConfig, lr_lambda, train


def _run(tiny, examples, **overrides):
    model, tok = tiny
    model = apply_method(model, overrides.pop("method", "full"))
    config = TrainConfig(**{"steps": 8, "batch_size": 8, "lr": 3e-3, **overrides})
    return model, train(model, examples, config, tok.pad_token_id)


def test_full_training_lowers_the_loss(tiny, tiny_examples):
    _, result = _run(tiny, tiny_examples, steps=15)
    assert result.steps_done == 15 and len(result.loss_history) == 15
    assert sum(result.loss_history[-3:]) / 3 < result.loss_history[0] - 0.5
    assert result.trainable_params == result.total_params
    assert result.peak_memory_bytes > 0
    # tokens/s counts the real (unpadded) tokens of the 15 x 8 examples trained on, over the time
    lengths = [len(ex["input_ids"]) for ex in tiny_examples]
    tokens = round(result.tokens_per_sec * result.seconds)
    assert 15 * 8 * min(lengths) <= tokens <= 15 * 8 * max(lengths) and min(lengths) < max(lengths)


def test_same_seed_same_losses_and_scores(corpus, tiny_examples):
    from tutorial_lib import data
    from tutorial_lib.evaluate import evaluate_choices
    from tutorial_lib.models import tiny_model

    items = data.load_domain_eval(facts=6)
    runs = []
    for seed in (3, 3, 4):
        model, tok = tiny_model(corpus=corpus)
        model, result = _run((model, tok), tiny_examples, seed=seed)
        runs.append((result.loss_history, evaluate_choices(model, tok, items).correct_logprobs))
    assert runs[0] == runs[1]  # bit for bit on CPU
    assert runs[0][0] != runs[2][0]  # and the seed does matter


def test_adamw_state_is_two_moments_per_trained_value(tiny, tiny_examples):
    model, result = _run(tiny, tiny_examples, steps=2, method="lora")
    n_tensors = sum(1 for p in model.parameters() if p.requires_grad)
    # exp_avg and exp_avg_sq in fp32, plus one scalar `step` tensor per parameter tensor
    assert result.optimizer_state_bytes == 8 * result.trainable_params + 4 * n_tensors


def test_gradient_accumulation_trains(tiny, tiny_examples):
    _, result = _run(tiny, tiny_examples, steps=10, grad_accum=4)
    assert result.loss_history[-1] < result.loss_history[0]


def test_bf16_autocast_runs_and_stays_close_to_fp32(corpus, tiny_examples):
    from tutorial_lib.models import tiny_model

    fp32 = _run(tiny_model(corpus=corpus), tiny_examples, steps=3)[1].loss_history
    bf16 = _run(tiny_model(corpus=corpus), tiny_examples, steps=3, bf16=True)[1].loss_history
    assert bf16[0] == pytest.approx(fp32[0], rel=0.02)


def test_ctrl_c_keeps_what_was_trained(tiny, tiny_examples):
    model, tok = tiny
    model = apply_method(model, "full")
    calls = {"n": 0}
    original = model.forward

    def forward_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    model.forward = forward_then_interrupt
    before = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    result = train(model, tiny_examples, TrainConfig(steps=10, lr=1e-3), tok.pad_token_id)
    assert result.interrupted and result.steps_done == 3 and len(result.loss_history) == 3
    assert not torch.equal(before, model.model.layers[0].mlp.up_proj.weight)


def test_on_step_sees_every_step_and_the_model_it_trains(tiny, tiny_examples):
    model, tokenizer = tiny
    seen = []
    config = TrainConfig(steps=3, batch_size=4, lr=1e-3)
    train(
        model,
        tiny_examples,
        config,
        tokenizer.pad_token_id,
        on_step=lambda s, m: seen.append((s, m)),
    )
    assert [s for s, _ in seen] == [1, 2, 3] and all(m is model for _, m in seen)


def test_nan_loss_stops_with_the_step(tiny, tiny_examples):
    model, tok = tiny
    model = apply_method(model, "full")
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="at step 0"):
        train(model, tiny_examples, TrainConfig(steps=3), tok.pad_token_id)


def test_nothing_to_train_is_an_error(tiny, tiny_examples):
    model, tok = tiny
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter requires grad"):
        train(model, tiny_examples, TrainConfig(steps=1), tok.pad_token_id)


@pytest.mark.parametrize(
    "bad",
    [
        dict(steps=0),
        dict(lr=-1e-3),
        dict(lr=float("nan")),
        dict(batch_size=6, grad_accum=4),
        dict(max_grad_norm=-1),
    ],
)
def test_bad_config_is_rejected_before_training(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_schedule_warms_up_then_decays():
    lrs = [lr_lambda(s, warmup=4, total=20) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] >= 0.1


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", ["full", "lora"])
def test_labelled_only_loss_equals_the_models_loss(tiny, tiny_examples, method):
    from functools import partial

    from tutorial_lib.data import collate
    from tutorial_lib.train import NextTokenLoss

    model, tok = tiny
    model = apply_method(model, method)
    batch = partial(collate, pad_id=tok.pad_token_id)(tiny_examples[:8])
    assert (batch["labels"] == -100).float().mean() > 0.3  # prompts and padding: work to skip
    reference = model(**batch).loss
    reference.backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    loss_fn = NextTokenLoss()
    loss = loss_fn(model, batch)
    loss.backward()
    assert loss_fn.labelled_only  # the fast path ran, not the fallback
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    got = _grads(model)
    assert got.keys() == expected.keys() and len(got) > 0
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_model_without_logits_to_keep_gets_the_plain_loss(tiny, tiny_examples):
    from functools import partial

    from tutorial_lib.data import collate
    from tutorial_lib.train import NextTokenLoss

    model, tok = tiny
    batch = partial(collate, pad_id=tok.pad_token_id)(tiny_examples[:4])

    class Plain(torch.nn.Module):  # a forward with no logits_to_keep argument
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, labels=None):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    loss_fn = NextTokenLoss()
    loss = loss_fn(Plain(model), batch)
    assert not loss_fn.labelled_only
    assert loss.item() == pytest.approx(model(**batch).loss.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("device", "flags", "fast"),
    [
        ("cpu", {"avx2", "avx512f", "avx512_bf16"}, True),  # x86 with AVX512-BF16
        ("cpu", {"avx2", "amx_bf16", "amx_tile"}, True),  # x86 with AMX
        ("cpu", {"fp", "asimd", "bf16"}, True),  # Arm with BF16
        ("cpu", {"avx2", "avx512f"}, False),  # bf16 would be emulated: slower than fp32
        ("cpu", set(), False),  # no /proc/cpuinfo (macOS, Windows)
        ("mps", {"avx512_bf16"}, False),
    ],
)
def test_fast_bf16_reads_the_cpus_instructions(device, flags, fast, monkeypatch):
    from tutorial_lib import device as dev

    monkeypatch.setattr(dev, "_cpu_flags", lambda: flags)
    assert dev.fast_bf16(torch.device(device)) is fast


def test_cpu_flags_come_from_cpuinfo(tmp_path, monkeypatch):
    from tutorial_lib import device as dev

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16\nbugs\t\t: spectre\n")
    monkeypatch.setattr(dev, "Path", lambda _: info)
    assert dev._cpu_flags() == {"fpu", "sse2", "avx512_bf16"}
