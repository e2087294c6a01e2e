"""Subprocess of test_resume_after_kill9: trains the toy model with checkpoints, slowed down so it can be killed."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from trainer_toy import RegressionDataset, make_model, mse_loss, resume_config, sleep_callback  # noqa: E402

from rla_pipeline.training.trainer import train  # noqa: E402

if __name__ == "__main__":
    config = resume_config(sys.argv[1])
    config.val_every = 1  # the callback runs (and sleeps) every step; callbacks do not change the numbers
    train(make_model(), mse_loss, RegressionDataset(), RegressionDataset(64, seed=9), config,
          callbacks=[sleep_callback])
