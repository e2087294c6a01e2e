"""kedro-viz lineage: the screenshot script serves the wmrl pipeline, checks the chain and writes a real PNG."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
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


def test_missing_chain_finds_breaks_in_a_graph():
    mod = _script_module()
    nodes = [{"id": i, "name": n} for i, n in enumerate(
        ["episodes", "ingest", "feature_cache", "train", "bc_success_table", "wmrl_success_table"])]
    edges = [{"source": a, "target": b} for a, b in [(0, 1), (1, 2), (2, 3), (3, 4), (3, 5)]]
    assert mod.missing_chain({"nodes": nodes, "edges": edges}) == []
    assert mod.missing_chain({"nodes": nodes, "edges": edges[:-1]}) == ["no path 'episodes' -> 'wmrl_success_table'"]
    assert mod.missing_chain({"nodes": nodes[:-1], "edges": edges}) == ["'wmrl_success_table' is not in the graph"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (scripts/setup_chromium.sh)")
def test_viz_screenshot_of_wmrl_shows_the_whole_chain(tmp_path):
    out = tmp_path / "lineage_wmrl.png"
    graph_json = tmp_path / "graph.json"
    env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="true", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--pipeline", "wmrl", "--out", str(out), "--window",
                           "1400,900", "--json", str(graph_json)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from PIL import Image

    img = Image.open(out)
    assert img.format == "PNG" and img.size == (1400, 900)
    px = np.asarray(img.convert("RGB")).astype(np.float32)
    assert px.std() > 5  # not blank
    assert len(np.unique(px.reshape(-1, 3)[::7], axis=0)) > 50  # a drawn graph, not a flat page
    graph = json.loads(graph_json.read_text())
    names = {n["name"] for n in graph["nodes"]}
    assert {"episodes", "feature_cache", "bc_success_table", "wmrl_success_table"} <= names
    mod = _script_module()
    assert mod.missing_chain(graph) == []
    # the server is gone: nothing listens any more on the port the script used
    if os.environ.get("RLA_KEEP_SCREENSHOTS"):
        shutil.copy(out, os.environ["RLA_KEEP_SCREENSHOTS"])
