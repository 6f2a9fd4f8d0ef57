"""Cache key: golden digests, canonicalisation rules, bad input, twin agreement.

``tests/data/cachekey_golden.json`` pins the encoding: each entry holds a
request as JSON text (number spellings kept), the expected digest, optionally
the exact canonical bytes, and which other entries it must equal or differ
from. If the encoding changes, these fail; regenerate them only on purpose,
together with a new version in ``MAGIC``.
"""

from __future__ import annotations

import copy
import json
import math
import random
import struct
import time
from collections import OrderedDict
from enum import IntEnum, StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.speedups.conftest import needs_c, variant

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = json.loads((ROOT / "tests" / "data" / "cachekey_golden.json").read_text("utf-8"))
BY_NAME = {g["name"]: g for g in GOLDEN}

HELLO = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}


def key(mod: ModuleType, request: Any, tenant: str = "acme", kind: str = "chat") -> str:
    return mod.cache_key(tenant, kind, request)


# --- goldens ---------------------------------------------------------------------------------


def test_golden_file_is_consistent() -> None:
    assert len(GOLDEN) >= 25
    assert len(BY_NAME) == len(GOLDEN)
    for g in GOLDEN:
        for other in g.get("same_as", []):
            assert BY_NAME[other]["digest"] == g["digest"], (g["name"], other)
        for other in g.get("differs_from", []):
            assert BY_NAME[other]["digest"] != g["digest"], (g["name"], other)


@pytest.mark.parametrize("golden", [pytest.param(g, id=g["name"]) for g in GOLDEN])
def test_golden(cachekey_impl: ModuleType, golden: dict[str, Any]) -> None:
    request = json.loads(golden["request_json"])  # keeps escapes msgspec would refuse
    args = (golden["tenant"], golden["kind"], request)
    if "canonical_hex" in golden:
        assert cachekey_impl.canonical_encoding(*args).hex() == golden["canonical_hex"]
    assert cachekey_impl.cache_key(*args) == golden["digest"]


@pytest.mark.parametrize(
    "golden", [pytest.param(g, id=g["name"]) for g in GOLDEN if g.get("msgspec", True)]
)
def test_golden_through_msgspec(cachekey_impl: ModuleType, golden: dict[str, Any]) -> None:
    """The gateway decodes bodies with msgspec; the digests must not depend on the decoder."""
    request = msgspec.json.decode(golden["request_json"])
    assert cachekey_impl.cache_key(golden["tenant"], golden["kind"], request) == golden["digest"]


def test_encoding_matches_the_documented_spec(cachekey_impl: ModuleType) -> None:
    """Rebuild the bytes by hand from the module docstring, independently of both twins."""

    def s(text: str) -> bytes:
        data = text.encode("utf-8", "surrogatepass")
        return b"S" + struct.pack(">I", len(data)) + data

    def i(x: int) -> bytes:
        size = x.bit_length() // 8 + 1
        return b"I" + struct.pack(">I", size) + x.to_bytes(size, "big", signed=True)

    request = {
        "z": [None, True, False, 1.0, -0.0, 0.5, 255, -(2**63), "é\ud800"],
        "b": {"y": 2**70, "x": -1},
        "stream": True,
        "user": "u1",
        "seed": None,
    }
    expected = (
        b"llm-gateway/cachekey/v1\n"
        + s("t")
        + s("chat")
        + b"M\x00\x00\x00\x02"
        + s("b")
        + b"M\x00\x00\x00\x02"
        + s("x")
        + i(-1)
        + s("y")
        + i(2**70)
        + s("z")
        + b"L\x00\x00\x00\x09NTF"
        + i(1)
        + i(0)
        + b"D"
        + struct.pack(">d", 0.5)
        + i(255)
        + i(-(2**63))
        + s("é\ud800")
    )
    assert cachekey_impl.canonical_encoding("t", "chat", request) == expected
    assert i(255) == b"I\x00\x00\x00\x02\x00\xff"
    assert i(-(2**63)) == b"I\x00\x00\x00\x09\xff\x80" + bytes(7)


def test_digest_is_sha256_of_the_encoding(cachekey_impl: ModuleType) -> None:
    import hashlib

    material = cachekey_impl.canonical_encoding("acme", "chat", HELLO)
    digest = key(cachekey_impl, HELLO)
    assert digest == hashlib.sha256(material).hexdigest()
    assert len(digest) == 64 and digest == digest.lower()


# --- what is the same request ------------------------------------------------------------------


@pytest.mark.parametrize(
    "spellings",
    [
        ["1", "1.0", "1e0", "10e-1", "0.1e1", "100E-2", "1.000"],
        ["0", "-0", "0.0", "-0.0", "0e5", "-0e-3"],
        ["1.5", "1.50", "15e-1", "0.15e1"],
        ["-7", "-7.0", "-70e-1"],
        ["1e300", "1.0e300", "10e299"],
        ["9007199254740992", "9007199254740992.0", "9007199254740993.0"],  # one double
        ["123456789012345678901234567890", "1234567890123456789012345678.9e2"],
    ],
)
def test_equal_numbers_hash_equal(cachekey_impl: ModuleType, spellings: list[str]) -> None:
    keys = set()
    for text in spellings:
        request = msgspec.json.decode(f'{{"model": "m", "temperature": {text}}}')
        keys.add(key(cachekey_impl, request))
    if spellings[0] == "123456789012345678901234567890":
        # the float is the double nearest the int, not the int: they must differ
        assert len(keys) == 2
    else:
        assert len(keys) == 1


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1", "true"),
        ("0", "false"),
        ("0", "null"),
        ("1", '"1"'),
        ("0.1", "0.10000000000000002"),
        ("9007199254740993", "9007199254740992"),
        ("[]", "{}"),
        ('""', "null"),
        ("[1, 2]", "[2, 1]"),
        ('["a", "b"]', '["ab"]'),
        ('"é"', '"e\\u0301"'),  # no Unicode normalisation
    ],
)
def test_distinct_values_hash_distinct(cachekey_impl: ModuleType, a: str, b: str) -> None:
    ka = key(cachekey_impl, msgspec.json.decode(f'{{"model": "m", "x": [{a}]}}'))
    kb = key(cachekey_impl, msgspec.json.decode(f'{{"model": "m", "x": [{b}]}}'))
    assert ka != kb


def test_key_order_and_whitespace_do_not_matter(cachekey_impl: ModuleType) -> None:
    a = msgspec.json.decode(b'{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2}')
    b = msgspec.json.decode(
        b'{ "n" : 2 ,\n "messages" : [ { "content" : "hi" , "role" : "user" } ] , "model":"m" }'
    )
    assert key(cachekey_impl, a) == key(cachekey_impl, b)


def test_transport_fields_are_ignored(cachekey_impl: ModuleType) -> None:
    assert frozenset({"stream", "stream_options", "user"}) == cachekey_impl.TRANSPORT_FIELDS
    base = key(cachekey_impl, HELLO)
    noisy = {**HELLO, "stream": True, "stream_options": {"include_usage": True}, "user": "bob"}
    assert key(cachekey_impl, noisy) == base
    assert key(cachekey_impl, {**HELLO, "stream": False}) == base


def test_top_level_null_is_absent_but_nested_null_is_not(cachekey_impl: ModuleType) -> None:
    base = key(cachekey_impl, HELLO)
    assert key(cachekey_impl, {**HELLO, "temperature": None, "tools": None}) == base
    nested_null = {"model": "gpt-4o", "messages": [{"role": "user", "content": None}]}
    nested_absent = {"model": "gpt-4o", "messages": [{"role": "user"}]}
    assert key(cachekey_impl, nested_null) != key(cachekey_impl, nested_absent)


ANSWER_CHANGING = [
    ("model", "gpt-4o-mini"),
    ("messages", [{"role": "user", "content": "Hello!"}]),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("tool_choice", "required"),
    ("parallel_tool_calls", False),
    ("temperature", 0.2),
    ("top_p", 0.9),
    ("frequency_penalty", 0.5),
    ("presence_penalty", -0.5),
    ("logit_bias", {"50256": -100}),
    ("response_format", {"type": "json_object"}),
    ("seed", 7),
    ("n", 1),  # defaults are not filled in: explicit 1 differs from absent
    ("stop", ["\n"]),
    ("max_tokens", 100),
    ("max_completion_tokens", 100),
    ("logprobs", True),
    ("top_logprobs", 3),
    ("reasoning_effort", "low"),
    ("modalities", ["text"]),
    ("service_tier", "flex"),
    ("some_future_param", 1),  # unknown fields count: they may change the answer
]


@pytest.mark.parametrize(("field", "value"), ANSWER_CHANGING, ids=[f for f, _ in ANSWER_CHANGING])
def test_every_answer_changing_field_changes_the_key(
    cachekey_impl: ModuleType, field: str, value: Any
) -> None:
    assert key(cachekey_impl, {**HELLO, field: value}) != key(cachekey_impl, HELLO)


def test_message_order_matters(cachekey_impl: ModuleType) -> None:
    m1, m2 = {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}
    assert key(cachekey_impl, {"model": "m", "messages": [m1, m2]}) != key(
        cachekey_impl, {"model": "m", "messages": [m2, m1]}
    )


def test_tenant_and_kind_are_in_the_key(cachekey_impl: ModuleType) -> None:
    keys = {
        key(cachekey_impl, HELLO, tenant=t, kind=k)
        for t in ["acme", "acme2", "acm", "e", "acme:chat", "ACME", "a" * 1000]
        for k in ["chat", "embeddings"]
    }
    assert len(keys) == 14


def test_embeddings_requests(cachekey_impl: ModuleType) -> None:
    body = {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 256}
    assert key(cachekey_impl, body, kind="embeddings") == key(
        cachekey_impl, {**body, "user": "u", "encoding_format": None}, kind="embeddings"
    )
    assert key(cachekey_impl, body, kind="embeddings") != key(
        cachekey_impl, {**body, "input": ["b", "a"]}, kind="embeddings"
    )
    token_ids = {"model": "text-embedding-3-small", "input": [list(range(5000))]}
    assert len(key(cachekey_impl, token_ids, kind="embeddings")) == 64


# --- bad input ------------------------------------------------------------------------------------


class Color(StrEnum):
    RED = "red"


class Level(IntEnum):
    ONE = 1


BAD_REQUESTS = [
    ({"model": "m", "x": (1, 2)}, TypeError),
    ({"model": "m", "x": {1, 2}}, TypeError),
    ({"model": "m", "x": b"bytes"}, TypeError),
    ({"model": "m", "x": object()}, TypeError),
    ({"model": "m", "x": Color.RED}, TypeError),  # subclasses are not exact JSON types
    ({"model": "m", "x": Level.ONE}, TypeError),
    ({"model": "m", "x": OrderedDict(a=1)}, TypeError),
    ({"model": "m", "x": {1: "a"}}, TypeError),
    ({"model": "m", "x": {None: "a"}}, TypeError),
    ({2: "m"}, TypeError),
    ({"model": "m", "x": [math.nan]}, ValueError),
    ({"model": "m", "x": math.inf}, ValueError),
    ({"model": "m", "x": {"y": -math.inf}}, ValueError),
]


@pytest.mark.parametrize(("request_", "exc"), BAD_REQUESTS)
def test_bad_values_raise(cachekey_impl: ModuleType, request_: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        key(cachekey_impl, request_)


@pytest.mark.parametrize(
    ("tenant", "kind", "request_", "exc"),
    [
        ("", "chat", {}, ValueError),
        (None, "chat", {}, TypeError),
        (b"acme", "chat", {}, TypeError),
        ("acme", "completions", {}, ValueError),
        ("acme", "Chat", {}, ValueError),
        ("acme", None, {}, TypeError),
        ("acme", "chat", [], TypeError),
        ("acme", "chat", None, TypeError),
        ("acme", "chat", '{"model": "m"}', TypeError),
        ("acme", "chat", OrderedDict(model="m"), TypeError),
    ],
)
def test_bad_arguments_raise(
    cachekey_impl: ModuleType, tenant: Any, kind: Any, request_: Any, exc: type[Exception]
) -> None:
    with pytest.raises(exc):
        cachekey_impl.cache_key(tenant, kind, request_)


def nested(depth: int, *, as_list: bool) -> dict[str, Any]:
    """A request whose innermost container sits ``depth`` levels deep (the request is 1)."""
    inner: Any = "leaf"
    for _ in range(depth - 1):
        inner = [inner] if as_list else {"a": inner}
    return {"model": inner}


@pytest.mark.parametrize("as_list", [False, True])
def test_depth_limit(cachekey_impl: ModuleType, as_list: bool) -> None:
    assert cachekey_impl.MAX_DEPTH == 128
    key(cachekey_impl, nested(128, as_list=as_list))
    with pytest.raises(ValueError, match="deeper than 128"):
        key(cachekey_impl, nested(129, as_list=as_list))


@pytest.mark.parametrize("as_list", [False, True])
def test_hundred_thousand_levels_fail_fast(cachekey_impl: ModuleType, as_list: bool) -> None:
    deep = nested(100_000, as_list=as_list)
    started = time.perf_counter()
    with pytest.raises(ValueError, match="deeper than 128"):
        key(cachekey_impl, deep)
    assert time.perf_counter() - started < 1.0


def test_cycles_are_rejected_not_followed(cachekey_impl: ModuleType) -> None:
    loop: dict[str, Any] = {"model": "m"}
    loop["self"] = loop
    with pytest.raises(ValueError, match="deeper than 128"):
        key(cachekey_impl, loop)
    arr: list[Any] = []
    arr.append(arr)
    with pytest.raises(ValueError, match="deeper than 128"):
        key(cachekey_impl, {"x": arr})


def test_multi_megabyte_request(cachekey_impl: ModuleType) -> None:
    big = {
        "model": "m",
        "messages": [{"role": "user", "content": "x" * 4_000_000 + "é"}],
        "input": list(range(200_000)),
        "wide": {f"k{i}": i for i in range(50_000)},
    }
    started = time.perf_counter()
    digest = key(cachekey_impl, big)
    assert time.perf_counter() - started < 5.0
    big["wide"]["k49999"] = 0
    assert key(cachekey_impl, big) != digest


def test_lone_surrogates_do_not_crash(cachekey_impl: ModuleType) -> None:
    a = key(cachekey_impl, {"model": "m", "x": "\ud800", "\udfff": 1})
    b = key(cachekey_impl, {"model": "m", "x": "\ud801", "\udfff": 1})
    assert a != b


# --- properties --------------------------------------------------------------------------------

chars = st.characters(exclude_categories=())  # surrogates included
texts = st.text(chars, max_size=12)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**200), 2**200),
    st.sampled_from([-(2**63), 2**63 - 1, 2**63, -(2**63) - 1, 255, -128, -129]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 0.0, 5e-324, 1e300, 2.0**63, -(2.0**63), 2.0**64, 0.1]),
    texts,
)
json_values = st.recursive(
    leaves,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(texts, kids, max_size=5),
    max_leaves=40,
)
requests = st.dictionaries(texts, json_values, max_size=8)


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every object's keys in a random order."""
    if type(value) is dict:
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if type(value) is list:
        return [shuffled(v, rng) for v in value]
    return value


def different(leaf: Any) -> Any:
    """A leaf whose canonical form surely differs from ``leaf``'s."""
    if leaf is None:
        return False
    if type(leaf) is bool:
        return not leaf
    if type(leaf) in (int, float):
        return leaf + 1 if abs(leaf) < 2**52 else -leaf
    return leaf + "x"


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if type(value) is dict:
        return [p for k, v in value.items() for p in leaf_paths(v, (*path, k))]
    if type(value) is list:
        return [p for i, v in enumerate(value) for p in leaf_paths(v, (*path, i))]
    return [path]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests, seed=st.integers(0, 2**32))
def test_key_order_permutations_give_equal_keys(
    cachekey_impl: ModuleType, request: dict[str, Any], seed: int
) -> None:
    assert key(cachekey_impl, shuffled(request, random.Random(seed))) == key(cachekey_impl, request)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests, data=st.data())
def test_changing_any_one_leaf_changes_the_key(
    cachekey_impl: ModuleType, request: dict[str, Any], data: st.DataObject
) -> None:
    request = {k: v for k, v in request.items() if k not in cachekey_impl.TRANSPORT_FIELDS}
    paths = [p for p in leaf_paths(request) if p]
    if not paths:
        return
    path = data.draw(st.sampled_from(paths))
    changed = copy.deepcopy(request)
    parent = changed
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = different(parent[path[-1]])
    assert key(cachekey_impl, changed) != key(cachekey_impl, request)


def outcome(mod: ModuleType, *args: Any) -> Any:
    try:
        return mod.canonical_encoding(*args), mod.cache_key(*args)
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)


@needs_c
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tenant=st.one_of(texts, st.none(), st.integers()),
    kind=st.one_of(st.sampled_from(["chat", "embeddings"]), texts),
    request=st.one_of(
        requests,
        st.dictionaries(texts, st.one_of(json_values, st.tuples(), st.just(math.nan))),
        json_values,
    ),
)
def test_twins_agree(tenant: Any, kind: Any, request: Any) -> None:
    from _speedups import _cachekey_c, _cachekey_py

    assert outcome(_cachekey_c, tenant, kind, request) == outcome(
        _cachekey_py, tenant, kind, request
    )


@needs_c
def test_twins_agree_on_large_objects() -> None:
    """Objects over 16 keys take the compiled twin's merge-sort path."""
    from _speedups import _cachekey_c, _cachekey_py

    rng = random.Random(5)
    alphabet = ["a", "b", "é", "\U0001f600", "\ud800", "\ue000", "\x00", "zz"]
    for size in [17, 18, 33, 100, 1000]:
        obj = {"".join(rng.choices(alphabet, k=rng.randint(0, 4))) + str(i): i for i in range(size)}
        request = {"model": "m", "obj": obj, "wide": dict(reversed(list(obj.items())))}
        assert _cachekey_c.canonical_encoding("t", "chat", request) == (
            _cachekey_py.canonical_encoding("t", "chat", request)
        )


def test_selector_reexports(cachekey_impl: ModuleType) -> None:
    from _speedups import cachekey

    assert variant(cachekey_impl) == cachekey_impl.IMPLEMENTATION
    assert cachekey.cache_key("acme", "chat", HELLO) == key(cachekey_impl, HELLO)
    assert cachekey.MAGIC == b"llm-gateway/cachekey/v1\n"
    assert frozenset({"chat", "embeddings", "messages", "responses"}) == cachekey.KINDS
