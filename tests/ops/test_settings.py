"""Settings for production: NAME_FILE secrets, workers from the cgroup quota, the drain's
default, the OpenTelemetry variables. In-process: no server needed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.settings import Settings, available_cpus


def _file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_key_variables_accept_a_file(tmp_path: Path) -> None:
    cfg = _file(
        tmp_path,
        "g.yaml",
        "models:\n  - alias: a\n    deployments:\n"
        "      - {provider: openai, model: m, base_url: 'http://x.test/v1',"
        " api_key_env: TEAM_KEY}\n",
    )
    env = {
        "OPENAI_API_KEY_FILE": _file(tmp_path, "openai", "sk-from-file\n"),  # echo > file
        "GATEWAY_MASTER_KEY_FILE": _file(tmp_path, "master", "  master-from-file  "),
        "TEAM_KEY_FILE": _file(tmp_path, "team", "team-from-file"),
        "GATEWAY_CONFIG": cfg,
    }
    s = Settings.from_env(env)
    openai = s.providers["openai"]
    assert openai.api_key is not None and openai.api_key.reveal() == "sk-from-file"
    assert s.master_key is not None and s.master_key.reveal() == "master-from-file"
    team = s.secret_env("TEAM_KEY")
    assert team is not None and team.reveal() == "team-from-file"
    assert set(s.watched) == {
        cfg,
        env["OPENAI_API_KEY_FILE"],
        env["GATEWAY_MASTER_KEY_FILE"],
        env["TEAM_KEY_FILE"],
    }
    assert s.config_sha256 == hashlib.sha256(Path(cfg).read_bytes()).hexdigest()
    assert "from-file" not in repr(s)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OPENAI_API_KEY": "a", "OPENAI_API_KEY_FILE": "{f}"},
            "OPENAI_API_KEY_FILE: OPENAI_API_KEY is set too",
        ),
        (
            {"OPENAI_API_KEY_FILE": "/nonexistent/key"},
            "OPENAI_API_KEY_FILE: cannot read /nonexistent/key",
        ),
        ({"ANTHROPIC_API_KEY_FILE": "{empty}"}, "is empty"),
        ({"GATEWAY_WORKERS": "0"}, "GATEWAY_WORKERS: must be between 1"),
        ({"GATEWAY_DRAIN_SECONDS": "-1"}, "GATEWAY_DRAIN_SECONDS"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_SAMPLER": "sometimes"},
            "OTEL_TRACES_SAMPLER",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "2",
            },
            "OTEL_TRACES_SAMPLER_ARG",
        ),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    f = _file(tmp_path, "key", "secret-value-never-shown")
    empty = _file(tmp_path, "empty", "\n")
    env = {k: v.format(f=f, empty=empty) for k, v in env.items()}
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(env)
    assert message in str(exc.value)
    assert "secret-value-never-shown" not in str(exc.value)


def test_drain_defaults_to_the_longest_stream(tmp_path: Path) -> None:
    assert Settings.from_env({}).drain_s == 600
    cfg = _file(
        tmp_path,
        "g.yaml",
        "models:\n  - alias: a\n    deployments:\n"
        "      - {provider: mock, model: m, timeout: {total: 900.5}}\n",
    )
    s = Settings.from_env({"GATEWAY_CONFIG": cfg})
    assert s.drain_s == 901 and s.prestop_s == 5 and s.reload_poll_s == 10


def test_tracing_from_the_standard_variables() -> None:
    assert Settings.from_env({}).tracing is None
    t = Settings.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_SERVICE_NAME": "gw",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod, team = ops",
        }
    ).tracing
    assert t is not None
    assert t.endpoint == "http://collector:4318/v1/traces"
    assert (t.service_name, t.sampler, t.sampler_arg) == ("gw", "parentbased_traceidratio", 0.25)
    assert t.resource_attributes == {"deployment.environment": "prod", "team": "ops"}
    only = Settings.from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c/x/traces"}).tracing
    assert only is not None and only.endpoint == "https://c/x/traces"
    off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    assert Settings.from_env(off).tracing is None


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, 1),  # 1.5 CPUs: one worker, never throttled
        ({"cpu.max": "200000 100000\n"}, 2),
        ({"cpu.max": "50000 100000\n"}, 1),  # at least one
        ({"cpu.max": "max 100000\n"}, None),  # no quota: the CPUs it may run on
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_workers_follow_the_cgroup_quota(
    tmp_path: Path, files: dict[str, str], expected: int | None
) -> None:
    import os

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    cpus = len(os.sched_getaffinity(0))
    assert available_cpus(str(tmp_path)) == min(cpus, expected or cpus)


def test_readme_documents_every_variable() -> None:
    from tests.deployment.conftest import ROOT, gateway_env_names

    readme = (ROOT / "README.md").read_text()
    missing = sorted(n for n in gateway_env_names() if f"`{n}" not in readme)
    assert not missing, missing
