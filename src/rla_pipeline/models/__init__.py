from rla_pipeline.models import pixel_decoder  # noqa: F401  (registers PixelDecoder, so registry sweeps see it)
