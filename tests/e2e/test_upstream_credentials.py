"""The gateway's provider keys stay with the upstreams they are meant for (issue 9).

Over real sockets, against ``tests/fakes/echo_upstream.py``, which records every
request's headers and puts them, word for word, into its error texts:

- item 10: a deployment is sent exactly the key its config names, and none when it
  names none; the provider-wide key (``OPENAI_API_KEY``...) goes only to the URL it
  was set for (its ``*_BASE_URL``, or the provider's public URL);
- item 12: whatever an upstream echoes, no provider key, bearer token, key-shaped
  token or URL password reaches a client (error bodies, mid-stream error events,
  chat and ``/v1/messages``, every provider) or the gateway's logs, and the rest of
  the upstream's message does.

The canary keys have no recognisable shape (no ``sk-``, no ``Bearer`` in a header
value the scrubber could see as such on its own): only the gateway's list of the keys
it sends can catch them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.echo_upstream import ECHO_MARK, OTHER_KEY, PASSWORD
from tests.harness import Fake, GatewayProc, start_fake, start_gateway

pytestmark = pytest.mark.e2e

CANARY = {
    "openai": "canary0openai0c3b1e9d",
    "anthropic": "canary0anthropic0a7f52",
    "azure": "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f",
    "gemini": "canary0gemini0d48e2aa",
}
SELF_HOSTED_KEY = "canary0selfhosted0b9e71"
SECRETS = (*CANARY.values(), SELF_HOSTED_KEY, PASSWORD, OTHER_KEY)


@pytest.fixture(scope="module")
def echo(e2e_dir: Path) -> Iterator[Fake]:
    with start_fake("echo_upstream", e2e_dir / "logs", "unchecked") as fake:
        yield fake


def _config(echo: Fake) -> str:
    r = echo.root
    return f"""\
models:
  - alias: self-openai          # a self-hosted OpenAI-compatible server, no key named
    deployments: [{{provider: openai, model: ok, base_url: "{r}/self/v1"}}]
  - alias: self-anthropic
    deployments: [{{provider: anthropic, model: ok, base_url: "{r}/self-anthropic"}}]
  - alias: self-gemini
    deployments: [{{provider: gemini, model: ok, base_url: "{r}/self-gemini/v1beta"}}]
  - alias: self-azure
    deployments: [{{provider: azure, model: ok, base_url: "{r}/self-azure"}}]
  - alias: named                # its own key, named in the config
    deployments:
      - {{provider: openai, model: ok, base_url: "{r}/named/v1", api_key_env: SELF_HOSTED_KEY}}
  - alias: provider-url         # no base_url: the provider's URL, the provider's key
    deployments: [{{provider: openai, model: ok}}]
  - alias: same-url             # the provider's URL written out: the provider's key
    deployments: [{{provider: openai, model: ok, base_url: "{r}/v1/"}}]
"""


@pytest.fixture(scope="module")
def gateway(echo: Fake, e2e_dir: Path) -> Iterator[GatewayProc]:
    config = e2e_dir / "credentials.yaml"
    config.write_text(_config(echo))
    with start_gateway(
        e2e_dir / "logs",
        {
            "OPENAI_API_KEY": CANARY["openai"],
            "OPENAI_BASE_URL": echo.root + "/v1",
            "ANTHROPIC_API_KEY": CANARY["anthropic"],
            "ANTHROPIC_BASE_URL": echo.root,
            "AZURE_API_KEY": CANARY["azure"],
            "AZURE_API_BASE": echo.root,
            "GOOGLE_API_KEY": CANARY["gemini"],
            "GOOGLE_BASE_URL": echo.root + "/v1beta",
            "SELF_HOSTED_KEY": SELF_HOSTED_KEY,
            "GATEWAY_CONFIG": str(config),
        },
        name="gateway-credentials",
    ) as gw:
        yield gw


def _chat(gw: GatewayProc, model: str, stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(gw.api + "/chat/completions", json=body, timeout=20)


def _messages(gw: GatewayProc, model: str, stream: bool = False) -> httpx.Response:
    body = {
        "model": model,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }
    return httpx.post(gw.api + "/messages", json=body, timeout=20)


def _credentials(request: dict[str, Any]) -> dict[str, str]:
    names = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
    return {k: v for k, v in request["headers"].items() if k in names}


# -- item 10: exactly the credential the config names ---------------------------------------


@pytest.mark.parametrize(
    "alias,path",
    [
        ("self-openai", "/self/v1/chat/completions"),
        ("self-anthropic", "/self-anthropic/v1/messages"),
        ("self-gemini", "/self-gemini/v1beta/models/ok:generateContent"),
        ("self-azure", "/self-azure/openai/deployments/ok/chat/completions"),
    ],
)
def test_own_base_url_without_api_key_env_gets_no_key(
    gateway: GatewayProc, echo: Fake, alias: str, path: str
) -> None:
    echo.reset()
    r = _chat(gateway, alias)
    assert r.status_code == 200, r.text
    [seen] = echo.requests()
    assert seen["path"] == path
    assert _credentials(seen) == {}, f"a provider key went to a third-party host: {seen}"
    assert not any(s in str(seen) for s in SECRETS)


def test_named_key_is_the_only_key_sent(gateway: GatewayProc, echo: Fake) -> None:
    echo.reset()
    assert _chat(gateway, "named").status_code == 200
    [seen] = echo.requests()
    assert _credentials(seen) == {"authorization": f"Bearer {SELF_HOSTED_KEY}"}


@pytest.mark.parametrize("alias", ["provider-url", "same-url", "openai/ok"])
def test_provider_key_goes_to_the_url_it_was_set_for(
    gateway: GatewayProc, echo: Fake, alias: str
) -> None:
    echo.reset()
    assert _chat(gateway, alias).status_code == 200
    [seen] = echo.requests()
    assert seen["path"] == "/v1/chat/completions"
    assert _credentials(seen) == {"authorization": f"Bearer {CANARY['openai']}"}


# -- item 12: upstream texts are scrubbed, whatever the path ---------------------------------

PROVIDERS = ("openai", "azure", "anthropic", "gemini")


def _assert_scrubbed(r: httpx.Response) -> None:
    text = r.text + "".join(f"{k}: {v}\n" for k, v in r.headers.items())
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"secrets {leaked} reached the client:\n{text[:2000]}"
    assert ECHO_MARK in r.text, f"the upstream's own words were lost:\n{r.text[:2000]}"


@pytest.mark.parametrize("endpoint", ["chat", "messages"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [400, 500])
def test_error_bodies_carry_no_secret(
    gateway: GatewayProc, provider: str, endpoint: str, status: int
) -> None:
    send = _chat if endpoint == "chat" else _messages
    r = send(gateway, f"{provider}/echo-{status}")
    assert r.status_code == (400 if status == 400 else 502), r.text
    if endpoint == "messages":
        assert r.json()["type"] == "error"  # Anthropic's shape
    else:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    _assert_scrubbed(r)


@pytest.mark.parametrize("endpoint", ["chat", "messages"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_mid_stream_error_events_carry_no_secret(
    gateway: GatewayProc, provider: str, endpoint: str
) -> None:
    send = _chat if endpoint == "chat" else _messages
    r = send(gateway, f"{provider}/echo-stream", stream=True)
    assert r.status_code == 200, r.text
    assert "hello" in r.text  # committed: the error came after the first content
    if endpoint == "messages":
        assert "event: error" in r.text
    else:
        assert 'data: {"error"' in r.text and "[DONE]" not in r.text
    _assert_scrubbed(r)


def test_logs_carry_no_secret(gateway: GatewayProc) -> None:
    for provider in PROVIDERS:
        _chat(gateway, f"{provider}/echo-500")
        _messages(gateway, f"{provider}/echo-stream", stream=True)
    logs = gateway.proc.stdout() + gateway.proc.stderr()
    assert logs.strip(), "the gateway wrote no logs at all"
    leaked = [s for s in SECRETS if s in logs]
    assert not leaked, f"secrets {leaked} in the gateway's logs"
