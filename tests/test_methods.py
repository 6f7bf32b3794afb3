"""One test matrix over every registered method, on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import save_model_folder
from tutorial_lib.checkpoint import load_trainable, save_trainable
from tutorial_lib.evaluate import adapters_disabled
from tutorial_lib.methods import REGISTRY, apply_method, get_method
from tutorial_lib.methods.lora import LoraMethodConfig
from tutorial_lib.methods.prompts import PromptConfig
from tutorial_lib.models import tiny_model
from tutorial_lib.train import TrainConfig, train

METHODS = sorted(REGISTRY)
# These change base weights in place: there is nothing to switch off.
IN_PLACE = {"full", "top-layers", "chosen-layers", "bitfit"}
NOT_IDENTITY_AT_INIT = {"prompt-tuning", "prompt-scratch", "prefix-tuning"}  # see the test
# These store the frozen base in fewer bits: their "off" state is the rounded base, not the base.
QUANTISED_BASE = {"qlora"}
IDS = torch.tensor([[3, 4, 5, 6, 7, 8]])


def _base_for(name, tiny, tiny_biased):
    """The tiny llama, or for BitFit its twin with biases (the plain one has none)."""
    return tiny_biased if name == "bitfit" else tiny


def _prepared(name, model, tokenizer, seed: int | None = None):
    """`model` with method `name` applied; soft prompts get the tokenizer for their init text."""
    soft_prompt = get_method(name).config_cls is PromptConfig
    config = PromptConfig(tokenizer=tokenizer) if soft_prompt else None
    return apply_method(model, name, config, seed=seed)


def _logits(model, ids: torch.Tensor = IDS) -> torch.Tensor:
    """Logits of the real tokens (peft's prompt tuning also returns its virtual ones: cut)."""
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -ids.shape[1] :]


def _perturb_trainables(model, seed: int) -> None:
    """Move every trained weight off its initial value, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def _frozen_snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


@pytest.mark.parametrize("name", METHODS)
def test_method_trains_only_its_parameters(name, tiny, tiny_biased, tiny_examples):
    model, tok = _base_for(name, tiny, tiny_biased)
    model = _prepared(name, model, tok)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = _frozen_snapshot(model)
    assert trainable, "a method must train something"
    result = train(
        model,
        tiny_examples,
        TrainConfig(steps=12, lr=get_method(name).default_lr * 3),
        tok.pad_token_id,
    )
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], t) for n, t in frozen.items()), "a frozen weight moved"
    assert any(not torch.equal(params[n], t) for n, t in trainable.items())
    assert result.loss_history[-1] < result.loss_history[0]


@pytest.mark.parametrize("name", METHODS)
def test_saved_trainables_round_trip(name, tiny, tiny_biased, tmp_path):
    model, tok = _base_for(name, tiny, tiny_biased)
    model = _prepared(name, model, tok)
    size = save_trainable(model, tmp_path / "t.safetensors")
    loaded = load_file(tmp_path / "t.safetensors")
    params = dict(model.named_parameters())
    assert set(loaded) == {n for n, p in params.items() if p.requires_grad}
    assert all(torch.equal(loaded[n], params[n].detach()) for n in loaded)
    assert size > sum(t.numel() * 4 for t in loaded.values())  # fp32 data plus a header


@pytest.mark.parametrize("name", METHODS)
def test_load_trainable_into_a_fresh_base_gives_the_same_outputs(
    name, tiny, tiny_biased, corpus, tmp_path
):
    model, tok = _base_for(name, tiny, tiny_biased)
    trained = _prepared(name, model, tok, seed=0)
    _perturb_trainables(trained, seed=1)
    save_trainable(trained, tmp_path / "t.safetensors")
    fresh = _fresh_biased(tiny_biased) if name == "bitfit" else tiny_model(0, corpus=corpus)[0]
    fresh = _prepared(name, fresh, tok, seed=123)  # another seed: its own initial values
    assert not torch.equal(_logits(fresh), _logits(trained))
    load_trainable(fresh, tmp_path / "t.safetensors")
    assert torch.equal(_logits(fresh), _logits(trained))


def _fresh_biased(tiny_biased):
    """A new instance of the biased tiny llama, built as the fixture builds it."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_biased[0].config).eval()


def test_load_trainable_refuses_another_methods_file(tiny, tmp_path):
    model, tok = tiny
    save_trainable(apply_method(model, "lora"), tmp_path / "lora.safetensors")
    other = apply_method(tiny_model(seed=0)[0], "adapter")  # any other method's names
    with pytest.raises(ValueError, match="does not fit this model.*missing.*unexpected"):
        load_trainable(other, tmp_path / "lora.safetensors")


def _expected_trainable(name: str, model) -> int:
    """Each method's trainable count from its definition (default config), for the tiny llama."""
    c = model.config
    d, i, n_layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    kv = c.num_key_value_heads * (d // c.num_attention_heads)
    out_features = d + kv + kv + d + i + i + d  # q k v o gate up down: one bias each
    layer = sum(p.numel() for p in model.model.layers[-1].parameters())
    lora = n_layers * 8 * sum(d_in + d_out for d_in, d_out in [(d, d), (d, kv), (d, kv), (d, d)])
    lora += n_layers * 8 * ((d + i) * 2 + (i + d))  # r = 8 on q k v o, then gate up down
    b, virtual = 16, 8  # the default bottleneck and soft-prompt / prefix length
    return {
        "full": sum(p.numel() for p in model.parameters()),
        "lora": lora,
        "lora-scratch": lora,
        "qlora": lora,  # the same adapters; the 4-bit base is frozen
        "dora": lora + n_layers * out_features,  # plus a magnitude per output of every target
        "adapter": n_layers * (d * b + b + b * d + d),  # pfeiffer: one adapter per block
        "bias-added": n_layers * out_features,
        "bitfit": n_layers * out_features,  # on the tiny llama with biases
        "chosen-layers": layer,  # the default: the last block alone, no final norm
        "ia3": n_layers * (kv + kv + i),  # keys, values, the down-projection's input
        "ln-tuning": (2 * n_layers + 1) * d,  # two norms per block and the final one
        "prefix-tuning": n_layers * 2 * virtual * kv,  # a key and a value per virtual token
        "prompt-scratch": virtual * d,
        "prompt-tuning": virtual * d,
        "top-layers": 2 * layer + d,  # k = 2 blocks and the final norm
    }[name]


@pytest.mark.parametrize("name", METHODS)
def test_trainable_count_matches_the_method(name, tiny, tiny_biased):
    model, tok = _base_for(name, tiny, tiny_biased)
    expected = _expected_trainable(name, model)
    model = _prepared(name, model, tok)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


@pytest.mark.parametrize("name", METHODS)
def test_starts_as_the_base_model_or_not_by_design(name, tiny, tiny_biased):
    model, tok = _base_for(name, tiny, tiny_biased)
    before = _logits(model)
    if name in QUANTISED_BASE:
        # Rounding the base to 4 bits moves the outputs a little; the adapters add nothing yet.
        model = _prepared(name, model, tok)
        with adapters_disabled(model):
            rounded = _logits(model)
        assert torch.equal(_logits(model), rounded)
        assert not torch.equal(rounded, before)
        assert torch.allclose(rounded, before, atol=0.1 * before.abs().max().item())
        return
    after = _logits(_prepared(name, model, tok))
    if name in NOT_IDENTITY_AT_INIT:
        # A soft prompt or prefix is extra context the model attends to: it shifts every output
        # from the start. There is no "zero" prompt: even zero keys take a share of attention.
        assert not torch.allclose(before, after, atol=1e-4)
    else:
        # Zero-initialised up-projection / bias / B, scales of one, copied norms, or (selective
        # methods) nothing changed yet: training starts from the base model's behaviour.
        assert torch.allclose(before, after, atol=1e-6)


@pytest.mark.parametrize("name", sorted(set(METHODS) - IN_PLACE))
def test_adapters_disabled_switches_the_method_off(name, tiny):
    model, tok = tiny
    base = _logits(model)
    model = _prepared(name, model, tok)
    if name in QUANTISED_BASE:  # off, it is the 4-bit base (the test above compares it)
        with adapters_disabled(model):
            base = _logits(model)
    _perturb_trainables(model, seed=2)
    on = _logits(model)
    with adapters_disabled(model):
        assert torch.allclose(_logits(model), base, atol=1e-6)
    assert not torch.allclose(on, base, atol=1e-4)
    assert torch.equal(_logits(model), on)  # switched back on afterwards


# --- merging: folding the trained update into the base weights -----------------------------------

# Methods whose update cannot be folded into the base model's own weights, and why. For every other
# method `merge_and_unload` leaves the plain architecture (the base's parameter names, nothing
# added) computing what the adapted model computed; the methods that change weights in place
# (IN_PLACE, and ln-tuning's copied norms) are already that model, so merging changes nothing.
CANNOT_MERGE = {
    "adapter": "a bottleneck MLP with a ReLU between sub-layers: no weight can hold it",
    "bias-added": "the base's linear layers have no bias to fold the added one into",
    "prefix-tuning": "extra keys and values in every layer's attention, not a weight change",
    "prompt-scratch": "extra input tokens, not a weight change",
    "prompt-tuning": "extra input tokens, not a weight change",
    "qlora": "W + BA is rounded back to 4 bits: the merged model is not the adapted one",
}
# float32 rounding of W·x + B·A·x versus (W + B·A)·x: measured up to 3.4e-7 on logits of size <= 3
# (lora, dora, ia3, lora-scratch); a layer left unmerged moves them by about 0.1.
MERGE_ATOL = 1e-5


def _merge_case(name, tiny, tiny_biased):
    """The base's parameter names, the trained (perturbed) model's logits, and its merged twin."""
    from tutorial_lib.lowrank import merge_and_unload

    model, tok = _base_for(name, tiny, tiny_biased)
    base_names = set(model.state_dict())
    base = _logits(model)
    adapted = _prepared(name, model, tok, seed=0)
    _perturb_trainables(adapted, seed=1)
    before = _logits(adapted)
    assert not torch.allclose(before, base, atol=1e-3)  # trained: something to merge
    return base_names, before, merge_and_unload(adapted)


@pytest.mark.parametrize("name", sorted(set(METHODS) - set(CANNOT_MERGE)))
def test_merged_model_is_the_plain_model_computing_the_adapted_outputs(name, tiny, tiny_biased):
    base_names, adapted, merged = _merge_case(name, tiny, tiny_biased)
    assert set(merged.state_dict()) == base_names  # no adapter, no wrapper left
    assert torch.allclose(_logits(merged), adapted, rtol=0, atol=MERGE_ATOL)


@pytest.mark.parametrize("name", sorted(CANNOT_MERGE))
def test_methods_listed_as_unmergeable_do_not_merge(name, tiny, tiny_biased):
    """With the test above, over every method: CANNOT_MERGE is exactly the unmergeable ones."""
    assert name in REGISTRY
    base_names, adapted, merged = _merge_case(name, tiny, tiny_biased)
    plain = set(merged.state_dict()) == base_names
    assert not (plain and torch.allclose(_logits(merged), adapted, rtol=0, atol=MERGE_ATOL))


def test_bitfit_refuses_a_model_without_biases_and_names_the_alternative(tiny):
    with pytest.raises(ValueError, match="has none.*'bias-added'.*additive, not selective"):
        apply_method(tiny[0], "bitfit")


def test_lora_trains_r_times_in_plus_out_per_linear(tiny):
    model, _ = tiny
    cfg = model.config
    h, kv = cfg.hidden_size, cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    i = cfg.intermediate_size
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]  # q k v o gate up down
    expected = cfg.num_hidden_layers * sum(8 * (a + b) for a, b in shapes)
    model = apply_method(model, "lora", LoraMethodConfig(r=8))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


def test_lora_starts_as_the_identity(tiny):
    model, _ = tiny
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        before = model(ids).logits.clone()
        after = apply_method(model, "lora")(ids).logits
    assert torch.allclose(before, after)  # B starts at zero, so B·A adds nothing yet


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(r=0), "r must be a positive integer"),
        (dict(alpha=-1), "alpha"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_bad_lora_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoraMethodConfig(**kwargs)


def test_unknown_target_module_lists_the_real_ones(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match=r"unknown target module\(s\) \['qkv'\].*q_proj"):
        apply_method(model, "lora", LoraMethodConfig(target_modules=["qkv"]))


def test_unknown_method_lists_the_registry():
    with pytest.raises(ValueError, match="available: adapter, .*full, .*lora"):
        get_method("adapterz")


def test_full_can_keep_embeddings_frozen(tiny):
    from tutorial_lib.methods.full import FullConfig

    model, _ = tiny
    model = apply_method(model, "full", FullConfig(train_embeddings=False))
    assert not model.get_input_embeddings().weight.requires_grad
    assert model.model.layers[0].self_attn.q_proj.weight.requires_grad


# --- one seed, the same run in every process -----------------------------------------------------

SEEDED_RUN = Path(__file__).with_name("seeded_run.py")


def _run_in_fresh_process(model_dir: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(SEEDED_RUN), str(model_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TUTORIAL_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, corpus) -> tuple[dict, dict]:
    """Every method trained by `run_experiment` in two separate processes with seed 7."""
    from tutorial_lib.models import tiny_model

    model_dir = tmp_path_factory.mktemp("tiny-model")
    save_model_folder(*tiny_model(seed=0, corpus=corpus), model_dir)
    return _run_in_fresh_process(model_dir), _run_in_fresh_process(model_dir)


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_run_in_separate_processes(name, two_process_runs):
    first, second = (runs[name] for runs in two_process_runs)
    if "error" in first:
        pytest.skip(f"{name} does not apply to the tiny model: {first['error']}")
    assert first["losses"] == second["losses"]  # exactly: the same initial values, the same data
    assert first["weights"] == second["weights"]
