"""Keep a lesson's prose honest: every number in a markdown cell must be backed.

A number in a markdown cell is backed when it appears in a text output of a code cell above it, in
a committed results file the cell names by its path from the repository root (a `.json`, `.jsonl`
or `.csv`, e.g. `benchmarks/results/learning-rates.json`), or when its sentence carries a citation
of a published source (`CITATION`: "Hu et al." or an author-year "(Dettmers, 2016)").

Numbers are compared after normalisation: separators go ("1,580" = 1580), signs go (prose says
"fell by 0.04" of a printed -0.04; "−" and "±" are read), a prose number matches any evidence
that rounds to it at the digits shown ("0.93" matches 0.928; "about 630" matches 628, rounded
to the tens, but a bare "630" does not; "1e-4" is 0.0001), and a percent or percentage point
matches its fraction either way ("12%" and "12 points" match 0.12 and 12; "0.12" matches a
printed "12%"). Units are never converted: "1.4 GiB" is not backed by 1468 MiB.

What is not a measurement is exempt, by the rules in `EXEMPT_SPANS` (text that is not prose:
code, links, HTML, paths, versions, quotations) and `is_exempt` (small integers, years, lesson,
section, step and exercise numbers, ordinals, identifiers, model and GPU sizes as named).

    python -m tutorial_lib.prose notebooks/05_lora.ipynb        # the unbacked numbers, by cell
    python -m tutorial_lib.prose --counts notebooks/*.ipynb      # the ratchet's JSON (tests/)
    python -m tutorial_lib.prose --words notebooks/*.ipynb       # main-text words per lesson

A lesson's **main text** (`main_text_words`) is everything a learner meets before the appendix:
the markdown cells from the first up to the first heading named Appendix or Solutions, the
exercises included (the worked solutions close a lesson, after its appendix). Its words are
counted without code, HTML comments and tags, `<details>` blocks, images (badges), link targets
and tables (lines that start with `|`); a link counts by its text.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import nbformat

# Text that is not prose: blanked (same length, so offsets hold) before numbers are read.
EXEMPT_SPANS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("fenced code", re.compile(r"^\s*(```|~~~).*?^\s*\1", re.M | re.S)),
    ("inline code: names and arguments, not claims", re.compile(r"(`+).+?\1", re.S)),
    ("HTML tags and their attributes", re.compile(r"</?[A-Za-z][^>\n]*>")),
    ("link and image targets", re.compile(r"\]\([^)\s]*(?:\s+\"[^\"]*\")?\)")),
    ("reference-style link targets", re.compile(r"^\s*\[[^\]]+\]:\s*\S+.*$", re.M)),
    ("quotations: examples and quoted claims", re.compile(r'"[^"\n]{1,80}"|“[^”\n]{1,80}”')),
    ("footnote ids", re.compile(r"\[\^[^\]]+\]")),
    ("URLs", re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+")),
    (
        "paths and file names",
        re.compile(
            r"(?:[\w.-]+/)+[\w.-]*[A-Za-z][\w.-]*|\b[\w-]+\.(?:ipynb|py|jsonl?|csv|md|txt)\b"
        ),
    ),
    (
        "versions (x.y.z, >=x.y, ==x.y, Python x.y)",
        re.compile(r"\b\d+\.\d+\.\d+\w*|[<>=~!]=\s*\d[\w.]*|\bPython\s+\d[\d.]*"),
    ),
)
# The citation marker: a sentence that cites a published source may quote its figures.
CITATION = re.compile(
    r"\b[A-Z][\w'’-]+ et al\."  # Hu et al.
    # (Dettmers, 2016), (Dettmers and Zettlemoyer, 2023)
    r"|\(\s*[A-Z][\w'’-]+(?:\s+(?:and|&)\s+[A-Z][\w'’-]+)?,\s*(?:19|20)\d\d[a-z]?\b"
    r"|\b[A-Z][\w'’-]+ \((?:19|20)\d\d[a-z]?[,)]"  # Aghajanyan (2020)
)
# Index words: "lesson 05", "lessons 03–07", "§3", "step 28" (the 28th step; "28 steps" is a
# count and is checked), "exercise 2", "section 4", "cell 12", "figure 1", "table 2", "part 3".
INDEX = re.compile(
    r"(?:\b(?:lessons?|sections?|steps?|exercises?|cells?|figures?|fig\.|tables?|parts?"
    r"|chapters?|questions?)|§)\s*(?:\d+(?:\.\d+)*(?:\s*(?:,|–|-|—|to|and|or|&)\s*)?)+",
    re.I,
)
SMALL_INTEGER = 20  # integers 0..20 with no decimals, percent, "×" or "±" are counts and indices
# Before an integer, these let it round to its trailing zeros ("about 630 MB" of 628); without
# one, an integer matches only evidence that rounds to it at the units.
APPROXIMATE = re.compile(r"(?:about|around|roughly|approximately|nearly|almost|~|≈)\s*$", re.I)
YEARS = (1990, 2030)  # a bare four-digit integer in this range is a year
# A number: digits with thousands separators or decimals, an optional exponent and percent. A
# sign is not part of it: evidence and prose are compared by magnitude.
# "points" are percentage points, as the lessons use the word ("±3.5 points" of 0.035).
PERCENT = r"\s?%|\s?(?:percent|per cent|percentage points?|points?|pp)\b"
NUMBER = re.compile(
    r"(?P<body>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|(?<!\d)\.\d+)"
    r"(?P<exp>[eE][-−+]?\d+\b|\s?[×x]\s?10\^[-−]?\d+)?"
    rf"(?P<pct>{PERCENT})?"
)
# A product's name, not a measurement: a model's size as its name gives it ("70B", "7B–65B",
# "a 135 M model", "135M-parameter") and a GPU's memory ("one 24 GB GPU").
NAMED_SIZE = re.compile(
    r"B\b|\s?B\s+parameters\b|\s?[BM](?:\s+models?\b|-parameter\b)|\s?GB\s+GPUs?\b"
)
_ROUNDINGS = range(-6, 10)  # decimals an evidence number is rounded to (negative: tens, hundreds)


@dataclass(frozen=True)
class Unbacked:
    """A number in a markdown cell that no output above, named file or citation backs."""

    cell: int  # index of the markdown cell in the notebook
    text: str  # the number as written
    context: str  # the words around it


def _blank(text: str, start: int, end: int) -> str:
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


def prose_text(markdown: str) -> str:
    """The markdown with every `EXEMPT_SPANS` match blanked out (same length)."""
    for _, pattern in EXEMPT_SPANS:
        for m in list(pattern.finditer(markdown)):
            markdown = _blank(markdown, m.start(), m.end())
    return markdown


def _exponent(m: re.Match[str]) -> int:
    exp = (m.group("exp") or "e0").replace(" ", "").replace("−", "-").replace("^", "")
    return int(exp.split("10", 1)[1] if exp[0] in "×x" else exp[1:])


def _value(m: re.Match[str]) -> Decimal:
    """The number's magnitude: separators removed, the exponent applied."""
    return Decimal(m.group("body").replace(",", "")).scaleb(_exponent(m))


def _decimals(m: re.Match[str], approximate: bool = False) -> int:
    """The digits shown: decimals after the point; for an approximate integer, minus its zeros."""
    body = m.group("body").replace(",", "")
    if "." in body:
        shown = len(body.split(".")[1])
    elif body.strip("0") and approximate:
        shown = -(len(body) - len(body.rstrip("0")))
    else:
        shown = 0  # an integer matches at its units
    return shown - _exponent(m)


def numbers(text: str) -> list[re.Match[str]]:
    """Every number in a text; a range "3–5" gives two."""
    return list(NUMBER.finditer(text))


def is_percent(text: str, m: re.Match[str]) -> bool:
    """A percent, or the first of two that share one ("15 to 19 %", "1.7 ± 2.3 points")."""
    shared = re.match(rf"\s*(?:to|–|-|—|±)\s*[\d.,]+(?:{PERCENT})", text[m.end() :])
    return bool(m.group("pct") or shared)


def is_exempt(text: str, m: re.Match[str], exempt: list[tuple[int, int]]) -> bool:
    """The listed rules under which a prose number is not a measurement (see the module doc)."""
    start, end, body = m.start("body"), m.end(), m.group("body")
    before, after = text[max(0, start - 2) : start], text[end : end + 3]
    if any(a <= start < b for a, b in exempt):  # an index, or a sentence with a citation
        return True
    if before[-1:].isalpha() or before[-1:] == "_":
        return True  # part of an identifier: fp16, Q4_1, NF4, SmolLM2
    if before[-1:] == "-" and re.search(r"[A-Za-z][\w.-]*-$", text[:start]):
        return True  # after a hyphenated name: SmolLM2-135M, Llama-3.2-3B, GPT-3 (not "3-5")
    if re.match(r"(?:st|nd|rd|th)\b", after) or after[:1] == "_":
        return True  # an ordinal (28th), or a file-name prefix (05_lora)
    if "." not in body and NAMED_SIZE.match(text, end):
        return True  # a product's name: a 70B model, a 24 GB GPU
    plain = "." not in body and "," not in body and not m.group("exp") and not is_percent(text, m)
    ratio = re.match(r"\s?[×x](?!\s?\d)", text[end : end + 6])
    error = text[:start].rstrip().endswith("±")  # "±8" is a measured error, not a count
    if plain and not ratio and not error and int(body) <= SMALL_INTEGER:
        return True
    return plain and len(body) == 4 and YEARS[0] <= int(body) <= YEARS[1]


def exempt_spans(text: str) -> list[tuple[int, int]]:
    """Index phrases and the sentences that carry a citation marker, as (start, end) pairs."""
    spans = [(m.start(), m.end()) for m in INDEX.finditer(text)]
    bounds = [0]
    splitter = r"(?<!al\.)(?<=[.!?])\s+(?=[A-Z(*_\[])|\n\s*\n|\n(?=\s*(?:[-*+]\s|\d+\.\s|\||#))"
    bounds += [m.end() for m in re.finditer(splitter, text)] + [len(text)]
    for a, b in zip(bounds, bounds[1:]):
        if CITATION.search(text, a, b):
            spans.append((a, b))
    return spans


class Evidence:
    """Numbers seen so far, rounded at every precision a prose number may show."""

    def __init__(self) -> None:
        self.rounded: dict[int, set[Decimal]] = {k: set() for k in _ROUNDINGS}

    def add_text(self, text: str) -> None:
        for m in numbers(text):
            value = _value(m)
            self.add(value)
            if m.group("pct"):
                self.add(value / 100)

    def add(self, value: Decimal) -> None:
        for k, seen in self.rounded.items():
            q = Decimal(1).scaleb(-k)
            try:
                seen.add(value.quantize(q, ROUND_HALF_EVEN))
                seen.add(value.quantize(q, ROUND_HALF_UP))
            except InvalidOperation:  # more digits than a Decimal holds: never quoted so finely
                continue

    def backs(self, value: Decimal, shown: int, percent: bool) -> bool:
        candidates = [(value, shown)] + ([(value / 100, shown + 2)] if percent else [])
        return any(
            k in self.rounded and v.quantize(Decimal(1).scaleb(-k)) in self.rounded[k]
            for v, k in candidates
        )


def output_text(cell: nbformat.NotebookNode) -> str:
    """What a reader sees of a code cell's outputs: streams and text/* forms, HTML tags and
    style sheets removed (tracebacks and images are not read)."""
    texts = []
    for out in cell.get("outputs", []):
        texts.append(out.get("text", ""))
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/"):
                value = "".join(value) if isinstance(value, list) else value
                if mime == "text/html":
                    value = re.sub(r"<(style|script)\b.*?</\1>|<[^>]+>", " ", value, flags=re.S)
                texts.append(value)
    return "\n".join(texts)


def named_files(markdown: str, root: Path | None) -> list[Path]:
    """Committed results files the cell names by their path from the repository root."""
    if root is None:
        return []
    paths = re.findall(r"[\w./-]+\.(?:json|jsonl|csv)\b", markdown)
    return [root / p for p in paths if (root / p).is_file() and ".." not in p]


def find_root(path: Path) -> Path | None:
    """The repository root above a notebook: the first folder up with a pyproject.toml."""
    for folder in path.resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def unbacked(
    notebook: nbformat.NotebookNode | str | Path, root: Path | None = None
) -> list[Unbacked]:
    """The numbers in the notebook's markdown cells that nothing above them backs, in order."""
    if not isinstance(notebook, nbformat.NotebookNode):
        path = Path(notebook)
        root = root if root is not None else find_root(path)
        notebook = nbformat.read(path, as_version=4)
    evidence, found = Evidence(), []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            evidence.add_text(output_text(cell))
            continue
        if cell.cell_type != "markdown":
            continue
        local = evidence
        files = named_files(cell.source, root)
        if files:
            local = Evidence()
            local.rounded = {k: set(v) for k, v in evidence.rounded.items()}
            for file in files:
                local.add_text(file.read_text(encoding="utf-8"))
        text = prose_text(cell.source)
        spans = exempt_spans(text)
        for m in numbers(text):
            value = _value(m)
            if is_exempt(text, m, spans):
                continue
            approximate = bool(APPROXIMATE.search(text, max(0, m.start() - 15), m.start()))
            if not local.backs(value, _decimals(m, approximate), is_percent(text, m)):
                context = " ".join(cell.source[max(0, m.start() - 50) : m.end() + 30].split())
                found.append(Unbacked(index, m.group(0).strip(), context))
    return found


def per_notebook(paths: list[Path], measure: Callable[[Path], int]) -> dict[str, int]:
    """`measure` of each notebook, by file stem in sorted order: the form of a ratchet's record."""
    return {Path(p).stem: measure(p) for p in sorted(paths)}


def counts(paths: list[Path]) -> dict[str, int]:
    """The number of unbacked numbers per notebook, by file stem: the ratchet's record."""
    return per_notebook(paths, lambda path: len(unbacked(path)))


# What a word count of the main text leaves out, in order: each is replaced by a space.
NOT_MAIN_TEXT: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("fenced code", re.compile(r"^\s*(```|~~~).*?^\s*\1[^\n]*", re.M | re.S)),
    ("HTML comments", re.compile(r"<!--.*?-->", re.S)),
    ("<details> blocks: solutions and asides", re.compile(r"<details\b.*?</details>", re.S | re.I)),
    ("inline code", re.compile(r"(`+).+?\1", re.S)),
    ("images and badges", re.compile(r"!\[[^\]]*\]\([^)]*\)")),
    ("link targets (the text stays)", re.compile(r"(?<=\])\([^)]*\)")),
    ("reference-style link targets", re.compile(r"^\s*\[[^\]]+\]:\s*\S+.*$", re.M)),
    ("URLs", re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+")),
    ("HTML tags", re.compile(r"</?[A-Za-z][^>\n]*>")),
    ("tables", re.compile(r"^\s*\|.*$", re.M)),
)
# The heading where the main text ends: the appendix (tables, details) or the worked solutions.
# The exercises come before both and are main text: a reader meets them before any appendix.
MAIN_TEXT_END = re.compile(r"^[ \t]{0,3}#{1,6}\s*(?:Appendix|Solutions)\b", re.I | re.M)
WORD = re.compile(r"\S*[^\W_]\S*")  # a run of non-space with a letter or digit in it
WORD_LIMIT = 2000  # issue 24: the main text of each lesson is at most 2,000 words


def words(markdown: str) -> int:
    """The words of a markdown text, without what `NOT_MAIN_TEXT` leaves out."""
    for _, pattern in NOT_MAIN_TEXT:
        markdown = pattern.sub(" ", markdown)
    return len(WORD.findall(markdown))


def main_text(notebook: nbformat.NotebookNode | str | Path) -> list[str]:
    """The markdown of a lesson's main text, cell by cell: up to the first heading named Appendix
    or Solutions, exercises included (a cell that holds one contributes what comes before it)."""
    if not isinstance(notebook, nbformat.NotebookNode):
        notebook = nbformat.read(Path(notebook), as_version=4)
    found = []
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        end = MAIN_TEXT_END.search(_code_blanked(cell.source))
        found.append(cell.source[: end.start()] if end else cell.source)
        if end:
            break
    return found


def _code_blanked(markdown: str) -> str:
    """The markdown with fenced code blanked (same length), so a heading in code is no end."""
    pattern = NOT_MAIN_TEXT[0][1]
    for m in list(pattern.finditer(markdown)):
        markdown = _blank(markdown, m.start(), m.end())
    return markdown


def main_text_words(notebook: nbformat.NotebookNode | str | Path) -> int:
    """The number of words in a lesson's main text (`main_text`, counted by `words`)."""
    return sum(words(text) for text in main_text(notebook))


def word_counts(paths: list[Path]) -> dict[str, int]:
    """Main-text words per notebook, by file stem: the word ratchet's record."""
    return per_notebook(paths, main_text_words)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--counts", action="store_true", help="print the ratchet's JSON")
    parser.add_argument(
        "--words", action="store_true", help="print each lesson's main-text words as JSON"
    )
    args = parser.parse_args(argv)
    record = counts if args.counts else word_counts if args.words else None
    if record is not None:
        print(json.dumps(record(args.notebooks), indent=2))
        return 0
    for path in args.notebooks:
        for item in unbacked(path):
            print(f"{path.stem} cell {item.cell}: {item.text!r} in “{item.context}”")
    return 0


if __name__ == "__main__":
    sys.exit(main())
