"""The stage floor: each pipeline's logic as typed configs and plain functions, one module per stage.

``rla`` (episode split, the RLA datasets/model builders, training, evaluation), ``world_model`` (RLA-WM and two
baselines), ``bc`` (BC-ResNet, BC+RLA, token BC), ``wmrl`` (PPO in the world model), ``evaluation`` (policies in the
simulator, success and speed tables) and ``tune`` (the Optuna study's trials, trained through ``rla``'s builders).
``common`` holds what several stages share (episode ids per split, token-pair datasets, token statistics,
trainer configs under the one checkpoint root).

Floor: above ``models``/``training``/``features``/``episodes``/``evaluation``/``rl``/``tuning``, below
``pipelines`` (Kedro wires these functions into nodes). Nothing here imports Kedro.
"""
