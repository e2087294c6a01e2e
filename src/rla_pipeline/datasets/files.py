"""Catalog datasets for files people look at: a self-contained HTML page, PNG figures that load back, provenance."""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from rla_pipeline.utils.atomic import atomic_write_bytes, atomic_write_text


class HTMLDataset(AbstractDataset[str, str]):
    """One UTF-8 HTML file, written atomically."""

    def __init__(self, filepath: str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> str:
        return self._filepath.read_text(encoding="utf-8")

    def save(self, data: str) -> None:
        atomic_write_text(self._filepath, data)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def preview(self):
        from kedro_datasets._typing import HTMLPreview

        return HTMLPreview(self.load())


class PNGDataset(AbstractDataset[Any, bytes]):
    """A figure saved as PNG (atomic) that, unlike ``matplotlib.MatplotlibDataset``, can be loaded back.

    save: matplotlib Figure, PIL image, (H,W,3) array or PNG bytes. load: PNG bytes. kedro-viz previews the image.
    """

    def __init__(self, filepath: str, dpi: int = 100, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self._dpi = dpi
        self.metadata = metadata

    def load(self) -> bytes:
        if not self._filepath.exists():
            raise DatasetError(f"no PNG at {self._filepath}")
        return self._filepath.read_bytes()

    def save(self, data: Any) -> None:
        from rla_pipeline.evaluation.report import png_bytes

        if hasattr(data, "savefig"):
            buf = io.BytesIO()
            data.savefig(buf, format="png", dpi=self._dpi, bbox_inches="tight")
            payload = buf.getvalue()
            import matplotlib.pyplot as plt

            plt.close(data)
        else:
            payload = png_bytes(data)
        atomic_write_bytes(self._filepath, payload)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "dpi": self._dpi}

    def preview(self):
        from kedro_datasets._typing import ImagePreview

        return ImagePreview(base64.b64encode(self.load()).decode("ascii"))


def _active_run_tags(keys) -> dict:
    """Tags the project hook put on the active MLflow run (Kedro env, session id), when there is one."""
    try:
        import mlflow

        run = mlflow.active_run()
        if run is None:
            return {}
        tags = mlflow.get_run(run.info.run_id).data.tags
    except Exception:
        return {}
    return {k: tags[k] for k in keys if k in tags}


class ProvenanceDataset(AbstractDataset[None, dict]):
    """Load-only: git commit/dirty of the project and the DVC hashes of ``dvc.lock`` (keys as the MLflow tags)."""

    def __init__(self, project_root: str = ".", metadata: dict | None = None):
        self._root = Path(project_root)
        self.metadata = metadata

    def load(self) -> dict:
        from rla_pipeline.hooks import dvc_data_hashes, git_info

        root = self._root.resolve()
        info = {**git_info(root), **dvc_data_hashes(root)}
        info.update(_active_run_tags(("kedro.env", "kedro.session_id", "kedro.pipelines")))
        return info

    def save(self, data: Any) -> None:
        raise DatasetError("ProvenanceDataset is read-only")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"project_root": str(self._root)}
