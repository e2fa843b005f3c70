"""Inference backends (ONNX Runtime / PyTorch), backend resolution, and preprocessing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfake_detection.errors import ModelError
from deepfake_detection.export.onnx import export_onnx
from deepfake_detection.infer.backends import OnnxBackend, TorchBackend, load_backend
from deepfake_detection.infer.preprocess import sigmoid_probability, to_batch
from deepfake_detection.models.files import save_model
from deepfake_detection.models.paths import sha256_file
from deepfake_detection.models.registry import create_model, default_spec
from deepfake_detection.models.spec import ModelSpec


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """custom_cnn saved as both formats. The head is rescaled so logits spread over several units
    (a fresh head outputs ~0, which would make every probability 0.5 and the comparison vacuous)."""
    torch.manual_seed(0)
    model = create_model("custom_cnn").eval()
    with torch.no_grad():
        model.get_submodule("head.fc").weight.mul_(30.0)
    spec = default_spec("custom_cnn", input_size=96, name="tiny", temperature=1.5)
    d = tmp_path_factory.mktemp("models")
    save_model(model, spec, d / "tiny.safetensors")
    export_onnx(model, spec, d / "tiny.onnx")
    return d


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    from skimage import data

    rng = np.random.default_rng(0)
    images = [data.astronaut()[:256, 128:384], data.chelsea()[:200, :200], data.coffee()[:96, :96]]
    images += [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(3)]
    return [np.ascontiguousarray(i) for i in images]


def _probabilities(backend: object, crops: list[np.ndarray]) -> np.ndarray:
    spec = backend.spec  # type: ignore[attr-defined]
    return sigmoid_probability(backend.logits(to_batch(crops, spec)), spec.temperature, spec.bias)  # type: ignore[attr-defined]


def test_both_formats_give_the_same_probabilities(model_dir: Path, crops: list[np.ndarray]) -> None:
    onnx_backend = load_backend(model_dir / "tiny.onnx")
    torch_backend = load_backend(model_dir / "tiny.safetensors", kind="torch")
    assert isinstance(onnx_backend, OnnxBackend) and onnx_backend.name == "onnxruntime"
    assert isinstance(torch_backend, TorchBackend) and torch_backend.name == "torch"
    assert onnx_backend.spec == torch_backend.spec and onnx_backend.spec.name == "tiny"
    p_onnx, p_torch = _probabilities(onnx_backend, crops), _probabilities(torch_backend, crops)
    assert p_onnx.shape == (len(crops),) and p_onnx.dtype == np.float32
    assert np.ptp(p_torch) > 0.2  # the comparison is not between constants
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-5)
    # batch of one equals the same crop inside a batch
    one = onnx_backend.logits(to_batch(crops[:1], onnx_backend.spec))
    np.testing.assert_allclose(one, onnx_backend.logits(to_batch(crops, onnx_backend.spec))[:1], atol=1e-5)
    assert onnx_backend.sha256 == sha256_file(model_dir / "tiny.onnx")
    assert torch_backend.sha256 == sha256_file(model_dir / "tiny.safetensors")


def test_auto_prefers_onnx_sibling(model_dir: Path) -> None:
    assert isinstance(load_backend(model_dir / "tiny"), OnnxBackend)  # a stem
    assert isinstance(load_backend(model_dir / "tiny.safetensors"), OnnxBackend)
    assert isinstance(load_backend(model_dir / "tiny.safetensors", kind="onnx"), OnnxBackend)
    assert isinstance(load_backend(model_dir / "tiny.onnx", kind="torch"), TorchBackend)
    assert isinstance(load_backend(str(model_dir / "tiny"), kind="torch"), TorchBackend)


def test_auto_falls_back_to_safetensors(model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(model_dir / "tiny.safetensors", tmp_path / "only.safetensors")
    assert isinstance(load_backend(tmp_path / "only"), TorchBackend)
    assert isinstance(load_backend(tmp_path / "only.safetensors"), TorchBackend)
    with pytest.raises(ModelError, match="only.onnx"):
        load_backend(tmp_path / "only", kind="onnx")


def test_stale_onnx_sibling_is_not_used(model_dir: Path, tmp_path: Path) -> None:
    for suffix in (".onnx", ".safetensors"):
        shutil.copy(model_dir / f"tiny{suffix}", tmp_path / f"m{suffix}")
    old = (tmp_path / "m.safetensors").stat().st_mtime - 100
    os.utime(tmp_path / "m.onnx", (old, old))
    with pytest.warns(UserWarning, match="older"):
        assert isinstance(load_backend(tmp_path / "m"), TorchBackend)


def test_missing_files_name_the_path(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.onnx", tmp_path / "absent.safetensors", tmp_path / "absent"):
        with pytest.raises(ModelError, match="absent"):
            load_backend(path)
    with pytest.raises(ModelError, match="absent.onnx"):
        OnnxBackend(tmp_path / "absent.onnx")
    with pytest.raises(ModelError):
        TorchBackend.from_file(tmp_path / "absent.safetensors")


def test_corrupt_files_raise_model_error(model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx model at all")
    with pytest.raises(ModelError, match="bad.onnx"):
        load_backend(tmp_path / "bad.onnx")
    data = (model_dir / "tiny.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        load_backend(tmp_path / "cut.onnx")
    (tmp_path / "junk.safetensors").write_bytes(os.urandom(256))
    with pytest.raises(ModelError):
        load_backend(tmp_path / "junk.safetensors")


def test_onnx_without_spec_is_refused(tmp_path: Path) -> None:
    import onnx

    from deepfake_detection.models.paths import SPEC_KEY

    model = create_model("custom_cnn").eval()
    path = export_onnx(model, default_spec("custom_cnn", input_size=64), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    for prop in list(proto.metadata_props):
        if prop.key == SPEC_KEY:
            proto.metadata_props.remove(prop)
    onnx.save(proto, str(path))
    with pytest.raises(ModelError, match="dfd_spec"):
        load_backend(path)


@pytest.mark.parametrize("name", ["model.pth", "model.pt", "model.pkl", "model.ckpt"])
def test_pickle_paths_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    torch.save({"w": torch.zeros(1)}, path)  # exists: refused for its format, not for being absent
    with pytest.raises(ModelError, match="pickle"):
        load_backend(path)


def test_bad_kind_and_bad_batch(model_dir: Path) -> None:
    with pytest.raises(ModelError, match="kind"):
        load_backend(model_dir / "tiny", kind="tensorrt")  # type: ignore[arg-type]
    backend = load_backend(model_dir / "tiny.onnx")
    with pytest.raises(ModelError, match="96"):
        backend.logits(np.zeros((1, 3, 64, 64), np.float32))


def test_onnx_threads_option(model_dir: Path, crops: list[np.ndarray]) -> None:
    one = OnnxBackend(model_dir / "tiny.onnx", threads=1)
    many = OnnxBackend(model_dir / "tiny.onnx")
    batch = to_batch(crops, one.spec)
    np.testing.assert_allclose(one.logits(batch), many.logits(batch), atol=1e-5)


def test_to_batch_matches_reference() -> None:
    spec = ModelSpec(arch="custom_cnn", input_size=32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    batch = to_batch(crops, spec)
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == np.float32 and batch.flags.c_contiguous
    ref = (np.stack(crops).astype(np.float64) / 255 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(batch, ref.transpose(0, 3, 1, 2), atol=1e-5)
    assert to_batch([], spec).shape == (0, 3, 32, 32)


def test_to_batch_resizes_and_validates() -> None:
    spec = ModelSpec(arch="custom_cnn", input_size=32)
    flat = np.full((50, 70, 3), 200, np.uint8)  # not square, too large
    small = np.full((10, 10, 3), 200, np.uint8)  # too small
    batch = to_batch([flat, small], spec)
    assert batch.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(batch[0], batch[1], atol=1e-5)  # a flat colour stays flat
    gray, rgba, floats = np.zeros((32, 32), np.uint8), np.zeros((32, 32, 4), np.uint8), np.zeros((32, 32, 3))
    for bad in (gray, rgba, floats):
        with pytest.raises(ValueError):
            to_batch([bad], spec)


def test_sigmoid_probability() -> None:
    logits = np.array([0.0, 2.0, -2.0, 1000.0, -1000.0], np.float32)
    p = sigmoid_probability(logits, 1.0)
    assert p.dtype == np.float32 and np.isfinite(p).all()
    np.testing.assert_allclose(p[:3], 1 / (1 + np.exp(-logits[:3].astype(np.float64))), rtol=1e-6)
    assert p[3] == 1.0 and p[4] == 0.0
    np.testing.assert_allclose(sigmoid_probability(logits[:3], 2.0), sigmoid_probability(logits[:3] / 2, 1.0))
    with pytest.raises(ValueError):
        sigmoid_probability(logits, 0.0)
