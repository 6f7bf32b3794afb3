"""The practitioner's peft + Trainer code agrees with the library's apply_method + train.

Tolerances (`agreement.FIRST_STEP_RTOL`, `AFTER_UPDATE_RTOL`): 1e-5 relative on the first
step's loss (before any update) and on the second step's (after one update, same batch);
measured gaps on the tiny model are below 2e-7 for every method.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tutorial_lib import agreement as agreement_mod
from tutorial_lib import data, practitioner
from tutorial_lib.agreement import (
    AFTER_UPDATE_RTOL,
    FIRST_STEP_RTOL,
    agreement,
    agreement_table,
    first_batch,
)
from tutorial_lib.chat import collate
from tutorial_lib.models import CACHE_ENV, tiny_model
from tutorial_lib.train import lr_lambda


def _bitsandbytes_cpu() -> bool:
    """Whether bitsandbytes imports and runs a 4-bit layer forward here."""
    try:
        from tutorial_lib.quant import quiet_bitsandbytes

        bnb = quiet_bitsandbytes()
        layer = bnb.nn.Linear4bit(8, 8, bias=False, quant_type="nf4").to("cpu")
        layer(torch.randn(2, 8))
    except Exception:  # noqa: BLE001 - any failure means: no 4-bit on this machine
        return False
    return True


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: a second buys nothing on the tiny model, and under load the two spin against
    each other (the real-model check took 47 s on two threads, 16 s on one, on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


needs_bnb = pytest.mark.skipif(not _bitsandbytes_cpu(), reason="bitsandbytes 4-bit unavailable")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, corpus) -> str:
    """The tiny llama saved as a model folder: both paths load it by name, as the real one."""
    model, tokenizer = tiny_model(seed=0, corpus=corpus)
    folder = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def agreed(tiny_dir, tmp_path_factory):
    """`agreed(method)`: the method's two-step agreement on the tiny model, computed once."""
    cache: dict[str, agreement_mod.Agreement] = {}
    four_bit_cache = tmp_path_factory.mktemp("cache")

    def get(method: str) -> agreement_mod.Agreement:
        if method not in cache:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv(CACHE_ENV, str(four_bit_cache))  # QLoRA's 4-bit copy goes here,
                cache[method] = agreement(method, tiny_dir, steps=2)  # not the user's cache
        return cache[method]

    return get


def _multi_turn() -> dict:
    first, second = data.load_domain_train()[:2]
    return {"id": "two-turns", "messages": first["messages"] + second["messages"]}


def test_chat_dataset_builds_the_library_s_ids_and_labels(tiny):
    _, tokenizer = tiny
    rows = data.load_domain_train()[:6] + [_multi_turn()]
    ours = practitioner.chat_dataset(tokenizer, rows, max_length=512)
    assert ours == data.encode_chats(tokenizer, rows, max_length=512)
    text = tokenizer.decode(ours[0]["input_ids"])
    assert data.system_prompt() in text  # the deployment's prompt, not the template's default
    trained = [t for t, lab in zip(ours[-1]["input_ids"], ours[-1]["labels"]) if lab != -100]
    replies = [m["content"] for m in rows[-1]["messages"] if m["role"] == "assistant"]
    decoded = tokenizer.decode(trained)
    assert all(reply in decoded for reply in replies)  # both replies of the two-turn chat
    assert rows[-1]["messages"][0]["content"] not in decoded  # and no user turn


def test_chat_dataset_refuses_an_over_long_chat(tiny):
    _, tokenizer = tiny
    with pytest.raises(ValueError, match="max_length=8"):
        practitioner.chat_dataset(tokenizer, data.load_domain_train()[:1], max_length=8)


def test_the_collator_pads_as_the_library_does(tiny):
    _, tokenizer = tiny
    features = practitioner.chat_dataset(tokenizer, data.load_domain_train()[:3])
    ours = practitioner.collator(tokenizer)([dict(f) for f in features])
    theirs = collate(features, tokenizer.pad_token_id)
    for key in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize("total", [1, 2, 28, 330])
def test_the_schedule_is_the_library_s(total):
    warmup = max(1, total // 10)
    ours = [practitioner.warmup_then_decay(s, warmup, total) for s in range(total)]
    assert ours == [lr_lambda(s, warmup, total) for s in range(total)]


def test_trainer_s_built_in_schedule_differs_only_in_its_warm_up(tmp_path):
    """Why `train_with_trainer` passes its own schedule: the nearest built-in starts lower."""
    model = torch.nn.Linear(2, 2)
    args = practitioner.training_arguments(str(tmp_path), steps=30, lr=1.0)
    from transformers import Trainer

    trainer = Trainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=30)
    built_in = [trainer.lr_scheduler.lr_lambdas[0](s) for s in range(30)]
    library = [lr_lambda(s, 3, 30) for s in range(30)]
    assert built_in[0] != pytest.approx(library[0])  # warm-up: 0.1 vs 1/3 at step 0
    assert built_in[3:] == pytest.approx(library[3:])  # decay: the same line down to 10 %


@pytest.mark.parametrize(
    "method",
    [
        m if m != "qlora" else pytest.param(m, marks=needs_bnb)
        for m in practitioner.PRACTITIONER_METHODS
    ],
)
def test_both_paths_train_the_same_weights_from_the_same_loss(method, agreed):
    result = agreed(method)
    assert result.library_trainable == result.peft_trainable > 0
    assert len(result.library_losses) == len(result.peft_losses) == 2
    assert result.first_step_gap <= FIRST_STEP_RTOL
    assert result.after_update_gap <= AFTER_UPDATE_RTOL
    assert result.library_losses[1] < result.library_losses[0]  # the update did something
    assert result.agrees


def test_an_unseeded_start_would_be_caught(tiny_dir, agreed):
    """The check has teeth: LoRA's A drawn with another seed gives another second step."""
    seeded = agreed("lora")
    run = ("lora", tiny_dir, first_batch(), 2, seeded.lr, 1, 128, torch.float32)
    other = agreement_mod._peft_run(*run)[1]  # seed 1 instead of 0
    assert other[0] == pytest.approx(seeded.library_losses[0], rel=FIRST_STEP_RTOL)  # B = 0
    assert abs(other[1] - seeded.library_losses[1]) / other[1] > AFTER_UPDATE_RTOL


def test_the_agreement_table_has_one_row_per_method(tiny_dir):
    table = agreement_table([agreement("ia3", tiny_dir, steps=1)])
    assert list(table.index) == ["ia3"]
    assert table.loc["ia3", "agree"]
    assert table.loc["ia3", "step-2 relative gap"] == "nan"


def test_unknown_methods_are_named(tiny_dir):
    with pytest.raises(ValueError, match="allowed: lora"):
        practitioner.peft_config("lorra")
    with pytest.raises(ValueError, match="allowed: lora"):
        agreement("lorra", tiny_dir)


@needs_bnb
def test_the_guard_line_keeps_qlora_gradients_through_an_evaluation(
    tiny_dir, tmp_path, monkeypatch
):
    import bitsandbytes as bnb

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))  # the saved 4-bit copy goes here
    model, tokenizer = practitioner.qlora_model(tiny_dir)
    four_bit = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit and not any(m.support_avx512bf16_for_cpu for m in four_bit)
    batch = practitioner.collator(tokenizer)(
        practitioner.chat_dataset(tokenizer, data.load_domain_train()[:2])
    )
    for p in model.parameters():  # B = 0 would give A no gradient: move B off zero
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)

    def grads() -> list[torch.Tensor]:
        model.train()
        model.zero_grad()
        model(**batch).loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    before = grads()
    model.eval()
    with torch.no_grad():
        model(input_ids=batch["input_ids"])
    after = grads()
    assert all(torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.slow
def test_lora_agrees_on_the_real_model():
    """One step: the counts and the first loss on SmolLM2 itself."""
    result = agreement("lora", steps=1)
    assert result.library_trainable == result.peft_trainable == 2_442_240
    assert result.first_step_gap <= FIRST_STEP_RTOL
    assert math.isfinite(result.library_losses[0])


def test_full_fine_tuning_is_the_plain_model_every_weight_trained(tiny_dir):
    model, _ = practitioner.peft_model("full", tiny_dir)
    assert not hasattr(model, "peft_config")  # no peft wrapper: transformers' model as loaded
    every = sum(p.numel() for p in model.parameters())  # a tied matrix once
    assert practitioner.trainable_count(model) == every
    model.lm_head.weight.requires_grad_(False)
    assert practitioner.trainable_count(model) < every


def test_top_layers_by_hand_trains_what_the_library_trains(tiny_dir):
    """No peft: freeze everything, unfreeze the last k blocks and the final norm, by name the
    same tensors as the library's `top-layers` (whose default k it shares)."""
    from tutorial_lib.methods import apply_method
    from tutorial_lib.methods.selective import TopLayersConfig
    from tutorial_lib.models import load_base_model

    def trained(model) -> set[str]:
        return {n for n, p in model.named_parameters() if p.requires_grad}

    by_hand, _ = practitioner.peft_model("top-layers", tiny_dir)
    k = TopLayersConfig().k
    library = apply_method(load_base_model(tiny_dir)[0], "top-layers", TopLayersConfig(k=k))
    assert trained(by_hand) == trained(library)
    assert "model.norm.weight" in trained(by_hand)
    assert not by_hand.get_input_embeddings().weight.requires_grad  # nor the tied head
    one, _ = practitioner.top_layers_model(tiny_dir, k=1)
    last = len(one.model.layers) - 1
    assert all(
        n.startswith(f"model.layers.{last}.") or n == "model.norm.weight" for n in trained(one)
    )


def test_loading_shows_no_per_tensor_progress_bar_and_leaves_the_setting_as_it_was(tiny_dir, capfd):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    model, _ = practitioner.load_model(str(tiny_dir))
    assert model is not None and "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()


def test_trainer_hands_freed_memory_back_after_every_step_and_changes_no_loss(
    tiny_dir, tmp_path, monkeypatch
):
    """Lesson 08 fits a 2 GB Binder session because `train_with_trainer` trims the allocator
    after each step; the trim must not touch the training itself."""
    from transformers import Trainer

    from tutorial_lib.memory import machine

    def train(callbacks: bool) -> list[float]:
        model, tokenizer = practitioner.peft_model("lora", tiny_dir, seed=0)
        dataset = practitioner.chat_dataset(tokenizer, data.load_domain_train(facts=1)[:2])
        args = practitioner.training_arguments(str(tmp_path), steps=3, lr=1e-3, batch_size=2)
        if callbacks:
            return practitioner.train_with_trainer(model, tokenizer, dataset, args)
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=practitioner.collator(tokenizer),
            optimizers=practitioner.library_optimizers(model, args),
        )
        trainer.train()
        return [log["loss"] for log in trainer.state.log_history if "loss" in log]

    calls = []
    real = machine.release_memory
    monkeypatch.setattr(
        machine, "release_memory", lambda collect=True: calls.append(collect) or real(collect)
    )
    trimmed = train(callbacks=True)
    assert calls == [True, False, False, False, True]  # before, after each of 3 steps, after
    assert trimmed == train(callbacks=False)


@needs_bnb
def test_a_saved_4bit_base_loads_the_same_weights_and_is_rebuilt_when_it_does_not_match(
    tiny_dir, tmp_path, monkeypatch
):
    import bitsandbytes as bnb

    from tutorial_lib import four_bit

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    folder = four_bit.saved_four_bit(tiny_dir)
    assert folder.parent == tmp_path / "four-bit" and (folder / "model.safetensors").is_file()
    assert four_bit.saved_four_bit(tiny_dir) == folder  # reused, not rebuilt
    copy, model = (
        sum(f.stat().st_size for f in Path(d).glob("*.safetensors")) for d in (folder, tiny_dir)
    )
    assert f"copy: {copy / 2**20:.0f} MiB" in four_bit.describe(tiny_dir)
    assert f"instead of the {model / 2**20:.0f} MiB model" in four_bit.describe(tiny_dir)
    saved, _ = practitioner.load_model(str(folder))
    fresh, tokenizer = practitioner.load_model(
        tiny_dir, quantization_config=practitioner.four_bit_config()
    )
    layers = [
        (a, b) for a, b in zip(saved.modules(), fresh.modules()) if isinstance(a, bnb.nn.Linear4bit)
    ]
    assert layers and all(torch.equal(a.weight.data, b.weight.data) for a, b in layers)
    assert all(
        torch.equal(a.weight.quant_state.absmax, b.weight.quant_state.absmax) for a, b in layers
    )
    batch = tokenizer(["a short sentence"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(saved(**batch).logits, fresh(**batch).logits)
    # another compute dtype is another copy; a damaged file is found and the copy rebuilt
    other = four_bit.folder_for(tiny_dir, four_bit.settings(tiny_dir, torch.bfloat16))
    assert other != folder
    (folder / "model.safetensors").write_bytes(b"damaged")
    assert not four_bit.verified(folder, four_bit.settings(tiny_dir))
    assert four_bit.saved_four_bit(tiny_dir) == folder
    assert four_bit.verified(folder, four_bit.settings(tiny_dir))
    with pytest.raises(FileNotFoundError, match="no .safetensors file"):
        four_bit.settings(str(tmp_path / "four-bit"))
