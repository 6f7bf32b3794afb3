"""Soft prompts: learned vectors the frozen model reads before the input (additive methods).

`prompt-scratch` is written here to be read in a lesson and is tested to give the same logits
and gradients as peft's prompt tuning from the same start; `prompt-tuning` and
`prefix-tuning` are peft's.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tutorial_lib.methods.base import Switchable, freeze
from tutorial_lib.methods.registry import register

# --- soft prompts: prompt tuning (Lester et al. 2021) -------------------------------------------

DEFAULT_INIT_TEXT = "Answer the customer's support question about our products accurately."


@dataclass
class PromptConfig:
    """A soft prompt: learned input embeddings placed before every sequence."""

    num_virtual_tokens: int = 8  # length of the soft prompt
    init_text: str | None = (
        DEFAULT_INIT_TEXT  # start from these words' embeddings; None: random words
    )
    tokenizer: Any = field(default=None, repr=False)  # None: load it from the model's folder

    def __post_init__(self) -> None:
        if not isinstance(self.num_virtual_tokens, int) or self.num_virtual_tokens <= 0:
            raise ValueError(
                f"num_virtual_tokens must be a positive integer, got {self.num_virtual_tokens!r}"
            )
        if self.init_text is not None and not self.init_text.strip():
            raise ValueError("init_text must be a non-empty text, or None for random words")


def _tokenizer_for(model, config: PromptConfig):
    """The tokenizer that turns `init_text` into ids: the one given, or the model folder's."""
    if config.tokenizer is not None:
        return config.tokenizer
    folder = getattr(model, "name_or_path", "")
    if folder and Path(folder).is_dir():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    raise ValueError(
        "init_text needs the model's tokenizer: pass PromptConfig(tokenizer=...), "
        "or init_text=None to start from random words"
    )


def prompt_init(model, config: PromptConfig) -> torch.Tensor:
    """Initial soft prompt (P, d): the init text's token embeddings, repeated to length P."""
    table = model.get_input_embeddings().weight
    n = config.num_virtual_tokens
    if config.init_text is None:
        ids = torch.randint(table.shape[0], (n,)).tolist()  # random real words, not noise
    else:
        ids = _tokenizer_for(model, config)(config.init_text, add_special_tokens=False)["input_ids"]
        ids = (ids * math.ceil(n / len(ids)))[:n]  # as peft's TEXT init does
    return table[ids].detach().clone()


def _pad_left(x: torch.Tensor | None, n: int, value) -> torch.Tensor | None:
    """Prepend n columns of `value` (mask, labels and kept positions for the virtual tokens)."""
    if x is None:
        return None
    return torch.cat([torch.full((x.shape[0], n), value, dtype=x.dtype, device=x.device), x], 1)


class SoftPromptModel(Switchable):
    """A causal LM with P learned embeddings before its input; logits come back for real tokens only."""

    def __init__(self, model: nn.Module, init: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.prompt = nn.Parameter(init.clone())  # (P, d)

    @property
    def config(self):
        return self.model.config

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs: Any):
        if not self.enabled:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs
            )
        embeds = kwargs.pop("inputs_embeds", None)
        embeds = self.model.get_input_embeddings()(input_ids) if embeds is None else embeds
        n = self.prompt.shape[0]
        attention_mask = _pad_left(attention_mask, n, 1)
        positions = kwargs.pop("position_ids", None)  # the caller's, which count real tokens only
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and cache.get_seq_length() > 0:  # the prompt is in the cache already
            positions = None if positions is None else positions + n
            return self.model(
                inputs_embeds=embeds,
                attention_mask=attention_mask,
                position_ids=positions,
                **kwargs,
            )
        if positions is not None:
            positions = torch.cat(
                [torch.arange(n, device=positions.device).expand(len(positions), n), positions + n],
                1,
            )
        return self._forward_with_prompt(embeds, attention_mask, labels, positions, kwargs)

    def _forward_with_prompt(self, embeds, attention_mask, labels, positions, kwargs: dict):
        """Prepend the prompt; labels and kept logits get n placeholders for it."""
        n = self.prompt.shape[0]
        prompt = self.prompt.to(embeds.dtype).expand(embeds.shape[0], -1, -1)  # (B, P, d)
        keep = kwargs.pop("logits_to_keep", 0)
        strip = isinstance(keep, int) and keep == 0  # all logits asked for: drop the prompt's
        if isinstance(keep, torch.Tensor) and keep.dtype == torch.bool:
            keep = _pad_left(keep, n, False)  # the loss reads only positions with a label
        out = self.model(
            inputs_embeds=torch.cat([prompt, embeds], 1),  # (B, P + T, d)
            attention_mask=attention_mask,
            labels=_pad_left(labels, n, -100),
            position_ids=positions,
            logits_to_keep=keep,
            **kwargs,
        )
        if strip and out.logits is not None:
            out.logits = out.logits[:, n:]  # (B, T, V): position t predicts real token t + 1
        return out


@register(
    "prompt-scratch",
    "additive",
    PromptConfig,
    default_lr=1e-1,  # prompt-tuning's (the same numbers)
    description="soft prompt written here (same numbers as peft's prompt tuning, tested)",
)
def apply_prompt_scratch(model, config: PromptConfig):
    """Freeze the base and wrap it with a learned soft prompt."""
    init = prompt_init(model, config)
    freeze(model)
    return SoftPromptModel(model, init)


@register(
    "prompt-tuning",
    "additive",
    PromptConfig,
    default_lr=1e-1,  # the fair-rate sweep's (rate-sweep.json): no rate recalled a fact, so the lowest
    description="soft prompt of learned input embeddings, initialised from text (peft)",
)
def apply_prompt_tuning(model, config: PromptConfig):
    """peft prompt tuning, started from `prompt_init` (so it and prompt-scratch start equal)."""
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    init = prompt_init(model, config)
    peft_config = PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=config.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.RANDOM,  # overwritten just below
    )
    peft_model = get_peft_model(model, peft_config)
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(init)
    peft_model.register_forward_hook(_real_token_logits, with_kwargs=True)
    return peft_model


def _real_token_logits(module, args: tuple, kwargs: dict, output):
    """peft also returns logits for its virtual tokens; keep only the real tokens' (as ours does).

    Without this, evaluation reads positions shifted by num_virtual_tokens (or fails on the
    length). peft also re-prepends the prompt when given a kv cache, so `scoring.score_choices`
    scores such models without its shared-context cache (tested in tests/test_additive.py).
    """
    ids = kwargs.get("input_ids", args[0] if args else None)
    n = module.active_peft_config.num_virtual_tokens
    logits = getattr(output, "logits", None)
    if ids is not None and logits is not None and logits.dim() == 3:
        if logits.shape[1] == ids.shape[1] + n:
            output.logits = logits[:, n:]
    return output


# --- prefix tuning (Li & Liang 2021), through peft ---------------------------------------------


@dataclass
class PrefixConfig:
    """Prefix tuning: learned keys and values that every layer's attention can read."""

    num_virtual_tokens: int = 8  # prefix length, per layer
    projection: bool = False  # the paper's reparametrising MLP (many more weights while training)

    def __post_init__(self) -> None:
        if not isinstance(self.num_virtual_tokens, int) or self.num_virtual_tokens <= 0:
            raise ValueError(
                f"num_virtual_tokens must be a positive integer, got {self.num_virtual_tokens!r}"
            )


@register(
    "prefix-tuning",
    "additive",
    PrefixConfig,
    default_lr=3e-2,  # the fair-rate sweep's (rate-sweep.json): every rate recalled 1 of 56, so the lowest
    description="learned key/value prefixes in every attention layer (peft)",
)
def apply_prefix_tuning(model, config: PrefixConfig):
    """peft prefix tuning (its cache handling is tested here: it broke across transformers releases)."""
    from peft import PrefixTuningConfig, get_peft_model

    # peft's prefix path passes `past_key_values`, which transformers 5.x deprecates (removal
    # announced for 5.40) with a warning on every forward that names the learner's site-packages
    # path; tests/test_additive.py proves the method still trains with the installed versions.
    warnings.filterwarnings(
        "ignore", message=r"`past_key_values` is deprecated", category=FutureWarning
    )
    peft_config = PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=config.num_virtual_tokens,
        prefix_projection=config.projection,
    )
    return get_peft_model(model, peft_config)
