"""``wmrl``: the whole chain from raw episodes to both success-rate tables and the report (the default)."""
from kedro.pipeline import Pipeline

from rla_pipeline.pipelines.actionless_bc.pipeline import create_pipeline as actionless_bc
from rla_pipeline.pipelines.evaluation.pipeline import create_pipeline as evaluation
from rla_pipeline.pipelines.features.pipeline import create_pipeline as features
from rla_pipeline.pipelines.ingestion.pipeline import create_pipeline as ingestion
from rla_pipeline.pipelines.pixel_decoder.pipeline import create_pipeline as pixel_decoder
from rla_pipeline.pipelines.rl.pipeline import create_pipeline as rl
from rla_pipeline.pipelines.rla.pipeline import create_pipeline as rla
from rla_pipeline.pipelines.world_model.pipeline import create_pipeline as world_model

# Order of the chain from raw videos to success-rate tables (Kedro orders nodes by data anyway).
WMRL_CHAIN = {
    "ingestion": ingestion,
    "features": features,
    "rla": rla,
    "world_model": world_model,
    # the paper's stage 1 (needs only the cache and episodes); its second part decodes the world models' rollouts,
    # and WMRL's BC-ResNet acts on its decoded RGB (rl.policy bc_resnet)
    "pixel_decoder": pixel_decoder,
    "actionless_bc": actionless_bc,
    "rl": rl,
    "evaluation": evaluation,
}


def create_pipeline(**kwargs) -> Pipeline:
    chain = Pipeline([])
    for make in WMRL_CHAIN.values():
        chain += make()
    return chain
