"""Log-likelihood of continuations: the arithmetic under every multiple-choice score."""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from functools import lru_cache

import torch
import torch.nn.functional as F

from tutorial_lib.methods.base import eval_mode, prepends_virtual_tokens
from tutorial_lib.progress import bar

_QUIET = [False]


@contextmanager
def quiet_progress():
    """Hide evaluation progress bars (e.g. evaluations nested inside a training run or a
    sweep, where one bar per run is enough and a notebook would keep dozens of finished ones)."""
    previous, _QUIET[0] = _QUIET[0], True
    try:
        yield
    finally:
        _QUIET[0] = previous


def progress(iterable, desc: str):
    """A transient progress bar over evaluation batches, unless inside `quiet_progress`."""
    return bar(iterable, desc=desc, leave=False, disable=_QUIET[0])


HEAD_ROWS = 256  # rows whose full-vocabulary logits exist at once (256 x 49,152 x 4 B: 48 MiB)


def output_layer(model) -> torch.nn.Module:
    """The module that turns hidden states into vocabulary logits (the `lm_head`), through any
    wrapper: a peft model, or one of our own (they keep the causal LM inside)."""
    for module in model.modules():
        get = getattr(module, "get_output_embeddings", None)
        head = get() if callable(get) else None
        if isinstance(head, torch.nn.Module):
            return head
    raise ValueError(f"{type(model).__name__} has no output layer (get_output_embeddings)")


@contextmanager
def head_input(model):
    """Within: each forward leaves the output layer's whole input (B, T', d) in `seen`, and the
    layer computes logits for the last position only. Callers then compute log-probabilities
    only where they are used (`target_logprobs`), instead of for every position at once."""
    head = output_layer(model)
    seen: list[torch.Tensor] = []

    def keep_last(module, args):
        if not args or args[0].dim() != 3:  # not a forward's (B, T', d): `target_logprobs`' rows
            return None
        seen.append(args[0])
        return (args[0][:, -1:], *args[1:])

    handle = head.register_forward_pre_hook(keep_last)
    try:
        yield head, seen
    finally:
        handle.remove()


def real_positions(hidden: torch.Tensor, length: int) -> torch.Tensor:
    """The hidden states of the `length` real tokens: prompt tuning prepends its virtual tokens."""
    return hidden[:, hidden.shape[1] - length :]


def target_logprobs(head, hidden: torch.Tensor, targets: list[int] | torch.Tensor) -> torch.Tensor:
    """log p(target) at each row of `hidden` (N, d), in fp32, computing the vocabulary's logits
    for HEAD_ROWS rows at a time (the same arithmetic as a whole forward's logits)."""
    targets = torch.as_tensor(targets, device=hidden.device)
    pieces = []
    for start in range(0, len(targets), HEAD_ROWS):
        logp = F.log_softmax(head(hidden[start : start + HEAD_ROWS]).float(), dim=-1)
        pieces.append(logp.gather(1, targets[start : start + HEAD_ROWS, None])[:, 0])
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Tokenise context+continuation together and split at the context's length, as
    lm-evaluation-harness does. Trailing spaces move to the continuation; lm-eval also moves
    trailing newlines, which only matters for chat contexts (the plain probe prompt has none)."""
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:  # a trailing space belongs to the continuation's first token
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    return whole[: len(ctx)], whole[len(ctx) :]


def score_continuations(
    model, tokenizer, requests: list[tuple[str, str]], batch_size: int = 32, desc: str = "scoring"
) -> list[tuple[float, int]]:
    """Sum of log p(continuation | context) and its token count, for each (context, continuation).

    Requests are sorted by length so each padded batch wastes little; the hidden state at
    position t predicts token t+1, so the continuation's targets are read one position to the
    left. Only those positions go through the output layer (`head_input`).
    """
    encoded = [_encode_pair(tokenizer, c, x) for c, x in requests]
    order = sorted(range(len(encoded)), key=lambda i: -sum(map(len, encoded[i])))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with eval_mode(model), head_input(model) as (head, seen):
        for start in progress(range(0, len(order), batch_size), desc):
            idx = order[start : start + batch_size]
            ids, mask = _pad([encoded[i][0] + encoded[i][1] for i in idx], pad)
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
            hidden = real_positions(seen.pop(), ids.shape[1])
            spans = [(len(encoded[i][0]) - 1, encoded[i][1]) for i in idx]
            rows = torch.cat([hidden[r, s : s + len(c)] for r, (s, c) in enumerate(spans)])
            logp = target_logprobs(head, rows, [t for _, c in spans for t in c]).split(
                [len(c) for _, c in spans]
            )
            for i, lp in zip(idx, logp):
                results[i] = lp.sum().item(), len(lp)
    return results


@lru_cache(maxsize=1)
def _cache_argument() -> str:
    """transformers 5 renamed `past_key_values` to `cache`; support both (checked on first use)."""
    from transformers import LlamaForCausalLM

    params = inspect.signature(LlamaForCausalLM.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _shared_encoding(tokenizer, context: str, choices: list[str]):
    """Context ids and each choice's ids, or None when a choice's tokens merge into the context."""
    pairs = [_encode_pair(tokenizer, context, choice) for choice in choices]
    ctx = pairs[0][0]
    if any(p[0] != ctx for p in pairs) or any(not p[1] for p in pairs):
        return None
    return ctx, [p[1] for p in pairs]


def _pad(seqs: list[list[int]], pad: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ids and their attention mask (right-padded unless `left`)."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq)
        mask[row, span] = 1
    return ids, mask


def _score_group_batch(model, batch: list[tuple[list[int], list[list[int]]]], pad: int):
    """Score a batch of (context, choices): one forward over the contexts, whose key/value cache
    is then shared by every choice, instead of re-reading each context once per choice.

    Contexts are left-padded so each one ends at the last position: only that position's
    logits are needed (they predict each choice's first token).
    """
    device = next(model.parameters()).device
    ctx_ids, ctx_mask = _pad([ctx for ctx, _ in batch], pad, left=True)
    ctx_pos = (ctx_mask.cumsum(1) - 1).clamp(min=0)  # real positions despite the left padding
    out = model(
        input_ids=ctx_ids.to(device),
        attention_mask=ctx_mask.to(device),
        position_ids=ctx_pos.to(device),
        use_cache=True,
        logits_to_keep=1,
    )
    owner = [i for i, (_, conts) in enumerate(batch) for _ in conts]  # item of each choice row
    conts = [c for _, cs in batch for c in cs]
    cache_arg = _cache_argument()
    cache = out.cache if cache_arg == "cache" else out.past_key_values
    cache.batch_select_indices(torch.tensor(owner, device=device))  # one copy per choice
    cont_ids, cont_mask = _pad(conts, pad)
    ctx_len = ctx_mask.sum(1)[owner]
    positions = ctx_len[:, None] + torch.arange(cont_ids.shape[1])[None, :]
    with head_input(model) as (head, seen):
        model(
            input_ids=cont_ids.to(device),
            attention_mask=torch.cat([ctx_mask[owner], cont_mask], 1).to(device),
            position_ids=positions.to(device),
            **{cache_arg: cache},
        )
    hidden = seen.pop()  # each choice's first token is predicted by its context's last logits
    first = F.log_softmax(out.logits[owner, -1].float(), dim=-1)
    first = first.gather(1, torch.tensor([c[0] for c in conts], device=device)[:, None])[:, 0]
    rows = torch.cat([hidden[row, : len(cont) - 1] for row, cont in enumerate(conts)])
    rest = target_logprobs(head, rows, [t for cont in conts for t in cont[1:]])
    rest = rest.split([len(cont) - 1 for cont in conts])
    return [
        (torch.cat([first[row : row + 1], lp]).sum().item(), len(cont))
        for row, (cont, lp) in enumerate(zip(conts, rest))
    ]


def score_choices(
    model,
    tokenizer,
    groups: list[tuple[str, list[str]]],
    batch_size: int = 16,
    desc: str = "scoring",
) -> list[list[tuple[float, int]]]:
    """Like `score_continuations` for (context, choices) groups, reading each context only once.

    A group whose choice tokens would merge across the context boundary is scored the plain
    way, so results always equal `score_continuations` (tested).
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if prepends_virtual_tokens(model):
        # peft prepends its virtual tokens again when handed a cache: score every group plainly
        encoded = [None for _ in groups]
    else:
        encoded = [_shared_encoding(tokenizer, ctx, choices) for ctx, choices in groups]
    shared = sorted((i for i, e in enumerate(encoded) if e), key=lambda i: -len(encoded[i][0]))
    results: list[list[tuple[float, int]]] = [[] for _ in groups]
    with eval_mode(model):
        for start in progress(range(0, len(shared), batch_size), desc):
            idx = shared[start : start + batch_size]
            flat = iter(_score_group_batch(model, [encoded[i] for i in idx], pad))
            for i in idx:
                results[i] = [next(flat) for _ in encoded[i][1]]
    rest = [i for i, e in enumerate(encoded) if e is None]
    if rest:
        requests = [(groups[i][0], c) for i in rest for c in groups[i][1]]
        flat = iter(score_continuations(model, tokenizer, requests, batch_size, desc))
        for i in rest:
            results[i] = [next(flat) for _ in groups[i][1]]
    return results


def score_contexts(
    model,
    tokenizer,
    groups: list[tuple[list[str], str]],
    batch_size: int = 32,
    desc: str = "scoring",
) -> list[list[tuple[float, int]]]:
    """For (contexts, continuation) groups: the one continuation scored after each context, the
    way lm-evaluation-harness scores WinoGrande (partial scoring: the options differ in the
    context, the rest of the sentence is what is scored). Each is `score_continuations`'s
    (summed log-prob, token count)."""
    requests = [
        (context, continuation) for contexts, continuation in groups for context in contexts
    ]
    flat = iter(score_continuations(model, tokenizer, requests, batch_size, desc))
    return [[next(flat) for _ in contexts] for contexts, _ in groups]
