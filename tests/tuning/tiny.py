"""A tiny real RLA tuning setup for the tests: token pairs built from real tensors, trained by the real trainer.

Run as a script, it is one tuning worker process: ``python tiny.py STORAGE STUDY N_TRIALS [MAX_STEPS]``.
"""
from __future__ import annotations

import sys

import torch
from torch.utils.data import Dataset

N_TOKENS, TOKEN_DIM, ACTION_DIM = 8, 16, 6


class TinyTokenPairs(Dataset):
    """Stand-in for TokenPairDataset: s_th = s_t + a fixed non-linear effect of a hidden 6-dim action.

    A latent with room for the action reconstructs s_th; copying s_t does not. Items: {"s_t", "s_th"} (N, D).
    """

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(ACTION_DIM, N_TOKENS * TOKEN_DIM, generator=torch.Generator().manual_seed(123)) / 2
        self.s_t = torch.randn(n, N_TOKENS, TOKEN_DIM, generator=g)
        action = torch.randn(n, ACTION_DIM, generator=g)
        self.s_th = self.s_t + torch.tanh(action @ w).reshape(n, N_TOKENS, TOKEN_DIM)
        from rla_pipeline.utils.hashing import nested_digest

        self.fingerprint = nested_digest(self.s_t, self.s_th)  # content digest, as TokenPairDataset has

    num_tokens, token_dim = N_TOKENS, TOKEN_DIM

    def __len__(self) -> int:
        return len(self.s_t)

    def __getitem__(self, i: int) -> dict:
        return {"s_t": self.s_t[i], "s_th": self.s_th[i]}


RLA_MODEL = dict(width=32, enc_depth=1, dec_depth=1, heads=2)  # num_tokens / token_dim come from the data
TRAINER = dict(run_name="tiny", max_steps=10, batch_size=32, lr=1e-3, warmup_steps=0, schedule="constant",
               log_every=10, val_every=10, device="cpu", progress=False, seed=0)


def tiny_trial_data(seed: int = 0):
    """Trials built the way the tune stage builds them (``stages.tune.rla_trial_data`` over ``RLAData``)."""
    from rla_pipeline.models.rla import RLAConfig
    from rla_pipeline.stages.rla import RLAData
    from rla_pipeline.stages.tune import rla_trial_data

    data = RLAData(TinyTokenPairs(256, seed=seed), TinyTokenPairs(64, seed=seed + 1), token_stats=None)
    return rla_trial_data(data, RLAConfig.from_dict(RLA_MODEL), TRAINER)


def tune_config(study: str, n_trials: int, max_steps: int = 40, **kw):
    from rla_pipeline.tuning.config import TuneConfig

    return TuneConfig(study_name=study, n_trials=n_trials, shapes=["1x2", "4x8", "8x8"], lr_low=3e-4,
                      lr_high=3e-3, max_steps=max_steps, val_every=10, batch_size=32, pruner_startup_trials=2,
                      heartbeat_interval=1, **kw)


if __name__ == "__main__":
    import logging

    from rla_pipeline.tuning.study import run_worker

    logging.basicConfig(level=logging.INFO)
    storage, study, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 40
    torch.set_num_threads(1)
    run_worker(storage, tune_config(study, n, max_steps=steps), tiny_trial_data())
    print("WORKER DONE", flush=True)
