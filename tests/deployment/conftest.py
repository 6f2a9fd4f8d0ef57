"""Shared helpers for the deployment/ checks: where things are, the external tools each
check runs, and kustomize renders.

Every check runs the tool its ecosystem uses (kubectl kustomize, promtool, amtool,
docker-compose, shellcheck, hadolint, k6, terraform), offline. A missing tool skips its
check, except under ``make test`` (``DEPLOY_TOOLS_REQUIRED=1``), which installs them all
and where a missing one is a failure.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import ROOT

DEPLOY = ROOT / "deployment"
K8S = DEPLOY / "k8s"
MONITORING = DEPLOY / "monitoring"
OVERLAYS = ("small", "production", "enterprise")
BIN = Path(sys.executable).parent


def tool(name: str, hint: str) -> str:
    """The path of ``name`` (the venv's bin first), else skip, or fail under make test."""
    path = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        message = f"{name} is not installed ({hint})"
        if os.environ.get("DEPLOY_TOOLS_REQUIRED"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(argv: list[str], *, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=kw.pop("cwd", ROOT), **kw
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    command = " ".join(proc.args)
    tail = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"{command} exited {proc.returncode}\n{tail}"
    return proc.stdout


@functools.cache
def render(path: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize PATH``, as a tuple of objects (cached: renders do not change)."""
    kubectl = tool("kubectl", "kubectl with kustomize")
    out = ok(run([kubectl, "kustomize", path]))
    return tuple(d for d in yaml.safe_load_all(out) if d)


def find(objs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def gateway_env_names() -> set[str]:
    """Every environment variable the gateway reads (settings, cli, cache tuning)."""
    import re

    from gateway.settings import BASE_URL_VARS, KEY_VARS

    names = set(KEY_VARS.values()) | set(BASE_URL_VARS.values())
    pattern = re.compile(
        r'(?:env(?:iron)?(?:\.get\(|\[)|int\(\s*env,\s*)"([A-Z][A-Z0-9_]+)"'
        r'|"([A-Z][A-Z0-9_]+)"\s+(?:not\s+)?in\s+os\.environ'
    )
    sources = [*(ROOT / "gateway").rglob("*.py"), *(ROOT / "_speedups").glob("*.py")]
    for path in sources:
        for m in pattern.finditer(path.read_text()):
            names.add(m.group(1) or m.group(2))
    return names
