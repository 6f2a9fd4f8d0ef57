"""The typed per-request context that every stage takes and fills.

The edge (``api/middleware.py``) creates one ``RequestContext`` per HTTP request
and hands it to the endpoint's handler as an argument (Litestar's routes, which
are not the pipeline, find it in the scope: ``context_of``). From there it is
passed explicitly: each stage
of ``pipeline/run.py`` reads what earlier stages wrote and writes its own
result, in the order the stages run::

    edge      request_id, start, method, route, status (set when the answer starts)
    parse     body (the dict that is forwarded), request (the validated Struct),
              model, stream
    auth      principal, group (the resolved model)
    conversation  conversation (/v1/responses: the whole input, stored history included)
    cache     cache (the lookup: HIT returns at once, MISS stores later)
    route     plan (deployments in the order to try), dep (the first choice)
    limit     lease (the rate-limit reservation)
    attempts  served (the deployment that answered, its result), attempts, dep
    settle    usage, upstream_s, ttft_s, cost (what the answer cost, by token class)
    respond   headers (what the client gets besides the body)

Nothing here is global or shared between requests; plugins get the same object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litestar.types import Receive, Scope

    from gateway.errors import GatewayError
    from gateway.pipeline.auth import Principal
    from gateway.pipeline.cache import Lookup
    from gateway.pipeline.conversation import Conversation
    from gateway.pipeline.endpoint import Endpoint
    from gateway.pipeline.lease import Lease
    from gateway.pipeline.ratelimit import OnMiss
    from gateway.providers.base import Deployment
    from gateway.providers.registry import ModelGroup
    from gateway.telemetry.tracing import RequestTrace
    from gateway.tenants.ledger import Charge
    from gateway.wire.chat import Usage

__all__ = ["SCOPE_KEY", "RequestContext", "context_of"]

SCOPE_KEY = "gw"  # the edge leaves the context here for the handler, and only for it


class RequestContext:
    """One request's facts and the stages' results. Slots: typos fail loudly."""

    __slots__ = (
        "attempts",
        "body",
        "cache",
        "client_gone",
        "complete",
        "conversation",
        "cost",
        "dep",
        "endpoint",
        "error",
        "group",
        "headers",
        "lease",
        "method",
        "model",
        "plan",
        "principal",
        "provider",
        "receive",
        "request",
        "request_id",
        "reserving",
        "route",
        "routed",
        "scope",
        "served",
        "session",
        "start",
        "status",
        "stopped",
        "stream",
        "trace",
        "ttft_s",
        "upstream_s",
        "usage",
        "view",
    )

    def __init__(self, request_id: str, start: float, method: str, route: str) -> None:
        self.request_id = request_id
        self.start = start  # time.perf_counter() when the edge saw the request
        self.method = method  # a bounded label: a standard method or OTHER
        self.route = route  # the matched route template, or "unmatched"
        self.status = 0  # the status the client was sent (0: nothing sent yet)
        self.error: str | None = None  # the error code or type, for the access line
        self.scope: Scope | None = None
        self.receive: Receive | None = None
        self.endpoint: Endpoint | None = None
        self.body: dict[str, Any] = {}
        self.request: Any = None  # the endpoint's validated wire Struct
        self.model = ""  # as the client sent it
        self.stream = False
        self.principal: Principal | None = None
        self.group: ModelGroup | None = None
        self.cache: Lookup | None = None
        self.plan: list[Deployment] = []
        self.dep: Deployment | None = None  # the deployment tried last (or serving)
        self.provider: str | None = None  # its provider, for logs and headers
        self.lease: Lease | None = None
        self.reserving: OnMiss | None = None  # sent with the cache lookup, for stage limit
        self.routed = False  # stage route ran (perhaps early, from stage cache)
        self.served: Any = None  # attempts.Served once a deployment answered
        self.attempts = 0  # upstream attempts made
        self.usage: Usage | None = None
        self.upstream_s = 0.0  # time spent waiting on the provider
        self.ttft_s: float | None = None
        self.headers: dict[str, str] = {}  # response headers the stages and plugins add
        self.client_gone = False  # the client left before its whole answer was sent
        self.complete = False  # the whole answer was sent
        self.stopped: GatewayError | None = None  # ended by the drain's deadline (drain.py)
        self.trace: RequestTrace | None = None  # its spans, when tracing is on
        self.view: dict[str, Any] | None = None  # the body as OpenAI chat, when it is not
        self.conversation: Conversation | None = None  # /v1/responses (stage conversation)
        self.session: tuple[str, str | None] | None = None  # sticky session: key, deployment
        self.cost: Charge | None = None  # the answer's cost (tenants/ledger.py)

    @property
    def label(self) -> str | None:
        """The bounded metric label of the model (the alias, or a capped provider/model)."""
        return self.group.label if self.group is not None else None


def context_of(scope: Scope) -> RequestContext:
    """The context the edge made for this request."""
    ctx = scope.get(SCOPE_KEY)
    if not isinstance(ctx, RequestContext):  # pragma: no cover - a wiring bug
        raise RuntimeError("no RequestContext: the app must be served through the Edge")
    return ctx
