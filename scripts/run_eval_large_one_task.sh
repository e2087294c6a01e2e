#!/bin/bash
# Larger evaluation (conf/eval_large, 173 paired episodes) of the make-run models on one task (default PullCube-v1), in its own
# data root so the make run's tables stay.
set -e
cd "$(dirname "$0")/.."
TASK=${1:-PullCube-v1}
R=$PWD/data/eval_large_$TASK
mkdir -p $R
for d in 01_raw 02_intermediate 03_primary 04_feature 05_model_input 06_models; do
  [ -e data/$d ] && [ ! -e $R/$d ] && ln -s $PWD/data/$d $R/$d
done
export KEDRO_DISABLE_TELEMETRY=true MS_SKIP_ASSET_DOWNLOAD_PROMPT=1 PATH=$PWD/.venv/bin:$PATH RLA_DATA_ROOT=$R
start=$(date +%s)
kedro run --pipelines=evaluation --env=eval_large --nodes=evaluate_bc_in_sim,bc_success_table "--params=tasks=[$TASK]"
echo "eval_large secs=$(( $(date +%s) - start ))"
