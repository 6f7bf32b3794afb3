"""Inference latency and lesson source display."""

from __future__ import annotations

from tutorial_lib import teaching
from tutorial_lib.latency import forward_seconds, latency_table
from tutorial_lib.methods.additive import BottleneckAdapter


def test_latency_table_has_one_row_per_model_relative_to_the_first(tiny):
    model, tokenizer = tiny
    table = latency_table({"base": model, "again": model}, tokenizer, "Hi?", repeats=3)
    assert list(table.index) == ["base", "again"]
    assert (table["ms per request"] > 0).all()
    assert table.loc["base", "added (%)"] == 0
    assert table.attrs["prompt_tokens"] > 3  # the chat template wraps the question


def test_forward_seconds_restores_training_mode(tiny):
    model, tokenizer = tiny
    model.train()
    ids = tokenizer("Hello", return_tensors="pt")["input_ids"]
    assert forward_seconds(model, ids, repeats=2, warmup=0) > 0
    assert model.training


def test_source_shows_the_librarys_real_code():
    shown = teaching.source(BottleneckAdapter).data
    assert "class BottleneckAdapter(nn.Module):" in shown
    assert "nn.init.zeros_(self.up.weight)" in shown
    assert "tutorial_lib.methods.additive.BottleneckAdapter" in shown
