"""Additive methods: our adapter, soft prompt and added biases, and peft's prompt/prefix/(IA)^3."""

from __future__ import annotations

import peft
import pytest
import torch
import transformers

from tutorial_lib.data import collate
from tutorial_lib.methods import apply_method, get_method
from tutorial_lib.methods.additive import AdapterConfig, IA3MethodConfig, WithAdapter, WithBias
from tutorial_lib.methods.prompts import PromptConfig, SoftPromptModel, prompt_init
from tutorial_lib.models import tiny_model
from tutorial_lib.scoring import score_choices, score_continuations
from tutorial_lib.train import _labelled_only_loss

VERSIONS = f"peft {peft.__version__}, transformers {transformers.__version__}"


def _batch(tokenizer, examples, n: int = 4) -> dict[str, torch.Tensor]:
    """A right-padded batch of chats of different lengths (padding is part of what is tested)."""
    return collate(examples[:n], tokenizer.pad_token_id)


def _trainable_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- adapters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(placement="after"), r"placement must be one of \['houlsby', 'pfeiffer'\]"),
        (dict(bottleneck=0), "bottleneck must be a positive integer"),
    ],
)
def test_bad_adapter_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(**kwargs)


def test_houlsby_adapts_attention_and_mlp_and_trains(tiny, tiny_examples):
    model, tok = tiny
    pfeiffer = _trainable_count(apply_method(tiny[0].__class__(model.config), "adapter"))
    model = apply_method(model, "adapter", AdapterConfig(placement="houlsby"))
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn, WithAdapter) and isinstance(layer.mlp, WithAdapter)
    assert _trainable_count(model) == 2 * pfeiffer  # one adapter after each of two sub-layers
    model(**_batch(tok, tiny_examples)).loss.backward()  # attention returns a tuple: handled
    assert layer.self_attn.adapter.up.weight.grad.abs().sum() > 0  # up gets a gradient at init


# --- soft prompts -------------------------------------------------------------------------------


def _scratch_and_peft(tiny) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Our soft prompt and peft's, on two copies of the base, from the same initial values."""
    model, tok = tiny
    config = PromptConfig(num_virtual_tokens=5, tokenizer=tok)
    twin = model.__class__(model.config)
    twin.load_state_dict(model.state_dict())
    scratch = apply_method(model, "prompt-scratch", config)
    peft_model = apply_method(twin, "prompt-tuning", config)
    return scratch, peft_model


def test_scratch_prompt_gives_peft_logits_loss_and_gradients(tiny, tiny_examples):
    scratch, peft_model = _scratch_and_peft(tiny)
    peft_prompt = peft_model.prompt_encoder["default"].embedding.weight
    assert torch.equal(scratch.prompt, peft_prompt)  # same start
    batch = _batch(tiny[1], tiny_examples)
    ours, theirs = scratch(**batch), peft_model(**batch)
    assert torch.allclose(ours.logits, theirs.logits, atol=1e-5)  # real tokens only, both
    assert torch.allclose(ours.loss, theirs.loss, atol=1e-5)
    ours.loss.backward()
    theirs.loss.backward()
    assert scratch.prompt.grad.abs().sum() > 0
    assert torch.allclose(scratch.prompt.grad, peft_prompt.grad, atol=1e-5)


def test_scratch_prompt_labelled_only_loss_lines_up(tiny, tiny_examples):
    model, tok = tiny
    scratch = apply_method(model, "prompt-scratch", PromptConfig(tokenizer=tok))
    batch = _batch(tok, tiny_examples)
    assert (batch["labels"][:, 0] == -100).all()  # the one position the two losses could differ
    fast = _labelled_only_loss(scratch, batch)
    assert fast is not None, "prompt-scratch should support labelled-only logits"
    assert torch.allclose(fast, scratch(**batch).loss, atol=1e-5)


def _one_forward_logprob(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context) from one unbatched, uncached forward over the real tokens."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([whole])).logits[0, -len(whole) :]  # real tokens
    logp = torch.log_softmax(logits.float(), -1)
    return sum(logp[t - 1, whole[t]].item() for t in range(len(ctx), len(whole)))


GROUPS = [("Question: What is up?\nAnswer:", [" The sky", " A bird"]), ("Hello", [" world"])]
PAIRS = [(c, x) for c, xs in GROUPS for x in xs]


def _prompted(name: str, tiny):
    model, tok = tiny
    config = PromptConfig(tokenizer=tok) if name.startswith("prompt") else None
    return apply_method(model, name, config), tok


@pytest.mark.parametrize("name", ["prompt-scratch", "prompt-tuning", "prefix-tuning"])
def test_prompt_methods_score_as_one_plain_forward(name, tiny):
    model, tok = _prompted(name, tiny)
    naive = [lp for lp, _ in score_continuations(model, tok, PAIRS, batch_size=3)]
    manual = [_one_forward_logprob(model, tok, c, x) for c, x in PAIRS]
    assert naive == pytest.approx(manual, abs=1e-4)  # a right-padded batch


@pytest.mark.parametrize(
    "name",
    [
        "prompt-scratch",
        "prefix-tuning",
        "prompt-tuning",
    ],
)
def test_prompt_methods_score_the_same_through_the_shared_cache(name, tiny):
    model, tok = _prompted(name, tiny)
    shared = [lp for group in score_choices(model, tok, GROUPS, batch_size=2) for lp, _ in group]
    manual = [_one_forward_logprob(model, tok, c, x) for c, x in PAIRS]
    assert shared == pytest.approx(manual, abs=1e-4)  # left-padded contexts, then a kv cache


def test_prompt_init_text_is_the_texts_token_embeddings(tiny):
    model, tok = tiny
    config = PromptConfig(num_virtual_tokens=20, init_text="kettle", tokenizer=tok)
    ids = tok("kettle", add_special_tokens=False)["input_ids"]
    init = prompt_init(model, config)
    table = model.get_input_embeddings().weight
    assert init.shape == (20, model.config.hidden_size)
    assert torch.equal(init[: len(ids)], table[ids]) and torch.equal(init[len(ids)], table[ids[0]])


def test_prompt_init_text_without_a_tokenizer_says_what_to_pass(tiny):
    with pytest.raises(ValueError, match=r"PromptConfig\(tokenizer=...\).*init_text=None"):
        apply_method(tiny[0], "prompt-scratch", PromptConfig())


def test_prompt_from_random_words_needs_no_tokenizer(tiny, corpus):
    table = tiny[0].get_input_embeddings().weight.detach().clone()
    model = apply_method(tiny[0], "prompt-scratch", PromptConfig(init_text=None), seed=3)
    assert isinstance(model, SoftPromptModel) and model.prompt.shape == (8, 64)
    is_word = (model.prompt.detach()[:, None, :] == table[None]).all(-1)  # (8, vocabulary)
    assert is_word.any(1).all()  # every virtual token starts as a real word, not noise
    assert len({tuple(row) for row in model.prompt.detach().tolist()}) > 1  # not one word
    for seed, same in ((3, True), (4, False)):  # the seed, not the process, picks the words
        fresh = tiny_model(0, corpus=corpus)[0]
        other = apply_method(fresh, "prompt-scratch", PromptConfig(init_text=None), seed=seed)
        assert torch.equal(other.prompt, model.prompt) is same


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(num_virtual_tokens=0), "num_virtual_tokens"), (dict(init_text="  "), "init_text")],
)
def test_bad_prompt_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PromptConfig(**kwargs)


# --- prefix tuning: it broke as transformers changed its cache classes (peft #2662, #2821) ------


def test_peft_prefix_tuning_trains_with_the_installed_versions(tiny, tiny_examples):
    model, tok = tiny
    model = apply_method(model, "prefix-tuning")
    prefix = model.prompt_encoder["default"].embedding.weight
    optimizer = torch.optim.AdamW([prefix], lr=1e-2)
    batch = _batch(tok, tiny_examples)
    model.train()
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        loss.backward()
        assert prefix.grad is not None and prefix.grad.abs().sum() > 0, VERSIONS
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], f"prefix tuning did not learn with {VERSIONS}: {losses}"


# --- (IA)^3 and added biases --------------------------------------------------------------------


def test_ia3_feedforward_modules_must_be_targets():
    with pytest.raises(ValueError, match=r"\['down_proj'\] are not in target_modules"):
        IA3MethodConfig(target_modules=["k_proj"], feedforward_modules=["down_proj"])


def test_bias_added_wraps_every_block_linear_and_says_it_is_additive(tiny):
    spec = get_method("bias-added")
    assert spec.family == "additive" and "ADDITIVE, not selective" in spec.description
    model = apply_method(tiny[0], "bias-added")
    wrapped = [n for n, m in model.named_modules() if isinstance(m, WithBias)]
    assert len(wrapped) == 7 * model.config.num_hidden_layers  # q k v o gate up down
    assert not isinstance(model.lm_head, WithBias)  # a vocabulary-sized bias would cost 49k
