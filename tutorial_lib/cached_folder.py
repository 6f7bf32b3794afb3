"""A cache folder built once and checked by a manifest of its files' hashes.

The library keeps three: the converted model (`models.fetch_model`), the published benchmarks'
Arrow files (`published.fetch_published`) and the saved 4-bit base (`four_bit.saved_four_bit`).
Each is built the same way here:

- in a temporary folder beside its place, then renamed into place, so no reader ever sees a
  half-written copy;
- under a file lock, so two notebooks that start at once build it once (the second waits and
  then finds it);
- with a manifest that lists every file's SHA-256 and the fields that decide its bytes (the
  source, the settings). A folder is used only when every listed file is present with its hash
  and every field equals the one asked for: a damaged copy is built again, and a copy made with
  other settings is never returned.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from filelock import FileLock

MANIFEST = "manifest.json"

_VERIFIED: dict[tuple, str] = {}  # (path, size, mtime, inode, ends) -> hash, this process


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, read in chunks so a 500 MiB file costs no extra memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_sha256(path: Path) -> str:
    """A file's hash, computed once per process while the file is unchanged on disk.

    Hashing the 513 MiB model took about a second of every load, several loads a lesson. A
    file rewritten since (a corrupt, partial or replaced cache) has another size, time, inode
    or first or last MiB; a new process always hashes the whole file again.
    """
    st = path.stat()
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
        fh.seek(max(0, st.st_size - (1 << 20)))
        tail = fh.read()
    ends = hashlib.sha256(head + tail).hexdigest()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, ends)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    return _VERIFIED[key]


def read_manifest(folder: Path, manifest: str = MANIFEST) -> dict | None:
    """The folder's manifest, or None where there is none or it cannot be read."""
    try:
        found = json.loads((Path(folder) / manifest).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def matches(folder: Path, manifest: str = MANIFEST, *, holds: Iterable[str] = (), **fields) -> bool:
    """True when the manifest records these fields and lists files, each present with its hash.

    `holds` names sub-folders a usable copy must list at least one file under (a reader needs
    them all): one read of the manifest answers both questions.
    """
    found = read_manifest(folder, manifest)
    if found is None or any(found.get(key) != value for key, value in fields.items()):
        return False
    hashes = found.get("sha256")
    if not isinstance(hashes, dict) or not hashes:
        return False
    if not all(any(rel.startswith(f"{sub}/") for rel in hashes) for sub in holds):
        return False
    return all(
        (Path(folder) / rel).is_file() and cached_sha256(Path(folder) / rel) == digest
        for rel, digest in hashes.items()
    )


def write_manifest(folder: Path, manifest: str = MANIFEST, **fields) -> None:
    """Record `fields` and the hash of every file under `folder` (by relative path)."""
    folder = Path(folder)
    hashes = {
        path.relative_to(folder).as_posix(): cached_sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != manifest
    }
    (folder / manifest).write_text(json.dumps({**fields, "sha256": hashes}, indent=1) + "\n")


def build_once(
    folder: Path,
    build: Callable[[Path], None],
    *,
    manifest: str = MANIFEST,
    holds: Iterable[str] = (),
    **fields,
) -> Path:
    """`folder`, built by `build(staged)` unless a copy that `matches` these fields is there.

    `build` must create the folder `staged`; it may keep scratch files beside it (in
    `staged.parent`, a temporary folder removed afterwards). `holds`, where given, names the
    sub-folders a usable copy must list (see `matches`).
    """
    folder = Path(folder)

    def usable() -> bool:
        return matches(folder, manifest, holds=holds, **fields)

    if usable():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if usable():  # another process finished while this one waited
            return folder
        with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
            staged = Path(tmp) / "staged"
            build(staged)
            write_manifest(staged, manifest, **fields)
            if folder.exists():
                shutil.rmtree(folder)  # the old copy failed its check
            os.replace(staged, folder)
    return folder
