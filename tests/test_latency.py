"""Inference latency and lesson source display."""

from __future__ import annotations

from types import SimpleNamespace

from tutorial_lib import latency, teaching
from tutorial_lib.latency import forward_seconds, latency_table
from tutorial_lib.methods.additive import BottleneckAdapter


def _forwards_take(model, clock, monkeypatch, seconds: list[float]) -> None:
    """Each forward pass of `model` takes the next of `seconds` on the fake clock."""
    durations = iter(seconds)
    monkeypatch.setattr(latency, "time", SimpleNamespace(perf_counter=clock))
    model.register_forward_hook(lambda *_: clock.advance(next(durations)))


def test_latency_table_has_one_row_per_model_relative_to_the_first(tiny, fake_clock, monkeypatch):
    model, tokenizer = tiny
    # The models take turns: round 0 (slow, warming up) is dropped, then base, again, base, ...
    rounds = [(0.05, 0.05), (0.002, 0.003), (0.004, 0.006), (0.003, 0.009)]
    _forwards_take(model, fake_clock, monkeypatch, [s for pair in rounds for s in pair])
    table = latency_table({"base": model, "again": model}, tokenizer, "Hi?", repeats=3)
    assert list(table.index) == ["base", "again"]
    assert list(table["ms per request"]) == [3.0, 6.0]  # the medians of 2, 4, 3 and of 3, 6, 9
    assert list(table["added (%)"]) == [0.0, 100.0]
    assert table.attrs["prompt_tokens"] > 3  # the chat template wraps the question


def test_a_method_is_timed_against_its_own_base_in_turns(tiny, fake_clock, monkeypatch):
    from tutorial_lib.methods import apply_method

    model, tokenizer = tiny
    applied = apply_method(model, "lora", seed=0)
    seen = []  # which state each forward pass ran in: the adapter's scaling is 0 when disabled
    rounds = [(0.05, 0.05), (0.002, 0.003), (0.004, 0.005), (0.003, 0.004)]
    durations = iter(s for pair in rounds for s in pair)
    monkeypatch.setattr(latency, "time", SimpleNamespace(perf_counter=fake_clock))

    def hook(module, args, output):
        seen.append("off" if module.disable_adapters else "on")
        fake_clock.advance(next(durations))

    lora_layer = next(m for m in applied.modules() if hasattr(m, "lora_A") and m.lora_A)
    lora_layer.register_forward_hook(hook)
    table = latency.against_base(applied, tokenizer, "Hi?", "lora", repeats=3)
    assert seen == ["off", "on"] * 4  # base first in every round, round 0 included
    assert list(table.index) == ["base", "lora"]
    assert list(table["ms per request"]) == [3.0, 4.0]  # medians of 2, 4, 3 and of 3, 5, 4
    assert list(table["added (%)"]) == [0.0, 33.3]


def test_merged_lora_is_timed_in_the_same_rounds_and_unmerged_after(tiny, fake_clock, monkeypatch):
    from tutorial_lib.methods import apply_method

    model, tokenizer = tiny
    applied = apply_method(model, "lora", seed=0)
    layer = next(m for m in applied.modules() if hasattr(m, "lora_A") and m.lora_A)
    merged_seen = []
    layer.register_forward_hook(lambda m, a, o: merged_seen.append(bool(m.merged)))
    more = {"merged": lambda: latency.merged(applied)}
    table = latency.against_base(applied, tokenizer, "Hi?", "lora", repeats=2, more=more)
    assert list(table.index) == ["base", "lora", "merged"]
    assert merged_seen == [False, False, True] * 3
    assert not layer.merged  # unmerged again afterwards


def test_forward_seconds_is_the_median_and_restores_training_mode(tiny, fake_clock, monkeypatch):
    model, tokenizer = tiny
    model.train()
    ids = tokenizer("Hello", return_tensors="pt")["input_ids"]
    _forwards_take(model, fake_clock, monkeypatch, [9.0, 3.0, 1.0, 2.0])  # one warm-up pass
    assert forward_seconds(model, ids, repeats=3, warmup=1) == 2.0
    assert model.training


def test_source_shows_the_librarys_real_code():
    shown = teaching.source(BottleneckAdapter).data
    assert "class BottleneckAdapter(nn.Module):" in shown
    assert "nn.init.zeros_(self.up.weight)" in shown
    assert "tutorial_lib.methods.additive.BottleneckAdapter" in shown
