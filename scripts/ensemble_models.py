"""Join model files of one network into a logit ensemble (one model file, one ONNX graph).

    .venv/bin/python scripts/ensemble_models.py A.safetensors B.safetensors --out work/ens/ab
    .venv/bin/dfd calibrate work/ens/ab/model.safetensors MANIFEST --out work/ens/ab_cal

The members must share arch, input size, normalisation and crop protocol (as a weight average's),
but not a starting point. `--out` gets model.safetensors with its calibration reset and members.json
(the inputs): `dfd calibrate` fits the ensemble's Platt calibration and threshold on validation files
through the product path and writes the ONNX file `dfd detect --model` takes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deepfake_detection.errors import DFDError
from deepfake_detection.io.atomic import write_text_atomic
from deepfake_detection.models.ensemble import ensemble_model_files
from deepfake_detection.models.files import save_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="model files (.safetensors) of one network")
    parser.add_argument("--out", type=Path, required=True, help="folder for the ensemble's model file")
    parser.add_argument("--name", default="", help="the model's name in its spec (default: the folder's)")
    args = parser.parse_args(argv)
    try:
        model, spec = ensemble_model_files(args.models, name=args.name or args.out.name)
    except DFDError as exc:  # unreadable or mismatched files: say which, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    weights = save_model(model, spec, args.out / "model.safetensors")
    record = {"members": [str(p) for p in args.models], "arch": spec.arch, "input_size": spec.input_size}
    write_text_atomic(args.out / "members.json", json.dumps(record, indent=2) + "\n")
    print(f"{weights}: ensemble of {spec.members} {spec.arch} networks (calibration reset: dfd calibrate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
