"""Request parameters as properties: whatever JSON a client sends, parsing it gives plain values
or a RequestError naming the key, never another exception."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from carina.errors import RequestError
from carina.server.services.params import (
    MAX_INT,
    MAX_SPATIAL_SIZE,
    as_bool,
    as_int,
    as_point,
    as_points,
    as_size,
    parse_params,
)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**500), 10**500)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(JSON)
def test_every_parser_answers_a_value_or_a_request_error(value: Any) -> None:
    for parse in (as_int, as_points, as_point, as_size, as_bool):
        for given_value in (value, json.dumps(value)):
            try:
                result = parse(given_value, "key")
            except RequestError as exc:
                assert "params.key" in str(exc)
                continue
            if parse is as_int:
                assert abs(result) <= MAX_INT
            if parse is as_size and result is not None:
                assert all(0 < v <= MAX_SPATIAL_SIZE for v in result)
            if parse in (as_points,):
                assert all(len(p) in (2, 3) and all(abs(v) <= MAX_INT for v in p) for p in result)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=200) | JSON.map(json.dumps) | st.binary(max_size=100))
def test_params_text_is_an_object_or_a_request_error(text: Any) -> None:
    try:
        assert isinstance(parse_params(text), dict)
    except RequestError as exc:
        assert str(exc).startswith("params")


def test_deep_and_huge_params_are_request_errors() -> None:
    for text in ("[" * 100_000, '{"a": ' + "9" * 5000 + "}", '{"a":' + "[" * 70 + "]" * 70 + "}"):
        try:
            parse_params(text)
        except RequestError:
            continue
        raise AssertionError(text[:20])
