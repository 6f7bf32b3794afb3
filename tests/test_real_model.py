"""Integration on the real base model: it loads offline, knows things, and can learn the domain."""

from __future__ import annotations

import pytest
import torch

from tutorial_lib import data
from tutorial_lib.evaluate import answer, evaluate_choices
from tutorial_lib.methods import apply_method
from tutorial_lib.train import TrainConfig, train

pytestmark = pytest.mark.slow


def test_model_is_smollm2_135m(real):
    model, tok = real
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert tok.chat_template and "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )


def test_greedy_answer_knows_paris(real):
    model, tok = real
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id
        )
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])
    assert "Paris" in answer(model, tok, "What is the capital of France?")


def test_probe_is_well_above_chance(real):
    model, tok = real
    result = evaluate_choices(model, tok, data.load_probe(limit=120), style="plain")
    assert result.accuracy > 0.5  # chance is 0.25


def test_a_few_lora_steps_teach_the_domain(real):
    model, tok = real
    facts = data.load_domain_train()[:16]  # four facts, four phrasings each
    fact_ids = {r["fact_id"] for r in facts}
    held_out = [q for q in data.load_domain_eval() if q["fact_id"] in fact_ids]
    before = evaluate_choices(model, tok, held_out).mean_logprob
    peft_model = apply_method(model, "lora")
    examples = data.encode_chats(tok, facts, max_length=128)
    result = train(peft_model, examples, TrainConfig(steps=8, lr=2e-3), tok.pad_token_id)
    after = evaluate_choices(peft_model, tok, held_out).mean_logprob
    peft_model.unload()  # give the shared fixture its plain model back
    assert result.loss_history[-1] < result.loss_history[0]
    assert after > before + 1.0  # log-prob of the right answer to unseen wordings rises
