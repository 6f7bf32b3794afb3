"""General text, passage by passage: cross-entropy and KL(base ‖ tuned), each with its spread.

`score_general` reads the passages once and keeps, per passage, the summed cross-entropy and the
token count (so a change in nats per token gets a bootstrap over passages, `measures`), and the
mean over all tokens with exactly the arithmetic of `evaluate.general_cross_entropy` (tested).

Given the base model's log-probabilities (`capture_base`, kept on the `Baseline`), it also
measures KL(base ‖ tuned) = Σ_v p_base(v) (log p_base(v) − log p_tuned(v)) at each position of
the first passages, summed per passage. Both are computed HEAD_ROWS positions at a time, never
the whole batch's full-vocabulary logits. The base's log-probabilities are held in fp16:
positions × 49,152 × 2 bytes (lesson 07's 16 passages, 1,840 positions: 172.5 MiB; measured in
benchmarks/general_text_kl.py), and the tuned model's are rounded to fp16 too, so that the base
against itself is exactly 0. The rounding moves KL by well under 1e-5 nats per token (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tutorial_lib import scoring
from tutorial_lib.measures import Estimate, bootstrap_ratio
from tutorial_lib.memory.machine import hands_memory_back
from tutorial_lib.methods.base import eval_mode
from tutorial_lib.scoring import head_input, progress, real_positions

MAX_LENGTH = 256  # tokens per passage read (as `evaluate.general_cross_entropy`)
# KL compares full vocabularies in fp32: 32 rows at a time hold 4 copies of 6 MiB, not of 48
# (a 2 GB Binder session); each row's sum is the same whatever the rows beside it.
KL_ROWS = 32


@dataclass
class BaseLogprobs:
    """The base model's next-token log-probabilities (fp16, one (tokens, vocab) tensor per
    passage) on the first passages of a general-text suite, read in `batch_size` batches.
    Held in memory only: never written to disk."""

    ids: list[str]
    logprobs: list[torch.Tensor]
    batch_size: int
    max_length: int = MAX_LENGTH

    @property
    def nbytes(self) -> int:
        """What holding them costs: positions × vocabulary × 2 bytes."""
        return sum(t.numel() * t.element_size() for t in self.logprobs)


@dataclass
class PassageScores:
    """Per-passage general-text scores: summed cross-entropy (nats) and tokens scored, and
    summed KL(base ‖ model) for the first len(kl_sums) passages (None: not measured)."""

    ids: list[str]
    ce_sums: list[float]
    tokens: list[int]
    ce: float  # mean over all tokens, as `general_cross_entropy` computes it
    kl_sums: list[float] | None = None

    def __post_init__(self) -> None:
        if not len(self.ids) == len(self.ce_sums) == len(self.tokens):
            raise ValueError("ids, ce_sums and tokens need one entry per passage")
        if self.kl_sums is not None and not 0 < len(self.kl_sums) <= len(self.ids):
            raise ValueError(f"KL on {len(self.kl_sums)} of {len(self.ids)} passages")

    @property
    def n_passages(self) -> int:
        return len(self.ids)

    @property
    def kl_n_passages(self) -> int:
        return len(self.kl_sums) if self.kl_sums is not None else 0

    def kl(self, seed: int = 0) -> Estimate | None:
        """KL(base ‖ model) in nats per token over the KL passages, with a bootstrap over
        them; None when no base log-probabilities were given."""
        if self.kl_sums is None:
            return None
        return bootstrap_ratio(self.kl_sums, self.tokens[: len(self.kl_sums)], seed=seed)


def kl_count(kl_passages: int | None, n_general: int) -> int:
    """How many passages KL is measured on: `Profile.kl_passages` (None = all), at most all."""
    return n_general if kl_passages is None else min(kl_passages, n_general)


def ce_change(before: PassageScores, after: PassageScores, seed: int = 0) -> Estimate:
    """Cross-entropy after − before in nats per token, with a bootstrap over passages (no error
    estimate from one passage)."""
    if before.ids != after.ids or before.tokens != after.tokens:
        raise ValueError("before and after were scored on different general passages")
    diffs = [a - b for a, b in zip(after.ce_sums, before.ce_sums)]
    return bootstrap_ratio(diffs, after.tokens, seed=seed)


def _batches(tokenizer, passages: list[dict], batch_size: int, max_length: int, device):
    """(first passage index, encoded batch) for each batch, as `general_cross_entropy` reads them."""
    texts = [p["text"] for p in passages]
    for start in progress(range(0, len(texts), batch_size), "general text"):
        enc = tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
            add_special_tokens=False,
        ).to(device)
        yield start, enc


def _logprobs(head, rows: torch.Tensor) -> torch.Tensor:
    """log-softmax of `rows`' logits laid out (1, V, N), as `F.cross_entropy` computes them."""
    return F.log_softmax(head(rows).float().T[None], dim=1)


def _rows(model, tokenizer, passages, batch_size: int, max_length: int):
    """For each batch: (first passage index, the output layer, hidden states of the scored
    positions (N, d) passage after passage, their targets, tokens per passage)."""
    device = next(model.parameters()).device
    with eval_mode(model), head_input(model) as (head, seen):
        for start, enc in _batches(tokenizer, passages, batch_size, max_length, device):
            model(**enc)
            hidden = real_positions(seen.pop(), enc["input_ids"].shape[1])[:, :-1]
            scored = enc["attention_mask"][:, 1:] == 1  # padding predicts nothing
            counts = scored.sum(1).tolist()
            yield start, head, hidden[scored], enc["input_ids"][:, 1:][scored], counts


def _slice_rows(tensors: list[torch.Tensor], start: int, stop: int) -> torch.Tensor:
    """Rows start..stop of the tensors stacked end to end, copying only those rows (never
    the whole batch's log-probabilities at once)."""
    pieces, offset = [], 0
    for t in tensors:
        lo, hi = max(start - offset, 0), min(stop - offset, len(t))
        if lo < hi:
            pieces.append(t[lo:hi])
        offset += len(t)
    return torch.cat(pieces)


@hands_memory_back
def capture_base(
    model,
    tokenizer,
    passages: list[dict],
    n: int,
    batch_size: int = 16,
    max_length: int = MAX_LENGTH,
) -> BaseLogprobs:
    """The model's fp16 log-probabilities on the first `n` passages, read in the same batches
    as `score_general` reads all of them (so the same model gives exactly the same numbers)."""
    if not 0 < n <= len(passages):
        raise ValueError(f"KL passages must be in 1..{len(passages)}, got {n}")
    kept: list[torch.Tensor] = []
    with torch.no_grad():
        for start, head, rows, _, counts in _rows(
            model, tokenizer, passages, batch_size, max_length
        ):
            mine = counts[: max(0, n - start)]  # this batch's passages among the first n
            want = sum(mine)
            pieces = [
                _logprobs(head, rows[i : min(i + scoring.HEAD_ROWS, want)])[0].T.half()
                for i in range(0, want, scoring.HEAD_ROWS)
            ]
            kept.extend(torch.cat(pieces).split(mine))
            if start + batch_size >= n:
                break
    ids = [p.get("id", str(i)) for i, p in enumerate(passages[:n])]
    return BaseLogprobs(ids, kept, batch_size, max_length)


@hands_memory_back
def score_general(
    model,
    tokenizer,
    passages: list[dict],
    batch_size: int = 16,
    max_length: int = MAX_LENGTH,
    base: BaseLogprobs | None = None,
) -> PassageScores:
    """Per-passage cross-entropy of the model on `passages`, and KL(base ‖ model) on the first
    passages when `base` holds their log-probabilities (from `capture_base`)."""
    ids = [p.get("id", str(i)) for i, p in enumerate(passages)]
    if base is not None and base.ids != ids[: len(base.ids)]:
        raise ValueError("the base's log-probabilities are of other passages than these")
    n_kl = len(base.ids) if base is not None else 0
    total, ce_sums, tokens, kl_sums = 0.0, [], [], []
    with torch.no_grad():
        for start, head, rows, targets, counts in _rows(
            model, tokenizer, passages, batch_size, max_length
        ):
            mine_kl = counts[: max(0, n_kl - start)]  # this batch's KL passages: its first ones
            kl_rows = sum(mine_kl)
            reference = base.logprobs[start : start + len(mine_kl)] if kl_rows else []
            if [len(t) for t in reference] != mine_kl:
                raise ValueError("the base's log-probabilities cover other tokens than these")
            nll, kl = [], []
            for i in range(0, len(targets), scoring.HEAD_ROWS):
                logp = _logprobs(head, rows[i : i + scoring.HEAD_ROWS])
                piece = targets[None, i : i + scoring.HEAD_ROWS]
                total += F.nll_loss(logp, piece, reduction="sum").item()
                nll.append(-logp[0].gather(0, piece)[0].double())
                kl_here = max(0, min(logp.shape[2], kl_rows - i))  # this piece's KL rows
                for j in range(0, kl_here, KL_ROWS):
                    end = min(j + KL_ROWS, kl_here)  # a few rows' vocabularies at once
                    mine = logp[0, :, j:end].T.half().float()
                    theirs = _slice_rows(reference, i + j, i + end).float()
                    gap = theirs - mine  # log p_base - log p_model, both rounded to fp16
                    kl.append(gap.mul_(theirs.exp_()).sum(-1).double())
            ce_sums += [s.sum().item() for s in torch.cat(nll).split(counts)]
            tokens += counts
            if kl:
                kl_sums += [s.sum().item() for s in torch.cat(kl).split(mine_kl)]
    return PassageScores(ids, ce_sums, tokens, total / sum(tokens), kl_sums if base else None)
