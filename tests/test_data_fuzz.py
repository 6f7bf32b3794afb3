"""Property: whatever a learner's file holds, the loader returns its rows or names the bad one."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tutorial_lib.data import SCHEMAS, DataFormatError, read_jsonl

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
mc_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=4) | st.integers(),
        "question": st.text(max_size=10) | json_values,
        "category": st.text(max_size=6) | json_values,
        "choices": st.lists(st.text(max_size=5), max_size=5) | json_values,
        "answer": st.integers(-2, 6) | json_values,
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant", "x"]),
                    "content": st.text(max_size=5) | json_values,
                }
            ),
            max_size=4,
        )
        | json_values,
        "text": st.text(max_size=10) | json_values,
    },
)
lines = st.lists(
    st.one_of(mc_like.map(json.dumps), json_values.map(json.dumps), st.text(max_size=12)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=lines, kind=st.sampled_from(sorted(SCHEMAS)))
def test_loader_returns_rows_or_raises_a_located_error(rows, kind):
    text = "\n".join(r.replace("\n", " ").replace("\r", " ") for r in rows) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "user.jsonl"
        path.write_text(text, encoding="utf-8")
        try:
            loaded = read_jsonl(path, kind)
        except DataFormatError as err:
            assert err.path == path and 1 <= err.line <= len(text.split("\n")) and err.field
            assert f"line {err.line}" in str(err)
            return
    parsed = [json.loads(line) for line in text.split("\n") if line.strip()]
    assert loaded == parsed  # nothing dropped, nothing altered
