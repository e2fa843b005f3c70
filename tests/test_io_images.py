"""load_image: every supported input turns into an RGB uint8 array; every bad input raises a typed error."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_detection.errors import (
    CorruptImageError,
    DecompressionBombError,
    EmptyFileError,
    ImageError,
    UnsupportedFormatError,
)
from deepfake_detection.io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, load_image

RED = (255, 0, 0)
H, W = 24, 32  # deliberately not square, so a transposition shows in the shape


def _check_rgb(arr: np.ndarray, shape: tuple[int, int] = (H, W)) -> None:
    assert arr.shape == (*shape, 3)
    assert arr.dtype == np.uint8
    assert arr.flags.c_contiguous
    assert arr.flags.writeable


def _close(arr: np.ndarray, colour: tuple[int, int, int], tol: int = 12) -> bool:
    """The centre pixel is within ``tol`` of ``colour`` (lossy codecs bleed at the edges)."""
    centre = arr[arr.shape[0] // 2, arr.shape[1] // 2].astype(int)
    return bool(np.all(np.abs(centre - np.array(colour)) <= tol))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, idat: bytes, *, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A hand-made PNG: lets the tests forge headers that Pillow would refuse to write."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _noise_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _noise_png() -> bytes:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- constants


def test_constants() -> None:
    assert DEFAULT_MAX_PIXELS == 50_000_000
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"} == IMAGE_EXTENSIONS
    assert {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"} == VIDEO_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)


# ------------------------------------------------------------------------------------- formats and modes


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"])
def test_red_square_round_trips_every_format(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"red{ext}"
    Image.new("RGB", (W, H), RED).save(path)
    arr = load_image(path)
    _check_rgb(arr)
    assert _close(arr, RED)
    assert _close(load_image(str(path)), RED)  # str paths too


@pytest.mark.parametrize(
    ("mode", "ext", "colour", "expected"),
    [
        ("L", ".png", 128, (128, 128, 128)),
        ("L", ".jpg", 200, (200, 200, 200)),
        ("1", ".png", 1, (255, 255, 255)),
        ("1", ".bmp", 0, (0, 0, 0)),
        ("1", ".tif", 1, (255, 255, 255)),
        ("CMYK", ".jpg", (0, 255, 255, 0), RED),
        ("CMYK", ".tif", (0, 255, 255, 0), RED),
        ("RGBA", ".png", (255, 0, 0, 255), RED),
        ("RGBA", ".webp", (255, 0, 0, 255), RED),
        ("RGBA", ".png", (0, 0, 0, 0), (255, 255, 255)),  # fully transparent black -> white background
        ("RGBA", ".tif", (0, 0, 0, 0), (255, 255, 255)),
        ("RGBA", ".png", (0, 0, 255, 128), (127, 127, 255)),  # half-transparent blue over white
        ("LA", ".png", (0, 0), (255, 255, 255)),
        ("LA", ".png", (0, 255), (0, 0, 0)),
        ("I;16", ".png", 65535, (255, 255, 255)),
        ("I;16", ".png", 32896, (128, 128, 128)),  # scaled, not clipped to 255
        ("I;16", ".tif", 65535 // 4, (64, 64, 64)),
        ("I;16B", ".tif", 65535 // 2, (128, 128, 128)),
        ("I", ".tif", 65535, (255, 255, 255)),
        ("I", ".tif", 100_000, (255, 255, 255)),  # beyond 16 bits: saturates instead of wrapping
        ("F", ".tif", 0.5, (128, 128, 128)),
        ("F", ".tif", 1.0, (255, 255, 255)),
    ],
)
def test_modes(tmp_path: Path, mode: str, ext: str, colour: object, expected: tuple[int, int, int]) -> None:
    path = tmp_path / f"img{ext}"
    Image.new(mode, (W, H), colour).save(path)  # type: ignore[arg-type]
    arr = load_image(path)
    _check_rgb(arr)
    assert _close(arr, expected, tol=3 if ext != ".jpg" else 12), arr[H // 2, W // 2]


@pytest.mark.parametrize("transparent", [False, True])
def test_palette(tmp_path: Path, transparent: bool) -> None:
    im = Image.new("P", (W, H), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.putpixel((0, 0), 0)
    path = tmp_path / "pal.png"
    im.save(path, transparency=0) if transparent else im.save(path)
    arr = load_image(path)
    _check_rgb(arr)
    assert _close(arr, RED, tol=0)
    # Index 0 is black; with transparency it becomes the white background.
    assert tuple(arr[0, 0]) == ((255, 255, 255) if transparent else (0, 0, 0))


def test_pa_mode_from_pil() -> None:
    im = Image.new("P", (W, H), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.info["transparency"] = 1
    arr = load_image(im)
    assert _close(arr, (255, 255, 255), tol=0)


def test_rgb_colour_key_transparency(tmp_path: Path) -> None:
    path = tmp_path / "key.png"
    Image.new("RGB", (W, H), (0, 255, 0)).save(path, transparency=(0, 255, 0))
    assert _close(load_image(path), (255, 255, 255), tol=0)


def test_16bit_rgb_png(tmp_path: Path) -> None:
    import cv2

    bgr16 = np.zeros((H, W, 3), np.uint16)
    bgr16[..., 2] = 65535  # red, in OpenCV's BGR order
    bgr16[..., 1] = 32896
    path = tmp_path / "rgb16.png"
    assert cv2.imwrite(str(path), bgr16)
    arr = load_image(path)
    _check_rgb(arr)
    assert _close(arr, (255, 128, 0), tol=1)


def test_16bit_gray_png_keeps_gradient(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, W, dtype=np.uint16)[None, :].repeat(H, axis=0)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    arr = load_image(path)
    assert arr[0, 0, 0] == 0 and arr[0, -1, 0] == 255
    assert np.all(np.diff(arr[0, :, 0].astype(int)) >= 0)  # monotone, not clipped flat at 255
    assert len(np.unique(arr[0, :, 0])) == W


def test_exif_orientation_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (W, H), (0, 0, 255))
    im.paste(RED, (0, 0, 8, 8))  # red marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif, quality=95)
    arr = load_image(path)
    _check_rgb(arr, (W, H))  # transposed shape
    assert _close(arr[:8, -8:], RED, tol=30)  # top-left went to top-right
    assert _close(arr[-8:, :8], (0, 0, 255), tol=30)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_damaged_exif_does_not_reject_the_image(tmp_path: Path) -> None:
    path = tmp_path / "badexif.jpg"
    Image.new("RGB", (W, H), RED).save(path, exif=b"Exif\x00\x00MM\x00*garbage")
    assert _close(load_image(path), RED)


def test_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (W, H), c) for c in (RED, (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as im:
        assert im.n_frames == 3  # type: ignore[attr-defined]
    arr = load_image(path)
    _check_rgb(arr)
    assert _close(arr, RED, tol=0)


def test_non_ascii_path(tmp_path: Path) -> None:
    path = tmp_path / "dossier_é" / "visage_été_顔.png"
    path.parent.mkdir()
    Image.new("RGB", (W, H), RED).save(path)
    assert _close(load_image(path), RED, tol=0)
    assert _close(load_image(str(path)), RED, tol=0)


# ----------------------------------------------------------------------------------- in-memory sources


@pytest.fixture
def red_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (W, H), RED).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, io.BytesIO])
def test_bytes_and_streams(red_png: bytes, wrap: type) -> None:
    arr = load_image(wrap(red_png))
    _check_rgb(arr)
    assert _close(arr, RED, tol=0)


def test_open_binary_file(tmp_path: Path, red_png: bytes) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(red_png)
    with path.open("rb") as f:
        assert _close(load_image(f), RED, tol=0)


def test_text_stream_refused(red_png: bytes) -> None:
    with pytest.raises(ImageError, match="binary"):
        load_image(io.StringIO("hello"))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16"])
def test_pil_input(mode: str) -> None:
    im = Image.new(mode, (W, H))
    arr = load_image(im)
    _check_rgb(arr)


def test_pil_input_with_orientation_is_not_mutated(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    path = tmp_path / "r.jpg"
    Image.new("RGB", (W, H), RED).save(path, exif=exif)
    with Image.open(path) as im:
        _check_rgb(load_image(im), (W, H))
        assert im.size == (W, H)  # the caller's image keeps its stored size


# ------------------------------------------------------------------------------------------ ndarrays


@pytest.mark.parametrize(
    ("arr", "order", "expected"),
    [
        (np.full((H, W, 3), RED, np.uint8), "rgb", RED),
        (np.full((H, W, 3), (0, 0, 255), np.uint8), "bgr", RED),  # OpenCV's red
        (np.full((H, W), 77, np.uint8), "rgb", (77, 77, 77)),
        (np.full((H, W, 1), 77, np.uint8), "bgr", (77, 77, 77)),
        (np.full((H, W, 4), (255, 0, 0, 255), np.uint8), "rgb", RED),
        (np.full((H, W, 4), (0, 0, 255, 255), np.uint8), "bgr", RED),
        (np.full((H, W, 4), (0, 0, 0, 0), np.uint8), "rgb", (255, 255, 255)),  # alpha composited on white
        (np.full((H, W, 3), (65535, 0, 0), np.uint16), "rgb", RED),
        (np.full((H, W), 32896, np.uint16), "rgb", (128, 128, 128)),
        (np.full((H, W, 3), (1.0, 0.0, 0.0), np.float32), "rgb", RED),
        (np.full((H, W, 3), (0.0, 0.0, 1.0), np.float64), "bgr", RED),
        (np.full((H, W), 0.5, np.float16), "rgb", (128, 128, 128)),
    ],
)
def test_arrays(arr: np.ndarray, order: str, expected: tuple[int, int, int]) -> None:
    out = load_image(arr, channel_order=order)  # type: ignore[arg-type]
    _check_rgb(out)
    assert _close(out, expected, tol=1), out[0, 0]


def test_array_output_never_aliases_input() -> None:
    arr = np.full((H, W, 3), 10, np.uint8)
    out = load_image(arr)
    out[:] = 0
    assert arr[0, 0, 0] == 10


def test_non_contiguous_array() -> None:
    big = np.zeros((H * 2, W * 2, 3), np.uint8)
    big[..., 0] = 255
    out = load_image(big[::2, ::2])
    _check_rgb(out)
    assert _close(out, RED, tol=0)


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.zeros((H,), np.uint8), "shape"),
        (np.zeros((2, H, W, 3), np.uint8), "shape"),
        (np.zeros((H, W, 2), np.uint8), "channels"),
        (np.zeros((H, W, 5), np.uint8), "channels"),
        (np.zeros((0, W, 3), np.uint8), "empty"),
        (np.zeros((H, 0), np.uint8), "empty"),
        (np.zeros((H, W, 3), np.int64), "dtype"),
        (np.zeros((H, W, 3), bool), "dtype"),
        (np.zeros((H, W, 3), np.complex64), "dtype"),
        (np.full((H, W, 3), 255.0, np.float32), r"\[0, 1\]"),
        (np.full((H, W, 3), -0.5, np.float32), r"\[0, 1\]"),
        (np.full((H, W, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_arrays(arr: np.ndarray, match: str) -> None:
    with pytest.raises(ImageError, match=match) as info:
        load_image(arr)
    assert "<array>" in str(info.value)


def test_array_pixel_limit() -> None:
    with pytest.raises(DecompressionBombError, match="<array>"):
        load_image(np.zeros((100, 100, 3), np.uint8), max_pixels=9_999)


# ------------------------------------------------------------------------------------------ refusals


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="no such file") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_zero_bytes(tmp_path: Path, as_bytes: bool) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(EmptyFileError):
        load_image(b"" if as_bytes else path)


def test_empty_stream() -> None:
    with pytest.raises(EmptyFileError, match="<stream>"):
        load_image(io.BytesIO(b""))


@pytest.mark.parametrize(("name", "make"), [("trunc.jpg", _noise_jpeg), ("trunc.png", _noise_png)])
@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated(tmp_path: Path, name: str, make: object, fraction: float) -> None:
    data = make()  # type: ignore[operator]
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CorruptImageError, match="trunc"):
        load_image(path)
    with pytest.raises(CorruptImageError, match="<bytes>"):
        load_image(data[: int(len(data) * fraction)])


def test_truncated_does_not_touch_global_flag(tmp_path: Path) -> None:
    from PIL import ImageFile

    data = _noise_jpeg()
    with pytest.raises(CorruptImageError):
        load_image(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def _random(n: int, seed: int) -> bytes:
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    return b"\x00" + data  # no image format starts with a zero byte


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff\xe0" + _random(4000, 2),  # JPEG SOI, then noise
        b"\x89PNG\r\n\x1a\n" + _random(4000, 3),  # PNG signature, then noise
        b"GIF89a" + _random(20, 4),
        b"RIFF\x10\x00\x00\x00WEBPVP8 " + _random(100, 5),
        b"II*\x00" + _random(100, 6),
    ],
    ids=["jpeg", "png", "gif", "webp", "tiff"],
)
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_with_valid_header(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.img"
    path.write_bytes(data)
    with pytest.raises(CorruptImageError):
        load_image(path)
    with pytest.raises(CorruptImageError):
        load_image(data)


def test_corrupt_png_data(tmp_path: Path) -> None:
    ihdr_ok_idat_bad = _png(W, H, b"this is not zlib data" * 10)
    with pytest.raises(CorruptImageError):
        load_image(ihdr_ok_idat_bad)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"hello, this is just some text\n" * 20, "not a supported"),
        (_random(5000, 7), "not a supported"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 100, "MP4"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "PDF"),
        (b"\x1aE\xdf\xa3" + b"\x00" * 100, "WebM"),
        (b"P6\n4 4\n255\n" + b"\x00" * 48, "not a supported"),  # a real image format we do not accept
    ],
    ids=["text", "random", "mp4", "pdf", "mkv", "ppm"],
)
def test_not_an_image(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "file.jpg"  # a misleading extension must not matter
    path.write_bytes(data)
    with pytest.raises(UnsupportedFormatError, match=match) as info:
        load_image(path)
    assert str(path) in str(info.value)
    with pytest.raises(UnsupportedFormatError, match="<bytes>"):
        load_image(data)


def test_eps_is_never_handed_to_ghostscript(tmp_path: Path) -> None:
    data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(UnsupportedFormatError):
        load_image(data)


def test_max_bytes(tmp_path: Path, red_png: bytes) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(red_png)
    limit = len(red_png) - 1
    for src in (path, red_png, io.BytesIO(red_png)):
        with pytest.raises(ImageError, match="limit"):
            load_image(src, max_bytes=limit)
    _check_rgb(load_image(path, max_bytes=len(red_png)))


class _EndlessStream(io.RawIOBase):
    """Never ends: load_image must stop reading at max_bytes + 1."""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        b[:] = b"\x00" * len(b)
        return len(b)


def test_endless_stream_refused_quickly() -> None:
    stream = _EndlessStream()
    with pytest.raises(ImageError, match="limit"):
        load_image(stream, max_bytes=1024 * 1024)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ decompression bombs


def _zero_idat(width: int, height: int) -> bytes:
    """Compressed rows of zeros for an 8-bit grayscale PNG: kilobytes that decode to ``width*height``."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    chunks = [comp.compress(row * 100) for _ in range(height // 100)]
    chunks.append(comp.compress(row * (height % 100)))
    return b"".join(chunks) + comp.flush()


@pytest.fixture(scope="module")
def real_bomb() -> bytes:
    """A genuine 10000x10000 all-black PNG: ~100 kB on disk, 100 Mpx once decoded."""
    return _png(10_000, 10_000, _zero_idat(10_000, 10_000))


@pytest.mark.parametrize(
    ("width", "height"),
    [(20_000, 20_000), (8_000, 8_000), (100_000, 1)],
)
def test_forged_header_bomb_refused_before_decoding(tmp_path: Path, width: int, height: int) -> None:
    # The header claims a huge image but the pixel data is junk: decoding would give CorruptImageError,
    # so getting DecompressionBombError proves the refusal comes from the header alone.
    data = _png(width, height, b"junk")
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    start = time.perf_counter()
    with pytest.raises(DecompressionBombError):
        load_image(path, max_pixels=min(DEFAULT_MAX_PIXELS, width * height - 1))
    with pytest.raises(DecompressionBombError):
        load_image(data, max_pixels=1000)
    assert time.perf_counter() - start < 1.0


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_real_bomb_refused_quickly(tmp_path: Path, real_bomb: bytes) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(real_bomb)
    assert path.stat().st_size < 1_000_000
    for kwargs in ({}, {"max_pixels": 1_000_000}):
        start = time.perf_counter()
        with pytest.raises(DecompressionBombError, match="pixels") as info:
            load_image(path, **kwargs)  # type: ignore[arg-type]
        assert time.perf_counter() - start < 1.0
        assert str(path) in str(info.value)


def test_pixel_limit_on_small_real_image(tmp_path: Path) -> None:
    path = tmp_path / "small.jpg"
    Image.new("RGB", (100, 100), RED).save(path)
    with pytest.raises(DecompressionBombError, match="100x100"):
        load_image(path, max_pixels=9_999)
    _check_rgb(load_image(path, max_pixels=10_000), (100, 100))
    with pytest.raises(DecompressionBombError, match="<PIL image>"):
        load_image(Image.new("RGB", (100, 100)), max_pixels=9_999)


# --------------------------------------------------------------------------------------- bad calls


def test_bad_call_arguments(red_png: bytes) -> None:
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channel_order"):
        load_image(red_png, channel_order="rgba")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        load_image(red_png, max_pixels=0)
