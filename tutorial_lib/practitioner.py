"""The practitioner's code: what a learner types next week, with peft, transformers and
bitsandbytes directly, beside the library's `apply_method` path (lessons 03-06).

Nothing here goes through the library's method registry or training loop. It reuses only the
library's offline model folder (`models.resolve_model`: no hub download) and its lesson data
and system prompt, so both paths see the same chats. `agreement.agreement` runs both paths on
the same first batch and compares what they train and their first losses.

TRL's `SFTTrainer` is the usual one-liner for chat data; TRL is not installed here, and its
`assistant_only_loss=True` needs `{% generation %}` markers that SmolLM2's chat template lacks.
So the labels are built by hand (`chat_dataset`) and transformers' `Trainer` trains: the same
loop `SFTTrainer` subclasses.
"""

from __future__ import annotations

import torch

from tutorial_lib import data
from tutorial_lib.four_bit import four_bit_config
from tutorial_lib.memory.machine import own_parameters
from tutorial_lib.methods.prompts import DEFAULT_INIT_TEXT
from tutorial_lib.models import DEFAULT_MODEL, load_causal_lm, resolve_model

# --- the model and the data -------------------------------------------------------------------


def load_model(name: str = DEFAULT_MODEL, quantization_config=None):
    """(model, tokenizer) with transformers' Auto classes, from the library's offline folder.

    Online, `name` can be the Hub id "HuggingFaceTB/SmolLM2-135M-Instruct" instead. Pass a
    `BitsAndBytesConfig` (see `four_bit_config`) to load the linear layers in 4-bit.
    """
    model, tokenizer = load_causal_lm(name, quantization_config)  # Auto classes, safetensors
    if type(getattr(model, "hf_quantizer", None)).__name__.startswith("Bnb"):  # 4-bit, now or saved
        own_parameters(model)  # the file's pages the load read go back (lesson 06)
    return model, tokenizer


def chat_features(tokenizer, messages: list[dict]) -> dict[str, list[int]]:
    """input_ids and labels of one chat; labels are -100 except on the assistant's replies.

    SmolLM2's template marks no assistant span, so each reply is found by rendering the chat
    up to it: the tokens between "the prompt so far" and "the chat through this reply" are
    the reply (the library's `chat.encode_chat`, tested equal).
    """
    input_ids: list[int] = []
    labels: list[int] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(
            messages[:i], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reply_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        new_prompt = prompt_ids[len(input_ids) :]  # the turns since the last reply
        input_ids += new_prompt + reply_ids
        labels += [-100] * len(new_prompt) + reply_ids  # loss on the reply only
    return {"input_ids": input_ids, "labels": labels}


def chat_dataset(
    tokenizer,
    rows: list[dict] | None = None,
    facts: int | None = None,
    system: str | None = None,
    max_length: int = 128,
) -> list[dict[str, list[int]]]:
    """The lesson's chats as features for `Trainer`, each after the deployment's system prompt.

    `rows` default to the lesson's training chats (`facts` of them, as the lesson's profile
    says); `system` defaults to the task's prompt (data/system_prompt.txt), the one the
    library trains and evaluates with. Over-long chats are refused, not cut.
    """
    rows = rows if rows is not None else data.load_domain_train(facts=facts)
    system = system if system is not None else data.system_prompt()
    features = []
    for row in rows:
        messages = row["messages"]
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        example = chat_features(tokenizer, messages)
        if len(example["input_ids"]) > max_length:
            raise ValueError(f"row {row.get('id')!r} is over max_length={max_length} tokens")
        features.append(example)
    return features


def collator(tokenizer):
    """Right-pads a batch: pad token in input_ids, 0 in attention_mask, -100 in labels."""
    from transformers import DataCollatorForSeq2Seq

    tokenizer.padding_side = "right"  # as the library pads (a tokenizer may default to left)
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


# --- the peft configs, one per method ------------------------------------------------------------


def lora_config(r: int = 8, alpha: float = 16, dropout: float = 0.0, **kwargs):
    """LoRA on every linear layer but the head; `use_dora=True` or `use_rslora=True` for the
    variants (rsLoRA scales B·A by alpha / sqrt(r) instead of alpha / r)."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules="all-linear",
        **kwargs,
    )


def prompt_tuning_config(model_path: str, num_virtual_tokens: int = 8):
    """A soft prompt of 8 learned embeddings, started from the words of an instruction."""
    from peft import PromptTuningConfig, PromptTuningInit

    return PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT,
        prompt_tuning_init_text=DEFAULT_INIT_TEXT,
        tokenizer_name_or_path=model_path,
    )


def prefix_tuning_config(num_virtual_tokens: int = 8, prefix_projection: bool = False):
    """Learned keys and values in every attention layer; `prefix_projection=True` trains them
    through the paper's reparameterisation MLP (many more weights while training)."""
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=num_virtual_tokens,
        prefix_projection=prefix_projection,
    )


def ia3_config():
    """(IA)³: learned scales on keys, values and the MLP's down-projection input (peft's
    default targets for Llama)."""
    from peft import IA3Config

    return IA3Config(task_type="CAUSAL_LM")


def ln_tuning_config():
    """LN tuning: only the norms' gains train (peft trains a copy of each norm)."""
    from peft import LNTuningConfig

    return LNTuningConfig(task_type="CAUSAL_LM")


def peft_config(method: str, model_path: str = ""):
    """The peft config for one of the lessons' methods, by the names `PEFT_METHODS` lists."""
    configs = {
        "lora": lambda: lora_config(),
        "dora": lambda: lora_config(use_dora=True),
        "rslora": lambda: lora_config(use_rslora=True),
        "qlora": lambda: lora_config(),
        "prompt-tuning": lambda: prompt_tuning_config(model_path),
        "prefix-tuning": lambda: prefix_tuning_config(),
        "prefix-tuning-mlp": lambda: prefix_tuning_config(prefix_projection=True),
        "ia3": ia3_config,
        "ln-tuning": ln_tuning_config,
    }
    if method not in configs:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(configs)}")
    return configs[method]()


PEFT_METHODS = (
    "lora",
    "dora",
    "rslora",
    "prompt-tuning",
    "prefix-tuning",
    "prefix-tuning-mlp",
    "ia3",
    "ln-tuning",
    "qlora",
)


PRACTITIONER_METHODS = ("full", "top-layers", *PEFT_METHODS)  # what `peft_model` builds
# full fine-tuning and top layers need no peft: plain PyTorch says which weights train


def trainable_count(model) -> int:
    """Trainable parameters, each shared tensor once: what `print_trainable_parameters` prints
    for a peft model, and the same count for a plain one (full fine-tuning)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()[0]
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def top_layers_model(name: str = DEFAULT_MODEL, k: int = 2):
    """(model, tokenizer) with only the last `k` decoder blocks and the final norm trainable:
    plain PyTorch, no peft (the library's `top-layers`, k = 2 by default)."""
    model, tokenizer = load_model(name)
    model.requires_grad_(False)  # freeze everything, the tied embedding and head included
    for block in model.model.layers[-k:]:  # the k blocks nearest the output
        block.requires_grad_(True)
    model.model.norm.requires_grad_(True)  # the final norm reads the top block's output
    return model, tokenizer


# --- QLoRA: a 4-bit base, prepared for k-bit training ----------------------------------------


def qlora_model(
    name: str = DEFAULT_MODEL,
    compute_dtype: torch.dtype = torch.float32,
    seed: int = 0,
    saved: bool = True,
):
    """The QLoRA recipe: 4-bit base, k-bit preparation, the CPU gradient guard, LoRA on top.

    The 4-bit base is quantised once and saved (`four_bit.saved_four_bit`: a 4-bit load, then
    `model.save_pretrained`); loading the saved copy reads its packed weights only. With
    `saved=False` every call quantises on load, reading the whole full-precision file."""
    import bitsandbytes as bnb
    from peft import get_peft_model, prepare_model_for_kbit_training

    if saved:
        from tutorial_lib.four_bit import saved_four_bit

        model, tokenizer = load_model(str(saved_four_bit(name, compute_dtype)))
    else:
        model, tokenizer = load_model(name, quantization_config=four_bit_config(compute_dtype))
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # The one extra line on a CPU with AVX512-BF16: without it, one eval-mode forward repacks
    # the 4-bit weights and later training forwards silently drop the LoRA gradients.
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
    torch.manual_seed(seed)  # LoRA's A starts random
    return get_peft_model(model, lora_config()), tokenizer


def peft_model(method: str, name: str = DEFAULT_MODEL, compute_dtype=torch.float32, seed: int = 0):
    """(peft model, tokenizer) for a method of `PEFT_METHODS`: load, configure, wrap; for
    "full" (`PRACTITIONER_METHODS`), the plain transformers model, every weight trainable; for
    "top-layers", the plain model with only its last blocks trainable (`top_layers_model`).

    The seed is set just before `get_peft_model`: LoRA's A and a prefix start random.
    """
    from peft import get_peft_model

    if method == "qlora":
        return qlora_model(name, compute_dtype, seed)
    if method == "full":  # full fine-tuning needs no peft: the model as loaded trains every weight
        return load_model(name)
    if method == "top-layers":  # no peft either: freeze, then unfreeze the last blocks
        return top_layers_model(name)
    model, tokenizer = load_model(name)
    config = peft_config(method, resolve_model(name))
    torch.manual_seed(seed)
    return get_peft_model(model, config), tokenizer


# --- training with transformers' Trainer -------------------------------------------------------


def warmup_then_decay(step: int, warmup: int, total: int) -> float:
    """The library's schedule as a multiplier of the peak rate: linear warm-up that reaches the
    peak at step `warmup` - 1, then linear decay to 10 % of it at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.1, 1.0 - 0.9 * progress)


def training_arguments(
    output_dir: str,
    steps: int = 80,
    lr: float = 1e-4,
    batch_size: int = 8,
    grad_accum: int = 1,
    warmup_steps: int | None = None,
    max_grad_norm: float = 1.0,
    weight_decay: float = 0.0,
    seed: int = 0,
):
    """`TrainingArguments` with the library's knobs (defaults: `train.TrainConfig`'s).

    Warm-up defaults to 10 % of the steps, gradients are clipped to norm 1, no weight decay.
    The nearest built-in schedule is "warmup_stable_decay" (its decay is the library's: linear
    to 10 %), but its warm-up starts at 10 % of the peak at step 0, the library's at
    1 / warmup of it: `train_with_trainer` passes the library's schedule itself. Dropout is no
    Trainer argument: it sits in the peft config (`lora_dropout`, 0 here) and in the model's
    config (`attention_dropout`, 0 for SmolLM2).
    """
    from transformers import TrainingArguments

    warmup = warmup_steps if warmup_steps is not None else max(1, steps // 10)
    return TrainingArguments(
        output_dir=output_dir,
        max_steps=steps,
        learning_rate=lr,
        per_device_train_batch_size=batch_size // grad_accum,
        gradient_accumulation_steps=grad_accum,
        warmup_steps=warmup,
        lr_scheduler_type="warmup_stable_decay",
        lr_scheduler_kwargs={
            "num_decay_steps": steps - warmup,
            "min_lr_ratio": 0.1,
            "decay_type": "linear",
        },
        max_grad_norm=max_grad_norm,
        weight_decay=weight_decay,
        optim="adamw_torch",
        seed=seed,
        logging_steps=1,  # one loss per step, to set beside the library's loss history
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )


def library_optimizers(model, args):
    """AdamW on the trained weights (decay on all of them, as the library does) and the
    library's warm-up/decay schedule, for `Trainer(optimizers=...)`."""
    from functools import partial

    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=args.learning_rate, weight_decay=args.weight_decay)
    schedule = partial(warmup_then_decay, warmup=int(args.warmup_steps), total=args.max_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def release_after_steps():
    """A `TrainerCallback` that hands each step's freed activations back to the OS
    (`memory.machine.release_memory`, microseconds): without it the allocator keeps them and
    a small machine's kernel grows by a few hundred MiB over a run (lesson 08 in a 2 GB Binder
    session). It changes no number, only what the process holds between steps."""
    from transformers import TrainerCallback

    from tutorial_lib.memory.machine import release_memory

    class ReleaseAfterSteps(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            release_memory()  # what building the model and the Trainer left behind

        def on_step_end(self, args, state, control, **kwargs):
            release_memory(collect=False)

        def on_train_end(self, args, state, control, **kwargs):
            release_memory()

    return ReleaseAfterSteps()


def train_with_trainer(model, tokenizer, dataset: list[dict], args) -> list[float]:
    """Train with transformers' `Trainer` for `args.max_steps` steps; the loss of each step.

    With TRL, `SFTTrainer(model, args=SFTConfig(...), train_dataset=...)` is the same loop;
    it takes the features of `chat_dataset` as they are.
    """
    from transformers import Trainer

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator(tokenizer),
        optimizers=library_optimizers(model, args),
        callbacks=[release_after_steps()],
    )
    trainer.train()
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]
