"""The progress helper: rate-limited lines off a terminal (done/total, rate, ETA), a bar on one, silence on request;
and the shared trainer reporting its steps through it."""
from __future__ import annotations

import io
import logging
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from rla_pipeline.utils.progress import Progress, format_duration, format_rate, progress_mode

LOGGER = "rla_pipeline.utils.progress"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _auto_mode(monkeypatch):
    monkeypatch.delenv("RLA_PROGRESS", raising=False)
    monkeypatch.delenv("RLA_PROGRESS_INTERVAL", raising=False)


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_mode_follows_the_terminal_and_the_environment(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert progress_mode(stream=io.StringIO()) == "log"
    assert progress_mode(stream=TTY()) == "bar"
    assert progress_mode(enabled=False, stream=TTY()) == "off"
    for off in ("0", "off", "False"):
        monkeypatch.setenv("RLA_PROGRESS", off)
        assert progress_mode(stream=TTY()) == "off"
        assert progress_mode(stream=io.StringIO()) == "off"
    monkeypatch.setenv("RLA_PROGRESS", "log")
    assert progress_mode(stream=TTY()) == "log"
    monkeypatch.setenv("RLA_PROGRESS", "bar")
    assert progress_mode(stream=io.StringIO()) == "bar"


def test_lines_are_rate_limited_and_report_done_total_rate_and_eta(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger=LOGGER)
    bar = Progress(1000, "train", unit="step", interval=30, min_gap=3, clock=clock, stream=io.StringIO())
    assert bar.mode == "log"
    for _ in range(50):  # 5 % in 5 s: no 10 % boundary, no 30 s: nothing yet
        clock.advance(0.1)
        bar.update(1)
    assert messages(caplog) == []
    for _ in range(50):  # reaches 10 % after 10 s (>= min_gap): one line
        clock.advance(0.1)
        bar.update(1)
    assert messages(caplog) == ["train: 100/1000 steps (10%), 10 steps/s, elapsed 0:10, ETA 1:30"]
    bar.set_postfix(loss="0.5")
    for _ in range(10):  # 20 % within 1 s of the last line: below min_gap, so no line
        clock.advance(0.1)
        bar.update(10)
    assert len(messages(caplog)) == 1
    clock.advance(30)  # a stall: the next update reports because 30 s passed
    bar.update(1)
    last = messages(caplog)[-1]
    assert last.startswith("train: 201/1000 steps (20%), ") and last.endswith("| loss=0.5")
    assert re.search(r", [\d.]+ steps/s, elapsed 0:41, ETA \d+:\d\d \|", last), last
    bar.update(799)
    assert messages(caplog)[-1].startswith("train: 1000/1000 steps (100%) done, ")
    assert "ETA" not in messages(caplog)[-1]
    n = len(messages(caplog))
    bar.close()  # everything was reported: close adds nothing
    assert len(messages(caplog)) == n == bar.lines == 3


def test_time_alone_triggers_lines_without_a_total_and_close_reports_the_rest(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Progress(None, "enc", unit="frame", interval=5, clock=clock, mode="log") as bar:
        for _ in range(12):
            clock.advance(1)
            bar.update(4)
    lines = messages(caplog)
    # t=5 and t=10 by the interval, then close() reports the two unreported seconds
    assert lines[0] == "enc: 20 frames, 4 frames/s, elapsed 0:05"
    assert [ln.split(",")[0] for ln in lines] == ["enc: 20 frames", "enc: 40 frames", "enc: 48 frames"]


def test_a_stopped_loop_reports_where_it_stopped_and_a_resumed_one_counts_only_its_own_work(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger=LOGGER)
    bar = Progress(100, "ppo", unit="update", initial=60, interval=1000, clock=clock, mode="log")
    clock.advance(10)
    bar.update(2)  # 62 %: no new 10 % bucket since 60
    assert messages(caplog) == []
    clock.advance(10)
    bar.update(3)  # 65 %
    bar.close()
    # 5 updates in 20 s -> 4 s/update, 35 left -> 2:20
    assert messages(caplog) == ["ppo: 65/100 updates (65%), 4 s/update, elapsed 0:20, ETA 2:20"]
    bar.update(1)  # after close: ignored
    assert len(messages(caplog)) == 1


def test_disabled_progress_is_silent(caplog, monkeypatch, capsys):
    caplog.set_level(logging.INFO, logger=LOGGER)
    for kwargs in ({"enabled": False, "stream": TTY()}, {"enabled": False, "stream": io.StringIO()}):
        with Progress(10, "quiet", interval=0, min_gap=0, **kwargs) as bar:
            bar.update(10)
        assert bar.mode == "off" and bar.lines == 0
    monkeypatch.setenv("RLA_PROGRESS", "0")
    stream = TTY()
    with Progress(10, "quiet", interval=0, min_gap=0, stream=stream) as bar:
        bar.set_postfix(x=1)
        bar.update(10)
    assert not bar.enabled
    assert messages(caplog) == [] and stream.getvalue() == ""
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_a_tqdm_bar_with_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    stream = TTY()
    with Progress(4, "bar", unit="step", stream=stream) as bar:
        bar.update(2)
        bar.set_postfix(loss="1")
        bar.update(2)
    out = stream.getvalue()
    assert "bar" in out and "4/4" in out and "step/s" in out and "loss=1" in out
    assert messages(caplog) == []  # no log lines next to the bar


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("RLA_PROGRESS_INTERVAL", "2.5")
    bar = Progress(10, "x", mode="log")
    assert bar.interval == 2.5 and bar.min_gap == 0.25
    monkeypatch.setenv("RLA_PROGRESS_INTERVAL", "soon")
    assert Progress(10, "x", mode="log").interval == 30.0


def test_formatting():
    assert format_duration(75.2) == "1:15" and format_duration(3725) == "1:02:05"
    assert format_duration(float("nan")) == "?"
    assert format_rate(12.44, "step") == "12.4 steps/s" and format_rate(0.25, "update") == "4 s/update"


def test_the_trainer_reports_its_steps(monkeypatch, caplog):
    """A tiny run of the shared trainer (the toy regression of tests/training) writes progress lines off a terminal,
    ending with the last step; with RLA_PROGRESS=0 it writes none, and the numbers are the same either way."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    try:
        from trainer_toy import RegressionDataset, make_model, mse_loss
    finally:
        sys.path.pop(0)
    from rla_pipeline.training.trainer import TrainerConfig, train

    def run():
        cfg = TrainerConfig(run_name="toy", max_steps=20, batch_size=16, lr=3e-3, log_every=5, val_every=10,
                            checkpoint_every=1000, device="cpu", progress=True)
        return train(make_model(), mse_loss, RegressionDataset(64, seed=0), RegressionDataset(32, seed=1), cfg)

    caplog.set_level(logging.INFO, logger=LOGGER)
    monkeypatch.setenv("RLA_PROGRESS", "log")  # as under Kedro / CI, whatever pytest's stderr is
    monkeypatch.setenv("RLA_PROGRESS_INTERVAL", "0")  # every 10 % boundary reports (no 30 s wait)
    shown = run()
    lines = messages(caplog)
    assert len(lines) >= 2, lines
    assert lines[-1].startswith("toy: 20/20 steps (100%) done, ") and "steps/s, elapsed" in lines[-1]
    assert "val_loss=" in lines[-1]
    assert any(re.match(r"toy: \d+/20 steps \(\d+%\), .* ETA \d+:\d\d", ln) for ln in lines[:-1]), lines

    caplog.clear()
    monkeypatch.setenv("RLA_PROGRESS", "0")
    quiet = run()
    assert messages(caplog) == []
    pd.testing.assert_frame_equal(shown.history, quiet.history)  # progress changes no number
    for a, b in zip(shown.model.state_dict().values(), quiet.model.state_dict().values()):
        assert (a == b).all()
