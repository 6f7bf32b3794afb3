"""Tools against catastrophic forgetting: replay of general text, and pulls toward the original
weights (L2-SP, EWC) that plug into the one training loop as penalties."""

from __future__ import annotations

import random
from collections.abc import Iterable

import torch

from tutorial_lib.data import collate


def encode_text(tokenizer, passages: list[dict], max_length: int) -> list[dict[str, list[int]]]:
    """Plain language-modelling examples: every token is trained. Passages longer than
    max_length keep their first max_length tokens (replay needs text, not whole passages)."""
    examples = []
    for passage in passages:
        ids = tokenizer(passage["text"], add_special_tokens=False)["input_ids"][:max_length]
        examples.append({"input_ids": ids, "labels": list(ids)})
    return examples


def encode_windows(tokenizer, passages: list[dict], length: int) -> list[dict[str, list[int]]]:
    """Plain language-modelling examples of `length` tokens, every token trained: each passage cut
    into consecutive windows, a last piece kept when it holds at least half a window. More
    distinct text than `encode_text`'s first window per passage, so a long run cycles less."""
    examples = []
    for passage in passages:
        ids = tokenizer(passage["text"], add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), length):
            window = ids[start : start + length]
            if start == 0 or 2 * len(window) >= length:
                examples.append({"input_ids": window, "labels": list(window)})
    return examples


def mix_replay(
    domain: list[dict], general: list[dict], fraction: float, seed: int = 0
) -> list[dict]:
    """Domain examples plus enough general ones that they make up `fraction` of the mixture.

    The count is exact when fraction × total is a whole number (e.g. 0.25 of 40 = 10 general
    among 30 domain examples); the training loop's seeded shuffle then spreads them out.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"replay fraction must be in [0, 1), got {fraction}")
    n_general = round(fraction * len(domain) / (1 - fraction))
    if n_general > len(general):
        raise ValueError(
            f"replay fraction {fraction} needs {n_general} general examples; only {len(general)}"
        )
    picked = random.Random(seed).sample(general, n_general)
    return domain + picked


class L2SP:
    """Penalty weight/2 · Σ‖θ − θ₀‖² over trained parameters: a spring back to the start point."""

    def __init__(self, model: torch.nn.Module, weight: float):
        if weight < 0:
            raise ValueError(f"L2-SP weight must be >= 0, got {weight}")
        self.weight = weight
        self.anchor = {
            n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        }

    def importance(self, name: str) -> torch.Tensor | float:
        return 1.0

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        total = None
        for name, p in model.named_parameters():
            if name in self.anchor:
                term = (self.importance(name) * (p - self.anchor[name]).pow(2)).sum()
                total = term if total is None else total + term
        return 0.5 * self.weight * total


class EWC(L2SP):
    """L2-SP weighted per parameter by a diagonal Fisher estimate on general text: parameters
    that general knowledge depends on are held more firmly."""

    def __init__(self, model, weight: float, batches: Iterable[dict[str, torch.Tensor]]):
        super().__init__(model, weight)
        self.fisher = {n: torch.zeros_like(t) for n, t in self.anchor.items()}
        params = dict(model.named_parameters())
        count = 0
        for batch in batches:
            model.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            for name in self.fisher:
                if params[name].grad is not None:
                    self.fisher[name] += params[name].grad.detach().pow(2)
            count += 1
        model.zero_grad(set_to_none=True)
        if count == 0:
            raise ValueError("EWC needs at least one batch of general text to estimate the Fisher")
        total = sum(f.sum().item() for f in self.fisher.values())
        mean = total / sum(f.numel() for f in self.fisher.values()) or 1.0
        for name in self.fisher:  # mean importance 1: at equal weight, EWC pulls as hard as L2-SP
            self.fisher[name] /= mean  # in total, but where general text needs it

    def importance(self, name: str) -> torch.Tensor:
        return self.fisher[name]


def general_batches(tokenizer, passages: list[dict], max_length: int, batch_size: int = 4):
    """Batches of general text for the Fisher estimate."""
    examples = encode_text(tokenizer, passages, max_length)
    pad = tokenizer.pad_token_id
    return [collate(examples[i : i + batch_size], pad) for i in range(0, len(examples), batch_size)]
