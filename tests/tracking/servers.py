"""Real servers for tests, started and stopped by the tests themselves, bound to 127.0.0.1 only.

``mlflow_server(tmp)``: ``mlflow server`` with its own sqlite backend store and artifact root under ``tmp``.
``postgres_server(tmp)``: a PostgreSQL server from the ``pgserver`` wheel (installed by ``make setup`` via
requirements.lock.txt), listening on a Unix socket in ``tmp`` only (no TCP port at all).
Both are context managers that leave nothing running, even when the test fails.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM the process group (mlflow server forks uvicorn workers), then SIGKILL what is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@contextlib.contextmanager
def mlflow_server(tmp: Path, startup_timeout: float = 120.0) -> Iterator[str]:
    """Run ``mlflow server`` on 127.0.0.1:<free port>; yields its tracking URI ``http://127.0.0.1:<port>``."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(tmp / "mlflow-server.log", "wb")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}", "--artifacts-destination", str(tmp / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({proc.returncode}):\n{(tmp / 'mlflow-server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server not up after {startup_timeout}s")
            time.sleep(0.5)
        yield uri
    finally:
        _stop_group(proc)
        log.close()


@contextlib.contextmanager
def postgres_server(tmp: Path) -> Iterator[str]:
    """A real PostgreSQL server (pgserver) with its data dir in ``tmp``; yields a SQLAlchemy URL for psycopg2."""
    import pgserver

    tmp.mkdir(parents=True, exist_ok=True)
    srv = pgserver.get_server(str(tmp / "pgdata"), cleanup_mode="stop")
    try:
        # get_uri(): postgresql://postgres:@/postgres?host=<socket dir>  (Unix socket only, no TCP listener)
        yield srv.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        srv.cleanup()


def kedro(args: list[str], root: Path, env: dict, timeout: float = 900) -> str:
    """Run the ``kedro`` CLI of this venv; fail with its output when it fails."""
    res = subprocess.run([str(BIN / "kedro"), *args], cwd=root, env=env, capture_output=True, text=True,
                         timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"kedro {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}")
    return res.stdout + res.stderr


def kedro_env(data_root: Path, **extra: str) -> dict:
    env = {**os.environ, "RLA_DATA_ROOT": str(data_root), "KEDRO_DISABLE_TELEMETRY": "true",
           "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1", **extra}
    env.pop("RLA_OPTUNA_STORAGE", None)
    return env


def prepared_data_root(tmp_path_factory, project_root: Path) -> Path:
    """A data root holding the test env's episodes, DINO cache (``kedro run --env=test
    --pipelines=ingestion,features``, real ManiSkill) and episode split, made once per pytest session and shared by
    the server tests.
    """
    reuse = os.environ.get("RLA_SERVER_TESTS_DATA")  # a data root made by the same command, to iterate faster
    if reuse:
        return Path(reuse)
    base = tmp_path_factory.getbasetemp() / "server-tests-data"
    done = base / ".done"
    if not done.exists():
        base.mkdir(parents=True, exist_ok=True)
        # its own throw-away store: the servers under test see only their tests' runs
        env = kedro_env(base / "data", MLFLOW_TRACKING_URI=f"sqlite:///{base / 'prep-mlflow.db'}")
        kedro(["run", "--env=test", "--pipelines=ingestion,features"], project_root, env)
        # the tuning workers read the RLA stage's episode split (the tests must not depend on which runs first)
        kedro(["run", "--env=test", "--pipelines=rla", "--nodes=split_episodes"], project_root, env)
        done.touch()
    return base / "data"
