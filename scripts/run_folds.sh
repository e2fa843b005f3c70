#!/usr/bin/env bash
# The default recipe on k-fold identity splits of the corpus: per fold, train (resuming an
# interrupted run), evaluate on the product path; prints the evaluation folders, which
# scripts/validation_report.py turns into the table of bars (one stage at a time).
# Usage: scripts/run_folds.sh CORPUS_MANIFEST WORK_DIR FOLD... (after scripts/kfold.py)
#   STAGE=2 also runs stage 2 after stage 1: the stage-1 weights trained 2 more epochs with heavier
#   compression (JPEG 20-100 at p 0.7, downscale p 0.4), lr 1.5e-4, seed 1.
#   METHOD=NeuralTextures trains on manifest_fold{k}_noNeuralTextures.parquet (kfold.py
#   --leave-out-method) instead: leave-one-method-out; METHOD=Fakes on kfold.py --real-only's
#   manifest_fold{k}_noFakes.parquet: reals and their self-blends only, every test fake unseen.
#   SET="model.arch=efficientnet_lite1 model.input_size=240" TAG=lite1_240 trains a variant of the
#   recipe (extra --set overrides for both stages) into runs named after TAG.
#   EVALUATE=0 trains only: no test-split evaluation, nothing printed (scripts/default_recipe.sh's legs).
# Every step is skipped when its output exists, so re-running the same command resumes.
#   e.g. scripts/run_folds.sh work/corpus/manifest.parquet work/folds 1 2
set -euo pipefail
corpus=$1; work=$2; shift 2
dfd=${DFD:-.venv/bin/dfd}
stage=${STAGE:-1}
suffix=${METHOD:+_no$METHOD}
read -r -a variant <<< "${SET:-}"   # extra overrides, split on spaces
tag=${TAG:+${TAG}_}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # 3x faster on 2 cores beside the loader workers
common=(tensorboard=false early_stopping_patience=null data.num_workers=2)
stage2=(epochs=2 optim.lr=1.5e-4 schedule.warmup_epochs=0.1 seed=1 "data.augment.jpeg_quality=[20,100]"
        data.augment.jpeg_p=0.7 data.augment.downscale_p=0.4)

train() {  # train OUT MANIFEST [override...]: skipped when finished, resumed when interrupted
  local out=$1 manifest=$2; shift 2
  [ -f "$out/model.onnx" ] && return 0
  # a run that is not evaluated needs only its weights: a kept leg (models/checkpoints/, without the
  # ONNX) is finished once summary.json, which dfd train writes last, is there
  [ "${EVALUATE:-1}" = 0 ] && [ -f "$out/summary.json" ] && [ -f "$out/model.safetensors" ] && return 0
  local resume=(); [ -f "$out/last.ckpt" ] && resume=(--resume)
  "$dfd" train --config configs/default.yaml "${resume[@]}" --set "data.manifests=[$manifest]" \
    "out=$out" "${common[@]}" "${variant[@]}" "$@"
}

evaluate() {  # evaluate RUN MANIFEST OUT (appended to the printed list)
  [ "${EVALUATE:-1}" = 0 ] && return 0
  [ -f "$3/metrics.json" ] || "$dfd" evaluate "$1/model.onnx" "$2" --out "$3" --no-progress
  evals+=("$3")
}

evals=()
for fold in "$@"; do
  manifest=$(dirname "$corpus")/manifest_fold$fold$suffix.parquet
  [ -f "$manifest" ] || { echo "missing $manifest: run scripts/kfold.py first" >&2; exit 2; }
  name=${tag}fold$fold$suffix
  train "$work/stage1_$name" "$manifest"
  evaluate "$work/stage1_$name" "$manifest" "$work/eval_stage1_$name"
  if [ "$stage" = 2 ]; then
    train "$work/stage2_$name" "$manifest" "model.pretrained=$work/stage1_$name/model.safetensors" \
      "${stage2[@]}"
    evaluate "$work/stage2_$name" "$manifest" "$work/eval_stage2_$name"
  fi
done
[ ${#evals[@]} = 0 ] || printf '%s\n' "${evals[@]}"
