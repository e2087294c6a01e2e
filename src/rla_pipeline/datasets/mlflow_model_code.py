"""MLflow "model from code" entry of every registered rla_pipeline model (see :mod:`.mlflow_model`).

MLflow copies this file into the logged model and runs it on ``mlflow.pyfunc.load_model``: it names the pyfunc
class, which then reads the model's safetensors artifact with the project's loader. No pickle is involved.
Loading needs the ``rla_pipeline`` package installed (the version in the model version's ``git.commit`` tag).
"""
from mlflow.models import set_model

from rla_pipeline.datasets.mlflow_model import ModelFilePythonModel

set_model(ModelFilePythonModel())
