"""An admitted request's rate-limit reservation, from stage ``limit`` to its settlement.

``Limiter.reserve`` (``ratelimit.py``) returns a ``Lease`` holding the TPM
buckets it took from and how much. The lease then travels on the request
context: the attempt loop adds the reservations of other deployments it moves
to (``extra``) and names the one that served; stage ``settle`` corrects the
tokens to the real usage (``settle``, or ``settle_stream`` when a stream ends);
a request that gets no answer refunds them (``fail``). Budget holds (``holds``,
``hold`` nano-USD each) settle with the tokens, to ``cost`` (set by stage
``settle`` from the answer's real usage; unset, the hold stands), or to 0 on a
refund. Every correction goes through ``Limiter.settle``: the lease never touches
a backend itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.errors import GatewayError
    from gateway.pipeline.ratelimit import Limiter
    from gateway.providers.base import Deployment
    from gateway.store.base import Bucket, Budget, StateBackend
    from gateway.wire.chat import Usage

__all__ = ["Lease", "total_tokens"]


def total_tokens(usage: Usage) -> int:
    return usage.total_tokens or (usage.prompt_tokens + usage.completion_tokens)


class _Ended:
    """How a stream ended, as far as settling cares (a relay or a pending stream)."""

    usage: Usage | None


@dataclass(eq=False, slots=True)
class Lease:
    """One request's reservation: its response headers, then its settlement."""

    limiter: Limiter
    backend: StateBackend | None  # where the TPM buckets were taken (None: nothing taken)
    buckets: list[Bucket]  # the TPM buckets taken from...
    reserved: list[int]  # ...and how much from each
    prompt: int  # the prompt tokens of the estimate
    headers: dict[str, str]  # the x-ratelimit headers (and server-timing) for the answer
    dep: Deployment | None = None  # the deployment reserved for (the first choice)
    tokens: tuple[int, int] | None = None  # (prompt, completion) estimate
    relayed: int = 0  # SSE events relayed: the estimate when a stream has no usage
    settled: bool = False
    # Other deployments the attempt loop moved to: their deployment-scope leases, by
    # deployment identity (``Limiter.reserve_deployment``), and the one that served.
    extra: dict[str, Lease] = field(default_factory=dict)
    served: Deployment | None = None
    holds: list[Budget] = field(default_factory=list)  # budget counters held on...
    hold: int = 0  # ...this many nano-USD each (the request's maximum cost)
    cost: int | None = None  # the real cost, nano-USD, once known

    def apply(self, headers: dict[str, str]) -> dict[str, str]:
        """Add the x-ratelimit headers (and the limiter's time to ``server-timing``)."""
        for k, v in self.headers.items():
            if k == "server-timing":
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
            else:
                headers[k] = v
        return headers

    @property
    def counts_events(self) -> bool:
        """Does settling a stream without usage need the relayed event count?"""
        return bool(self.buckets or self.extra or self.limiter.has_deployment_limits)

    def count(self, frames: bytes) -> None:
        """A relay observer: about one token per relayed event, for ``settle_stream``."""
        self.relayed += frames.count(b"data: ")

    def settle(self, usage: Usage | None) -> None:
        """The answer is complete: correct the TPM reservation to its real usage."""
        if self.extra:
            self._close_extra(lambda _: None if usage is None else total_tokens(usage))
        if self.settled or not (self.buckets or self.holds):
            return
        if usage is None:  # nothing reported: the estimate stands
            self.settled = True
            return
        self.limiter.settle(self, total_tokens(usage), self.cost)

    def fail(self, err: GatewayError | None) -> None:
        """No answer (an upstream error, or the client left): refund the tokens; an error
        response gets the x-ratelimit headers."""
        if err is not None:
            for k, v in self.headers.items():
                if k != "server-timing":
                    err.headers.setdefault(k, v)
        if self.extra:
            self._close_extra(None)
        if not self.settled and (self.buckets or self.holds):
            self.limiter.settle(self, 0, 0)

    def settle_stream(self, ended: _Ended) -> None:
        """From a stream's close: provider usage, else prompt + relayed events."""
        usage = ended.usage
        if self.extra:
            self._close_extra(
                lambda x: total_tokens(usage) if usage is not None else x.prompt + self.relayed
            )
        if self.settled or not (self.buckets or self.holds):
            return
        if usage is not None:
            self.limiter.settle(self, total_tokens(usage), self.cost)
        else:
            self.limiter.settle(self, self.prompt + self.relayed, self.cost)

    def _close_extra(self, actual: Callable[[Lease], int | None] | None) -> None:
        """Settle the other deployments' reservations: the one that served (``actual`` of
        it; None: the estimate stands), and refund every other one's tokens."""
        served = self.limiter.deployment_id(self.served) if actual is not None else None
        extra, self.extra = self.extra, {}
        for ident, sub in extra.items():
            if not sub.buckets or sub.settled:
                continue
            if ident != served:
                self.limiter.settle(sub, 0)
                continue
            assert actual is not None
            real = actual(sub)
            if real is None:
                sub.settled = True
            else:
                self.limiter.settle(sub, real)
