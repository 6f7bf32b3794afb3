"""Run by test_estimate.py in a fresh process: one tiny-model training run, its measured peak
memory beside the estimator's figure, as one JSON line on stdout.

    python tests/estimate_run.py METHOD BATCH SEQ_LEN [MODEL]

MODEL: "tiny" (the default, a 4-layer random llama) or a name `load_base_model` takes.

A fresh process, because a process that trained before keeps freed memory (glibc's heap) and
lets a later run grow into it unseen. Set MALLOC_MMAP_THRESHOLD_ (as the test does) so that
large tensors are mapped and unmapped one by one: the resident peak then follows live tensors,
which is what the estimator models.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace

import torch

from tutorial_lib import data
from tutorial_lib.memory import Architecture, count_params, estimate, setup_for
from tutorial_lib.methods import apply_method
from tutorial_lib.models import tiny_model
from tutorial_lib.train import TrainConfig, train

HIDDEN, LAYERS = 256, 4  # big enough that tensors, not the interpreter, dominate the peak


def load(name: str):
    """The tiny random llama, or a real model by name."""
    if name != "tiny":
        from tutorial_lib.models import load_base_model

        return load_base_model(name)
    corpus = [m["content"] for r in data.load_domain_train()[:120] for m in r["messages"]]
    return tiny_model(corpus=corpus, hidden=HIDDEN, layers=LAYERS)


def main(method: str, batch: int, seq_len: int, name: str = "tiny", **sharing) -> dict:
    """`sharing`: gpus and sharding for the estimate, when several processes train together."""
    torch.set_num_threads(1)
    model, tokenizer = load(name)
    arch = Architecture.from_config(model.config, name)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (4 * batch, seq_len), generator=g).tolist()
    examples = [{"input_ids": row, "labels": list(row)} for row in ids]  # every token trained
    with torch.no_grad():  # a model loaded from safetensors is mapped lazily: reading each
        for p in model.parameters():  # weight now keeps its first forward from counting the
            p.sum()  # page-in (513 MiB for the real model) as training memory
    model = apply_method(model, method)
    trainable, _ = count_params(model)
    per_device = batch // sharing.get("gpus", 1)  # `train` splits each step's batch
    setup = replace(setup_for(model, method, per_device, seq_len), **sharing)
    est = estimate(arch, setup)
    config = TrainConfig(steps=2 if name != "tiny" else 3, batch_size=batch, lr=1e-4)
    result = train(model, examples, config, tokenizer.pad_token_id)
    return {
        "model": name,
        "method": method,
        "setup": asdict(setup),
        "batch": batch,
        "seq_len": seq_len,
        "trainable_params": trainable,
        "estimated_trainable_params": est.trainable_params,
        "weights": est.weights,
        "model_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "estimated": est.beyond_weights,  # gradients, optimizer state, activations
        "measured": result.peak_memory_bytes - result.memory_at_start_bytes,
        "world_size": result.world_size,
    }


if __name__ == "__main__":
    method, batch, seq_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(main(method, batch, seq_len, *sys.argv[4:5])))
