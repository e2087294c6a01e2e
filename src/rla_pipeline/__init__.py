"""rla-pipeline: Residual Latent Action world models as a reproducible Kedro pipeline."""
import os as _os

# The project never talks to Kedro's telemetry service (these machines have no network).
_os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
_os.environ.setdefault("MS_SKIP_ASSET_DOWNLOAD_PROMPT", "1")

__version__ = "0.1.0"
