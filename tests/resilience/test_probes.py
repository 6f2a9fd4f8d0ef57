"""Active health checks of ejected deployments: the request each provider gets, the config,
and a recovered deployment back in rotation over real sockets to the fault upstream."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from gateway.config import ConfigError, HealthCheck, health_check, parse_config
from gateway.pipeline.breaker import CLOSED, HALF_OPEN, OPEN
from gateway.pipeline.probes import Prober, probe_request
from tests.providers import golden as g
from tests.resilience.helpers import Fault, alias, call, dep, drive

FAST = {"retry": {"attempts": 2, "backoff": 0.05, "max_backoff": 0.5}}


def checks(model: str, result: str) -> float:
    labels = {"provider": "openai", "model": model, "result": result}
    return REGISTRY.get_sample_value("llm_health_checks_total", labels) or 0.0


# -- the probe request ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "base", "version", "url", "auth"),
    [
        ("openai", "https://api.openai.com/v1", None,
         "https://api.openai.com/v1/models/m%2F1", (b"authorization", b"Bearer " + g.KEY.encode())),
        ("anthropic", "https://api.anthropic.com/v1", None,
         "https://api.anthropic.com/v1/models/m%2F1", (b"x-api-key", g.KEY.encode())),
        ("gemini", "https://generativelanguage.googleapis.com/v1beta", None,
         "https://generativelanguage.googleapis.com/v1beta/models/gemini-x",
         (b"x-goog-api-key", g.KEY.encode())),
        ("azure", "https://r.openai.azure.com/openai", None,
         "https://r.openai.azure.com/openai/models?api-version=2024-10-21",
         (b"api-key", g.KEY.encode())),
        ("azure", "https://r.openai.azure.com/openai/v1", None,
         "https://r.openai.azure.com/openai/v1/models", (b"api-key", g.KEY.encode())),
    ],
)  # fmt: skip
def test_each_provider_is_probed_cheaply_with_the_gateways_own_key(
    provider: str, base: str, version: str | None, url: str, auth: tuple[bytes, bytes]
) -> None:
    model = {"azure": "deployment-1", "gemini": "models/gemini-x"}.get(provider, "m/1")
    d = g.make_dep(provider, model, base, api_version=version)
    req = probe_request(d, None, 2.0)
    assert req is not None and req.method == "GET" and str(req.url) == url
    assert req.headers.raw.count(auth) == 1
    assert b"content-type" not in dict(req.headers.raw) and not req.content
    assert req.extensions["timeout"]["read"] == 2.0


def test_a_configured_path_replaces_the_base_urls_path() -> None:
    d = g.make_dep("openai", "llama", "http://vllm.internal:8000/v1", key=None)
    req = probe_request(d, "/health?full=1", 1.0)
    assert req is not None and str(req.url) == "http://vllm.internal:8000/health?full=1"
    assert b"authorization" not in dict(req.headers.raw)  # no key configured: none sent


def test_health_check_config_merges_field_by_field() -> None:
    cfg = parse_config(
        {
            "routing": {"health_check": {"interval": 1, "timeout": 0.5}},
            "models": [
                alias(
                    "a",
                    {"provider": "mock", "model": "m1", "health_check": {"enabled": False}},
                    {"provider": "mock", "model": "m2", "health_check": {"path": "/ping"}},
                )
            ],
        },
        environ={},
    )
    glob = cfg.routing.health_check
    one, two = (health_check(glob, d.health_check) for d in cfg.models[0].deployments)
    assert (one.enabled, one.interval, one.timeout) == (False, 1.0, 0.5)
    assert (two.enabled, two.interval, two.path) == (True, 1.0, "/ping")
    assert health_check() == HealthCheck(enabled=True, interval=3.0, timeout=2.0)
    for bad, where in [
        ({"interval": 0}, "routing.health_check.interval"),
        ({"timeout": -1}, "routing.health_check.timeout"),
        ({"path": "health"}, "routing.health_check.path"),
        ({"path": "/a b"}, "routing.health_check.path"),
        ({"every": 3}, "routing.health_check"),
    ]:
        with pytest.raises(ConfigError, match=f"^{where}"):
            parse_config({"routing": {"health_check": bad}}, environ={})


# -- probes over real sockets ---------------------------------------------------------------


def _routing(**hc: object) -> dict:
    return {
        **FAST,
        "breaker": {"consecutive_failures": 2, "ejection": 30, "max_ejection": 60},
        "health_check": {"interval": 0.1, "timeout": 0.3, **hc},
    }


async def _eject(gw, fault: Fault, model: str) -> None:
    fault.behave(model, "fault-503")
    for _ in range(2):
        out = await call(gw, "a")
        assert out.status == 200 and out.attempts == 2


async def _until(pred, within: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not pred():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.02)
    return True


def test_a_recovered_deployment_is_back_within_a_few_probe_intervals(fault: Fault) -> None:
    flaky = "fault-dyn-probe"
    models = [
        alias("a", dep(fault, flaky), dep(fault, "fault-ok", priority=1), strategy="priority")
    ]

    async def scenario(gw):
        prober = Prober.for_config(gw.router, gw.settings.config, gw.registry.groups)
        first = gw.registry.resolve("a").deployments[0]
        b = gw.router.state(first).breaker
        assert len(prober.targets) == 2 and checks("a", "pass") is not None
        prober.start()
        try:
            await _eject(gw, fault, flaky)
            assert b.state == OPEN
            assert await _until(lambda: fault.count(f"probe:{flaky}") >= 2)
            assert b.current() == OPEN  # failing probes change nothing
            fault.behave(flaky, None)  # it recovered
            assert await _until(lambda: b.current() == HALF_OPEN, within=2.0)
            out = await call(gw, "a")
            assert out.attempts == 1 and out.served.dep is first and b.state == CLOSED
            probes = fault.count(f"probe:{flaky}")
            await asyncio.sleep(0.3)
            assert fault.count(f"probe:{flaky}") == probes  # closed: no more probes
            assert fault.count("probe:fault-ok") == 0  # never ejected: never probed
        finally:
            await prober.aclose()
        assert all(t.task is None or t.task.done() for t in prober.targets)
        return True

    before = (checks("a", "pass"), checks("a", "fail"))
    assert drive(models, scenario, _routing())
    assert checks("a", "pass") >= before[0] + 1 and checks("a", "fail") >= before[1] + 2


def test_a_hanging_probe_times_out_and_a_disabled_one_never_runs(fault: Fault) -> None:
    flaky = "fault-dyn-hang"
    quiet = dep(fault, "fault-dyn-quiet", health_check={"enabled": False})
    models = [
        alias("a", dep(fault, flaky), dep(fault, "fault-ok", priority=1), strategy="priority"),
        alias("q", quiet, dep(fault, "fault-ok", priority=1), strategy="priority"),
    ]

    async def scenario(gw):
        prober = Prober.for_config(gw.router, gw.settings.config, gw.registry.groups)
        assert [t.dep.model for t in prober.targets] == [flaky, "fault-ok", "fault-ok"]
        prober.start()
        try:
            await _eject(gw, fault, flaky)
            fault.behave(flaky, "fault-hang")
            before = checks("a", "timeout")
            assert await _until(lambda: checks("a", "timeout") >= before + 1)
            assert gw.router.state(gw.registry.resolve("a").deployments[0]).breaker.state == OPEN
        finally:
            await prober.aclose()  # cancels the probe still waiting
        return True

    assert drive(models, scenario, _routing())


def test_no_targets_when_nothing_can_be_ejected(fault: Fault) -> None:
    async def scenario(gw):
        prober = Prober.for_config(gw.router, gw.settings.config, gw.registry.groups)
        prober.start()  # nothing to watch: no task at all
        await prober.aclose()
        return len(prober.targets)

    routing = {"health_check": {"enabled": False}}
    two = [alias("a", dep(fault, "fault-ok"), dep(fault, "fault-ok"))]
    assert drive([alias("a", dep(fault, "fault-ok"))], scenario) == 0  # a lone deployment
    assert drive(two, scenario, routing) == 0


def test_the_lifespan_starts_and_cancels_probes_and_the_mock_answers_them(tmp_path) -> None:
    """create_app's lifespan owns the probe task; the mock provider passes a probe."""
    import logging

    from litestar.testing import AsyncTestClient

    from gateway.app import create_app
    from gateway.settings import Settings

    path = tmp_path / "gw.yaml"
    path.write_text(
        "routing: {health_check: {interval: 0.05}}\n"
        "models:\n"
        "  - alias: m\n"
        "    deployments: [{provider: mock, model: m1}, {provider: mock, model: m2}]\n"
    )

    async def main() -> None:
        app = create_app(Settings.from_env({"GATEWAY_CONFIG": str(path)}))
        async with AsyncTestClient(app, timeout=10):
            task = app.gateway.prober._task  # the app runs in the test client's own loop
            assert task is not None and not task.done()
            gw = app.gateway
            b = gw.router.state(gw.registry.groups["m"].deployments[0]).breaker
            for _ in range(5):
                b.record("failure")
            assert b.state == OPEN and b.open_until - b._clock() > 10  # a 30 s ejection
            assert await _until(lambda: b.current() == HALF_OPEN, within=3.0)
        assert task.cancelled() and app.gateway.prober._task is None  # cancelled at shutdown

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        asyncio.run(main())
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
