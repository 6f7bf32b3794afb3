"""Shared fixtures: a tiny random llama (seconds, no download) and the real base model (slow)."""

from __future__ import annotations

import copy

import pytest
import torch

from tutorial_lib import data
from tutorial_lib.models import tiny_model


@pytest.fixture(autouse=True)
def _restore_rng():
    """Tests seed freely; restore torch's RNG so test order never changes results."""
    state = torch.random.get_rng_state()
    yield
    torch.random.set_rng_state(state)


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    rows = data.load_domain_train()
    return [m["content"] for r in rows[:120] for m in r["messages"]]


@pytest.fixture
def tiny(corpus):
    """(model, tokenizer): a 2-layer random llama whose tokenizer has a ChatML template."""
    return tiny_model(seed=0, corpus=corpus)


@pytest.fixture
def tiny_folder(tiny, tmp_path) -> str:
    """The tiny model saved as a local model folder, loadable by name like any other model."""
    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    return str(tmp_path / "tiny")


@pytest.fixture
def tiny_biased(tiny):
    """The tiny llama's twin with bias terms on every linear layer (BitFit needs some)."""
    from transformers import LlamaForCausalLM

    model, tokenizer = tiny
    config = copy.deepcopy(model.config)
    config.attention_bias = config.mlp_bias = True
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tokenizer


@pytest.fixture
def tiny_examples(tiny):
    _, tokenizer = tiny
    return data.encode_chats(tokenizer, data.load_domain_train()[:64], max_length=256)


@pytest.fixture(scope="session")
def real():
    """The real base model, loaded once per session (fetched and converted on first use)."""
    from tutorial_lib.models import load_base_model

    torch.set_num_threads(2)
    return load_base_model()
