"""Turn anything a user may pass into an RGB ``uint8`` array: the only way images enter the system.

Decisions (kept here so callers need not read the code):

* Output is always a fresh, writable, C-contiguous ``uint8`` array of shape ``(H, W, 3)`` in RGB order.
* Transparency (RGBA, LA, PA, palette or colour-key transparency, 4-channel arrays) is composited on
  **white**. The colour stored under fully transparent pixels is arbitrary (often black or leftovers of
  an edit) and would otherwise leak into the model; white is how viewers and web pages show such
  images, so the model sees what a person sees. Files and 4-channel arrays are treated alike, so
  ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` and the path give the same pixels.
* High bit depth is scaled, never clipped: 16-bit data (``I;16*`` modes, ``uint16`` arrays, and Pillow's
  32-bit ``I`` mode, which holds 16-bit data in practice) maps 0..65535 to 0..255. Float data (Pillow
  ``F`` mode, float arrays) must be in 0..1; float arrays outside it are refused rather than
  silently saturated (a 0..255 float array would otherwise come out all white).
* Only JPEG (and its multi-picture MPO variant), PNG, WebP, BMP, TIFF and GIF are decoded: other Pillow
  plugins (EPS, which runs Ghostscript, and many rarely audited ones) are never tried on untrusted input.
* The pixel limit is checked from the header, before any pixel is decoded. Pillow's own global limit
  (``Image.MAX_IMAGE_PIXELS``) is not changed: it is process-wide and mutating it is not thread-safe.
  Images Pillow refuses outright (over ``2 * MAX_IMAGE_PIXELS``, about 179 Mpx) are therefore refused
  with :class:`DecompressionBombError` whatever ``max_pixels`` says; between ``MAX_IMAGE_PIXELS`` and
  twice that, Pillow may emit its ``DecompressionBombWarning`` before our own check runs (turned into
  an error with ``-W error``, which we also map to :class:`DecompressionBombError`).
* Bad *data* raises an :class:`ImageError` subclass naming the source and the reason; a bad *call*
  (unsupported Python type, unknown ``channel_order``, non-positive limits) raises ``TypeError`` or
  ``ValueError``.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deepfake_detection.errors import (
    CorruptImageError,
    DecompressionBombError,
    EmptyFileError,
    ImageError,
    UnsupportedFormatError,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ImageSource",
    "load_image",
]

DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})

ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO | np.ndarray | Image.Image

# Pillow format names Image.open may try (the JPEG opener also returns multi-picture "MPO" files from phones).
_PIL_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
_SUPPORTED = "JPEG, PNG, WebP, BMP, TIFF, GIF"
_ORIENTATION_TAG = 0x0112
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_FLOAT_TOLERANCE = 1e-3  # float arrays may overshoot 0..1 by rounding noise; more is a caller bug


def _signature(head: bytes) -> str | None:
    """Name of the supported format whose magic number ``head`` starts with, if any."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if head.startswith(b"BM"):
        return "BMP"
    return None


def _describe_other(head: bytes) -> str:
    """A short hint for common non-image inputs, to make the error message actionable."""
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head[4:8] == b"ftyp":
        # The major brand and the compatible brands after it tell still images from videos.
        brands = {head[i:i + 4] for i in range(8, min(len(head), 64) - 3, 4)}
        if brands & {b"avif", b"avis"}:
            return "an AVIF image (convert it to JPEG or PNG)"
        if brands & {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}:
            return "a HEIC/HEIF image (convert it to JPEG or PNG)"
        return "an MP4/MOV video (score videos with dfd detect or Predictor.predict_video)"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "a Matroska/WebM video (use the video reader for videos)"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "an AVI video (use the video reader for videos)"
    return "not a supported image format"


def load_image(
    source: ImageSource,
    *,
    channel_order: Literal["rgb", "bgr"] = "rgb",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Load ``source`` as a C-contiguous ``uint8`` RGB array of shape ``(H, W, 3)``.

    ``source`` may be a path (``str``/``os.PathLike``), encoded bytes (``bytes``, ``bytearray``,
    ``memoryview``), a binary stream (read from its current position), a ``numpy`` array or a PIL image.
    ``channel_order`` only applies to arrays (``"bgr"`` for OpenCV arrays). Images declaring more than
    ``max_pixels`` pixels, and encoded inputs larger than ``max_bytes``, are refused before decoding.
    EXIF orientation is applied; for GIF/WebP/APNG/TIFF the first frame is returned.

    Raises :class:`ImageError` (or a subclass) when the data cannot be turned into an image.
    """
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if max_pixels <= 0 or max_bytes <= 0:
        raise ValueError("max_pixels and max_bytes must be positive")

    if isinstance(source, np.ndarray):
        return _from_array(source, channel_order, max_pixels)
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, "<PIL image>")
        return _decode(source, "<PIL image>")
    if isinstance(source, bytes | bytearray | memoryview):
        data = source if not isinstance(source, memoryview) else source.tobytes()
        return _from_buffer(data, "<bytes>", max_pixels, max_bytes)
    if isinstance(source, str | os.PathLike):
        return _from_path(source, max_pixels, max_bytes)
    if hasattr(source, "read"):
        name = "<stream>"
        # Read at most one byte past the limit so an endless or huge stream cannot exhaust memory.
        try:
            data = source.read(max_bytes + 1)
        except OSError as e:
            raise ImageError(f"{name}: cannot read stream ({e})") from None
        if not isinstance(data, bytes | bytearray):
            raise ImageError(
                f"{name}: stream must be opened in binary mode (read() returned {type(data).__name__})"
            )
        return _from_buffer(data, name, max_pixels, max_bytes)
    raise TypeError(f"cannot load an image from {type(source).__name__}")


def _from_path(path: str | os.PathLike[str], max_pixels: int, max_bytes: int) -> np.ndarray:
    name = os.fsdecode(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        broken = os.path.islink(path)
        raise ImageError(f"{name}: {'a broken symbolic link' if broken else 'no such file'}") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImageError(f"{name}: a symbolic link loop (the link points back to itself)") from None
        raise ImageError(f"{name}: cannot access file ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{name}: is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):  # FIFOs and devices could block or never end
        raise ImageError(f"{name}: not a regular file")
    if st.st_size == 0:
        raise EmptyFileError(f"{name}: file is empty (0 bytes)")
    if st.st_size > max_bytes:
        raise ImageError(f"{name}: file is {st.st_size} bytes, over the limit of {max_bytes} bytes")
    # Pillow opens and reads the file itself (lazily, no extra copy of the encoded bytes).
    return _open_and_decode(path, name, max_pixels)


def _from_buffer(data: bytes | bytearray, name: str, max_pixels: int, max_bytes: int) -> np.ndarray:
    if len(data) == 0:
        raise EmptyFileError(f"{name}: no data (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(f"{name}: data is over the limit of {max_bytes} bytes")
    return _open_and_decode(io.BytesIO(data), name, max_pixels)


def _read_head(fp: str | os.PathLike[str] | io.BytesIO) -> bytes:
    """First bytes of the input, only used on the error path to tell corrupt from unsupported."""
    try:
        if isinstance(fp, io.BytesIO):
            return fp.getvalue()[:64]
        with open(fp, "rb") as f:
            return f.read(64)
    except OSError:
        return b""


def _open_and_decode(fp: str | os.PathLike[str] | io.BytesIO, name: str, max_pixels: int) -> np.ndarray:
    try:
        im = Image.open(fp, formats=_PIL_FORMATS)  # lazy: reads the header only
    except UnidentifiedImageError:
        head = _read_head(fp)
        fmt = _signature(head)
        if fmt is not None:
            raise CorruptImageError(f"{name}: has a {fmt} header but cannot be decoded") from None
        raise UnsupportedFormatError(f"{name}: {_describe_other(head)} (supported: {_SUPPORTED})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecompressionBombError(f"{name}: refused by Pillow's pixel limit ({e})") from None
    except OSError as e:
        if e.errno is not None:  # a real I/O error (permissions, disk), not a Pillow parsing complaint
            raise ImageError(f"{name}: cannot read file ({e.strerror or e})") from None
        raise CorruptImageError(f"{name}: damaged image header ({e})") from None
    except MemoryError:
        raise
    except Exception as e:  # a plugin accepted the header, then choked on the rest of it
        raise CorruptImageError(f"{name}: damaged image header ({type(e).__name__}: {e})") from None
    with im:  # closes the file Pillow opened, once the pixels are in memory
        _check_pixels(im.size, max_pixels, name)
        return _decode(im, name)


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"{name}: image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise DecompressionBombError(
            f"{name}: image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} pixels (possible decompression bomb)"
        )


def _decode(im: Image.Image, name: str) -> np.ndarray:
    """Decode the pixels of ``im`` (already size-checked) and convert them to RGB uint8."""
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecompressionBombError(f"{name}: refused by Pillow's pixel limit ({e})") from None
    except MemoryError:
        raise
    except Exception as e:  # Pillow decoders raise an open-ended set of errors on damaged data
        # Truncated files land here ("image file is truncated"): we never set LOAD_TRUNCATED_IMAGES,
        # because a half-grey image would be scored as if it were real.
        raise CorruptImageError(f"{name}: cannot decode image data ({type(e).__name__}: {e})") from None
    im = _apply_orientation(im)
    try:
        return _to_rgb(im)
    except MemoryError:
        raise
    except Exception as e:
        raise CorruptImageError(f"{name}: cannot convert {im.mode} image ({type(e).__name__}: {e})") from None


def _apply_orientation(im: Image.Image) -> Image.Image:
    try:
        orientation = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # EXIF is optional metadata: a damaged block must not reject the image
        return im
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        # Only transposes when needed: exif_transpose copies the image even when there is nothing to do.
        return ImageOps.exif_transpose(im)
    return im


def _to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    # Palette and colour-key (tRNS) transparency count too; 16-bit colour keys are rare and ignored.
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"))
        return _composite_on_white(rgba[:, :, :3], rgba[:, :, 3])
    if mode == "RGB":  # the common case (JPEG photos): no conversion
        return _owned(np.asarray(im))
    if mode.startswith("I;16") or mode == "I":
        # Pillow's convert() clips 16-bit values to 255; scale the full range instead.
        gray = _scale_uint16(np.clip(np.asarray(im), 0, 65535))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = _scale_unit_float(np.nan_to_num(np.asarray(im), nan=0.0))
        return np.repeat(gray[:, :, None], 3, axis=2)
    # L, 1, P, CMYK, YCbCr, LAB, HSV: Pillow's conversions are exact for these.
    return _owned(np.asarray(im.convert("RGB")))


def _owned(arr: np.ndarray) -> np.ndarray:
    """A writable C-contiguous array: np.asarray(PIL image) is a read-only view of a bytes object."""
    if arr.flags.writeable and arr.flags.c_contiguous and arr.flags.owndata:
        return arr
    return np.array(arr, dtype=np.uint8, order="C", copy=True)


def _scale_uint16(a: np.ndarray) -> np.ndarray:
    # Round to nearest: 65535 -> 255, 32896 -> 128 (a plain >> 8 would bias everything down).
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _scale_unit_float(a: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.uint16)[:, :, None]
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return np.ascontiguousarray(out.astype(np.uint8))


def _from_array(arr: np.ndarray, channel_order: str, max_pixels: int) -> np.ndarray:
    name = "<array>"
    if arr.ndim not in (2, 3):
        raise ImageError(f"{name}: expected shape (H, W) or (H, W, C), got {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise ImageError(f"{name}: expected 1, 3 or 4 channels, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{name}: empty image of shape {arr.shape}")
    _check_pixels((arr.shape[1], arr.shape[0]), max_pixels, name)

    if arr.dtype == np.uint8:
        u8 = arr
    elif arr.dtype == np.uint16:
        u8 = _scale_uint16(arr)
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ImageError(f"{name}: float image contains NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -_FLOAT_TOLERANCE or hi > 1 + _FLOAT_TOLERANCE:
            raise ImageError(
                f"{name}: float images must be in [0, 1], got values in [{lo:g}, {hi:g}] "
                "(divide by 255 or pass a uint8 array)"
            )
        u8 = _scale_unit_float(arr)
    else:
        raise ImageError(f"{name}: unsupported dtype {arr.dtype} (use uint8, uint16 or float in [0, 1])")

    if u8.ndim == 2 or u8.shape[2] == 1:
        gray = u8.reshape(u8.shape[0], u8.shape[1], 1)
        return np.ascontiguousarray(np.repeat(gray, 3, axis=2))
    if channel_order == "bgr":
        u8 = u8[:, :, [2, 1, 0, 3]] if u8.shape[2] == 4 else u8[:, :, ::-1]
    if u8.shape[2] == 4:
        return _composite_on_white(u8[:, :, :3], u8[:, :, 3])
    # Always a fresh array: the caller's buffer must never alias (and be mutated through) our output.
    return np.array(u8, order="C", copy=True) if u8 is arr else np.ascontiguousarray(u8)
