"""Checkpoints: resume equals straight through, Ctrl-C keeps the state, writes are atomic."""

from __future__ import annotations

import pytest
import torch

from tutorial_lib import checkpoint as ckpt
from tutorial_lib.methods import apply_method
from tutorial_lib.models import tiny_model
from tutorial_lib.train import TrainConfig, train

CONFIG = TrainConfig(steps=8, batch_size=4, lr=3e-3, seed=1)


def _fresh(corpus, method="full"):
    model, tok = tiny_model(seed=0, corpus=corpus)
    return apply_method(model, method), tok


def _train_into(folder, model, tok, examples, steps: int, **kwargs):
    """A short run that checkpoints into `folder`."""
    config = TrainConfig(steps=steps, batch_size=4)
    return train(model, examples, config, tok.pad_token_id, checkpoint_dir=folder, **kwargs)


def _interrupt_after(model, n_forwards: int) -> None:
    """Make the n+1-th forward raise KeyboardInterrupt, as Ctrl-C in a notebook would."""
    calls, original = {"n": 0}, model.forward

    def forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_forwards:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    model.forward = forward


@pytest.mark.parametrize("method", ["full", "lora"])
def test_interrupt_then_resume_equals_straight_through(corpus, tiny_examples, tmp_path, method):
    straight, tok = _fresh(corpus, method)
    reference = train(straight, tiny_examples, CONFIG, tok.pad_token_id)

    first, _ = _fresh(corpus, method)
    _interrupt_after(first, 4)
    part = train(first, tiny_examples, CONFIG, tok.pad_token_id, checkpoint_dir=tmp_path)
    assert part.interrupted and part.steps_done == 4
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000004"

    second, _ = _fresh(corpus, method)  # a new process: fresh model and optimizer
    rest = train(
        second, tiny_examples, CONFIG, tok.pad_token_id, checkpoint_dir=tmp_path, resume=True
    )
    assert rest.steps_done == 8 and len(rest.loss_history) == 8
    assert rest.loss_history == pytest.approx(reference.loss_history, abs=1e-6)
    for (name, a), b in zip(straight.named_parameters(), second.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_periodic_checkpoints_keep_only_the_newest(corpus, tiny_examples, tmp_path):
    model, tok = _fresh(corpus)
    config = TrainConfig(steps=6, batch_size=4, save_every=2)
    train(model, tiny_examples, config, tok.pad_token_id, checkpoint_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["step-000006"]


def test_a_crash_while_writing_leaves_the_previous_checkpoint(
    corpus, tiny_examples, tmp_path, monkeypatch
):
    model, tok = _fresh(corpus)
    _train_into(tmp_path, model, tok, tiny_examples, steps=2)

    def crash(tensors, path):
        with open(path, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        _train_into(tmp_path, model, tok, tiny_examples, steps=4, resume=True)
    assert [p.name for p in tmp_path.iterdir()] == ["step-000002"]  # no half-written folder


def test_resuming_with_another_method_is_refused(corpus, tiny_examples, tmp_path):
    model, tok = _fresh(corpus, "lora")
    _train_into(tmp_path, model, tok, tiny_examples, steps=1)
    other, _ = _fresh(corpus, "full")
    with pytest.raises(ValueError, match="another method"):
        _train_into(tmp_path, other, tok, tiny_examples, steps=2, resume=True)


def test_checkpoints_hold_no_pickles(corpus, tiny_examples, tmp_path):
    model, tok = _fresh(corpus, "lora")
    _train_into(tmp_path, model, tok, tiny_examples, steps=1)
    files = sorted(p.name for p in ckpt.latest_checkpoint(tmp_path).iterdir())
    assert files == [ckpt.META, ckpt.TENSORS]
