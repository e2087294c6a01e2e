"""Every node starts from the same RNG state whatever ran before it: same seed, same numbers."""
from __future__ import annotations

import torch


class _Node:
    def __init__(self, name):
        self.name = name


def _catalog(seed):
    from kedro.io import DataCatalog, MemoryDataset

    return DataCatalog({"parameters": MemoryDataset({"seed": seed})})


def test_node_rng_does_not_depend_on_what_ran_before():
    from rla_pipeline.hooks import SeedHook

    hook = SeedHook()
    hook.before_pipeline_run(run_params={}, pipeline=None, catalog=_catalog(0))
    hook.before_node_run(_Node("train_rla"))
    alone = torch.nn.Linear(8, 8).weight.detach().clone()

    hook.before_node_run(_Node("train_bc_policy"))
    torch.randn(1000)  # another node consumed random numbers
    hook.before_node_run(_Node("train_rla"))
    after_others = torch.nn.Linear(8, 8).weight.detach().clone()
    assert torch.equal(alone, after_others)

    hook.before_node_run(_Node("train_world_model"))
    assert not torch.equal(alone, torch.nn.Linear(8, 8).weight)  # nodes get different streams


def test_changing_the_seed_parameter_changes_the_stream():
    from rla_pipeline.hooks import SeedHook

    a, b = SeedHook(), SeedHook()
    a.before_pipeline_run(run_params={}, pipeline=None, catalog=_catalog(0))
    b.before_pipeline_run(run_params={}, pipeline=None, catalog=_catalog(1))
    a.before_node_run(_Node("train_rla"))
    x = torch.randn(4)
    b.before_node_run(_Node("train_rla"))
    assert not torch.equal(x, torch.randn(4))
