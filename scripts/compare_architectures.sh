#!/usr/bin/env bash
# Train, evaluate and compare the model zoo on one prepared dataset, with one recipe
# (configs/compare.yaml). Usage: scripts/compare_architectures.sh MANIFEST WORK_DIR [ARCH...]
#   e.g. .venv/bin/dfd prepare ../shared/data/ffpp_c23 ../shared/data/gan_faces --out work/prep --frames 16
#        scripts/compare_architectures.sh work/prep/manifest.parquet work
set -euo pipefail
manifest=$1; work=$2; shift 2
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(custom_cnn mobilenetv3_large efficientnet_lite0 efficientnet_b0 resnet50 xception vgg16)
dfd=${DFD:-.venv/bin/dfd}
runs=()
for arch in "${archs[@]}"; do
  pretrained=false
  case $arch in efficientnet_lite0|mobilenet_v2) pretrained=true ;; esac  # offline ImageNet weights
  if [ ! -f "$work/runs/$arch/model.onnx" ]; then
    resume=(); [ -f "$work/runs/$arch/last.ckpt" ] && resume=(--resume)
    "$dfd" train --config configs/compare.yaml "${resume[@]}" --set "data.manifests=[$manifest]" \
      "out=$work/runs/$arch" "model.arch=$arch" "model.pretrained=$pretrained"
  fi
  [ -f "$work/eval/$arch/metrics.json" ] || \
    "$dfd" evaluate "$work/runs/$arch/model.onnx" "$manifest" --out "$work/eval/$arch" --bootstrap 300
  runs+=("$work/eval/$arch")
done
"$dfd" compare "${runs[@]}" --out "$work/comparison"
