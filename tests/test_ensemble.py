"""Logit ensembles (models/ensemble.py, scripts/ensemble_models.py): one model file, one ONNX graph."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deepfake_detection.errors import ModelError  # noqa: E402
from deepfake_detection.models.ensemble import LogitEnsemble, ensemble_model_files  # noqa: E402
from deepfake_detection.models.files import load_model_file, read_model_spec, save_model  # noqa: E402
from deepfake_detection.models.registry import create_model, default_spec  # noqa: E402
from deepfake_detection.models.spec import ModelSpec  # noqa: E402

SIZE = 32
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ensemble_models.py"


@pytest.fixture()
def members(tmp_path: Path) -> list[Path]:
    """Two differently initialised custom CNNs saved as calibrated model files."""
    spec = replace(default_spec("custom_cnn", input_size=SIZE), temperature=1.7, bias=0.3, threshold=0.4)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(save_model(create_model("custom_cnn").eval(), spec, tmp_path / f"m{seed}.safetensors"))
    return paths


def _batch() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).standard_normal((3, 3, SIZE, SIZE), dtype=np.float32))


def test_ensemble_logit_is_the_members_mean_with_calibration_reset(members: list[Path]) -> None:
    model, spec = ensemble_model_files(members, name="pair")
    x = _batch()
    with torch.no_grad():
        singles = [load_model_file(p)[0](x) for p in members]
        assert not torch.allclose(singles[0], singles[1])  # two different networks
        torch.testing.assert_close(model(x), (singles[0] + singles[1]) / 2)
    assert (spec.members, spec.name) == (2, "pair")
    assert (spec.temperature, spec.bias, spec.threshold) == (1.0, 0.0, 0.5)
    assert spec.arch == "custom_cnn" and spec.input_size == SIZE


def test_ensemble_file_round_trips_and_exports_one_onnx_graph(members: list[Path], tmp_path: Path) -> None:
    from deepfake_detection.export.onnx import check_parity, export_onnx, read_onnx_spec

    model, spec = ensemble_model_files(members)
    path = save_model(model, spec, tmp_path / "ens.safetensors")
    loaded, loaded_spec = load_model_file(path)
    assert isinstance(loaded, LogitEnsemble) and loaded_spec == spec
    x = _batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    onnx_path = export_onnx(loaded, loaded_spec, tmp_path / "ens.onnx")
    assert read_onnx_spec(onnx_path).members == 2
    assert check_parity(loaded, onnx_path, inputs=x.numpy()) < 1e-4


def test_ensemble_refuses_bad_members(members: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="at least two"):
        ensemble_model_files(members[:1])
    model, spec = load_model_file(members[1])
    other = save_model(model, replace(spec, input_size=48), tmp_path / "other.safetensors")
    with pytest.raises(ModelError, match="input_size"):
        ensemble_model_files([members[0], other])
    ens, ens_spec = ensemble_model_files(members)
    nested = save_model(ens, ens_spec, tmp_path / "nested.safetensors")
    with pytest.raises(ModelError, match="already ensembles"):
        ensemble_model_files([nested, save_model(ens, ens_spec, tmp_path / "nested2.safetensors")])
    with pytest.raises(ModelError, match="members"):  # one network and an ensemble: not one network
        ensemble_model_files([members[0], nested])
    from deepfake_detection.models.soup import average_model_files

    with pytest.raises(ModelError, match="members"):  # nor can their weights be averaged
        average_model_files([members[0], nested])


def test_spec_members_defaults_to_one_and_is_validated() -> None:
    old = json.loads(default_spec("custom_cnn").to_json())
    del old["members"]  # a file written before ensembles existed
    assert ModelSpec.from_dict(old).members == 1
    with pytest.raises(ModelError, match="members"):
        ModelSpec(arch="custom_cnn", members=0)


def test_grad_cam_explains_every_member(members: list[Path], tmp_path: Path) -> None:
    from deepfake_detection.serve.explain import GradCam

    model, spec = ensemble_model_files(members)
    cam = GradCam(model, spec)
    assert len(cam.layers) == 2 and cam.layers[0] is not cam.layers[1]
    crops = [np.random.default_rng(i).integers(0, 255, (SIZE, SIZE, 3), np.uint8) for i in range(2)]
    maps = cam.heatmaps(crops, [True, False])
    assert maps.shape == (2, SIZE, SIZE) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    single = GradCam(*load_model_file(members[0])).heatmaps(crops, [True, False])
    assert not np.allclose(maps, single)  # the second member's map counts too


def test_script_writes_an_ensemble_and_refuses_mismatched_files(members: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "ens"
    run = [sys.executable, str(SCRIPT)]
    proc = subprocess.run([*run, *map(str, members), "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    spec = read_model_spec(out / "model.safetensors")
    assert spec.members == 2 and spec.name == "ens"
    assert json.loads((out / "members.json").read_text())["members"] == [str(p) for p in members]
    model, spec = load_model_file(members[1])
    other = save_model(model, replace(spec, input_size=48), tmp_path / "other.safetensors")
    proc = subprocess.run([*run, str(members[0]), str(other), "--out", str(tmp_path / "bad")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "input_size" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bad").exists()
