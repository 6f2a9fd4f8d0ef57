"""The ``keys:`` section and the limit options: valid shapes load, bad ones are one line
naming the field (and never print a key)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from gateway.pipeline.auth import merge_limits
from gateway.pipeline.ratelimit import bucket_shape

DIGEST = hashlib.sha256(b"sk-test").hexdigest()
DEP = {"provider": "mock", "model": "mock-1"}


def test_full_section_loads() -> None:
    cfg = parse_config(
        {
            "keys": [
                {"name": "a", "key_sha256": DIGEST, "limits": {"rpm": 5}, "models": ["x"]},
                {"name": "b.2_x-y", "key_sha256": hashlib.sha256(b"other").hexdigest().upper()},
            ],
            "models": [{"alias": "x", "limits": {"tpm": 10}, "deployments": [DEP]}],
            "limits": {
                "default_key": {"rpm": 60, "tpm": 1000, "tpm_burst": 100},
                "local_share": 0.5,
                "default_max_tokens": 256,
                "redis_timeout_ms": 20,
                "on_redis_error": "closed",
            },
        }
    )
    assert cfg.keys[0].models == ["x"] and cfg.limits.local_share == 0.5
    merged = merge_limits(cfg.limits.default_key, cfg.keys[0].limits)
    assert merged is not None and (merged.rpm, merged.tpm, merged.tpm_burst) == (5, 1000, 100)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"keys": [{"name": "a", "key_sha256": "nothex"}]}, "keys[0].key_sha256"),
        ({"keys": [{"name": "a b", "key_sha256": DIGEST}]}, "keys[0].name"),
        ({"keys": [{"name": "{tag}", "key_sha256": DIGEST}]}, "keys[0].name"),
        (
            {"keys": [{"name": "a", "key_sha256": DIGEST}, {"name": "a", "key_sha256": "0" * 64}]},
            "keys[1].name",
        ),
        (
            {"keys": [{"name": "a", "key_sha256": DIGEST}, {"name": "b", "key_sha256": DIGEST}]},
            "keys[1].key_sha256",
        ),
        ({"keys": [{"name": "a", "key": "sk-live"}]}, "keys[0]"),
        ({"limits": {"default_key": {"rpm_burst": 5}}}, "limits.default_key.rpm_burst"),
        ({"limits": {"default_key": {"rpm": 1, "rpm_burst": 10**9}}}, "limits.default_key"),
        ({"limits": {"local_share": 0}}, "limits.local_share"),
        ({"limits": {"local_share": 1.5}}, "limits.local_share"),
        ({"limits": {"redis_timeout_ms": 0}}, "limits.redis_timeout_ms"),
        ({"limits": {"on_redis_error": "maybe"}}, "limits.on_redis_error"),
        (
            {
                "models": [
                    {"alias": "a", "deployments": [{**DEP, "limits": {"rpm": 1}}]},
                    {"alias": "b", "deployments": [{**DEP, "limits": {"rpm": 2}}]},
                ]
            },
            "models[1].deployments[0].limits",
        ),
    ],
)
def test_bad_values_name_the_field(data: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value).startswith(where), str(info.value)
    assert "sk-live" not in str(info.value)


@pytest.mark.parametrize(
    ("rate", "burst", "shape"),
    [
        (600, None, (600, 60_000_000)),
        (600, 20, (20, 2_000_000)),
        (7, 3, (3, 25_714_286)),  # rounded up: never faster than configured
        (100_000, 5_000, (5_000, 3_000_000)),
    ],
)
def test_bucket_shape(rate: int, burst: int | None, shape: tuple[int, int]) -> None:
    assert bucket_shape(rate, burst) == shape
