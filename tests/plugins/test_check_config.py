"""``llm-gateway check-config`` on the ``plugins:`` section: a plugin that cannot run
is refused with one line naming it, before any request is served."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import run, single_error_line

PROBE = "tests.plugins_fixture.probe"


def check(tmp_path: Path, plugin: str) -> tuple[int, str, str]:
    path = tmp_path / "plugins.yaml"
    path.write_text(f"plugins:\n  - {plugin}\n")
    return run(["check-config", str(path)])


def test_a_good_plugin_section(tmp_path: Path) -> None:
    rc, _, err = check(
        tmp_path, f"{{use: '{PROBE}:Act', at: after_auth, options: {{status: 403}}}}"
    )
    assert (rc, err) == (0, "")
    rc, _, err = check(tmp_path, "{use: 'gateway.plugins.redact:Redact', at: before_cache}")
    assert (rc, err) == (0, "")


@pytest.mark.parametrize(
    ("plugin", "expected"),
    [
        (
            f"{{use: '{PROBE}:Probe', at: before_lunch}}",
            "plugins[0].at: 'before_lunch' is not before_<stage> or after_<stage>",
        ),
        (f"{{use: '{PROBE}:Probe', at: after_respond}}", "nothing runs after respond"),
        (
            "{use: 'no_such_package.guards:Plugin', at: after_auth}",
            "cannot import 'no_such_package.guards' (ModuleNotFoundError: No module named",
        ),
        (f"{{use: '{PROBE}:Missing', at: after_auth}}", f"'{PROBE}' has no attribute 'Missing'"),
        ("{use: 'not a path', at: after_auth}", "plugins[0].use: Expected `str` matching regex"),
        (
            "{use: 'tests.plugins_fixture.broken:Plugin', at: after_auth}",
            "cannot import 'tests.plugins_fixture.broken' (RuntimeError: this module cannot be",
        ),
        (
            f"{{use: '{PROBE}:Act', at: after_auth, options: {{status: nope}}}}",
            "options: Expected `int`, got `str` - at `$.status`",
        ),
        (
            f"{{use: '{PROBE}:Act', at: after_auth, options: {{satus: 403}}}}",
            "options: Object contains unknown field `satus`",
        ),
        (
            f"{{use: '{PROBE}:Act', at: after_auth, options: {{status: 200}}}}",
            "options rejected: status: 200 is not a 4xx",
        ),
        (
            f"{{use: '{PROBE}:Explodes', at: after_auth}}",
            "cannot be built (RuntimeError: cannot start)",
        ),
        (f"{{use: '{PROBE}:TYPE_CHECKING', at: after_auth}}", "TYPE_CHECKING is not callable"),
        (
            f"{{use: '{PROBE}:Probe', at: after_auth, timeout: 0}}",
            "plugins[0].timeout: Expected `float` > 0",
        ),
        (
            "{use: 'gateway.plugins.redact:Redact', at: before_cache,"
            " options: {patterns: {x: '('}}}",
            "patterns.x: invalid regex (missing ), unterminated subpattern at position 0)",
        ),
    ],
    ids=[
        "unknown-position",
        "after-respond",
        "unimportable",
        "no-attribute",
        "not-a-path",
        "import-raises",
        "bad-option-type",
        "unknown-option",
        "option-refused",
        "constructor-raises",
        "not-callable",
        "zero-timeout",
        "bad-regex",
    ],
)
def test_a_plugin_that_cannot_run_is_one_line(tmp_path: Path, plugin: str, expected: str) -> None:
    rc, out, err = check(tmp_path, plugin)
    assert rc == 2 and out == ""
    line = single_error_line(err)
    assert expected in line, line
