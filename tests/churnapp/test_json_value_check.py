"""json_value_check: the one-pass check for a clean body agrees with the full walk,
which still names the first problem it always named."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from churnapp.normalize import json_value_check


def _walk(value, max_depth: int) -> str | None:
    """The check as it was before the fast pass: the reference."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return "NUL"
            continue
        if isinstance(node, dict):
            children = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            return "deep"
        stack.extend((child, depth + 1) for child in children)
    return None


def _problem(value, max_depth: int) -> str | None:
    try:
        json_value_check(value, max_depth=max_depth)
    except ValueError as exc:
        return "NUL" if "NUL" in str(exc) else "deep"
    return None


text = st.text(alphabet=st.sampled_from("ab\x00é"), max_size=3)
documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(document=documents, max_depth=st.integers(min_value=1, max_value=5))
def test_agrees_with_the_full_walk(document, max_depth):
    assert _problem(document, max_depth) == _walk(document, max_depth)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"items": [{"a": "b", "n": [1, 2.5, None]}] * 3}, None),
        ({"items": [{"a\x00": "b"}]}, "NUL"),
        ({"items": [{"a": ["x", "z\x00"]}]}, "NUL"),
        ([[[["ok"]]]], None),  # four levels, the limit below
        ([[[[["too deep"]]]]], "deep"),
    ],
)
def test_names_nul_and_depth(document, problem):
    assert _problem(document, max_depth=4) == problem
