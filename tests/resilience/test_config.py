"""Bad routing configuration is refused at start-up with one line naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, parse_config
from tests.harness import ROOT, clean_env


def dep(model: str = "m", **kw: Any) -> dict[str, Any]:
    return {"provider": "mock", "model": model, **kw}


def alias(name: str = "a", *deps: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"alias": name, "deployments": list(deps) or [dep()], **kw}


BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
    "unknown strategy": ({"models": [alias(strategy="fastest")]}, ["models[0].strategy"]),
    "negative weight": (
        {"models": [alias("a", dep(weight=-1))]},
        ["models[0].deployments[0].weight"],
    ),
    "unknown provider": (
        {"models": [alias("a", dep(provider="acme"))]},
        ["models[0].deployments[0].provider"],
    ),
    "fallback cycle": (
        {
            "models": [
                alias("a", fallbacks=["b"]),
                alias("b", fallbacks=["c"]),
                alias("c", fallbacks=["a"]),
            ]
        },
        ["fallbacks", "cycle", "a -> b -> c -> a"],
    ),
    "context fallback unknown": (
        {"models": [alias("a", context_fallback="huge")]},
        ["models[0].context_fallback", "huge"],
    ),
    "context fallback to itself": (
        {"models": [alias("a", context_fallback="a")]},
        ["models[0].context_fallback"],
    ),
    "context fallback cycle": (
        {"models": [alias("a", context_fallback="b"), alias("b", context_fallback="a")]},
        ["models[0].context_fallback", "cycle", "a -> b -> a"],
    ),
    "hedge with one deployment": (
        {"models": [alias("a", hedge={"delay_ms": 300})]},
        ["models[0].hedge"],
    ),
    "hedge delay not positive": (
        {"models": [alias("a", dep(), dep(), hedge={"delay_ms": 0})]},
        ["models[0].hedge.delay_ms"],
    ),
    "lowest-cost without a price": (
        {"models": [alias("a", dep(price={"input": 1}), dep(), strategy="lowest-cost")]},
        ["models[0].deployments[1].price", "lowest-cost"],
    ),
    "zero attempts": (
        {"models": [alias("a", retry={"attempts": 0})]},
        ["models[0].retry.attempts"],
    ),
    "backoff above its cap": (
        {"routing": {"retry": {"backoff": 5, "max_backoff": 1}}},
        ["routing.retry.max_backoff"],
    ),
    "unknown routing key": ({"routing": {"retires": {}}}, ["retires"]),
    "error rate over 1": (
        {"routing": {"breaker": {"error_rate": 1.5}}},
        ["routing.breaker.error_rate"],
    ),
    "negative keepalive": ({"routing": {"stream_keepalive": -1}}, ["routing.stream_keepalive"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_routing_config_names_the_field(case: str) -> None:
    data, needles = BAD[case]
    with pytest.raises(ConfigError) as exc:
        parse_config(data, environ={})
    msg = str(exc.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (case, msg)


def test_a_full_routing_config_parses() -> None:
    cfg = parse_config(
        {
            "routing": {
                "retry": {"attempts": 4, "backoff": 0.2, "max_backoff": 3, "deadline": 90},
                "retry_budget": {"ratio": 0.1, "min_retries": 5},
                "breaker": {"consecutive_failures": 3, "ejection": 10, "max_ejection": 120},
                "exploration": 0.1,
                "stream_keepalive": 5,
            },
            "models": [
                alias("big", dep()),
                alias(
                    "smart",
                    dep(price={"input": 1, "output": 2}),
                    dep(price={"input": 2, "output": 1}),
                    strategy="lowest-cost",
                    fallbacks=["big"],
                    context_fallback="big",
                    hedge={"delay_ms": 1500},
                    retry={"attempts": 2},
                ),
            ],
        },
        environ={},
    )
    smart = cfg.models[1]
    assert smart.context_fallback == "big" and smart.hedge is not None
    assert smart.hedge.delay_ms == 1500 and smart.retry is not None and smart.retry.attempts == 2
    assert cfg.routing.retry.attempts == 4 and cfg.routing.stream_keepalive == 5


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_start_up_refuses_a_bad_config_with_one_line(tmp_path: Path, command: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(BAD["context fallback cycle"][0]))
    argv = [sys.executable, "-m", "gateway", command]
    argv += [str(path)] if command == "check-config" else ["--port", "1"]
    env = clean_env({"GATEWAY_CONFIG": str(path)})
    p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "models[0].context_fallback" in lines[0], p.stderr
