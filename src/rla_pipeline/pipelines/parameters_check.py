"""The node the stage pipelines start with: all parameter blocks built into typed configs (``stages.config``).

(ingestion and features build their one config in their first node already.)

It takes Kedro's whole ``parameters`` and outputs nothing; being ready at once and named ``check_parameters``, the
sequential runner runs it first, so a typo fails the run before any stage works. Pipelines that share it (``wmrl``)
hold it once: identical nodes are one node to Kedro.
"""
from kedro.pipeline import Node

from rla_pipeline.stages.config import check_parameters


def check_parameters_node() -> Node:
    return Node(check_parameters, "parameters", None, name="check_parameters")
