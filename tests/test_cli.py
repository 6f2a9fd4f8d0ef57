"""``llm-gateway`` / ``python -m gateway``: version, check-config, and serve failing fast.

Configuration errors exit with status 2 and exactly one line on stderr naming the
field or variable; nothing is printed to stdout and no traceback ever shows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import gateway
from tests.harness import ROOT, clean_env, free_port, gateway_argv, start_gateway

GOOD = """\
models:
  - alias: chat
    fallbacks: [demo]
    deployments:
      - {provider: openai, model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}
      - {provider: openai, model: gpt-4o, weight: 2}
  - alias: demo
    deployments:
      - {provider: mock, model: mock-1}
"""
BAD = """\
models:
  - alias: chat
    deployments:
      - provider: openai
        model: gpt-4o-mini
        wieght: 3
"""


def run(
    args: list[str], env: dict[str, str | None] | None = None, timeout: float = 20
) -> tuple[int, str, str]:
    """Run the CLI in its own process group; the group is killed if it overstays."""
    p = subprocess.Popen(
        gateway_argv(*args),
        cwd=ROOT,
        env=clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"llm-gateway {' '.join(args)} did not exit within {timeout}s")
    return p.returncode, out, err


def single_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert "Traceback" not in err
    assert lines[0].startswith("llm-gateway: error: ")
    return lines[0]


def test_version() -> None:
    rc, out, err = run(["version"])
    assert (rc, out, err) == (0, gateway.__version__ + "\n", "")


def test_console_script_version() -> None:
    script = Path(sys.executable).parent / "llm-gateway"
    assert script.exists(), "the llm-gateway console script is not installed"
    p = subprocess.run(
        [str(script), "version"], capture_output=True, text=True, timeout=20, env=clean_env()
    )
    assert (p.returncode, p.stdout.strip()) == (0, gateway.__version__)


def test_check_config_good(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    rc, out, err = run(["check-config", str(path)], {"OPENAI_API_KEY": "sk-test-123"})
    assert rc == 0, err
    assert out == f"{path}: ok (2 aliases, 3 deployments)\n"
    assert err == ""


def test_check_config_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    rc, out, err = run(["check-config", str(path)])
    assert rc == 2 and out == ""
    line = single_error_line(err)
    assert str(path) in line
    assert "models[0].deployments[0]" in line and "wieght" in line


def test_check_config_missing_key_variable_never_prints_secrets(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    secret = "sk-ant-Secr3t-value-xyz"
    rc, out, err = run(["check-config", str(path)], {"ANTHROPIC_API_KEY": secret})
    assert rc == 2 and out == ""
    line = single_error_line(err)
    assert "models[0].deployments[0].api_key_env" in line and "OPENAI_API_KEY" in line
    assert secret not in line


def test_check_config_missing_file(tmp_path: Path) -> None:
    rc, out, err = run(["check-config", str(tmp_path / "nope.yaml")])
    assert rc == 2 and out == ""
    assert "file not found" in single_error_line(err)


def test_check_config_checks_the_environment_too(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    rc, _out, err = run(["check-config", str(path)], {"OPENAI_API_KEY": "k", "LOG_LEVEL": "loud"})
    assert rc == 2
    assert "LOG_LEVEL" in single_error_line(err)


@pytest.mark.parametrize(
    "env,var",
    [
        ({"SERVER_PORT": "abc"}, "SERVER_PORT"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ],
    ids=["SERVER_PORT", "REDIS_URL", "LOG_LEVEL"],
)
def test_serve_bad_env_exits_2_with_one_line(env: dict[str, str], var: str) -> None:
    # no --port: SERVER_PORT comes from the environment
    rc, out, err = run(["serve", "--host", "127.0.0.1"], env)
    assert rc == 2 and out == ""
    assert f"error: {var}: " in single_error_line(err)


def test_serve_bad_config_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    rc, out, err = run(["serve", "--port", str(free_port()), "--config", str(path)])
    assert rc == 2 and out == ""
    assert "wieght" in single_error_line(err)


def test_serve_zero_workers_exits_2() -> None:
    rc, _out, err = run(["serve", "--port", str(free_port()), "--workers", "0"])
    assert rc == 2
    assert "--workers" in single_error_line(err)


def test_serve_busy_metrics_port_exits_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, _out, err = run(
            ["serve", "--host", "127.0.0.1", "--port", str(free_port())],
            {"METRICS_PORT": str(port)},
        )
    assert rc == 2
    assert f"METRICS_PORT: cannot listen on {port}" in single_error_line(err)


def test_usage_errors_exit_2() -> None:
    rc, out, err = run([])
    assert rc == 2 and out == ""
    assert "usage:" in err and "Traceback" not in err


# -- issue 9: refused at start-up, never later --------------------------------------------

CREDENTIALS_IN_URL = """\
models:
  - alias: chat
    deployments:
      - {provider: openai, model: m, base_url: "http://user:hunter2@127.0.0.1:9/v1",
         api_key_env: OPENAI_API_KEY}
"""


def test_check_config_refuses_credentials_in_base_url(tmp_path: Path) -> None:
    path = tmp_path / "creds.yaml"
    path.write_text(CREDENTIALS_IN_URL)
    rc, out, err = run(["check-config", str(path)], {"OPENAI_API_KEY": "sk-test-123"})
    assert rc == 2 and out == ""
    line = single_error_line(err)
    assert "models[0].deployments[0].base_url: must not contain credentials" in line
    assert "hunter2" not in line


def test_serve_refuses_credentials_in_base_url(tmp_path: Path) -> None:
    path = tmp_path / "creds.yaml"
    path.write_text(CREDENTIALS_IN_URL)
    rc, out, err = run(
        ["serve", "--host", "127.0.0.1", "--port", str(free_port()), "--config", str(path)],
        {"OPENAI_API_KEY": "sk-test-123", "METRICS_PORT": "0"},
    )
    assert rc == 2 and out == ""
    assert "base_url: must not contain credentials" in single_error_line(err)


def test_check_config_no_env_checks_the_file_alone(tmp_path: Path) -> None:
    """For CI: the keys' variables are not set there, yet the file can be checked."""
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    rc, _out, err = run(["check-config", str(good)])  # OPENAI_API_KEY is not set
    assert rc == 2 and "OPENAI_API_KEY is not set" in single_error_line(err)
    rc, out, err = run(["check-config", "--no-env", str(good)], {"LOG_LEVEL": "loud"})
    assert (rc, out, err) == (0, f"{good}: ok (2 aliases, 3 deployments)\n", "")
    rc, out, err = run(["check-config", "--no-env", str(bad)])
    assert rc == 2 and out == "" and "wieght" in single_error_line(err)


@pytest.mark.parametrize("var", ["OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "AZURE_API_BASE"])
def test_serve_refuses_a_base_url_without_its_key(var: str) -> None:
    rc, out, err = run(
        ["serve", "--host", "127.0.0.1", "--port", str(free_port())],
        {var: "http://127.0.0.1:9/v1", "METRICS_PORT": "0"},
    )
    assert rc == 2 and out == ""
    assert f"error: {var}: set without " in single_error_line(err)


def test_serve_bad_cache_variable_exits_2_before_any_worker() -> None:
    """It used to pass the supervisor's check and crash every worker in a loop."""
    rc, out, err = run(
        ["serve", "--host", "127.0.0.1", "--port", str(free_port())],
        {"GATEWAY_CACHE_LOCK_MS": "soon", "METRICS_PORT": "0"},
        timeout=15,
    )
    assert rc == 2 and out == ""
    assert "error: GATEWAY_CACHE_LOCK_MS: expected an integer" in single_error_line(err)


def test_second_gateway_on_a_busy_port_exits_2(tmp_path: Path) -> None:
    """Granian binds with SO_REUSEPORT: a second gateway used to start and take half the
    traffic. Now it refuses with one line, and the first keeps serving all of it."""
    first = start_gateway(tmp_path / "logs", {}, name="gateway-first")
    try:
        rc, out, err = run(
            ["serve", "--host", "127.0.0.1", "--port", str(first.port)],
            {"METRICS_PORT": str(free_port())},
        )
        assert rc == 2 and out == ""
        line = single_error_line(err)
        assert f"SERVER_PORT: cannot listen on 127.0.0.1:{first.port}" in line
        assert "in use" in line
        for _ in range(20):  # every connection lands on the first gateway
            assert httpx.get(first.url + "/health/live", timeout=5).status_code == 200
        assert first.proc.alive()
    finally:
        first.stop()


def test_port_held_by_another_program_exits_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, _out, err = run(
            ["serve", "--host", "127.0.0.1", "--port", str(port)], {"METRICS_PORT": "0"}
        )
    assert rc == 2
    assert f"SERVER_PORT: cannot listen on 127.0.0.1:{port}" in single_error_line(err)


@pytest.mark.parametrize(("value", "threads"), [(None, 2), ("3", 3)])
def test_serve_gives_granian_its_runtime_threads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None, threads: int
) -> None:
    """Two Rust runtime threads per worker unless GATEWAY_RUNTIME_THREADS says otherwise
    (each ASGI send waits for one to be free: bench/README.md)."""
    import gateway.cli
    import gateway.supervisor

    seen: dict[str, object] = {}

    class FakeSupervisor:
        def __init__(self, *args: object, **kw: object) -> None:
            seen.update(kw)

        def serve(self, **kw: object) -> None:
            return None

    monkeypatch.setattr(gateway.supervisor, "Supervisor", FakeSupervisor)
    for name in list(os.environ):
        if name.startswith(("GATEWAY_", "OPENAI_", "ANTHROPIC_", "AZURE_", "GOOGLE_", "GEMINI_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("METRICS_PORT", "0")
    monkeypatch.setenv("SERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("SERVER_PORT", str(free_port()))
    if value is not None:
        monkeypatch.setenv("GATEWAY_RUNTIME_THREADS", value)
    assert gateway.cli.main(["serve", "--workers", "1"]) == 0
    assert seen["runtime_threads"] == threads
