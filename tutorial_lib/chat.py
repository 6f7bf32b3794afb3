"""Chats as the model trains on them: the chat template, label masking, and padded batches.

Everything here takes the system prompt as given; `data` knows which one a task uses and
passes it (its `encode_chats`, `render_prompt` and `with_system_prompt` add the default's).
"""

from __future__ import annotations

import torch


def with_system(messages: list[dict], prompt: str | None) -> list[dict]:
    """The chat with `prompt` as its system message first, unless it has one (or prompt is None:
    the chat template then inserts its own default)."""
    if prompt is None or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": prompt}, *messages]


def render_question(tokenizer, question: str, prompt: str | None) -> str:
    """A user question in the model's chat template, after system prompt `prompt`, ready for the
    assistant's answer."""
    return tokenizer.apply_chat_template(
        with_system([{"role": "user", "content": question}], prompt),
        tokenize=False,
        add_generation_prompt=True,
    )


def encode_chat(tokenizer, messages: list[dict], max_length: int) -> dict[str, list[int]]:
    """Token ids and labels for one chat; labels are -100 except on the assistant's replies.

    Each assistant turn is located by rendering the chat up to it: the template is a prefix
    code, so the tokens between "prompt so far" and "chat through this reply" are the reply.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(
            messages[:i], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("chat template is not prefix-stable; cannot locate the reply")
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reply_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        new_prompt = prompt_ids[len(input_ids) :]
        input_ids += new_prompt + reply_ids
        labels += [-100] * len(new_prompt) + reply_ids
    if len(input_ids) > max_length:
        raise ValueError(f"chat is {len(input_ids)} tokens, over max_length={max_length}")
    return {"input_ids": input_ids, "labels": labels}


def encode_rows(
    tokenizer, rows: list[dict], max_length: int, prompt: str | None
) -> list[dict[str, list[int]]]:
    """Encode training rows after system prompt `prompt` (a chat with its own keeps it); an
    over-long row is reported by id rather than silently cut."""
    encoded = []
    for row in rows:
        try:
            encoded.append(encode_chat(tokenizer, with_system(row["messages"], prompt), max_length))
        except ValueError as exc:
            raise ValueError(f"row {row.get('id')!r}: {exc}") from None
    return encoded


def collate(batch: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and labels."""
    width = max(len(ex["input_ids"]) for ex in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ex in enumerate(batch):
        n = len(ex["input_ids"])
        ids[row, :n] = torch.tensor(ex["input_ids"])
        labels[row, :n] = torch.tensor(ex["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
