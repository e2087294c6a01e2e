"""Measurement runs outside the pipeline: the GPU smoke run (``smoke``) and where the time goes (``throughput``).

Both build every model through the stages' own builders (``stages.rla``, ``stages.world_model``,
``stages.pixel_decoder``, ``stages.common``); ``scripts/gpu_smoke.py`` and ``scripts/bench_throughput.py`` only
parse arguments and call these. No Kedro here: the scripts read the configuration and pass the parameters in.
"""
