#!/usr/bin/env bash
# The shipped default's whole recipe (dfd-default-v7) on one k-fold identity split: from ImageNet
# weights to a calibrated model and its one evaluation on the fold's test split, through the product
# path. Each step is skipped when its output exists and an interrupted training resumes from its
# last.ckpt, so re-running the same command goes on where it stopped (sessions are shorter than the
# recipe: about 5 hours on 2 cores).
# Usage: scripts/default_recipe.sh CORPUS_MANIFEST WORK_DIR FOLD   (after scripts/kfold.py)
#   STEP_EVALS=1 also calibrates and evaluates v5's and v6's steps on the test split (records of
#   each step; nothing here picks anything on test). LEG_EVALS=0 skips the evaluation of every leg
#   on its own (about 10 minutes each; only the final one is the fold's figure).
# Steps (each leg 3 epochs on the fold's train split, its epoch picked by within-source validation AUC;
# every leg, the consistency legs too, is also evaluated on its own, as scripts/run_folds.sh does):
#   legs 1-3: configs/default.yaml, then twice from the previous pick at lr 1.5e-4 (seeds 1, 2): v4's step
#   v5: leg 3's two children (lr 1.5e-4 seed 3; lr 5e-5 seed 4) and the uniform mean of the three
#   v6: a JPEG-consistency leg from v5 (weight 0.5, lr 1e-4, seed 11) and its uniform mean with v5
#   v7: a second one from v6 (seed 12) and its uniform mean with v6, calibrated with mirror TTA
#   METHOD=FaceSwap runs the whole recipe on manifest_fold{k}_noFaceSwap.parquet (kfold.py
#   --leave-out-method): leave-one-method-out for the shipped recipe, every run and folder named
#   fold{k}_noFaceSwap; calibration sees no FaceSwap fakes, the test evaluation keeps them.
# Prints the final evaluation folder (after the step evaluations with STEP_EVALS=1).
# With LEG_EVALS=0, the legs that feed a finished mean are not run again: a session can keep only the
# mean's weights and the running leg's last.ckpt (models/checkpoints/README.md) and go on from there.
set -euo pipefail
corpus=$1; work=$2; fold=$3
here=$(dirname "$0")
dfd=${DFD:-.venv/bin/dfd}
py=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # 3x faster on 2 cores beside the loader workers
name=$fold${METHOD:+_no$METHOD}  # run_folds.sh names its runs the same way (it reads METHOD too)
manifest=$(dirname "$corpus")/manifest_fold$name.parquet
[ -f "$manifest" ] || { echo "missing $manifest: run scripts/kfold.py first" >&2; exit 2; }

leg() {  # leg TAG START LR SEED [override...]: a run_folds.sh leg from START's weights
  local tag=$1 start=$2 lr=$3 seed=$4; shift 4
  SET="model.pretrained=$start optim.lr=$lr schedule.warmup_epochs=0.25 seed=$seed $*" TAG=$tag DFD=$dfd \
    EVALUATE=${LEG_EVALS:-1} "$here/run_folds.sh" "$corpus" "$work" "$fold" >&2
}

# 2 threads here: the consistency legs' doubled forward pass leaves the loader workers idle (5.5 s a
# step at 1 thread, 3.8 at 2 on 2 cores); the plain legs keep run_folds.sh's 1
consistency_leg() {  # consistency_leg TAG START SEED
  OMP_NUM_THREADS=${CONSISTENCY_THREADS:-2} leg "$1" "$2" 1e-4 "$3" consistency.weight=0.5
}

mean() {  # mean OUT CONFIG MODEL...: the uniform weight average, scored on CONFIG's validation split
  local out=$1 config=$2; shift 2
  [ -f "$out/summary.json" ] || "$py" "$here/average_weights.py" "$@" --config "$config" --out "$out" >&2
}

calibrate_and_evaluate() {  # calibrate_and_evaluate MODEL_DIR EVAL_DIR [dfd calibrate flag...]
  local model=$1 evaluation=$2; shift 2
  [ -f "${model}_cal/calibration.json" ] ||
    "$dfd" calibrate "$model/model.safetensors" "$manifest" --out "${model}_cal" "$@" >&2
  [ -f "$evaluation/metrics.json" ] ||
    "$dfd" evaluate "${model}_cal/model.onnx" "$manifest" --out "$evaluation" --no-progress >&2
  echo "$evaluation"
}

fed() {  # fed MEAN: MEAN is averaged already and no leg evaluation is wanted, so its legs can be skipped
  [ -f "$1/summary.json" ] && [ "${LEG_EVALS:-1}" = 0 ]
}

run=$work/stage1_   # run_folds.sh's run names
if ! fed "$work/v5_fold$name"; then
  SET="" TAG="" DFD=$dfd EVALUATE=${LEG_EVALS:-1} "$here/run_folds.sh" "$corpus" "$work" "$fold" >&2
  leg cont3 "${run}fold$name/model.safetensors" 1.5e-4 1
  leg cont6 "${run}cont3_fold$name/model.safetensors" 1.5e-4 2
  leg cont9 "${run}cont6_fold$name/model.safetensors" 1.5e-4 3
  leg cont6low "${run}cont6_fold$name/model.safetensors" 5e-5 4
fi

v4=${run}cont6_fold$name
mean "$work/v5_fold$name" "$v4/config.yaml" "$v4/model.safetensors" \
  "${run}cont9_fold$name/model.safetensors" "${run}cont6low_fold$name/model.safetensors"
if [ "${STEP_EVALS:-0}" = 1 ]; then calibrate_and_evaluate "$work/v5_fold$name" "$work/eval_v5_fold$name"; fi

fed "$work/v6_fold$name" || consistency_leg v5jc "$work/v5_fold$name/model.safetensors" 11
mean "$work/v6_fold$name" "${run}v5jc_fold$name/config.yaml" \
  "$work/v5_fold$name/model.safetensors" "${run}v5jc_fold$name/model.safetensors"
if [ "${STEP_EVALS:-0}" = 1 ]; then calibrate_and_evaluate "$work/v6_fold$name" "$work/eval_v6_fold$name"; fi

fed "$work/v7_fold$name" || consistency_leg v6jc "$work/v6_fold$name/model.safetensors" 12
mean "$work/v7_fold$name" "${run}v6jc_fold$name/config.yaml" \
  "$work/v6_fold$name/model.safetensors" "${run}v6jc_fold$name/model.safetensors"
calibrate_and_evaluate "$work/v7_fold$name" "$work/eval_v7_fold$name" --tta hflip
