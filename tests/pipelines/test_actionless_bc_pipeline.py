"""actionless_bc's wiring for decoded copies (``actionless_bc.decoded_copies``): both BC nodes get the feature
cache, WMRL's decoder (``pixel_decoder_model_all_tasks``) and the evaluation block (the camera size); the wmrl chain
trains that decoder first, and DVC reruns the stage when it changes."""
from __future__ import annotations

import inspect

import yaml


def _bound(node) -> dict[str, str]:
    """The node's function parameter -> the catalog entry Kedro passes to it."""
    return dict(inspect.signature(node.func).bind(*node.inputs).arguments)


def test_bc_nodes_get_the_all_tasks_decoder_cache_and_camera(project_root):
    from rla_pipeline.pipelines.actionless_bc.pipeline import create_pipeline

    nodes = {n.name: n for n in create_pipeline().nodes}
    for name in ("train_bc_policy", "train_bc_rla_policy"):
        args = _bound(nodes[name])
        assert args["feature_cache"] == "feature_cache" and args["params"] == "params:actionless_bc", name
        assert args["pixel_decoder"] == "pixel_decoder_model_all_tasks", name  # not the held-out pixel_decoder_model
        assert args["evaluation_params"] == "params:evaluation", name
    base = yaml.safe_load((project_root / "conf/base/parameters_actionless_bc.yml").read_text())
    assert base["actionless_bc"]["decoded_copies"] is True


def test_wmrl_trains_the_decoder_before_bc_and_dvc_tracks_it(project_root):
    from rla_pipeline.pipelines.wmrl.pipeline import create_pipeline

    order = [n.name for n in create_pipeline().nodes]  # Kedro's topological order
    for name in ("train_bc_policy", "train_bc_rla_policy"):
        assert order.index("train_pixel_decoder_all_tasks") < order.index(name)
    catalog = yaml.safe_load((project_root / "conf/base/catalog_pixel_decoder.yml").read_text())
    path = catalog["pixel_decoder_model_all_tasks"]["filepath"].replace("${globals:data_root}", "data")
    stages = yaml.safe_load((project_root / "dvc.yaml").read_text())["stages"]
    outs = {o if isinstance(o, str) else next(iter(o)) for o in stages["pixel_decoder"]["outs"]}
    assert path in outs and path in stages["actionless_bc"]["deps"]
    params = {k: v for p in stages["actionless_bc"]["params"] for k, v in p.items()}
    assert "evaluation.sim.image_size" in params["conf/base/parameters_evaluation.yml"]
