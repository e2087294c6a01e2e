"""The RLA shape study on a real PostgreSQL server (pgserver, started by the test): the real worker command
`python -m rla_pipeline.pipelines.tune.worker --storage URL ...` in several processes, one of them killed with SIGKILL
mid-trial; the study still ends with exactly N counted trials, none lost or duplicated.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracking"))
from servers import kedro_env, postgres_server, prepared_data_root  # noqa: E402

pytestmark = pytest.mark.slow

STUDY, N = "pg_shape", 4
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def _worker(project_root, storage, env, log):
    return subprocess.Popen(
        [sys.executable, "-m", "rla_pipeline.pipelines.tune.worker", "--storage", storage, "--study", STUDY,
         "--n-trials", str(N), "--env", "test", "--project", str(project_root)],
        cwd=project_root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def _reader(url):
    """One storage for all of the test's reads, without a connection pool: polling with a fresh ``load_study(url)``
    each time opens a pooled engine per call and exhausts the server's ``max_connections`` (CI run, 2026-11-25)."""
    from sqlalchemy.pool import NullPool

    return optuna.storages.RDBStorage(url, engine_kwargs={"poolclass": NullPool}, skip_table_creation=True)


def _load(storage):
    # The workers' study is STUDY + a key of their data and search space (tuning.study.study_storage_name).
    names = [s.study_name for s in storage.get_all_studies() if s.study_name.startswith(STUDY + "-")]
    if not names:
        return None
    assert len(names) == 1, names  # every worker has the same data and space: one study
    return optuna.load_study(study_name=names[0], storage=storage)


def test_two_workers_and_a_killed_one_finish_exactly_n_trials_on_postgres(tmp_path_factory, project_root):
    data = prepared_data_root(tmp_path_factory, project_root)
    tmp = tmp_path_factory.mktemp("pg")
    env = kedro_env(data, MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}", OMP_NUM_THREADS="1")
    procs: list[subprocess.Popen] = []
    logs = [open(tmp / f"worker{i}.log", "w") for i in range(3)]
    with postgres_server(tmp / "server") as storage:
        assert storage.startswith("postgresql+psycopg2://")
        url, storage = storage, None
        try:
            # Worker 0 alone: killed with SIGKILL as soon as it holds a RUNNING trial with its parameters drawn.
            victim = _worker(project_root, url, env, logs[0])
            procs.append(victim)
            deadline = time.monotonic() + 600
            running = []
            while not running:
                assert time.monotonic() < deadline, "worker 0 never started a trial"
                assert victim.poll() is None, (tmp / "worker0.log").read_text()[-4000:]
                if storage is None:
                    try:
                        storage = _reader(url)  # the worker creates the tables
                    except Exception:  # noqa: BLE001 - tables not there yet
                        time.sleep(0.2)
                        continue
                study = _load(storage)
                # a RUNNING trial that has drawn its parameters (killed earlier, it has none to re-queue)
                running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                           if t.params] if study else []
                time.sleep(0.1)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
            killed = running[0].number
            assert _load(storage).trials[killed].state == TrialState.RUNNING  # left behind, as a real crash does

            # Two workers finish the study.
            procs += [_worker(project_root, url, env, logs[i]) for i in (1, 2)]
            for p in procs[1:]:
                assert p.wait(timeout=600) == 0, "\n".join(
                    (tmp / f"worker{i}.log").read_text()[-3000:] for i in (1, 2))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for fh in logs:
                fh.close()

        study = _load(storage)
        trials = study.get_trials(deepcopy=False)
        counted = [t for t in trials if t.state in COUNTED]
        assert len(counted) == N  # exactly N, though three processes worked on it
        assert len({t.number for t in trials}) == len(trials) and len({t._trial_id for t in trials}) == len(trials)
        # the killed worker's trial was failed by the heartbeat check and re-queued once with the same params
        assert study.trials[killed].state == TrialState.FAIL
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
        assert len(retries) == 1 and retries[0].params == study.trials[killed].params
        # no trial is left RUNNING or WAITING; the FAILs are the killed trial and over-budget claims only
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        assert all(t.number == killed or t.user_attrs.get("over_budget") for t in trials if t.state == TrialState.FAIL)
        # every counted trial trained once under its own MLflow run (a duplicate would share or lack one)
        run_ids = [t.user_attrs.get("mlflow_run_id") for t in counted]
        assert None not in run_ids and len(set(run_ids)) == N
