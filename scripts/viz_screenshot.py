#!/usr/bin/env python
"""Screenshot the kedro-viz lineage of a pipeline and check the graph holds the whole chain.

Starts ``kedro viz run --no-browser --host 127.0.0.1 --port <free> --pipeline <name>`` (its own process group),
waits for ``/api/main``, checks through the API JSON that the pipeline's graph has a path from the raw episodes
to every success-rate table, takes a headless Chromium screenshot, stops the server (the whole process group,
then checks that the port is free) and writes the PNG atomically (default ``data/08_reporting/lineage_wmrl.png``).

    python scripts/viz_screenshot.py [--pipeline wmrl] [--out PATH] [--window 1600,1000] [--json PATH]

Exit status 0: PNG written and chain complete; 2: the chain is incomplete (PNG still written); 1: other errors.
Needs Debian ``chromium`` (``scripts/setup_chromium.sh``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict, deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "episodes"
TARGETS = ("bc_success_table", "wmrl_success_table")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--disable-dev-shm-usage"]


def free_port(start: int = 41410, stop: int = 49151) -> int:
    """A free port below 49152 (kedro-viz refuses the ephemeral range the OS hands out for port 0)."""
    offset = os.getpid() % 2000  # parallel runs start at different places
    for port in list(range(start + offset, stop)) + list(range(start, start + offset)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}..{stop}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def get_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - localhost only
        return json.loads(r.read().decode("utf-8"))


def wait_for_api(port: int, proc: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kedro viz exited early with status {proc.returncode}")
        try:
            return get_json(f"http://127.0.0.1:{port}/api/main")
        except Exception as err:  # noqa: BLE001 - not up yet
            last = err
            time.sleep(0.5)
    raise TimeoutError(f"kedro viz did not answer /api/main on port {port} within {timeout:.0f}s ({last})")


def graph_names(graph: dict) -> dict[str, str]:
    """node id -> name for a kedro-viz graph JSON (``nodes``: [{id, name, type, ...}])."""
    return {n["id"]: n["name"] for n in graph.get("nodes", [])}


def missing_chain(graph: dict, source: str = SOURCE, targets=TARGETS) -> list[str]:
    """Problems with the chain source -> each target in a kedro-viz graph ([] when complete)."""
    names = graph_names(graph)
    by_name = defaultdict(list)
    for nid, name in names.items():
        by_name[name].append(nid)
    problems = [f"{n!r} is not in the graph" for n in (source, *targets) if n not in by_name]
    if problems:
        return problems
    succ = defaultdict(list)
    for e in graph.get("edges", []):
        succ[e["source"]].append(e["target"])
    seen = set(by_name[source])
    todo = deque(seen)
    while todo:
        for nxt in succ[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return [f"no path {source!r} -> {t!r}" for t in targets if not set(by_name[t]) & seen]


def pipeline_graph(port: int, pipeline: str) -> dict:
    """The graph of one registered pipeline (kedro-viz serves /api/pipelines/<id>)."""
    return get_json(f"http://127.0.0.1:{port}/api/pipelines/{pipeline}")


def chromium_binary() -> str:
    for name in (os.environ.get("CHROMIUM_BIN"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise FileNotFoundError("no chromium: run scripts/setup_chromium.sh")


def screenshot(url: str, out: Path, window: tuple[int, int], budget_ms: int = 15000, timeout: float = 180) -> None:
    with tempfile.TemporaryDirectory(prefix="viz-chromium-") as profile:
        cmd = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               f"--virtual-time-budget={budget_ms}", f"--window-size={window[0]},{window[1]}",
               f"--screenshot={out}", url]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
    if not out.exists() or out.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot for {url}")


def stop_server(proc: subprocess.Popen, port: int) -> None:
    """Stop the kedro viz process group we started (it spawns a child that holds the port)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while port_open(port) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.3)
    if port_open(port):
        raise RuntimeError(f"port {port} is still held after stopping kedro viz (pgid {proc.pid})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", default="wmrl")
    ap.add_argument("--out", default=None, help="PNG path (default data/08_reporting/lineage_<pipeline>.png)")
    ap.add_argument("--window", default="1600,1000", help="W,H in px")
    ap.add_argument("--json", default=None, help="also write the pipeline's graph JSON here")
    ap.add_argument("--env", default=None, help="Kedro env")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for kedro viz")
    args = ap.parse_args(argv)
    out = Path(args.out or ROOT / f"data/08_reporting/lineage_{args.pipeline}.png").resolve()
    window = tuple(int(v) for v in args.window.split(","))
    port = free_port()
    cmd = [sys.executable, "-m", "kedro", "viz", "run", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
           "--pipeline", args.pipeline]
    if args.env:
        cmd += ["--env", args.env]
    env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1")
    log = tempfile.NamedTemporaryFile(prefix="kedro-viz-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_for_api(port, proc, args.timeout)
        except Exception:
            print(Path(log.name).read_text()[-4000:], file=sys.stderr)
            raise
        graph = pipeline_graph(port, args.pipeline)
        problems = missing_chain(graph)
        if args.json:
            Path(args.json).write_text(json.dumps(graph))
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".tmp-shot-") as tmp:
            tmp_png = Path(tmp) / "shot.png"
            screenshot(f"http://127.0.0.1:{port}/?pipeline_id={args.pipeline}", tmp_png, window)
            os.replace(tmp_png, out)
    finally:
        stop_server(proc, port)
        log.close()
        os.unlink(log.name)
    n_nodes = len(graph.get("nodes", []))
    print(f"wrote {out} ({window[0]}x{window[1]}); pipeline {args.pipeline!r}: {n_nodes} graph nodes")
    if problems:
        print("lineage chain INCOMPLETE: " + "; ".join(problems), file=sys.stderr)
        return 2
    print(f"lineage chain complete: {SOURCE} -> {', '.join(TARGETS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
