"""The RLA shape study: shared storage across worker processes, exact trial budget, resume, best shape out."""
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

from rla_pipeline import tracking
from rla_pipeline.stages.rla import tuned_latent_shape
from rla_pipeline.tuning import study as S
from rla_pipeline.tuning.config import parse_shape
from rla_pipeline.tuning.results import tradeoff_figure, trials_table, tuned_shape
from rla_pipeline.tuning.storage import STORAGE_ENV, sqlite_url

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import tiny  # noqa: E402


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env.pop(STORAGE_ENV, None)
    return env


def _worker(storage, study, n, env, steps=30, log=None):
    return subprocess.Popen([sys.executable, str(HERE / "tiny.py"), storage, study, str(n), str(steps)],
                            env=env, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _name(study: str, n: int, steps: int) -> str:
    """The study's keyed name in the storage (``study_name`` + digest of the tiny data and the search space)."""
    return S.study_storage_name(tiny.tune_config(study, n, max_steps=steps), tiny.tiny_trial_data())


def _counted(study):
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


def test_two_worker_processes_finish_exactly_n_trials_with_mlflow_runs(tmp_path):
    import mlflow

    storage = sqlite_url(tmp_path / "optuna.db")
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(mlflow_uri)  # create the MLflow schema once, not racing in two workers
    # artifacts under tmp_path: the default artifact root is ./mlruns of whatever the cwd is
    mlflow.create_experiment("rla-pipeline", artifact_location=(tmp_path / "artifacts").as_uri())
    n = 5
    env = _env(MLFLOW_TRACKING_URI=mlflow_uri)
    logs = [open(tmp_path / f"w{i}.log", "w") for i in range(2)]
    procs = [_worker(storage, "shared", n, env, log=logs[i]) for i in range(2)]
    for p in procs:
        assert p.wait(timeout=240) == 0, (tmp_path / "w0.log").read_text()[-3000:] + (tmp_path / "w1.log").read_text()[-3000:]

    study = optuna.load_study(study_name=_name("shared", n, 30), storage=storage)
    counted = _counted(study)
    assert len(counted) == n
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    # every non-counted trial is a step-back of a worker that found the budget claimed, never a lost training
    for t in study.get_trials(states=(TrialState.FAIL,)):
        assert t.user_attrs.get("over_budget") is True
    for t in counted:
        assert set(t.params) == {"shape", "lr"} and t.params["shape"] in ("1x2", "4x8", "8x8")
        assert t.intermediate_values  # reported at every validation (what the pruner sees)
    best = study.best_trial
    curve = [v for _, v in sorted(best.intermediate_values.items())]
    assert curve[-1] < curve[0]  # the trials really train

    # MLflow: one parent run per study, one nested run per trial with its params and result
    parent = study.user_attrs[S.PARENT_RUN_ATTR]
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(runs) == n
    by_trial = {int(r["tags.optuna.trial"]): r for _, r in runs.iterrows()}
    assert sorted(by_trial) == sorted(t.number for t in counted)
    for t in counted:
        r = by_trial[t.number]
        assert r["params.shape"] == t.params["shape"]
        assert float(r["params.lr"]) == pytest.approx(t.params["lr"])
        assert r["run_id"] == t.user_attrs["mlflow_run_id"]
        # host + pid of the worker that ran it: a worker killed mid-trial leaves a run the next kedro run can close
        assert str(r[f"tags.{tracking.PID_TAG}"]).isdigit() and r[f"tags.{tracking.HOST_TAG}"]
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert by_trial[t.number]["metrics.final_val_l1"] == pytest.approx(t.value)


def test_killed_worker_resumes_keeping_finished_trials_and_best_shape_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("RLA_TUNE_MLFLOW", "0")
    storage = sqlite_url(tmp_path / "optuna.db")
    n = 4
    log = open(tmp_path / "w.log", "w")
    proc = _worker(storage, "resume", n, _env(RLA_TUNE_MLFLOW="0"), steps=200, log=log)
    study = None
    deadline = time.time() + 180
    try:
        while time.time() < deadline:
            time.sleep(0.5)
            assert proc.poll() is None, (tmp_path / "w.log").read_text()[-3000:]
            try:
                study = optuna.load_study(study_name=_name("resume", n, 200), storage=storage)
            except KeyError:
                continue
            if len(_counted(study)) >= 1 and study.get_trials(states=(TrialState.RUNNING,)):
                break
        else:
            pytest.fail("the worker finished no trial in time")
    finally:
        proc.send_signal(signal.SIGKILL)  # an interrupt that leaves a RUNNING trial behind
        proc.wait(timeout=30)
    before = {t.number: (t.state, t.value, t.params) for t in _counted(study)}
    running = [t.number for t in optuna.load_study(study_name=_name("resume", n, 200), storage=storage).get_trials(
        states=(TrialState.RUNNING,))]
    assert before and running

    cfg = tiny.tune_config("resume", n, max_steps=200)  # the same search space: the same study
    resumed = S.run_worker(storage, cfg, tiny.tiny_trial_data())

    assert len(_counted(resumed)) == n
    after = {t.number: t for t in resumed.trials}
    for number, (state, value, params) in before.items():  # finished trials kept as they were
        assert after[number].state == state and after[number].value == value and after[number].params == params
    for number in running:  # the dead worker's trial is failed by the heartbeat and re-queued with its params
        assert after[number].state == TrialState.FAIL
        retries = [t for t in resumed.trials if t.system_attrs.get("failed_trial") == number]
        assert len(retries) == 1 and retries[0].params == after[number].params

    # a second resume has nothing left to do
    again = S.run_worker(storage, cfg, tiny.tiny_trial_data())
    assert len(again.trials) == len(resumed.trials)

    # the best shape is written where `rla` reads it, and read back
    from rla_pipeline.datasets.files import PNGDataset
    from rla_pipeline.datasets.optuna_storage import OptionalYAMLDataset

    shape_ds = OptionalYAMLDataset(str(tmp_path / "rla_tuned_shape.yml"))
    assert shape_ds.load() is None  # tuning not run yet: an optional input
    best = tuned_shape(again, cfg, storage)
    shape_ds.save(best)
    back = shape_ds.load()
    k, d = parse_shape(again.best_trial.params["shape"])
    assert (back["latent_tokens"], back["latent_dim"]) == (k, d)
    assert back["best_value"] == pytest.approx(again.best_value)
    assert back["n_complete"] + back["n_pruned"] == n and len(back["trials"]) == n
    assert tuned_latent_shape(back, use_tuned_shape=True) == (k, d)  # what the rla stage trains
    assert tuned_latent_shape(back, use_tuned_shape=False) is None  # the configured shape
    with pytest.raises(ValueError, match="tune"):
        tuned_latent_shape(None, use_tuned_shape=True)
    png = PNGDataset(str(tmp_path / "tradeoff.png"))
    png.save(tradeoff_figure(back["trials"], back["metric"], back["best_trial"]))
    assert png.load()[:8] == b"\x89PNG\r\n\x1a\n"
    table = trials_table(again)
    assert set(table["state"]) <= {"COMPLETE", "PRUNED", "FAIL"} and (table["latent_size"].dropna() > 0).all()


def test_same_name_with_other_data_or_space_gets_its_own_study(tmp_path, monkeypatch, caplog):
    """The study is keyed by name + data + search space: trials of other data are never mixed in or reused."""
    import dataclasses
    import logging

    monkeypatch.setenv("RLA_TUNE_MLFLOW", "0")
    storage = sqlite_url(tmp_path / "optuna.db")
    cfg = tiny.tune_config("keyed", 2, max_steps=10)
    first = S.run_worker(storage, cfg, tiny.tiny_trial_data(seed=0))
    assert len(_counted(first)) == 2
    with caplog.at_level(logging.WARNING, logger="rla_pipeline.tuning.study"):
        other_data = S.run_worker(storage, cfg, tiny.tiny_trial_data(seed=5))
    assert other_data.study_name != first.study_name and len(_counted(other_data)) == 2  # trained, not reused
    assert f"study {first.study_name!r} in this storage has other data" in caplog.text
    other_space = S.run_worker(storage, dataclasses.replace(cfg, shapes=["4x8", "8x8"]), tiny.tiny_trial_data(seed=0))
    assert other_space.study_name not in (first.study_name, other_data.study_name)
    # the same data and space: the first study again, its finished trials reused as they are
    again = S.run_worker(storage, cfg, tiny.tiny_trial_data(seed=0))
    assert again.study_name == first.study_name and len(again.trials) == len(first.trials)
    names = optuna.get_all_study_names(storage)
    assert len(names) == 3 and all(n.startswith("keyed-") for n in names)
    for name in names:  # each study holds only its own trials
        assert len(_counted(optuna.load_study(study_name=name, storage=storage))) == 2
    # a study whose recorded key is another (e.g. written by an older version under this name) is refused
    optuna.load_study(study_name=first.study_name, storage=storage).set_user_attr(S.KEY_ATTR, {"data": "x",
                                                                                             "space": "y"})
    with pytest.raises(RuntimeError, match="other data and space"):
        S.run_worker(storage, cfg, tiny.tiny_trial_data(seed=0))


@pytest.mark.parametrize("module", ["rla_pipeline.pipelines.tune.worker"])
def test_worker_cli_keeps_its_flags(module):
    """The extra-worker command parses the documented flags."""
    res = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300,
                         env=_env())
    assert res.returncode == 0, res.stderr[-2000:]
    for flag in ("--storage", "--study", "--n-trials", "--env", "--project"):
        assert flag in res.stdout
