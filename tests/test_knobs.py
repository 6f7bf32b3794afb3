"""The knobs a lesson prints are the ones its runs train with: read back from a real run."""

from __future__ import annotations

import pytest
import torch

from tutorial_lib import data, practitioner
from tutorial_lib.experiment import train_config
from tutorial_lib.knobs import LABELS, Knobs, knobs, knobs_table
from tutorial_lib.methods import apply_method
from tutorial_lib.methods.lora import LoraMethodConfig
from tutorial_lib.runspec import RunSpec
from tutorial_lib.train import train


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread for the tiny model: a second buys nothing at this size, and under load the
    two spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Seen:
    """What `train` built: its optimizer, the rate of every step, the clipping and batch sizes."""

    def __init__(self) -> None:
        self.optimizers: list = []
        self.rates: list[float] = []
        self.max_norms: list[float] = []
        self.batches: list[int] = []


@pytest.fixture
def seen(monkeypatch) -> _Seen:
    from accelerate import Accelerator

    record = _Seen()
    adamw, clip = torch.optim.AdamW, Accelerator.clip_grad_norm_

    class RecordingAdamW(adamw):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            record.optimizers.append(self)

        def step(self, *args, **kwargs):
            record.rates.append(self.param_groups[0]["lr"])  # the rate this update uses
            return super().step(*args, **kwargs)

    def recording_clip(self, parameters, max_norm, *args, **kwargs):
        record.max_norms.append(max_norm)
        return clip(self, parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", recording_clip)
    return record


def test_the_printed_knobs_are_what_a_run_trains_with(tiny, small_profile, seen):
    model, tokenizer = tiny
    spec = RunSpec("lora", steps=20, method_config=LoraMethodConfig(dropout=0.1))
    k = knobs(spec, small_profile, model.config)
    model = apply_method(model, spec.method, spec.method_config, seed=spec.seed)
    model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.batches.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    examples = data.encode_chats(tokenizer, data.load_domain_train()[:8], 128)
    result = train(model, examples, train_config(spec, small_profile), tokenizer.pad_token_id)

    optimizer = seen.optimizers[-1]  # train's (knobs built one to read AdamW's constants)
    group = optimizer.param_groups[0]
    assert result.steps_done == k.steps == 20
    assert group["initial_lr"] == k.lr == 3e-3  # LoRA's registered rate
    assert group["weight_decay"] == k.weight_decay
    assert f"betas {group['betas']}, eps {group['eps']:g}" in k.optimizer
    assert seen.rates == pytest.approx([k.lr_at(s) for s in range(k.steps)])
    assert seen.rates[k.warmup_steps - 1] == pytest.approx(k.lr)  # warm-up ends at the peak
    assert seen.rates[k.warmup_steps - 2] < k.lr and k.warmup_steps == 2  # 10 % of 20 steps
    after = seen.rates[k.warmup_steps - 1 :]
    assert after == sorted(after, reverse=True) and after[-1] < 0.2 * k.lr  # decays toward 10 %
    assert seen.max_norms == [k.max_grad_norm] * k.steps
    assert set(seen.batches) == {k.batch_size // k.grad_accum} == {small_profile.batch_size}
    dropouts = [m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and set(dropouts) == {k.dropout} == {0.1}  # LoRA's, inside every adapter
    assert k.model_dropout == model.config.attention_dropout


def test_methods_without_dropout_say_so(small_profile):
    assert knobs("ia3", small_profile).dropout is None
    assert knobs("lora", small_profile).dropout == 0.0
    assert knobs("lora", small_profile).model_dropout is None  # no model config given


def test_the_trainer_gets_the_same_knobs(tmp_path, small_profile):
    k = knobs(RunSpec("dora", steps=30), small_profile)
    args = practitioner.training_arguments(str(tmp_path), **k.trainer_kwargs())
    assert (args.max_steps, args.learning_rate) == (k.steps, k.lr)
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == k.batch_size
    assert (args.warmup_steps, args.max_grad_norm, args.weight_decay) == (
        k.warmup_steps,
        k.max_grad_norm,
        k.weight_decay,
    )
    model = torch.nn.Linear(2, 2)
    _, scheduler = practitioner.library_optimizers(model, args)
    rates = []
    for _ in range(k.steps):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([k.lr_at(s) for s in range(k.steps)])


def test_the_table_has_a_column_per_run_and_a_row_per_knob(small_profile):
    table = knobs_table("lora", RunSpec("ia3", lr=0.05), profile=small_profile)
    assert list(table.columns) == ["lora", "ia3, lr 0.05, seed 0"]
    assert list(table.index) == list(LABELS.values())
    assert table.loc["peak learning rate", "ia3, lr 0.05, seed 0"] == "0.05"
    assert table.loc["method dropout", "ia3, lr 0.05, seed 0"] == "none"
    assert table.loc["schedule", "lora"].startswith("linear warm-up")
    assert set(LABELS) <= set(Knobs.__dataclass_fields__)


def test_qlora_shows_its_compute_dtype_and_two_dtypes_get_two_columns(small_profile):
    from tutorial_lib.methods.qlora import QloraConfig

    fp32 = RunSpec("qlora", lr=3e-3, method_config=QloraConfig(compute_dtype="fp32"))
    bf16 = RunSpec("qlora", lr=3e-3, method_config=QloraConfig(compute_dtype="bf16"))
    assert knobs(fp32, small_profile).compute_dtype == "float32"
    assert knobs(bf16, small_profile).compute_dtype == "bfloat16"
    assert knobs("lora", small_profile).compute_dtype is None  # no 4-bit base
    table = knobs_table("lora", fp32, bf16, profile=small_profile)
    assert list(table.columns) == [
        "lora",
        "qlora, lr 0.003, seed 0, float32 compute",
        "qlora, lr 0.003, seed 0, bfloat16 compute",
    ]
    assert table.loc["4-bit base compute dtype", "lora"] == "none"
