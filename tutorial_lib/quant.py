"""Quantisation from scratch (lesson 06): absmax, blockwise, FP4, NF4 and double quantisation.

Each piece is short enough to read in the lesson. The tests check it against bitsandbytes, the
library QLoRA uses: the NF4 levels, the packed bytes and the scales, bit for bit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch


def quiet_bitsandbytes():
    """bitsandbytes, imported without its notice that an optional CPU kernel package is missing.
    It runs without it (measured); that package downloads code when imported, so it stays out."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import bitsandbytes

    return bitsandbytes


def bitsandbytes_levels(kind: str) -> torch.Tensor:
    """bitsandbytes' own 16 levels for "nf4" or "fp4", to set beside ours."""
    quiet_bitsandbytes()
    import bitsandbytes.functional as bnbf

    return bnbf.get_4bit_type(kind, device="cpu")


BLOCK = 64  # values that share one scale (QLoRA's choice)
SCALE_BLOCK = 256  # scales that share one second-level scale under double quantisation


# --- one scale for the whole tensor ------------------------------------------------------------


def absmax_quantize(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Integers in [-(2^(b-1)-1), 2^(b-1)-1] and the one scale that maps them back: the largest
    |x| lands on the largest integer, so one outlier stretches the grid for every other value."""
    top = 2 ** (bits - 1) - 1
    scale = x.abs().max().clamp(min=1e-12)
    codes = torch.round(x / scale * top).to(torch.int8 if bits <= 8 else torch.int32)
    return codes, scale


def absmax_dequantize(codes: torch.Tensor, scale: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Back to floats: the inverse of `absmax_quantize`, up to its rounding."""
    return codes.float() * scale / (2 ** (bits - 1) - 1)


# --- 4-bit code books: which 16 values a 4-bit number can stand for ---------------------------


def int4_levels() -> torch.Tensor:
    """Symmetric 4-bit integers -7..7, scaled to [-1, 1]: evenly spaced (15 distinct values)."""
    return torch.arange(-7, 8, dtype=torch.float32) / 7


def fp4_levels() -> torch.Tensor:
    """FP4 E2M1 (sign, 2 exponent bits, 1 mantissa bit, bias 1), every code's value scaled to
    [-1, 1]: dense near zero, sparse near the ends (±0 share a value: 15 distinct values)."""
    values = []
    for code in range(16):
        sign = -1.0 if code & 0b1000 else 1.0
        exponent, mantissa = (code >> 1) & 0b11, code & 0b1
        if exponent == 0:  # subnormal: no implicit leading 1
            magnitude = mantissa * 0.5
        else:
            magnitude = (1 + mantissa * 0.5) * 2.0 ** (exponent - 1)
        values.append(sign * magnitude)
    return torch.tensor(sorted(values), dtype=torch.float32) / 6.0  # 6 is E2M1's largest value


def nf4_levels(offset: float = 0.9677083) -> torch.Tensor:
    """NormalFloat 4 (Dettmers et al., 2023): quantiles of N(0, 1), so each level is used about
    equally often by normally distributed weights. 8 positive and 7 negative quantiles and an
    exact zero, scaled to [-1, 1]; `offset` keeps the outermost quantile finite."""
    normal_quantile = torch.special.ndtri
    positive = normal_quantile(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    negative = -normal_quantile(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).sort().values
    return (levels / levels.max()).float()


NF4_LEVELS = nf4_levels()
LEVELS = {"int4": int4_levels, "fp4": fp4_levels, "nf4": nf4_levels}


def levels_for(kind: str) -> torch.Tensor:
    """The code book named `kind`, with an error that lists the names that exist."""
    if kind not in LEVELS:
        raise ValueError(f"unknown 4-bit type {kind!r}; choose one of {sorted(LEVELS)}")
    return LEVELS[kind]()


# --- blockwise quantisation --------------------------------------------------------------------


@dataclass
class Quantized:
    """A tensor stored as one code (an index into `levels`) per value and one scale per block."""

    codes: torch.Tensor  # uint8 indices into levels, one per value (padded to whole blocks)
    absmax: torch.Tensor  # fp32, one per block
    levels: torch.Tensor  # the code book
    shape: torch.Size
    block: int

    def packed(self) -> torch.Tensor:
        """Two 4-bit codes per byte, the first in the high nibble (bitsandbytes' layout)."""
        return pack_nibbles(self.codes)


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """The values of `x` in rows of `block`; the last row is padded with zeros."""
    flat = x.detach().reshape(-1).float()
    pad = -flat.numel() % block
    return torch.nn.functional.pad(flat, (0, pad)).view(-1, block)


def nearest_level(scaled: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest level, by the midpoints between sorted levels (a tie goes down)."""
    midpoints = (levels[:-1] + levels[1:]) / 2
    return torch.bucketize(scaled, midpoints).to(torch.uint8)


def quantize_blockwise(x: torch.Tensor, levels: torch.Tensor, block: int = BLOCK) -> Quantized:
    """Scale each block by its own absmax, then round each value to the nearest level: an
    outlier now coarsens only its own block of `block` values, not the whole tensor."""
    rows = _blocks(x, block)
    absmax = rows.abs().max(dim=1).values
    scaled = (rows * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)).clamp(-1, 1)
    return Quantized(nearest_level(scaled, levels), absmax, levels, x.shape, block)


def dequantize_blockwise(q: Quantized, absmax: torch.Tensor | None = None) -> torch.Tensor:
    """Look each code up and multiply by its block's scale (`absmax` overrides the stored one)."""
    scales = q.absmax if absmax is None else absmax
    rows = q.levels[q.codes.long()] * scales.unsqueeze(1)
    return rows.reshape(-1)[: q.shape.numel()].view(q.shape)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes in one byte, high nibble first: the 4 in "4-bit" is real storage."""
    flat = codes.reshape(-1).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.nn.functional.pad(flat, (0, 1))
    return (flat[0::2] << 4) | flat[1::2]


def unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The first `n` codes of `pack_nibbles`' bytes."""
    flat = packed.reshape(-1)
    return torch.stack([flat >> 4, flat & 0x0F], dim=1).reshape(-1)[:n]


# --- double quantisation: quantise the scales too ---------------------------------------------


def dynamic_levels() -> torch.Tensor:
    """bitsandbytes' signed 8-bit "dynamic" code (Dettmers, 2016): each power of ten from 1e-6
    to 1 gets its own evenly spaced values, more of them for larger powers, so small and large
    scales both keep a few significant digits. 256 sorted values, from -0.99 to 1."""
    values = [0.0, 1.0]
    for i in range(7):  # the exponent: 10^(i-6)
        edges = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = ((edges[:-1] + edges[1:]) / 2 * 10.0 ** (i - 6)).tolist()
        values += means + [-m for m in means]
    return torch.tensor(sorted(values), dtype=torch.float32)


@dataclass
class DoubleQuantized:
    """The first-level scales stored in 8 bits: codes, one fp32 scale per 256, and their mean."""

    codes: torch.Tensor  # uint8 indices into dynamic_levels(), one per first-level scale
    absmax: torch.Tensor  # fp32, one per block of SCALE_BLOCK scales
    offset: torch.Tensor  # the mean scale, subtracted first so the codes use both signs
    n: int
    block: int

    def dequantize(self) -> torch.Tensor:
        """The first-level scales again, to within the 8-bit code's rounding."""
        rows = dynamic_levels()[self.codes.long()] * self.absmax.unsqueeze(1)
        return rows.reshape(-1)[: self.n] + self.offset


def double_quantize(absmax: torch.Tensor, block: int = SCALE_BLOCK) -> DoubleQuantized:
    """QLoRA's second trick: the fp32 scales cost 32/64 = 0.5 bit per weight; storing them in
    8 bits, blockwise, with the mean taken out, costs about 0.127."""
    offset = absmax.mean()
    levels = dynamic_levels()
    rows = _blocks(absmax - offset, block)
    scales = rows.abs().max(dim=1).values
    scaled = (rows / scales.clamp(min=1e-38).unsqueeze(1)).clamp(-1, 1)
    codes = (scaled.unsqueeze(-1) - levels).abs().argmin(dim=-1).to(torch.uint8)
    return DoubleQuantized(codes, scales, offset, absmax.numel(), block)


def bits_per_param(
    block: int = BLOCK, double: bool = False, scale_block: int = SCALE_BLOCK
) -> float:
    """Storage per weight: 4 bits of code plus its share of the scales (and of their scales)."""
    if not double:
        return 4 + 32 / block
    return 4 + 8 / block + 32 / (block * scale_block)


# --- how good is a code book -------------------------------------------------------------------


def reconstruction_error(x: torch.Tensor, kind: str, block: int = BLOCK) -> float:
    """Mean squared error of quantising `x` blockwise with the code book `kind` and back."""
    q = quantize_blockwise(x, levels_for(kind), block)
    return torch.mean((dequantize_blockwise(q) - x.float()) ** 2).item()


def error_table(x: torch.Tensor, blocks: tuple[int | None, ...] = (None, BLOCK)):
    """Relative RMS error of int8 / int4 / FP4 / NF4, per tensor (None) and blockwise: which
    code book and which block size keep a weight matrix closest to itself."""
    import pandas as pd

    scale = x.float().pow(2).mean().sqrt().item()
    rows = []
    for block in blocks:
        size = x.numel() if block is None else block
        label = "whole tensor" if block is None else f"blocks of {block}"
        if block is None:
            codes, s = absmax_quantize(x, 8)
            int8 = torch.mean((absmax_dequantize(codes, s, 8) - x) ** 2).item()
        else:
            q = quantize_blockwise(x, torch.arange(-127, 128, dtype=torch.float32) / 127, size)
            int8 = torch.mean((dequantize_blockwise(q) - x) ** 2).item()
        row = {"scales": label, "int8": int8**0.5 / scale}
        for kind in LEVELS:
            row[kind] = reconstruction_error(x, kind, size) ** 0.5 / scale
        rows.append(row)
    return pd.DataFrame(rows).set_index("scales").round(4)


def distinct_per_block(x: torch.Tensor, block: int = 32) -> torch.Tensor:
    """How many different values each block of `block` consecutive weights (along a row) holds:
    at most 16 everywhere means the weights already passed through a 4-bit grid."""
    rows = x.detach().reshape(-1, block)
    ordered = rows.sort(dim=1).values
    return 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1)


def rounding_report(x: torch.Tensor, bits: int) -> dict[str, float]:
    """What one absmax scale for a whole tensor does to it: the grid's step, the share of weights
    that round to zero, and the relative RMS error of the round trip."""
    codes, scale = absmax_quantize(x, bits)
    error = (absmax_dequantize(codes, scale, bits) - x).pow(2).mean().sqrt()
    return {
        "step": (scale / (2 ** (bits - 1) - 1)).item(),
        "rounded to zero": (codes == 0).float().mean().item(),
        "relative RMS error": (error / x.pow(2).mean().sqrt()).item(),
    }


def against_bitsandbytes(x: torch.Tensor, block: int = BLOCK) -> dict[str, float | bool]:
    """Our NF4 and double quantisation of `x` beside bitsandbytes' own, on the same tensor."""
    quiet_bitsandbytes()
    import bitsandbytes.functional as bnbf

    ours = quantize_blockwise(x, NF4_LEVELS, block)
    packed, state = bnbf.quantize_4bit(x, blocksize=block, quant_type="nf4")
    _, nested = bnbf.quantize_4bit(x, blocksize=block, quant_type="nf4", compress_statistics=True)
    double = double_quantize(ours.absmax)
    codes = double.codes.reshape(-1)[: double.n].int()
    theirs = bnbf.dequantize_blockwise(nested.absmax, nested.state2) + nested.offset
    scales = double.dequantize()
    return {
        "NF4 codes identical": torch.equal(ours.packed()[: packed.numel()], packed.reshape(-1)),
        "NF4 scales identical": torch.equal(ours.absmax, state.absmax),
        "8-bit scale codes that differ": (codes != nested.absmax.int()).float().mean().item(),
        "largest code difference (steps)": (codes - nested.absmax.int()).abs().max().item(),
        "largest scale difference to bitsandbytes": ((scales - theirs).abs() / theirs).max().item(),
        "largest scale error, ours": ((scales - ours.absmax).abs() / ours.absmax).max().item(),
        "largest scale error, bitsandbytes": ((theirs - ours.absmax).abs() / ours.absmax)
        .max()
        .item(),
    }
