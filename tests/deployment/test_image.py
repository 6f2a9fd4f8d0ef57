"""The container image's runtime, simulated without a Docker engine.

What the Dockerfile's runtime stage amounts to is rebuilt from the same parts: the
package built as a wheel (pure Python here: the Cython build is proven elsewhere and
takes minutes) and installed into a fresh virtualenv of a system Python, then served
by ``llm-gateway serve`` as UID/GID 1000 in a private mount namespace whose root
filesystem is remounted read-only, with one writable directory standing in for the
image's tmpfs ``/tmp`` (HOME, TMPDIR and PROMETHEUS_MULTIPROC_DIR point there). It must
start, answer /health/ready and a chat request, and serve /metrics.

The wheel's dependencies come from the project's virtualenv (a ``.pth`` line), not from
PyPI, so the test runs offline and fast; the fresh environment sees the installed wheel,
not the source tree (the process runs outside it, and the editable finder is not loaded).
"""

from __future__ import annotations

import os
import shutil
import site
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deployment.conftest import ok, run
from tests.harness import ROOT, free_port, spawn, wait_until

pytestmark = pytest.mark.e2e
UID = 1000
SYSTEM_PYTHON = "/usr/bin/python3"


def _copy_sources(dest: Path) -> None:
    """What the Dockerfile's build stage COPYs, without build products."""
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.html")
    for name in ("_speedups", "gateway"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)


@pytest.fixture(scope="module")
def image_root() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to UID 1000 and remount / read-only (CI runs as root)")
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} is not installed")
    root = Path(tempfile.mkdtemp(prefix="llm-gateway-image-"))
    try:
        os.chmod(root, 0o755)
        src, wheels, venv = root / "src", root / "wheels", root / "venv"
        src.mkdir()
        _copy_sources(src)
        env = {**os.environ, "GATEWAY_NO_EXTENSIONS": "1", "PIP_NO_INPUT": "1"}
        pip = [sys.executable, "-m", "pip"]
        ok(
            run(
                [
                    *pip,
                    "wheel",
                    "-q",
                    "--no-deps",
                    "--no-build-isolation",
                    "-w",
                    str(wheels),
                    str(src),
                ],
                env=env,
                timeout=120,
            )
        )
        (wheel,) = wheels.glob("llm_gateway-*.whl")
        ok(run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)]))
        (purelib,) = venv.glob("lib/python3*/site-packages")
        deps = [p for p in site.getsitepackages() if "site-packages" in p]
        (purelib / "llm_gateway_test_deps.pth").write_text("\n".join(deps) + "\n")
        ok(
            run(
                [*pip, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
                 "--no-index", str(wheel)],
                env=env,
                timeout=120,
            )
        )  # fmt: skip
        shutil.rmtree(src)
        # the "image" is readable (and its directories and programs executable) by all,
        # writable by none
        for path in (root, *root.rglob("*")):
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            os.chmod(path, 0o555 if path.is_dir() or mode & 0o111 else 0o444)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _in_image(writable: Path, argv: list[str]) -> list[str]:
    """``argv`` as UID/GID 1000, no capabilities, in a mount namespace where / is read-only
    and only ``writable`` (bind-mounted over itself first) can be written; it is also the
    working directory, as /tmp is the image's."""
    return [
        "unshare", "--mount", "--propagation", "private", "sh", "-ec",
        'mount --bind "$0" "$0"; mount -o remount,bind,ro /; cd "$0"; exec "$@"',
        str(writable),
        "setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--inh-caps=-all",
        "--no-new-privs",
        *argv,
    ]  # fmt: skip


def test_wheel_served_by_uid_1000_on_a_read_only_root(image_root: Path, tmp_path: Path) -> None:
    writable = Path(tempfile.mkdtemp(prefix="llm-gateway-tmp-"))
    os.chown(writable, UID, UID)
    os.chmod(writable, 0o700)
    try:
        env = {
            "PATH": f"{image_root / 'venv' / 'bin'}:/usr/bin:/bin",
            "HOME": str(writable),
            "TMPDIR": str(writable),
            "PROMETHEUS_MULTIPROC_DIR": str(writable / "metrics"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "LOG_LEVEL": "info",
        }
        # The sandbox is what it claims: only the tmpfs stand-in is writable.
        probe = run(
            _in_image(
                writable,
                [
                    "sh", "-c",
                    'id -u; touch "$HOME/ok" && echo home-writable; '
                    "touch /tmp/x 2>/dev/null && echo tmp-writable; "
                    f"touch {image_root}/venv/x 2>/dev/null && echo venv-writable; "
                    "llm-gateway version",
                ],
            ),
            env=env,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.split() == [str(UID), "home-writable", "0.1.0"], probe.stdout

        port, metrics_port = free_port(), free_port()
        serve = [
            "llm-gateway",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ]
        proc = spawn(
            "image-gateway",
            _in_image(writable, serve),
            {**env, "METRICS_PORT": str(metrics_port)},
            tmp_path,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            ready = wait_until(
                lambda: httpx.get(url + "/health/ready", timeout=1).status_code == 200
            )
            assert ready, proc.describe()
            r = httpx.post(
                url + "/v1/chat/completions",
                json={"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"]
            metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            assert 'http_requests_total{method="POST",route="/v1/chat/completions"' in metrics
            assert "gateway_process_resident_memory_bytes" in metrics
            status = Path(f"/proc/{proc.pid}/status").read_text()
            uid_line = next(ln for ln in status.splitlines() if ln.startswith("Uid:"))
            assert uid_line.split()[1:] == [str(UID)] * 4
            # the installed (pure-Python) wheel, not the source tree's compiled kernels
            health = httpx.get(url + "/health", timeout=5).json()
            assert health["speedups"]["sse"] == health["speedups"]["tokens"] == "py"
        finally:
            proc.stop()
        assert proc.popen.returncode is not None
        written = {p.name for p in writable.iterdir()}
        assert written <= {"ok", "metrics"}, written
    finally:
        shutil.rmtree(writable, ignore_errors=True)
