"""Quantisation from scratch (tutorial_lib.quant) against bitsandbytes, the library QLoRA uses."""

from __future__ import annotations

import pytest
import torch

from tutorial_lib import quant

bnb_functional = pytest.importorskip("bitsandbytes.functional")


def _weights(shape=(96, 200), seed=0) -> torch.Tensor:
    """Gaussian weights at a transformer's scale; 19,200 values, not a whole number of blocks
    of 256 scales, so the padded last block is exercised too."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.02


def test_nf4_levels_are_bitsandbytes_table():
    theirs = bnb_functional.get_4bit_type("nf4", device="cpu")
    assert quant.NF4_LEVELS.shape == (16,)
    assert torch.allclose(quant.NF4_LEVELS, theirs, atol=2e-7, rtol=0)
    assert quant.NF4_LEVELS[7] == 0 and quant.NF4_LEVELS[0] == -1 and quant.NF4_LEVELS[-1] == 1


def test_nf4_levels_are_normal_quantiles():
    # equal probability mass: the positive levels' quantile points are evenly spaced
    levels = quant.NF4_LEVELS.double()
    top = torch.special.ndtri(torch.tensor(0.9677083, dtype=torch.float64))
    cdf = torch.special.ndtr(levels[8:] * top)
    gaps = cdf[1:] - cdf[:-1]
    assert torch.allclose(gaps, gaps.mean(), atol=1e-6)


def test_fp4_levels_follow_the_e2m1_bit_layout():
    magnitudes = sorted({abs(v) for v in quant.fp4_levels().tolist()})
    assert magnitudes == pytest.approx([x / 6 for x in (0, 0.5, 1, 1.5, 2, 3, 4, 6)])
    # bitsandbytes' FP4 differs from plain E2M1 in its smallest step only (0.0052, not 1/12)
    theirs = sorted(
        {round(abs(v), 4) for v in bnb_functional.get_4bit_type("fp4", device="cpu").tolist()}
    )
    ours = sorted({round(m, 4) for m in magnitudes})
    assert set(ours) ^ set(theirs) == {0.0833, 0.0052}


def test_dynamic_levels_are_bitsandbytes_8bit_code():
    theirs = bnb_functional.create_dynamic_map(signed=True)
    assert torch.equal(quant.dynamic_levels(), theirs)


@pytest.mark.parametrize("shape", [(96, 200), (7, 13)])  # whole blocks; a ragged, odd count
def test_nf4_blockwise_equals_bitsandbytes_bit_for_bit(shape):
    x = _weights(shape)
    packed, state = bnb_functional.quantize_4bit(
        x, blocksize=64, quant_type="nf4", compress_statistics=False
    )
    ours = quant.quantize_blockwise(x, quant.NF4_LEVELS, 64)
    n_bytes = packed.numel()
    assert torch.equal(ours.packed()[:n_bytes], packed.reshape(-1))
    assert torch.equal(ours.absmax, state.absmax)
    # (bitsandbytes' dequantiser is compiled per shape on first use, 30 s on CPU: not called)
    expected = (quant.NF4_LEVELS[ours.codes.long()] * ours.absmax[:, None]).reshape(-1)
    assert torch.equal(quant.dequantize_blockwise(ours).reshape(-1), expected[: x.numel()])


def test_double_quantisation_is_within_a_stated_tolerance_of_bitsandbytes():
    x = _weights((192, 576))  # 1,728 scales: 7 blocks of 256, the last one partial
    _, state = bnb_functional.quantize_4bit(
        x, blocksize=64, quant_type="nf4", compress_statistics=True
    )
    first = quant.quantize_blockwise(x, quant.NF4_LEVELS, 64)
    ours = quant.double_quantize(first.absmax)
    assert torch.equal(ours.offset, state.offset)
    assert torch.equal(ours.absmax, state.state2.absmax)
    # its CPU 8-bit quantiser rounds through a lookup table: a few codes land one step away
    # (0.17 % of them here), and never further than one step
    codes = ours.codes.reshape(-1)[: ours.n]
    assert (codes != state.absmax).float().mean().item() < 0.01
    assert (codes.int() - state.absmax.int()).abs().max() <= 1
    theirs = bnb_functional.dequantize_blockwise(state.absmax, state.state2) + state.offset
    assert torch.allclose(ours.dequantize(), theirs, rtol=0.02, atol=0)  # one step: up to 1.2 %
    # both keep every scale within 1 % of the fp32 scale they stand for
    assert torch.allclose(ours.dequantize(), first.absmax, rtol=0.01, atol=0)
    assert torch.allclose(theirs, first.absmax, rtol=0.01, atol=0)


def test_bits_per_parameter():
    assert quant.bits_per_param() == 4.5  # 4 bits + a 32-bit scale per 64
    assert quant.bits_per_param(double=True) == pytest.approx(4.127, abs=5e-4)


def test_error_orders_int4_fp4_nf4_on_gaussian_weights():
    x = _weights((576, 576))
    errors = {kind: quant.reconstruction_error(x, kind) for kind in ("int4", "fp4", "nf4")}
    assert errors["int4"] > errors["fp4"] > errors["nf4"]  # the QLoRA paper's ordering


def test_blockwise_scales_contain_an_outlier():
    x = _weights((64, 64))
    x[3, 5] = 10.0  # one weight 500 times the others' scale
    codes, scale = quant.absmax_quantize(x, bits=8)
    whole = (quant.absmax_dequantize(codes, scale, 8) - x).pow(2).mean()
    per_block = quant.quantize_blockwise(x, torch.arange(-127, 128.0) / 127, 64)
    blockwise = (quant.dequantize_blockwise(per_block) - x).pow(2).mean()
    assert blockwise < whole / 10
    # per tensor, most small weights round to zero: the outlier took the grid
    assert (codes == 0).float().mean() > 0.9


def test_absmax_round_trip_is_within_half_a_step():
    x = _weights((32, 32))
    codes, scale = quant.absmax_quantize(x, bits=8)
    assert (quant.absmax_dequantize(codes, scale, 8) - x).abs().max() <= scale / 127 / 2 + 1e-9


def test_nibbles_pack_two_codes_per_byte_high_first():
    codes = torch.tensor([1, 2, 15, 0, 7], dtype=torch.uint8)
    packed = quant.pack_nibbles(codes)
    assert packed.tolist() == [0x12, 0xF0, 0x70]
    assert torch.equal(quant.unpack_nibbles(packed, 5), codes)


def test_unknown_code_book_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown 4-bit type 'nf5'.*\['fp4', 'int4', 'nf4'\]"):
        quant.levels_for("nf5")


def test_against_bitsandbytes_reports_what_the_tests_above_check():
    report = quant.against_bitsandbytes(_weights((192, 576)))
    assert report["NF4 codes identical"] and report["NF4 scales identical"]
    assert report["8-bit scale codes that differ"] < 0.01
    assert report["largest code difference (steps)"] <= 1
    assert report["largest scale error, ours"] < 0.01


def test_rounding_report_of_one_outlier():
    x = _weights((64, 64))
    x[0, 0] = 10.0
    report = quant.rounding_report(x, bits=4)
    assert report["step"] == pytest.approx(10.0 / 7)
    assert report["rounded to zero"] > 0.99  # every weight but the outlier
    # relative to the whole tensor's energy, which the outlier alone dominates, the error looks
    # small: a relative error can hide that every other weight was lost
    assert report["relative RMS error"] < 0.2


def test_distinct_values_per_block_reveal_a_4bit_grid():
    x = _weights((4, 64))
    assert quant.distinct_per_block(x, 32).min() == 32
    q = quant.quantize_blockwise(x, quant.NF4_LEVELS, 32)
    assert quant.distinct_per_block(quant.dequantize_blockwise(q), 32).max() <= 16


def test_offline_bitsandbytes_import_drops_only_the_skipped_trust_notice():
    """Offline, `kernels` says it skipped a hub publisher check, then finds no cached kernel:
    the library keeps that one line out of the lessons and lets every other message through."""
    import os
    import subprocess
    import sys

    pytest.importorskip("bitsandbytes")
    script = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "import tutorial_lib, bitsandbytes\n"
        "logging.getLogger('kernels._internals.hf_hub').warning('another kernels notice')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert "Skipping publisher trust check" not in out.stderr
    assert "another kernels notice" in out.stderr
