"""Does a generated reply state a fact's value? Both are normalised to the same word tokens, and
the value's tokens must occur in the reply as a run of whole tokens.

"1,580" = "1580", "$89" = "89 dollars" = "89 USD", "4-year" = "4 years" = "four years",
"7 a.m." = "7am", "22 L" = "22 liters"; case and punctuation do not count. Whole tokens only:
"15800" does not state "1580", "$189" does not state "$89", "launched in 2014" does not
state 2012.
"""

from __future__ import annotations

import re

_UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
# spelling and abbreviation variants of the same unit, after plurals are dropped
_SYNONYMS = {
    "usd": "dollar",
    "buck": "dollar",
    "litre": "liter",
    "l": "liter",
    "g": "gram",
    "gr": "gram",
    "hr": "hour",
    "hrs": "hour",
    "mins": "minute",
    "yrs": "year",
    "h": "hour",
    "min": "minute",
    "w": "watt",
    "yr": "year",
    "kph": "kmh",
}
_PHRASES = [  # multi-word spellings of one unit, replaced before tokenising
    (re.compile(r"\bkm\s*/\s*h\b|\b(?:km|kilomet(?:er|re)s?)\s+(?:per|an)\s+hour\b"), " kmh "),
    (re.compile(r"\b([ap])\.?\s?m\b\.?"), r" \1m "),  # 7 a.m. / 7 am / 7am / 7 A.M.
]


_THOUSANDS = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def _number(token: str) -> str:
    """A numeric token without thousands separators or trailing decimal zeros."""
    whole, _, frac = token.replace(",", "").partition(".")
    whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def _words_to_digits(tokens: list[str]) -> list[str]:
    """Number words up to 99 as digits: "forty five" -> "45", "four" -> "4"."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in _TENS:
            value = _TENS[tok]
            if i + 1 < len(tokens) and tokens[i + 1] in _UNITS and _UNITS[tokens[i + 1]] < 10:
                value += _UNITS[tokens[i + 1]]
                i += 1
            out.append(str(value))
        elif tok in _UNITS:
            out.append(str(_UNITS[tok]))
        else:
            out.append(tok)
        i += 1
    return out


def _unit(token: str) -> str:
    """A word token in one spelling: lower case, singular, synonyms merged."""
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        token = token[:-1]
    return _SYNONYMS.get(token, token)


def tokens(text: str) -> list[str]:
    """The normalised tokens of a text: numbers without separators, currency as "dollar"
    after the amount, units singular, number words as digits, no case or punctuation."""
    text = text.lower()
    for pattern, repl in _PHRASES:
        text = pattern.sub(repl, text)
    text = re.sub(r"\$\s*(\d[\d,]*(?:\.\d+)?)", r" \1 dollar ", text)  # $89 -> 89 dollar
    text = re.sub(r"(?<=\d)(?=[a-z])|(?<=[a-z])(?=\d)", " ", text)  # 1580g, 7am -> split
    raw = re.findall(r"\d[\d,]*(?:\.\d+)?|[a-z]+", text)
    out = []
    for tok in raw:
        if tok[0].isdigit():
            # a comma is a thousands separator only before exactly three digits
            if "," in tok and not _THOUSANDS.match(tok):
                out.extend(_number(p) for p in tok.split(",") if p)
            else:
                out.append(_number(tok))
        else:
            out.append(tok)
    return [_unit(t) if not t[0].isdigit() else t for t in _words_to_digits(out)]


def states_value(reply: str, value: str) -> bool:
    """True when `reply` states `value`: the value's normalised tokens occur, in order and
    contiguous, among the reply's (whole tokens, so 2014 never states 2012)."""
    want = tokens(value)
    if not want:
        raise ValueError(f"value {value!r} has nothing to look for")
    have = tokens(reply)
    n = len(want)
    return any(have[i : i + n] == want for i in range(len(have) - n + 1))
