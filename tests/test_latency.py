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
