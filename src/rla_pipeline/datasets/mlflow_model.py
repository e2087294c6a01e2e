"""Trained models in the MLflow Model Registry: one registered model per Kedro dataset, one version per save.

A model file of :class:`~rla_pipeline.datasets.torch_model.TorchModelDataset` (safetensors, see
:mod:`rla_pipeline.training.model_io`) is logged to the active MLflow run as an MLflow **pyfunc model from code**
(``mlflow.pyfunc.log_model(python_model=<this package's model_code.py>, artifacts={"model": <the .safetensors>})``)
and registered as ``rla_pipeline.<dataset name>`` (prefix: ``RLA_REGISTERED_MODEL_PREFIX``). Nothing in it is
pickled: MLflow loads it by running ``mlflow_model_code.py`` (project code), which rebuilds the model from the
safetensors file with the project's own loader. ``RLA_REGISTER_MODELS=0`` turns registration off.

```python
import mlflow
m = mlflow.pyfunc.load_model("models:/rla_pipeline.rla_model/1")   # or .../latest
m.predict({"s_t": s_t, "s_th": s_th})                              # numpy in, {name: numpy} out (signature)
net = m.unwrap_python_model().model                                # the nn.Module itself (CPU, eval)
net = load_registered("rla_pipeline.rla_model", "1")               # project loader only: no MLflow code path
```

Each registered class has an :class:`Inference`: the inputs its signature names (example shapes from the model's
config, batch axis variable) and the call ``predict`` makes (``forward``, ``predict_next``, ``act``).
Torch + MLflow only, no Kedro: the Kedro side is :meth:`TorchModelDataset.register_in_mlflow` and the run hook.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

ENABLE_ENV = "RLA_REGISTER_MODELS"  # "0"/"false"/"no"/"off": do not log or register models
PREFIX_ENV = "RLA_REGISTERED_MODEL_PREFIX"
DEFAULT_PREFIX = "rla_pipeline."
ARTIFACT_KEY = "model"  # pyfunc artifact name of the safetensors file
CODE_FILE = Path(__file__).with_name("mlflow_model_code.py")  # the models-from-code entry MLflow runs on load
MODEL_MD5_TAG = "model.md5"  # DVC-style md5 of the saved .safetensors (what dvc.lock records for the out)


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def registered_name(dataset_name: str) -> str:
    return f"{os.environ.get(PREFIX_ENV, DEFAULT_PREFIX)}{dataset_name}"


def md5_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """md5 of a file's bytes: the hash DVC records for a file (``dvc.lock``'s ``md5``)."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- per-class inference
@dataclass(frozen=True)
class Inference:
    """``inputs(model)``: example tensors (batch 1) named as ``predict`` takes them, optional ones only when the
    config needs them; ``call(model, tensors, params)``: ``{output name: tensor}``."""

    inputs: Callable[[Any], dict]
    call: Callable[[Any, dict, dict], dict]


def _zeros(*shape, dtype=None):
    import torch

    return torch.zeros(*shape, dtype=dtype or torch.float32)


def _generator(params: dict):
    import torch

    return torch.Generator().manual_seed(int(params.get("seed", 0)))


def _rla_inputs(m):
    c = m.config
    return {"s_t": _zeros(1, c.num_tokens, c.token_dim), "s_th": _zeros(1, c.num_tokens, c.token_dim)}


def _rla_call(m, x, params):
    pred, z = m(x["s_t"].float(), x["s_th"].float())
    return {"s_th_pred": pred, "z": z}


def _wm_inputs(m):
    c = m.config
    return {"s_t": _zeros(1, c.num_tokens, c.token_dim), "actions": _zeros(1, c.max_actions, c.action_dim),
            "action_mask": _zeros(1, c.max_actions) + 1}


def _wm_call(m, x, params):
    robot = params.get("robot") or None
    s = m.predict_next(x["s_t"].float(), x["actions"].float(), x["action_mask"], generator=_generator(params),
                       robot=robot)
    return {"s_next": s}


def _policy_extras(c) -> dict:
    import torch

    out = {}
    if c.proprio_dim > 0:
        out["proprio"] = _zeros(1, c.proprio_dim)
    if c.num_tasks > 0:
        out["task"] = _zeros(1, dtype=torch.int64)
    return out


def _bc_inputs(m):
    import torch

    c = m.config
    return {"images": _zeros(1, c.image_size, c.image_size, 3, dtype=torch.uint8), **_policy_extras(c)}


def _token_policy_inputs(m):
    c = m.config
    return {"tokens": _zeros(1, c.num_tokens, c.token_dim), **_policy_extras(c)}


def _act_call(first: str):
    def call(m, x, params):
        return {"actions": m.act(x[first], x.get("proprio"), x.get("task"))}

    return call


def _decoder_inputs(m):
    c = m.config
    return {"tokens": _zeros(1, c.num_tokens, c.token_dim)}


def _decoder_call(m, x, params):
    return {"images": m(x["tokens"].float())}


INFERENCE: dict[str, Inference] = {
    "ResidualLatentActionAutoencoder": Inference(_rla_inputs, _rla_call),
    "RLAWorldModel": Inference(_wm_inputs, _wm_call),
    "DeterministicWorldModel": Inference(_wm_inputs, _wm_call),
    "AbsoluteFlowWorldModel": Inference(_wm_inputs, _wm_call),
    "PixelDecoder": Inference(_decoder_inputs, _decoder_call),
    "BCResNetPolicy": Inference(_bc_inputs, _act_call("images")),
    "TokenPolicy": Inference(_token_policy_inputs, _act_call("tokens")),
}
PARAMS = {"seed": 0, "robot": ""}  # predict params: the noise seed of flow models; the robot of multi-robot WMs


def inference_of(model) -> Inference | None:
    from rla_pipeline.models.registry import model_name

    return INFERENCE.get(model_name(model))


def run_inference(model, inputs: dict, params: dict | None = None) -> dict:
    """numpy/tensor inputs -> ``{name: numpy}`` through the model's :class:`Inference` (``forward`` when unknown)."""
    import numpy as np
    import torch

    params = {**PARAMS, **(params or {})}
    tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in dict(inputs).items()}
    inf = inference_of(model)
    with torch.no_grad():
        out = inf.call(model, tensors, params) if inf else model(**tensors)
    if isinstance(out, torch.Tensor):
        out = {"output": out}
    elif isinstance(out, (tuple, list)):
        out = {f"output_{i}": v for i, v in enumerate(out)}
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def signature_of(model):
    """MLflow signature from a batch-1 example (batch axis variable) and the outputs the model gives for it."""
    from mlflow.models import infer_signature

    inf = inference_of(model)
    if inf is None:
        return None
    example = {k: v.numpy() for k, v in inf.inputs(model).items()}
    return infer_signature(example, run_inference(model, example), params=PARAMS)


# ------------------------------------------------------------------------------------------------ pyfunc model
try:
    from mlflow.pyfunc import PythonModel as _PythonModel
except Exception:  # pragma: no cover - mlflow missing: only registration needs it
    _PythonModel = object


with warnings.catch_warnings():
    # MLflow asks for type hints on ``predict`` when the class is defined; the tensor signature rules instead.
    warnings.filterwarnings("ignore", message=".*type hints.*", category=UserWarning)

    class ModelFilePythonModel(_PythonModel):
        """pyfunc over the project's safetensors model file: ``load_context`` rebuilds it with
        :func:`rla_pipeline.training.model_io.load_model` (no pickle), ``predict`` runs its :class:`Inference`."""

        model = None

        def load_context(self, context) -> None:
            from rla_pipeline.training.model_io import load_model

            self.model = load_model(context.artifacts[ARTIFACT_KEY])

        def predict(self, context, model_input, params: dict | None = None):
            return run_inference(self.model, model_input, params)


# ------------------------------------------------------------------------------------------------ register / load
def pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("torch", "safetensors", "numpy", "mlflow", "timm"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            pass
    return reqs


def register_model_file(path: str | os.PathLike, dataset_name: str, tags: dict[str, Any] | None = None,
                        description: str | None = None):
    """Log the model file at ``path`` to the active MLflow run and register it as :func:`registered_name`;
    returns the ``ModelVersion`` (None when registration is off or no run is active).

    Version tags: ``tags`` plus ``kedro.dataset``, ``model.class`` and ``model.md5`` (the file's md5, as DVC
    records it). Raises on failure; callers that must never fail (the run hook) catch.
    """
    if not enabled():
        return None
    import mlflow

    if mlflow.active_run() is None:
        return None
    from rla_pipeline.models.registry import model_name
    from rla_pipeline.training.model_io import load_model

    path = Path(path)
    model = load_model(path)  # the file as the project reads it: also checks it round-trips
    name = registered_name(dataset_name)
    cls = model_name(model)
    signature = signature_of(model)
    with warnings.catch_warnings():
        # No input example on purpose (the signature holds the shapes; a paper-scale example is megabytes of JSON
        # and MLflow would run the model on it again); no type hints on predict (the tensor signature rules).
        warnings.filterwarnings("ignore", message=".*(input example|type hints).*", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name=dataset_name,
            python_model=str(CODE_FILE),
            artifacts={ARTIFACT_KEY: str(path)},
            signature=signature,
            pip_requirements=pip_requirements(),  # explicit: MLflow's inference would load the model in a subprocess
        )
    all_tags = {**(tags or {}), "kedro.dataset": dataset_name, "model.class": cls, MODEL_MD5_TAG: md5_file(path)}
    client = mlflow.MlflowClient()
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        try:
            client.create_registered_model(name, description=f"rla_pipeline dataset `{dataset_name}` ({cls})")
        except Exception:  # noqa: BLE001 - another process created it meanwhile
            pass
    version = mlflow.register_model(info.model_uri, name, tags={k: str(v)[:5000] for k, v in all_tags.items()})
    if description:
        client.update_model_version(name, version.version, description=description)
    logger.info("registered %s version %s (%s, %s)", name, version.version, cls, path)
    return version


def download_model_file(model_uri: str, dst: str | os.PathLike | None = None) -> Path:
    """The safetensors file of a registered/logged model (``models:/<name>/<version>``), downloaded."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=None if dst is None else str(dst)))
    found = sorted((local / "artifacts").glob("*.safetensors")) or sorted(local.rglob("*.safetensors"))
    if not found:
        raise FileNotFoundError(f"{model_uri}: no .safetensors file in the logged model ({local})")
    return found[0]


def load_registered(name: str, version: str | int = "latest", dst: str | os.PathLike | None = None):
    """The nn.Module of registered model ``name`` (version number or ``latest``), read by the project's own
    loader from its safetensors file (no MLflow model code runs, nothing is unpickled)."""
    from rla_pipeline.training.model_io import load_model

    return load_model(download_model_file(f"models:/{name}/{version}", dst))
