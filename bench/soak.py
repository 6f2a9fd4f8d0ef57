"""Soak mode of bench/e2e.py (``--soak``): does a gateway worker's memory stay flat?

    .venv/bin/python bench/e2e.py --soak [--soak-requests 200000] [--soak-warmup 20000]
                                  [--soak-samples 10] [--soak-concurrency 16] [--json out.json]

The canned nginx of the e2e benchmark (pinned to the load CPU), and the gateway with
its default profile, one worker pinned to the server CPU: no Redis, no keys, no
limits, no cache. It gets a config file only because nginx routes on the path and not
on the body: one alias per upstream behaviour (``profiles.soak_config``). The gateway
is warmed up with ``--soak-warmup`` mixed requests; the worker's RSS is read; then
``--soak-requests`` mixed requests follow in ``--soak-samples`` rounds, with the RSS
read after each round, and the growth from the first reading to the last is reported
(target: under 5 %). The mix (``MIX``, by share of requests):

- non-streaming chat, streaming chat (``stream: true`` with usage), both complete;
- upstream errors: a 500 and a 429 with OpenAI error bodies (the error aliases retry
  once, after a few ms, then the client gets the error);
- client aborts: an asyncio raw-socket client sends a streaming request to a paced
  upstream (2 KB at once, then 2 KB/s), reads the response head and a few bytes of the stream and
  closes (half of them), or closes right after sending, before any answer (the
  other half): the gateway must notice, cancel its upstream call and let go.

wrk (``bench/wrk/mix.lua``, pinned to the load CPU, ``--soak-concurrency``
connections) sends everything but the aborts, cycling through the bodies, and counts
the statuses; wrk runs by time, so each round runs it for as long as the measured
rate says the round's share needs, and the real counts are reported. The abort client
runs in this process, on the load CPU, at the same time as wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import e2e
import profiles

# kind -> (alias, stream, share of all requests)
MIX: dict[str, tuple[str, bool, float]] = {
    "json": ("soak-json", False, 0.55),
    "stream": ("soak-stream", True, 0.30),
    "error 500": ("soak-err500", False, 0.05),
    "error 429": ("soak-err429", False, 0.05),
    "abort": ("soak-slow", True, 0.05),
}
LUA_MIX = e2e.BENCH / "wrk" / "mix.lua"
# what the client gets: the upstream's 500 becomes the gateway's 502 (after one retry)
EXPECTED_STATUS = {200: ("json", "stream"), 502: ("error 500",), 429: ("error 429",)}
ABORT_CONCURRENCY = 4
TARGET_GROWTH_PCT = 5.0


@dataclass
class Sample:
    label: str
    requests: int  # mixed requests done when the sample was taken (warm-up excluded)
    elapsed_s: float
    worker_rss_mib: float
    tree_rss_mib: float
    worker_fds: int
    worker_pids: list[int]


@dataclass
class Tally:
    wrk_requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)
    aborts: dict[str, int] = field(default_factory=dict)  # kind -> count, "failed: ..." too
    wrk_seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.wrk_requests + sum(
            n for k, n in self.aborts.items() if not k.startswith("failed")
        )

    def add_wrk(self, out: str, seconds: float) -> int:
        cell = e2e.parse_wrk(out, 0)
        self.wrk_requests += cell.requests
        self.wrk_seconds += seconds
        for code, n in re.findall(r"^status (\d+) (\d+)$", out, re.M):
            self.statuses[int(code)] = self.statuses.get(int(code), 0) + int(n)
        for k, v in cell.socket_errors.items():
            self.socket_errors[k] = self.socket_errors.get(k, 0) + v
        if cell.error:
            self.aborts["failed: wrk"] = self.aborts.get("failed: wrk", 0) + 1
        return cell.requests


# --------------------------------------------------------------------------- load


def write_bodies(tmp: Path) -> tuple[Path, dict[str, bytes]]:
    """One body file per kind; the wrk mix list names them in proportion to MIX."""
    bodies: dict[str, bytes] = {}
    for kind, (alias, stream, _share) in MIX.items():
        req: dict[str, object] = {
            "model": alias,
            "messages": [
                {"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": f"Soak request ({kind}): say hello in one sentence."},
            ],
            "max_tokens": 64,
        }
        if stream:
            req["stream"] = True
            req["stream_options"] = {"include_usage": True}
        bodies[kind] = json.dumps(req, separators=(",", ":")).encode()
    wrk_kinds = {k: v[2] for k, v in MIX.items() if k != "abort"}
    unit = min(wrk_kinds.values())
    lines = []
    for kind, share in wrk_kinds.items():
        path = tmp / f"soak-{kind.replace(' ', '')}.json"
        path.write_bytes(bodies[kind])
        lines += [str(path)] * round(share / unit)
    mix = tmp / "soak-mix.txt"
    mix.write_text("\n".join(lines) + "\n")
    return mix, bodies


async def abort_one(port: int, req: bytes, mid_stream: bool) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(req)
        await writer.drain()
        if not mid_stream:
            return "before the answer"
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15.0)
        if not head.startswith(b"HTTP/1.1 200"):
            return "failed: " + head.split(b"\r\n", 1)[0].decode("latin-1")
        await asyncio.wait_for(reader.read(64), 15.0)  # a few bytes of the stream
        return "mid-stream"
    finally:
        writer.close()


async def aborts(port: int, req: bytes, n: int, start: int) -> dict[str, int]:
    """``n`` aborted streaming requests, ``ABORT_CONCURRENCY`` at a time."""
    counts: dict[str, int] = {}
    todo = iter(range(start, start + n))

    async def worker() -> None:
        for i in todo:
            try:
                kind = await abort_one(port, req, mid_stream=i % 2 == 0)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                kind = f"failed: {type(exc).__name__}"
            counts[kind] = counts.get(kind, 0) + 1

    await asyncio.gather(*(worker() for _ in range(ABORT_CONCURRENCY)))
    return counts


def run_round(
    cpus: e2e.Cpus,
    port: int,
    mix: Path,
    abort_req: bytes,
    until: int,
    concurrency: int,
    tally: Tally,
    rate: list[float],
) -> None:
    """Mixed requests until ``tally`` holds about ``until``: wrk's share in one or more
    timed runs, the aborts alongside the first. ``rate`` holds wrk's last requests/s.
    wrk runs whole seconds: a round stops within half a second's worth of its target,
    and the next one makes up for it."""
    wrk = e2e.find_tool("wrk")
    assert wrk is not None
    aborted = sum(n for k, n in tally.aborts.items() if not k.startswith("failed"))
    n_abort = max(0, round(until * MIX["abort"][2]) - aborted)
    want = until - aborted - n_abort
    first = True
    while want - tally.wrk_requests > max(rate[0] / 2, 1):
        left = want - tally.wrk_requests
        # at most 5 s a run, so a rate measured while the aborts ran beside wrk (slower)
        # does not carry a long run far past its target
        seconds = min(5, max(1, round(left / rate[0]))) if rate[0] > 0 else 2
        argv = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s"]
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        argv = cpus.pin([*argv, "-s", str(LUA_MIX), url], "load")
        env = {**os.environ, "BENCH_MIX": str(mix), "BENCH_KEY": e2e.API_KEY}
        proc = e2e.PROCS.start(argv, env=env, capture=True)
        if first and n_abort:
            for kind, count in asyncio.run(aborts(port, abort_req, n_abort, tally.total)).items():
                tally.aborts[kind] = tally.aborts.get(kind, 0) + count
        first = False
        try:
            out, _ = proc.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            e2e.PROCS.stop(proc)
            raise RuntimeError("wrk did not finish in time") from None
        e2e.PROCS.live.remove(proc)
        got = tally.add_wrk(out.decode(errors="replace"), seconds)
        if got == 0:
            raise RuntimeError("wrk completed no request: " + " ".join(out.decode().split())[-300:])
        rate[0] = got / seconds


# --------------------------------------------------------------------------- sampling


def sample(label: str, root: int, requests: int, t0: float) -> Sample:
    tree = profiles.process_tree(root)
    workers = [pid for pid in tree if pid != root]
    fds = 0
    for pid in workers:
        with contextlib.suppress(OSError):
            fds += len(os.listdir(f"/proc/{pid}/fd"))
    return Sample(
        label,
        requests,
        time.monotonic() - t0,
        sum(profiles.rss_kib(pid) for pid in workers) / 1024,
        sum(profiles.rss_kib(pid) for pid in tree) / 1024,
        fds,
        workers,
    )


def growth_pct(samples: list[Sample]) -> float | None:
    if len(samples) < 2 or samples[0].worker_rss_mib <= 0:
        return None
    return (samples[-1].worker_rss_mib / samples[0].worker_rss_mib - 1) * 100


# --------------------------------------------------------------------------- report


def report(
    args: argparse.Namespace,
    info: dict[str, str],
    cpus: e2e.Cpus,
    samples: list[Sample],
    warmup: Tally,
    tally: Tally,
    cpu_s: float | None,
    problems: list[str],
    elapsed: float,
) -> str:
    mix = ", ".join(f"{kind} {share * 100:.0f} %" for kind, (_a, _s, share) in MIX.items())
    out = [
        f"## Soak, {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Command: `{args.command_line}`",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        f"Set-up: `llm-gateway serve --workers 1`, default profile (no Redis, keys, limits or "
        f"cache; a config file with one alias per upstream behaviour), pinned to CPU "
        f"{cpus.server}; nginx, wrk (`bench/wrk/mix.lua`, -t1 -c{args.soak_concurrency}) and "
        f"the abort client ({ABORT_CONCURRENCY} at a time) on CPU {cpus.load}. Mix: {mix}. "
        f"Warm-up {warmup.total:,} mixed requests, then {tally.total:,} in "
        f"{args.soak_samples} rounds; RSS = VmRSS of the Granian worker (tree = with the "
        f"supervisor). Run took {elapsed / 60:.1f} min.",
        "",
        "| after | requests | elapsed s | worker RSS MiB | vs first | tree RSS MiB | worker fds |",
        "|---|---|---|---|---|---|---|",
    ]
    base = samples[0].worker_rss_mib if samples else 0.0
    for s in samples:
        delta = f"{(s.worker_rss_mib / base - 1) * 100:+.1f} %" if base else "-"
        out.append(
            f"| {s.label} | {s.requests:,} | {s.elapsed_s:.0f} | {s.worker_rss_mib:.1f} | "
            f"{delta} | {s.tree_rss_mib:.1f} | {s.worker_fds} |"
        )
    growth = growth_pct(samples)
    if growth is not None:
        verdict = "met" if growth < TARGET_GROWTH_PCT else "**missed**"
        out += [
            "",
            f"**RSS growth: {base:.1f} → {samples[-1].worker_rss_mib:.1f} MiB, {growth:+.1f} %** "
            f"over {tally.total:,} requests (target < {TARGET_GROWTH_PCT:.0f} %: {verdict}).",
        ]
    statuses = ", ".join(f"{code}: {n:,}" for code, n in sorted(tally.statuses.items()))
    expected = {
        k: round(tally.wrk_requests * share / (1 - MIX["abort"][2]))
        for k, (_a, _s, share) in MIX.items()
        if k != "abort"
    }
    out += [
        "",
        f"wrk requests: {tally.wrk_requests:,} in {tally.wrk_seconds:.0f} s "
        f"({tally.wrk_requests / tally.wrk_seconds if tally.wrk_seconds else 0:,.0f}/s); "
        f"statuses {statuses or 'not counted'} (the mix sends about "
        + ", ".join(f"{n:,} {k}" for k, n in expected.items())
        + ").",
        "Aborts: "
        + (", ".join(f"{k} {n:,}" for k, n in sorted(tally.aborts.items())) or "none")
        + ".",
    ]
    if cpu_s is not None and tally.total:
        out.append(
            f"CPU of the gateway (supervisor and worker) over the measured part: "
            f"{cpu_s * 1e6 / tally.total:,.0f} µs per request (the mix's errors and aborts "
            f"included)."
        )
    if problems:
        out += ["", "### Problems", "", *[f"- {p}" for p in problems]]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def check_statuses(tally: Tally) -> list[str]:
    problems = []
    if errs := {k: v for k, v in tally.socket_errors.items() if v}:
        problems.append("wrk socket errors: " + ", ".join(f"{k} {v}" for k, v in errs.items()))
    odd = {c: n for c, n in tally.statuses.items() if c not in EXPECTED_STATUS}
    if odd:
        problems.append("unexpected statuses: " + ", ".join(f"{c}: {n}" for c, n in odd.items()))
    wrk_share = 1 - MIX["abort"][2]
    for code, kinds in EXPECTED_STATUS.items():
        want = tally.wrk_requests * sum(MIX[k][2] for k in kinds) / wrk_share
        got = tally.statuses.get(code, 0)
        if tally.statuses and abs(got - want) > 0.01 * tally.wrk_requests + 20:
            problems.append(
                f"{got:,} of {tally.wrk_requests:,} wrk requests got a {code}, "
                f"the mix ({' + '.join(kinds)}) expects about {want:,.0f}"
            )
    if failed := {k: v for k, v in tally.aborts.items() if k.startswith("failed")}:
        problems.append("abort client: " + ", ".join(f"{k} {v}" for k, v in failed.items()))
    return problems


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    e2e.ensure_system_tools()
    cpus = e2e.choose_cpus(args)
    samples: list[Sample] = []
    warm, tally = Tally(), Tally()
    problems: list[str] = []
    cpu_s: float | None = None
    info: dict[str, str] = {}
    interrupted = False
    with e2e.signals_as_exit(), tempfile.TemporaryDirectory(prefix="llm-gateway-soak-") as tmp_:
        tmp = Path(tmp_)
        try:
            (tmp / "nginx").mkdir()
            upstream = e2e.Upstream(tmp / "nginx", cpus)
            info["nginx"] = upstream.version.replace("nginx version: nginx/", "")
            if cpus.load is not None:  # the abort client runs in this process
                os.sched_setaffinity(0, {cpus.load})
            cfg = tmp / "soak.yaml"
            cfg.write_text(profiles.soak_config(f"http://127.0.0.1:{upstream.port}"))
            port = e2e.free_port()
            argv, env = e2e.gateway_launch(port, 1, GATEWAY_CONFIG=str(cfg))
            log = tmp / "gateway.log"
            proc = e2e.PROCS.start(cpus.pin(argv, "server"), env=env, cwd=tmp, log=log)
            if not e2e.wait_ready(port, proc, 60.0):
                raise RuntimeError(f"the gateway did not start: {e2e.tail(log)}")
            mix, bodies = write_bodies(tmp)
            path = "/v1/chat/completions"
            for kind in ("json", "stream"):
                req = e2e.request_bytes(port, path, bodies[kind], e2e.API_KEY)
                if problem := e2e.smoke_check(port, req, kind):
                    raise RuntimeError(f"smoke check ({kind}): {problem}")
            abort_req = e2e.request_bytes(port, path, bodies["abort"], e2e.API_KEY)
            rate = [0.0]
            print(f"soak: gateway on :{port}, warming up ({args.soak_warmup:,})", file=sys.stderr)
            t0 = time.monotonic()
            c = args.soak_concurrency
            if args.soak_warmup:
                run_round(cpus, port, mix, abort_req, args.soak_warmup, c, warm, rate)
            time.sleep(1.0)  # aborted streams and background settles finish
            samples.append(sample("warm-up", proc.pid, 0, t0))
            print(f"soak: baseline worker RSS {samples[0].worker_rss_mib:.1f} MiB", file=sys.stderr)
            cpu0 = profiles.cpu_seconds(profiles.process_tree(proc.pid))
            for i in range(args.soak_samples):
                until = round(args.soak_requests * (i + 1) / args.soak_samples)
                run_round(cpus, port, mix, abort_req, until, c, tally, rate)
                time.sleep(1.0)
                s = sample(f"round {i + 1}", proc.pid, tally.total, t0)
                samples.append(s)
                print(
                    f"soak: {tally.total:,} requests, worker RSS {s.worker_rss_mib:.1f} MiB, "
                    f"{s.worker_fds} fds, {rate[0]:,.0f} wrk req/s",
                    file=sys.stderr,
                )
                if s.worker_pids != samples[0].worker_pids:
                    problems.append(
                        f"the worker changed ({samples[0].worker_pids} -> {s.worker_pids}): it died"
                    )
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"the gateway exited: {e2e.tail(log)}")
            cpu_s = profiles.cpu_seconds(profiles.process_tree(proc.pid)) - cpu0
        except KeyboardInterrupt:
            interrupted = True
            print("\nsoak: interrupted; stopping everything", file=sys.stderr)
        except RuntimeError as exc:
            problems.append(str(exc))
        finally:
            e2e.PROCS.stop_all()
        info = {**e2e.machine_info(None), **info}
    problems = check_statuses(tally) + problems
    text = report(
        args, info, cpus, samples, warm, tally, cpu_s, problems, time.monotonic() - started
    )
    print(text)
    if args.json:
        payload = {
            "command": args.command_line,
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": info,
            "cpus": asdict(cpus),
            "mix": {k: {"alias": a, "stream": s, "share": sh} for k, (a, s, sh) in MIX.items()},
            "interrupted": interrupted,
            "samples": [asdict(s) for s in samples],
            "rss_growth_pct": growth_pct(samples),
            "warmup": asdict(warm),
            "measured": asdict(tally),
            "cpu_s": cpu_s,
            "problems": problems,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if interrupted:
        return 130
    return 1 if problems else 0
