"""Active health checks: bring an ejected deployment back as soon as it answers again.

A breaker (``breaker.py``) ejects a failing deployment for ``ejection`` seconds,
doubled on each repeat; passively, the only way back is a real request let
through when the ejection ends, and if that one request comes while the
deployment is still down the ejection doubles. So while a deployment is ejected,
this module asks it directly, every ``interval`` seconds (first one ``interval``
after the ejection), with a cheap GET bounded by ``timeout``:

==========  ===========================================================================
openai      ``GET {base_url}/models/{model}`` (also mock and OpenAI-compatible servers)
azure       ``GET {resource}/openai/models?api-version=...`` (``/openai/v1/models`` on v1):
            Azure lists base models, not deployments, so this checks the resource and key
anthropic   ``GET /v1/models/{model}``
gemini      ``GET {base_url}/models/{model}``
``path``    ``GET {scheme://host:port}{path}`` when the deployment's ``health_check``
            names one (a self-hosted server's ``/health``, say)
==========  ===========================================================================

None of them generates tokens or costs anything. A 2xx passes: the breaker turns
half-open at once (``Breaker.probe_passed``), so the next real request confirms
the recovery and closes it, within about ``interval`` seconds of the recovery
instead of after the rest of the ejection. Anything else (status, connection
error, ``timeout``) changes nothing. Each result is counted in
``llm_health_checks_total{provider, model, result=pass|fail|timeout}`` (model: the
alias, as in every other metric), initialised to zero at start-up.

Probes use the deployment's own static headers, that is the gateway's provider
key and never a client's; logs name the provider, alias and status, never a URL
or a header. Only configured aliases with two or more deployments are watched
(a lone deployment is never ejected). One task per process, owned by the app's
lifespan (``Prober.start`` / ``aclose``); each probe is a child task, cancelled
with it at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from gateway.config import health_check
from gateway.errors import GatewayError, UpstreamTimeout
from gateway.pipeline import relay
from gateway.pipeline.breaker import OPEN
from gateway.providers.transport import UpstreamResponse
from gateway.telemetry import metrics

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.pipeline.routing import Router
    from gateway.providers.base import Deployment
    from gateway.providers.registry import ModelGroup

log = logging.getLogger("gateway.probes")
RESULTS = ("pass", "fail", "timeout")
MAX_PROBE_BODY = 64 * 1024  # read at most this much of an answer, then drop the connection


@dataclass(eq=False, slots=True)
class Target:
    dep: Deployment
    interval: float
    timeout: float
    path: str | None = None
    next_at: float = 0.0  # monotonic time of the next probe; 0: not ejected when last seen
    task: asyncio.Task[None] | None = None


def probe_request(dep: Deployment, path: str | None, timeout: float) -> httpx.Request | None:
    """The GET that checks ``dep``; None when its provider has none."""
    base = dep.base_url.rstrip("/")
    params: dict[str, str] = {}
    if path is not None:
        url = httpx.URL(base).copy_with(raw_path=path.encode("ascii"))
    elif dep.provider in ("openai", "mock"):
        url = httpx.URL(f"{base}/models/{quote(dep.model, safe='')}")
    elif dep.provider == "anthropic":
        root = base[:-3] if base.endswith("/v1") else base
        url = httpx.URL(f"{root}/v1/models/{quote(dep.model, safe='')}")
    elif dep.provider == "gemini":
        model = dep.model.removeprefix("models/")
        url = httpx.URL(f"{base}/models/{quote(model, safe='')}")
    elif dep.provider == "azure":
        from gateway.providers.azure import DEFAULT_API_VERSION, uses_v1

        for suffix in ("/openai/v1", "/openai"):
            base = base.removesuffix(suffix)
        if uses_v1(dep):
            url = httpx.URL(f"{base}/openai/v1/models")
        else:
            url = httpx.URL(f"{base}/openai/models")
            params["api-version"] = (dep.api_version or "").strip() or DEFAULT_API_VERSION
    else:
        return None
    if params:
        url = url.copy_merge_params(params)
    headers = [(k, v) for k, v in dep.cache.get("headers", ()) if k.lower() != b"content-type"]
    ext: dict[str, Any] = {
        "timeout": {
            "connect": min(timeout, dep.timeouts.connect),
            "read": timeout,
            "write": timeout,
            "pool": timeout,
        }
    }
    if dep.mock is not None:
        ext["mock"] = dep.mock
    return httpx.Request("GET", url, headers=headers, extensions=ext)


class Prober:
    """Probes the watched deployments while their breakers are open."""

    def __init__(
        self,
        router: Router,
        targets: list[Target],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.router = router
        self.targets = targets
        self.clock = clock
        shortest = min((t.interval for t in targets), default=1.0)
        self.tick = min(1.0, max(0.02, shortest / 4))
        self._task: asyncio.Task[None] | None = None
        for t in targets:
            for result in RESULTS:
                metrics.llm_health_checks_total.labels(t.dep.provider, t.dep.label, result)

    @classmethod
    def for_config(cls, router: Router, config: Config, groups: dict[str, ModelGroup]) -> Prober:
        """Targets from the config: each deployment of an alias with two or more, where its
        health check (``routing.health_check``, then its own) is enabled."""
        targets: list[Target] = []
        for alias in config.models:
            group = groups.get(alias.alias)
            if group is None or len(group.deployments) < 2:
                continue
            router.register(group)
            for cfg, dep in zip(alias.deployments, group.deployments, strict=True):
                hc = health_check(config.routing.health_check, cfg.health_check)
                assert hc.interval is not None and hc.timeout is not None
                if hc.enabled and probe_request(dep, hc.path, hc.timeout) is not None:
                    targets.append(Target(dep, hc.interval, hc.timeout, hc.path))
        return cls(router, targets)

    # -- lifetime ---------------------------------------------------------------------

    def start(self) -> None:
        if self.targets and self._task is None:
            self._task = asyncio.create_task(self.run(), name="health-probes")

    async def aclose(self) -> None:
        tasks = [t.task for t in self.targets if t.task is not None]
        if self._task is not None:
            tasks.append(self._task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    async def run(self) -> None:
        while True:
            try:
                self.step()
            except Exception:  # a bug here must not end health checking for good
                log.exception("health check scheduling failed")
            await asyncio.sleep(self.tick)

    def step(self) -> None:
        """Start the probes that are due (one at a time per deployment)."""
        now = self.clock()
        for t in self.targets:
            if self.router.state(t.dep).breaker.current(now) != OPEN:
                t.next_at = 0.0
                continue
            if t.next_at == 0.0:
                t.next_at = now + t.interval  # just ejected: it failed a moment ago
            elif t.task is None and now >= t.next_at:
                t.next_at = now + t.interval
                t.task = asyncio.create_task(self._probe(t), name="health-probe")

    # -- one probe --------------------------------------------------------------------

    async def _probe(self, t: Target) -> None:
        try:
            result, status = await self.check(t)
            dep = t.dep
            metrics.llm_health_checks_total.labels(dep.provider, dep.label, result).inc()
            if result == "pass" and self.router.state(dep).breaker.probe_passed():
                log.info(
                    "health check passed: ejected deployment half-open",
                    extra={"fields": {"provider": dep.provider, "model": dep.label}},
                )
            elif result != "pass":
                log.debug(
                    "health check failed",
                    extra={
                        "fields": {
                            "provider": dep.provider,
                            "model": dep.label,
                            "result": result,
                            "status": status,
                        }
                    },
                )
        finally:
            t.task = None

    async def check(self, t: Target) -> tuple[str, int | None]:
        """(result, upstream status or None) of one probe; never raises but to cancel."""
        request = probe_request(t.dep, t.path, t.timeout)
        if request is None:
            return "fail", None
        resp: UpstreamResponse | None = None
        try:
            async with asyncio.timeout(t.timeout):
                resp = await relay.send(t.dep, request)
                read = 0
                async for chunk in resp.stream:
                    read += len(chunk)
                    if read > MAX_PROBE_BODY:
                        break
        except TimeoutError:
            return "timeout", None
        except GatewayError as err:  # relay.send's transport errors
            return ("timeout" if isinstance(err, UpstreamTimeout) else "fail"), None
        except Exception as exc:  # a probe never takes the loop down
            log.debug("health check error", extra={"fields": {"error": type(exc).__name__}})
            return "fail", None
        finally:
            if resp is not None:
                await resp.aclose()
        assert resp is not None
        status = resp.status_code
        return ("pass" if 200 <= status < 300 else "fail"), status


__all__ = ["RESULTS", "Prober", "Target", "probe_request"]
