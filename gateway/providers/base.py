"""What every provider adapter offers; adapters translate and never do I/O.

An adapter turns the OpenAI-shaped request into the provider's ``httpx.Request``
and the provider's answer back into OpenAI bytes. Only ``pipeline/relay.py``
sends. That keeps every adapter testable offline on recorded bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.providers.transport import Sender, sender

if TYPE_CHECKING:
    import httpx

    from gateway.config import MockOptions, Price
    from gateway.errors import GatewayError
    from gateway.settings import Secret
    from gateway.wire.chat import Usage


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Resolved per deployment at start-up (seconds)."""

    connect: float
    read: float
    first_token: float
    idle: float
    total: float

    def extension(self) -> dict[str, float]:
        return {
            "connect": self.connect,
            "read": self.read,
            "write": self.read,
            "pool": self.connect,
        }


@dataclass(eq=False, slots=True)
class Deployment:
    """One upstream model behind an alias, with everything the hot path needs resolved."""

    provider: str
    model: str  # the upstream's model (Azure: deployment name)
    label: str  # the bounded metrics label for the alias this serves
    base_url: str
    api_key: Secret | None
    timeouts: Timeouts
    transport: httpx.AsyncBaseTransport
    adapter: Adapter
    api_version: str | None = None
    weight: float = 1.0
    priority: int = 0
    price: Price | None = None
    mock: MockOptions | None = None
    # /v1/responses: "passthrough" to the upstream's Responses API, or "translate" via chat
    responses: str = "translate"
    region: str | None = None  # data residency (config ``region``); None: unknown
    # precomputed per deployment: URLs, static headers
    cache: dict[str, Any] = field(default_factory=dict)
    send: Sender = field(init=False)  # how requests go out on ``transport`` (the relay's)

    def __post_init__(self) -> None:
        self.send = sender(self.transport)


class StreamTranslator(Protocol):
    """Provider SSE bytes in, whole SSE frames out (``gateway/sse_write.py`` writes them).

    An in-stream error never costs the frames before it. When a chunk holds events
    and then an error, ``feed`` returns the frames of those events and keeps the
    error in ``error``; the relay delivers the frames, then ends the stream with the
    error. When nothing comes before it, ``feed`` raises it at once. Once ``error``
    is set, every call raises it. ``translate.upstream.SSEStream`` does all of this.
    """

    done: bool  # the provider ended the stream properly

    @property
    def usage(self) -> Usage | None:
        """Token usage once known; implementations may use a plain attribute."""
        ...

    @property
    def error(self) -> GatewayError | None:
        """The in-stream error that ended the stream, once found."""
        ...

    def feed(self, chunk: bytes) -> list[bytes]:
        """Frames ready for the client; see the class docstring for errors."""
        ...

    def finish(self) -> list[bytes]:
        """Called at end of body; raises ``error``, or UpstreamError if the stream
        was cut short."""
        ...


class MessagesNative(Protocol):
    """An upstream that speaks Anthropic's Messages API itself: ``/v1/messages`` and its
    ``count_tokens`` are passed through instead of translated."""

    def messages_request(
        self, dep: Deployment, body: dict[str, Any], stream: bool, client_headers: dict[str, str]
    ) -> httpx.Request: ...

    def messages_response(self, dep: Deployment, content: bytes) -> tuple[bytes, Usage | None]: ...

    def messages_stream(self, dep: Deployment) -> StreamTranslator: ...

    def count_tokens_request(
        self, dep: Deployment, body: dict[str, Any], client_headers: dict[str, str]
    ) -> httpx.Request: ...


class ResponsesNative(Protocol):
    """An upstream that serves OpenAI's Responses API itself: ``/v1/responses`` is passed
    through (only ``model`` replaced) instead of translated through chat."""

    def serves_responses(self, dep: Deployment) -> bool:
        """Whether ``dep`` serves the Responses API unless the config says otherwise."""
        ...

    def responses_request(
        self, dep: Deployment, body: dict[str, Any], stream: bool
    ) -> httpx.Request: ...

    def responses_response(self, dep: Deployment, content: bytes) -> tuple[bytes, Usage | None]: ...

    def responses_stream(self, dep: Deployment) -> StreamTranslator: ...


class ModelLister(Protocol):
    """An upstream that can list its models (``GET /v1/models``), in OpenAI's shape."""

    def models_request(self, dep: Deployment) -> httpx.Request: ...

    def models_response(self, dep: Deployment, content: bytes) -> bytes: ...


class Adapter(Protocol):
    """Every adapter speaks OpenAI chat and embeddings (an upstream without embeddings
    raises a 400 from ``embeddings_request``); the optional capabilities are typed
    attributes, ``None`` when the upstream has no such API."""

    name: str
    native_messages: MessagesNative | None
    native_responses: ResponsesNative | None
    lister: ModelLister | None

    def prepare(self, dep: Deployment) -> None:
        """Precompute URLs and static headers into ``dep.cache`` at start-up."""
        ...

    def chat_request(
        self, dep: Deployment, body: dict[str, Any], stream: bool
    ) -> httpx.Request: ...

    def chat_response(self, dep: Deployment, content: bytes) -> tuple[bytes, Usage | None]: ...

    def chat_stream(self, dep: Deployment, include_usage: bool) -> StreamTranslator: ...

    def embeddings_request(self, dep: Deployment, body: dict[str, Any]) -> httpx.Request: ...

    def embeddings_response(
        self, dep: Deployment, body: dict[str, Any], content: bytes
    ) -> tuple[bytes, Usage | None]:
        """``body`` is the request the answer is for (its encoding format, its size)."""
        ...

    def map_error(
        self, dep: Deployment, status: int, headers: Mapping[str, str], content: bytes
    ) -> GatewayError: ...
