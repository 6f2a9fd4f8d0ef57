"""The YAML config file and the environment: good input loads, bad input gives ONE line
naming the field, and secret values never appear in an error message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config import Config, ConfigError, load_config, parse_config
from gateway.settings import Settings

GOOD = """\
models:
  - alias: smart
    strategy: weighted
    fallbacks: [cheap]
    limits: {rpm: 600, tpm: 200000}
    cache: {ttl: 300}
    deployments:
      - provider: openai
        model: gpt-4o-2024-08-06
        base_url: https://api.openai.com/v1
        api_key_env: OPENAI_API_KEY
        weight: 3
        priority: 0
        timeout: {connect: 5, first_token: 30, idle: 60, total: 600}
        limits: {rpm: 10000, tpm: 2000000}
        price: {input: 2.5, cached_input: 1.25, output: 10.0}
      - provider: mock
        model: mock-1
        weight: 1
        mock: {latency_ms: 5, tokens_per_second: 200, reply_tokens: 12}
  - alias: cheap
    strategy: priority
    deployments:
      - {provider: mock, model: mock-fast}
limits:
  default_key: {rpm: 60, tpm: 100000}
  on_redis_error: open
"""
ENV = {"OPENAI_API_KEY": "sk-test-0123456789"}
# An Azure-style key (32 hex digits) happens to be a valid variable name when it starts
# with a letter: the realistic mistake is pasting it where a variable *name* belongs.
HEX_SECRET = "d41d8cd98f00b204e9800998ecf8427e"
DASH_SECRET = "sk-proj-Secr3tValue-abcdef"


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    assert "Traceback" not in msg
    return msg


def dep(**kw: object) -> dict[str, object]:
    return {"provider": "openai", "model": "m", **kw}


def alias(name: str = "a", *, deployments: list[object] | None = None, **kw: object) -> dict:
    return {"alias": name, "deployments": [dep()] if deployments is None else deployments, **kw}


# -- good files ---------------------------------------------------------------------------


def test_good_file_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), environ=ENV)
    assert isinstance(cfg, Config)
    assert [m.alias for m in cfg.models] == ["smart", "cheap"]
    smart = cfg.models[0]
    assert smart.fallbacks == ["cheap"]
    assert smart.cache is not None and smart.cache.ttl == 300
    first = smart.deployments[0]
    assert (first.provider, first.model, first.weight) == ("openai", "gpt-4o-2024-08-06", 3)
    assert first.timeout.first_token == 30 and first.timeout.read is None
    assert first.price is not None and first.price.cached_input == 1.25
    assert smart.deployments[1].mock is not None
    assert smart.deployments[1].mock.reply_tokens == 12
    assert cfg.models[1].strategy == "priority"
    assert cfg.limits.default_key is not None and cfg.limits.default_key.rpm == 60


@pytest.mark.parametrize("text", ["", "# only a comment\n", "models: []\n", "{}\n"])
def test_empty_sections_are_optional(tmp_path: Path, text: str) -> None:
    cfg = load_config(write(tmp_path, text), environ={})
    assert cfg.models == []
    assert cfg.limits.on_redis_error == "open"


def test_parse_config_accepts_none_and_dicts() -> None:
    assert parse_config(None, environ={}) == Config()
    cfg = parse_config({"models": [alias("x")]}, environ={})
    assert cfg.models[0].deployments[0].weight == 1.0


def test_settings_read_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    s = Settings.from_env({**ENV, "GATEWAY_CONFIG": str(path)})
    assert s.config_path == str(path)
    assert [m.alias for m in s.config.models] == ["smart", "cheap"]
    assert {"openai", "mock"} <= set(s.providers)  # mock is enabled because a deployment uses it
    assert "sk-test" not in repr(s.providers["openai"])


# -- bad values: one line naming the field ------------------------------------------------

BAD_CASES = {
    "unknown key": (
        {"models": [alias(deployments=[dep(wieght=2)])]},
        ["models[0].deployments[0]", "wieght"],
    ),
    "unknown top-level key": ({"modles": []}, ["modles"]),
    "unknown provider": (
        {"models": [alias(deployments=[dep(provider="openia")])]},
        ["models[0].deployments[0].provider"],
    ),
    "unknown strategy": (
        {"models": [alias(strategy="fastest")]},
        ["models[0].strategy"],
    ),
    "negative weight": (
        {"models": [alias(deployments=[dep(weight=-1)])]},
        ["models[0].deployments[0].weight"],
    ),
    "all weights zero": (
        {"models": [alias(deployments=[dep(weight=0), dep(weight=0)])]},
        ["models[0].deployments"],
    ),
    "zero timeout": (
        {"models": [alias(deployments=[dep(timeout={"read": 0})])]},
        ["models[0].deployments[0].timeout.read"],
    ),
    "no deployments": ({"models": [alias(deployments=[])]}, ["models[0].deployments"]),
    "fallback to unknown alias": (
        {"models": [alias("a", fallbacks=["zzz"])]},
        ["models[0].fallbacks[0]", "zzz"],
    ),
    "fallback cycle": (
        {"models": [alias("a", fallbacks=["b"]), alias("b", fallbacks=["a"])]},
        ["fallbacks", "cycle", "a -> b -> a"],
    ),
    "fallback to itself": (
        {"models": [alias("a", fallbacks=["a"])]},
        ["models[0].fallbacks", "cycle"],
    ),
    "duplicate alias": (
        {"models": [alias("a"), alias("b"), alias("a")]},
        ["models[2].alias", "duplicate"],
    ),
    "alias with a slash": ({"models": [alias("openai/x")]}, ["models[0].alias"]),
    "missing api_key_env variable": (
        {"models": [alias(deployments=[dep(api_key_env="MY_TEAM_OPENAI_KEY")])]},
        ["models[0].deployments[0].api_key_env", "MY_TEAM_OPENAI_KEY"],
    ),
    "mock options on a real provider": (
        {"models": [alias(deployments=[dep(mock={"latency_ms": 1})])]},
        ["models[0].deployments[0].mock"],
    ),
    "base_url not http": (
        {"models": [alias(deployments=[dep(base_url="ftp://example.com")])]},
        ["models[0].deployments[0].base_url"],
    ),
    "bad redis policy": ({"limits": {"on_redis_error": "maybe"}}, ["limits.on_redis_error"]),
    "models is not a list": ({"models": {"alias": "a"}}, ["models"]),
    "non-mapping root": ([1, 2], ["<root>"]),
}


@pytest.mark.parametrize("data,needles", BAD_CASES.values(), ids=list(BAD_CASES))
def test_bad_config_names_the_field(data: object, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, environ=ENV)
    msg = one_line(exc)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


@pytest.mark.parametrize("data,needles", BAD_CASES.values(), ids=list(BAD_CASES))
def test_bad_config_file_names_file_and_field(
    tmp_path: Path, data: object, needles: list[str]
) -> None:
    import yaml

    path = write(tmp_path, yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ=ENV)
    msg = one_line(exc)
    assert msg.startswith(f"{path}: ")
    for needle in needles:
        assert needle in msg


def test_unknown_key_in_a_yaml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        models:
          - alias: smart
            deployments:
              - provider: openai
                model: gpt-4o
                wieght: 3
        """,
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ=ENV)
    msg = one_line(exc)
    assert "models[0].deployments[0]" in msg and "wieght" in msg


def test_invalid_yaml_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - alias: a\n    deployments: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    msg = one_line(exc)
    assert "invalid YAML" in msg
    assert "line 4" in msg and "column" in msg


def test_tab_indentation_is_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n\t- alias: a\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert "line 2, column 1" in one_line(exc)


@pytest.mark.parametrize("text,kind", [("- a\n- b\n", "list"), ("just a string\n", "str")])
def test_non_mapping_root(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    msg = one_line(exc)
    assert "<root>" in msg and "mapping" in msg and kind in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.yaml", environ={})
    assert "file not found" in one_line(exc)


def test_not_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"models: []\n# caf\xe9\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert "cannot read" in one_line(exc)


# -- secrets never appear in messages -----------------------------------------------------


def test_key_written_in_the_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"models:\n  - alias: a\n    deployments:\n"
        f"      - {{provider: openai, model: m, api_key: {DASH_SECRET}}}\n",
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={"OPENAI_API_KEY": DASH_SECRET})
    msg = one_line(exc)
    assert "api_key" in msg
    assert DASH_SECRET not in msg


def test_key_value_with_dashes_in_api_key_env_is_not_echoed() -> None:
    data = {"models": [alias(deployments=[dep(api_key_env=DASH_SECRET)])]}
    with pytest.raises(ConfigError) as exc:
        parse_config(data, environ={"OPENAI_API_KEY": DASH_SECRET})
    msg = one_line(exc)
    assert "api_key_env" in msg
    assert DASH_SECRET not in msg and "Secr3t" not in msg


def test_key_value_pasted_into_api_key_env_is_not_echoed() -> None:
    data = {"models": [alias(deployments=[dep(provider="azure", api_key_env=HEX_SECRET)])]}
    environ = {"AZURE_API_KEY": HEX_SECRET, "AZURE_API_BASE": "https://x.openai.azure.com"}
    with pytest.raises(ConfigError) as exc:
        parse_config(data, environ=environ)
    msg = one_line(exc)
    assert "api_key_env" in msg
    assert HEX_SECRET not in msg


def test_secret_in_environment_absent_from_every_bad_case_message() -> None:
    env = {**ENV, "OPENAI_API_KEY": DASH_SECRET, "ANTHROPIC_API_KEY": HEX_SECRET}
    for data, _needles in BAD_CASES.values():
        with pytest.raises(ConfigError) as exc:
            parse_config(data, environ=env)
        msg = str(exc.value)
        assert DASH_SECRET not in msg and HEX_SECRET not in msg


# -- Settings.from_env ----------------------------------------------------------------------

BAD_ENV = {
    "port not a number": ({"SERVER_PORT": "abc"}, "SERVER_PORT"),
    "port out of range": ({"SERVER_PORT": "0"}, "SERVER_PORT"),
    "metrics port out of range": ({"METRICS_PORT": "70000"}, "METRICS_PORT"),
    "unknown log level": ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    "redis url scheme": ({"REDIS_URL": "http://x"}, "REDIS_URL"),
    "tiny body cap": ({"GATEWAY_MAX_BODY_BYTES": "10"}, "GATEWAY_MAX_BODY_BYTES"),
    "unknown transport": ({"GATEWAY_UPSTREAM_TRANSPORT": "curl"}, "GATEWAY_UPSTREAM_TRANSPORT"),
    "base url scheme": (
        {"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "ftp://h"},
        "OPENAI_BASE_URL",
    ),
    "azure without base": ({"AZURE_API_KEY": "k"}, "AZURE_API_BASE"),
}


@pytest.mark.parametrize("env,var", BAD_ENV.values(), ids=list(BAD_ENV))
def test_settings_bad_value_names_the_variable(env: dict[str, str], var: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(env)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{var}: "), msg


def test_settings_bad_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "models: 3\n")
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"GATEWAY_CONFIG": str(path)})
    assert str(path) in str(exc.value) and "models" in str(exc.value)


def test_settings_never_echo_secrets() -> None:
    cases = [
        {"REDIS_URL": "http://user:hunter2-secret@redis:6379"},
        {"OPENAI_API_KEY": DASH_SECRET, "OPENAI_BASE_URL": "api.openai.com"},
        {"AZURE_API_KEY": HEX_SECRET},
        {"GATEWAY_MASTER_KEY": DASH_SECRET, "SERVER_PORT": "x"},
    ]
    for env in cases:
        with pytest.raises(ConfigError) as exc:
            Settings.from_env(env)
        msg = str(exc.value)
        assert "hunter2" not in msg and DASH_SECRET not in msg and HEX_SECRET not in msg


def test_settings_defaults_and_mock_without_keys() -> None:
    s = Settings.from_env({})
    assert (s.server_host, s.server_port, s.metrics_port, s.log_level) == (
        "0.0.0.0",
        8080,
        9090,
        "info",
    )
    assert list(s.providers) == ["mock"]
    assert s.max_body_bytes == 10 * 1024 * 1024 and s.max_json_depth == 64


def test_settings_secrets_do_not_print() -> None:
    s = Settings.from_env({"OPENAI_API_KEY": DASH_SECRET, "GATEWAY_MASTER_KEY": HEX_SECRET})
    text = repr(s.providers) + repr(s.master_key) + f"{s.master_key}" + str(s.master_key)
    assert DASH_SECRET not in text and HEX_SECRET not in text
    assert s.providers["openai"].api_key is not None
    assert s.providers["openai"].api_key.reveal() == DASH_SECRET
    assert "mock" not in s.providers  # a real key disables the demo provider


@pytest.mark.parametrize("value,level", [("warn", "warning"), ("gateway=debug", "debug")])
def test_rust_log_alias(value: str, level: str) -> None:
    assert Settings.from_env({"RUST_LOG": value}).log_level == level


def test_log_level_wins_over_rust_log() -> None:
    assert Settings.from_env({"RUST_LOG": "debug", "LOG_LEVEL": "error"}).log_level == "error"


def test_bad_rust_log_names_rust_log() -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"RUST_LOG": "gateway=loud"})
    assert str(exc.value).startswith("RUST_LOG: ")


# -- issue 9: credentials in URLs, base URLs without their key, every GATEWAY_* variable ----

URL_PASSWORD = "hunter2-in-a-url"


@pytest.mark.parametrize(
    "url", [f"http://user:{URL_PASSWORD}@127.0.0.1:9/v1", f"https://{URL_PASSWORD}@h.example"]
)
def test_base_url_with_credentials_is_refused_naming_the_field(url: str) -> None:
    data = {"models": [alias(deployments=[dep(base_url=url, api_key_env="OPENAI_API_KEY")])]}
    with pytest.raises(ConfigError) as exc:
        parse_config(data, environ=ENV)
    msg = one_line(exc)
    assert msg.startswith("models[0].deployments[0].base_url: must not contain credentials")
    assert URL_PASSWORD not in msg


@pytest.mark.parametrize(
    "key_var,url_var", [("OPENAI_API_KEY", "OPENAI_BASE_URL"), ("AZURE_API_KEY", "AZURE_API_BASE")]
)
def test_provider_base_url_variable_with_credentials_is_refused(key_var: str, url_var: str) -> None:
    env = {key_var: "k", url_var: f"https://u:{URL_PASSWORD}@h.example"}
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(env)
    msg = one_line(exc)
    assert msg.startswith(f"{url_var}: must not contain credentials")
    assert URL_PASSWORD not in msg


@pytest.mark.parametrize(
    "var,key_var",
    [
        ("OPENAI_BASE_URL", "OPENAI_API_KEY"),
        ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"),
        ("GOOGLE_BASE_URL", "GOOGLE_API_KEY"),
        ("AZURE_API_BASE", "AZURE_API_KEY"),
        ("AZURE_API_VERSION", "AZURE_API_KEY"),
    ],
)
def test_provider_url_without_its_key_is_refused(var: str, key_var: str) -> None:
    # Unrefused, the URL was ignored and requests went to the public API with no key.
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({var: "http://127.0.0.1:9/v1"})
    msg = one_line(exc)
    assert msg.startswith(f"{var}: set without {key_var}")


@pytest.mark.parametrize(
    "var,value",
    [
        ("GATEWAY_CACHE_LOCK_MS", "soon"),
        ("GATEWAY_CACHE_LOCK_MS", "5"),
        ("GATEWAY_CACHE_MAX_ENTRY_BYTES", "1e9"),
        ("GATEWAY_CACHE_MAX_ENTRIES", "0"),
        ("GATEWAY_CACHE_MAX_BYTES", "-1"),
        ("GATEWAY_UPSTREAM_POOL", "many"),
        ("GATEWAY_RUNTIME_THREADS", "0"),
        ("GATEWAY_RUNTIME_THREADS", "lots"),
        ("GATEWAY_NO_EXTENSIONS", "maybe"),
    ],
)
def test_every_gateway_variable_is_validated_by_settings(var: str, value: str) -> None:
    """Read once, before any worker starts: a bad value is one line at start-up, never a
    crash in each worker after the port is bound."""
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({var: value})
    assert one_line(exc).startswith(f"{var}: ")


def test_cache_variables_reach_settings() -> None:
    s = Settings.from_env(
        {
            "GATEWAY_CACHE_LOCK_MS": "1500",
            "GATEWAY_CACHE_MAX_ENTRY_BYTES": "2048",
            "GATEWAY_CACHE_MAX_ENTRIES": "7",
            "GATEWAY_CACHE_MAX_BYTES": "4096",
        }
    )
    assert (s.cache_lock_ms, s.cache_max_entry_bytes, s.cache_max_entries, s.cache_max_bytes) == (
        1500,
        2048,
        7,
        4096,
    )


@pytest.mark.parametrize("value", ["", "0", "1", "true", "YES", "no", "False"])
def test_no_extensions_values_accepted(value: str) -> None:
    Settings.from_env({"GATEWAY_NO_EXTENSIONS": value})


def test_check_env_false_checks_the_file_alone() -> None:
    data = {
        "models": [
            alias(deployments=[dep(api_key_env="NOT_SET_ANYWHERE")]),
            alias("az", deployments=[dep(provider="azure")]),
        ]
    }
    with pytest.raises(ConfigError):
        parse_config(data, environ={})
    cfg = parse_config(data, environ={}, check_env=False)
    assert cfg.models[0].deployments[0].api_key_env == "NOT_SET_ANYWHERE"
    # everything that is not about the environment is still checked
    bad = {"models": [alias(deployments=[dep(api_key_env="not a name")])]}
    with pytest.raises(ConfigError, match="api_key_env: not a valid variable name"):
        parse_config(bad, environ={}, check_env=False)
