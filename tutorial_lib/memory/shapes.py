"""A model's shape, as far as memory goes: parameter counts, LoRA's trained values for a set of
target layers, and the activations a forward pass keeps for the backward pass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
LINEARS = ATTENTION + MLP  # a llama-style block's linear layers, in `linear_shapes` order
TARGET_SETS = {"attention": ATTENTION, "all-linear": LINEARS}


def target_names(targets: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Module names for "attention" or "all-linear", or the names given; others are refused."""
    if isinstance(targets, str):
        if targets not in TARGET_SETS:
            raise ValueError(f"targets must be one of {sorted(TARGET_SETS)} or a list of names")
        return TARGET_SETS[targets]
    unknown = sorted(set(targets) - set(LINEARS))
    if unknown:
        raise ValueError(f"unknown target(s) {unknown}; a llama block has {list(LINEARS)}")
    return tuple(targets)


def lora_params_per_matrix(d_in: int, d_out: int, r: int) -> int:
    """r·(d_in + d_out): A is (r, d_in) and B (d_out, r), against d_in·d_out for ΔW itself."""
    return r * (d_in + d_out)


@dataclass(frozen=True)
class Architecture:
    """The shape numbers the estimator needs; public figures of well-known llama-style models."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False

    @classmethod
    def from_config(cls, config, name: str = "") -> Architecture:
        """The shape of a transformers config (e.g. `model.config`), to estimate it in any setup.
        Unnamed, it takes the last part of the config's `name_or_path` (a Hub id or a folder)."""
        fields = (
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
        )
        shape = {f: getattr(config, f) for f in fields}
        tied = bool(getattr(config, "tie_word_embeddings", False))
        path = str(getattr(config, "name_or_path", "") or "")
        return cls(name or PurePosixPath(path).name or "model", **shape, tie_word_embeddings=tied)

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) features of one block's linear layers: q, k, v, o, gate, up, down."""
        h, i = self.hidden_size, self.intermediate_size
        kv = self.num_key_value_heads * (h // self.num_attention_heads)
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    def block_linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of one block's linear layers, by module name."""
        return dict(zip(LINEARS, self.linear_shapes()))

    @property
    def linear_params(self) -> int:
        """Weights of the blocks' linear layers: what 8-bit and 4-bit loading quantise."""
        return self.num_hidden_layers * sum(a * b for a, b in self.linear_shapes())

    @property
    def n_params(self) -> int:
        """Parameters: embeddings, attention, MLP and norms of every layer, the output head."""
        h, layers = self.hidden_size, self.num_hidden_layers
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.linear_params + layers * 2 * h + embeddings + h

    @property
    def linear_outputs(self) -> int:
        """Output features of one block's linear layers together: one DoRA magnitude each."""
        return self.lora_outputs("all-linear")

    def lora_outputs(self, targets: str | tuple[str, ...] = "all-linear") -> int:
        """Output features of one block's target layers together (DoRA: a magnitude each)."""
        shapes = self.block_linears()
        return sum(shapes[n][1] for n in target_names(targets))

    def lora_params(self, rank: int, targets: str | tuple[str, ...] = "all-linear") -> int:
        """LoRA's trained values on the target layers of every block: r · (in + out) each. The
        one count of LoRA's parameters: `lowrank.lora_trainable` and `estimate` both use it."""
        shapes = self.block_linears()
        per_block = sum(lora_params_per_matrix(*shapes[n], rank) for n in target_names(targets))
        return self.num_hidden_layers * per_block


ARCHITECTURES = {
    "SmolLM2-135M": Architecture("SmolLM2-135M", 576, 1536, 30, 9, 3, 49152, True),
    "Llama-3.2-1B": Architecture("Llama-3.2-1B", 2048, 8192, 16, 32, 8, 128256, True),
    "Llama-2-7B": Architecture("Llama-2-7B", 4096, 11008, 32, 32, 32, 32000),
    "Llama-2-13B": Architecture("Llama-2-13B", 5120, 13824, 40, 40, 40, 32000),
    "LLaMA-65B": Architecture("LLaMA-65B", 8192, 22016, 80, 64, 64, 32000),  # the QLoRA paper's
    "Llama-2-70B": Architecture("Llama-2-70B", 8192, 28672, 80, 64, 8, 32000),
}


def _layer_values_per_token(config, frozen_linears: bool = False) -> int:
    """Values one decoder layer keeps per token for the backward pass (see `activation_bytes`).
    With `frozen_linears` the inputs of the linear layers are not kept: a frozen weight needs
    no gradient, and the gradient of its input needs the weight only (adapters, prompts)."""
    h, i = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    if frozen_linears:  # less the normed inputs of q/k/v and gate/up, o's input, down's input
        return 5 * h + 2 * kv + 3 * i
    return 8 * h + 2 * kv + 4 * i


def activation_bytes(
    config,
    batch: int,
    seq_len: int,
    bytes_per_value: float = 4,
    checkpointing: bool = False,
    layers: int | None = None,
    frozen_linears: bool = False,
) -> int:
    """Rough activation memory of a llama-style decoder: values saved per token per layer.

    Per layer: residual, two norms, attention in/out (~8 hidden), q/k/v (hidden + 2 kv),
    the MLP's gate, up, activation and product (4 intermediate); then the logits over the
    vocabulary, kept in fp32 with their softmax and gradient (3 copies), counted at every
    position: an upper bound when `train` computes them only where a label is trained. With
    gradient `checkpointing` only each layer's input is kept, and one layer at a time is
    recomputed during the backward pass. `layers`: how many of the top layers the backward pass
    runs through (None: all); below the lowest trained weight nothing needs a gradient, so
    nothing is kept (e.g. top-layers tuning). An estimate: kernels and allocators add overhead,
    so compare it with a measured peak.
    """
    tokens = batch * seq_len
    per_layer = _layer_values_per_token(config, frozen_linears)
    depth = config.num_hidden_layers if layers is None else min(layers, config.num_hidden_layers)
    if checkpointing:
        values = tokens * (depth * config.hidden_size + per_layer * (depth > 0))
    else:
        values = tokens * depth * per_layer
    logits = tokens * config.vocab_size * 4 * 3
    return int(values * bytes_per_value) + logits
