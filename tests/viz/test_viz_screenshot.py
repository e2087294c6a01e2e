"""kedro-viz lineage: the screenshot script serves the wmrl pipeline, checks the chain and writes a real PNG."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "viz_screenshot.py"


def _script_module():
    spec = importlib.util.spec_from_file_location("viz_screenshot", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _group_gone(pgid: int, within_s: float) -> bool:
    """True once no process is left in process group ``pgid`` (children may take a moment to exit)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def test_missing_chain_finds_breaks_in_a_graph():
    mod = _script_module()
    nodes = [{"id": i, "name": n} for i, n in enumerate(
        ["episodes", "ingest", "feature_cache", "train", "bc_success_table", "wmrl_success_table"])]
    edges = [{"source": a, "target": b} for a, b in [(0, 1), (1, 2), (2, 3), (3, 4), (3, 5)]]
    assert mod.missing_chain({"nodes": nodes, "edges": edges}) == []
    assert mod.missing_chain({"nodes": nodes, "edges": edges[:-1]}) == ["no path 'episodes' -> 'wmrl_success_table'"]
    assert mod.missing_chain({"nodes": nodes[:-1], "edges": edges}) == ["'wmrl_success_table' is not in the graph"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (scripts/setup_chromium.sh)")
def test_viz_screenshot_of_wmrl_shows_the_whole_chain_and_stops_its_server(tmp_path, monkeypatch):
    out = tmp_path / "lineage_wmrl.png"
    graph_json = tmp_path / "graph.json"
    for name, value in {"KEDRO_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(name, value)
    mod = _script_module()
    # Run the script in this process, recording the port it picks and the kedro viz process it starts,
    # so that the test can check afterwards that the server is really gone.
    ports, servers = [], []
    pick_port, popen = mod.free_port, subprocess.Popen

    def recording_free_port(*args, **kwargs):
        ports.append(pick_port(*args, **kwargs))
        return ports[-1]

    def recording_popen(cmd, *args, **kwargs):
        proc = popen(cmd, *args, **kwargs)
        if "viz" in [str(c) for c in cmd]:
            servers.append(proc)
        return proc

    monkeypatch.setattr(mod, "free_port", recording_free_port)
    monkeypatch.setattr(mod.subprocess, "Popen", recording_popen)
    status = mod.main(["--pipeline", "wmrl", "--out", str(out), "--window", "1400,900", "--json", str(graph_json)])
    monkeypatch.undo()
    assert status == 0
    from PIL import Image

    img = Image.open(out)
    assert img.format == "PNG" and img.size == (1400, 900)
    px = np.asarray(img.convert("RGB")).astype(np.float32)
    assert px.std() > 5  # not blank
    assert len(np.unique(px.reshape(-1, 3)[::7], axis=0)) > 50  # a drawn graph, not a flat page
    graph = json.loads(graph_json.read_text())
    names = {n["name"] for n in graph["nodes"]}
    assert {"episodes", "feature_cache", "bc_success_table", "wmrl_success_table"} <= names
    assert mod.missing_chain(graph) == []
    # The server is gone: its process group has exited and nothing listens any more on the port it used.
    assert len(ports) == 1 and len(servers) == 1
    assert servers[0].poll() is not None
    assert not mod.port_open(ports[0])
    assert _group_gone(servers[0].pid, within_s=10), f"processes of kedro viz's group {servers[0].pid} still run"
    if os.environ.get("RLA_KEEP_SCREENSHOTS"):
        shutil.copy(out, os.environ["RLA_KEEP_SCREENSHOTS"])
