"""The node every pipeline starts with: all parameter blocks built into their typed configs (``stages.config``).

It takes Kedro's whole ``parameters`` and outputs nothing; being ready at once and named ``check_parameters``, the
sequential runner runs it first, so a typo fails the run before any stage works. Pipelines that share it (``wmrl``)
hold it once: identical nodes are one node to Kedro.
"""
from kedro.pipeline import Node

from rla_pipeline.stages.config import check_parameters


def check_parameters_node() -> Node:
    return Node(check_parameters, "parameters", None, name="check_parameters")
