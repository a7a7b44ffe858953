"""Simulator capacity: concurrent connections and events/s delivered, from one process.

The simulator runs as its own process (``python -m pipeline simulate``); the clients run in a
second process (plain ``websockets``, one asyncio loop), so both share this machine's cores the way
a demo does. Each scenario opens every connection first, then counts the frames the clients
received during the measuring window, and reads the simulator's own ``events_sent`` counter and
CPU time over the same window.

Baseline (same run): the *offered* load, i.e. what the streams were asked to generate times the
connections listening to them; the ratio delivered/offered says whether the simulator kept up.
Scenarios: ``fanout`` (10 tenants x 20 connections, each stream at rate R), ``tenants`` (200
tenants, one connection each: generation and delivery both at 200 x R), ``saturate`` (fanout with
the rate raised until the offered load exceeds what one process can send).

    .venv/bin/python bench/bench_simulator.py [--connections 200] [--target 20000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def sent_total(base: str) -> int:
    return sum(c["events_sent"] for c in get_json(f"{base}/_sim/stats")["clients"].values())


# -- client role (a separate process) ---------------------------------------------------------
async def _clients(base: str, ws_url: str, tenants: int, per_tenant: int, seconds: float) -> None:
    import aiohttp
    from websockets.asyncio.client import connect

    async with aiohttp.ClientSession() as http:
        tokens = []
        for t in range(tenants):
            auth = {"Authorization": aiohttp.encode_basic_auth(f"t{t}", "pw")}
            answer = await http.post(f"{base}/oauth/token", headers=auth,
                                     data={"grant_type": "client_credentials"})
            tokens.append((await answer.json())["access_token"])
    counts = [0] * (tenants * per_tenant)
    measuring = asyncio.Event()
    stop = asyncio.Event()
    opened = 0
    all_open = asyncio.Event()

    async def consume(index: int, token: str) -> None:
        nonlocal opened
        async with connect(f"{ws_url}?access_token={token}", ping_interval=10, max_size=None,
                           open_timeout=30) as ws:
            opened += 1
            if opened == len(counts):
                all_open.set()
            while not stop.is_set():
                try:
                    await asyncio.wait_for(ws.recv(), timeout=1)
                except TimeoutError:
                    continue
                if measuring.is_set():
                    counts[index] += 1

    tasks = [asyncio.create_task(consume(i, tokens[i // per_tenant]))
             for i in range(tenants * per_tenant)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_open.wait(), timeout=60)
    print(json.dumps({"opened": opened}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent says "go" (the loop keeps reading)
    measuring.set()
    start = time.monotonic()
    await asyncio.sleep(seconds)
    measuring.clear()
    elapsed = time.monotonic() - start
    print(json.dumps({"received": sum(counts), "elapsed": elapsed,
                      "min_per_conn": min(counts), "max_per_conn": max(counts)}), flush=True)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- driver -----------------------------------------------------------------------------------
def scenario(name: str, tenants: int, per_tenant: int, rate: float,
             seconds: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pipeline", "simulate", "--port", "0", "--rate", str(rate),
           "--max-connections", str(per_tenant + 1), "--duplicate-rate", "0",
           "--correlation-ids", "500", "--retention-events", "200000"]
    for t in range(tenants):
        cmd += ["--client", f"t{t}:pw:genesys"]
    sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    clients = None
    try:
        assert sim.stdout is not None
        base = ""
        while not base:
            line = sim.stdout.readline()
            if not line:
                raise RuntimeError("simulator exited")
            if m := re.search(r"on (http://[\d.]+:\d+)", line):
                base = m.group(1)
        ws_url = base.replace("http", "ws") + "/api/v2/analytics/events"
        clients = subprocess.Popen(
            [sys.executable, __file__, "--role", "clients", "--base", base, "--ws", ws_url,
             "--tenants", str(tenants), "--per-tenant", str(per_tenant), "--seconds", str(seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert clients.stdout is not None and clients.stdin is not None
        opened = json.loads(clients.stdout.readline())["opened"]
        time.sleep(1.0)  # let replay/backlog settle before measuring
        sent0, cpu0, t0 = sent_total(base), cpu_seconds(sim.pid), time.monotonic()
        clients.stdin.write("go\n")
        clients.stdin.flush()
        result = json.loads(clients.stdout.readline())
        sent1, cpu1, t1 = sent_total(base), cpu_seconds(sim.pid), time.monotonic()
        snapshot = get_json(f"{base}/_sim/stats")
        clients.wait(timeout=30)
    finally:
        for proc in (clients, sim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    offered = tenants * per_tenant * rate
    received_rate = result["received"] / result["elapsed"]
    return {
        "scenario": name, "connections_open": opened, "open_at_end": snapshot["open_connections"],
        "offered_eps": offered, "sent_eps": (sent1 - sent0) / (t1 - t0),
        "received_eps": received_rate, "ratio": received_rate / offered,
        "sim_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "min_conn_eps": result["min_per_conn"] / result["elapsed"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="driver")
    parser.add_argument("--base", default="")
    parser.add_argument("--ws", default="")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--per-tenant", type=int, default=20)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--target", type=float, default=20_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    if args.role == "clients":
        asyncio.run(_clients(args.base, args.ws, args.tenants, args.per_tenant, args.seconds))
        return
    print("$ " + " ".join([os.path.relpath(sys.executable), *sys.argv]))
    print(f"machine: {os.cpu_count()} cores; simulator and clients are two processes on it")
    per_conn = args.target / args.connections
    plans = [
        ("fanout", 10, args.connections // 10, per_conn),
        ("tenants", args.connections, 1, per_conn),
        ("saturate", 10, args.connections // 10, per_conn * 3),
    ]
    print(f"{'scenario':10} {'conns':>5} {'offered/s':>10} {'sent/s':>10} {'received/s':>11} "
          f"{'ratio':>6} {'sim CPU':>8} {'slowest conn/s':>15}")
    for name, tenants, per_tenant, rate in plans:
        if args.only and name not in args.only.split(","):
            continue
        r = scenario(name, tenants, per_tenant, rate, args.seconds)
        print(f"{r['scenario']:10} {r['connections_open']:>5} {r['offered_eps']:>10.0f} "
              f"{r['sent_eps']:>10.0f} {r['received_eps']:>11.0f} {r['ratio']:>6.2f} "
              f"{r['sim_cpu_pct']:>7.0f}% {r['min_conn_eps']:>15.1f}", flush=True)


if __name__ == "__main__":
    main()
