"""Generated media for tests, benchmarks and demos: scenes with public-domain faces pasted in, clips.

The faces come from public-domain portraits that packages ship (scikit-image's astronaut, a
development dependency, and matplotlib's Grace Hopper); nothing from ../shared/data.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


@cache
def portraits() -> tuple[np.ndarray, ...]:
    """Face regions of two public-domain portraits (scikit-image's astronaut, matplotlib's Hopper)."""
    from matplotlib import cbook
    from skimage import data

    hopper = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    astronaut = data.astronaut()[20:260, 120:320]
    return (np.ascontiguousarray(astronaut), np.ascontiguousarray(hopper[40:420, 60:460]))


def scene(rng: np.random.Generator, size: tuple[int, int] = (480, 640), face: int | None = 0,
          scale: float = 1.0) -> np.ndarray:
    """A noisy random-colour background with one portrait pasted at a random place (RGB)."""
    h, w = size
    colour = rng.uniform(40, 200, 3)
    canvas = np.clip(colour + rng.normal(0, 15, (h, w, 3)), 0, 255).astype(np.uint8)
    if face is None:
        return canvas
    patch = portraits()[face % 2]
    patch = cv2.resize(patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    ph, pw = patch.shape[:2]
    y, x = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    canvas[y : y + ph, x : x + pw] = patch
    return canvas


def write_image(path: Path, image: np.ndarray, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=quality)
    return path


def write_clip(path: Path, frames: Iterable[np.ndarray], fps: float = 25.0, *, h264: bool = False) -> Path:
    """An MP4 clip from RGB frames (a list or a generator: long 720p clips need not fit in memory):
    MPEG-4 part 2 with OpenCV, or H.264 (libx264 from imageio-ffmpeg, a development dependency:
    OpenCV's wheels carry no H.264 encoder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)
    first = next(frames)
    frames = itertools.chain([first], frames)
    h, w = first.shape[:2]
    if h264:
        import imageio_ffmpeg

        writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec="libx264", quality=None,
                                             output_params=["-crf", "23", "-preset", "veryfast"],
                                             macro_block_size=8)
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        return path
    cv_writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    for frame in frames:
        cv_writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    cv_writer.release()
    return path


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 15) -> Path:
    """A raw YUV 4:2:0 clip: what Chromium's fake camera plays (--use-file-for-fake-video-capture)."""
    h, w = frames[0].shape[:2]
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def webcam_frame(rng: np.random.Generator) -> np.ndarray:
    """A 640x480 camera frame (what the web page asks the camera for) with one large face in it."""
    frame = scene(rng, (480, 640), face=None)
    frame[100:340, 220:420] = portraits()[0]
    return frame


def moving_face_clip(path: Path, rng: np.random.Generator, n: int = 40, size: tuple[int, int] = (360, 480),
                     face: int = 0, *, h264: bool = False, count: int = 1, patch: np.ndarray | None = None,
                     scale: float = 0.6, fps: float = 25.0) -> Path:
    """A clip where portraits slide across a fixed background: `count` faces, one per horizontal band,
    alternately left to right and right to left (`patch`: paste this RGB face instead of a portrait)."""
    h, w = size
    background = scene(rng, size, face=None)
    band = h // count
    patches = []
    for i in range(count):
        source = patch if patch is not None else portraits()[(face + i) % 2]
        k = min(scale, 0.9 * band / source.shape[0], 0.45 * w / source.shape[1])
        patches.append(cv2.resize(source, None, fx=k, fy=k, interpolation=cv2.INTER_AREA))

    def frames() -> Iterator[np.ndarray]:
        for t in range(n):
            frame = background.copy()
            for i, piece in enumerate(patches):
                ph, pw = piece.shape[:2]
                progress = t / max(n - 1, 1)
                x = int((w - pw) * (progress if i % 2 == 0 else 1 - progress))
                y = i * band + (band - ph) // 2
                frame[y : y + ph, x : x + pw] = piece
            yield frame

    return write_clip(path, frames(), fps, h264=h264)


def self_blended(image: np.ndarray, seed: int = 0, *, full_strength: bool = True) -> np.ndarray:
    """A pseudo-fake of a real RGB photo: its biggest face self-blended (data/blend.py, the recipe the
    default model trains with), from RetinaFace's 5 landmarks. full_strength: blend ratio 1."""
    from deepfake_detection.data.blend import BlendConfig, self_blend
    from deepfake_detection.faces import create_detector

    faces = create_detector("auto").detect(image)
    if not faces or faces[0].landmarks is None:
        raise ValueError("no face with landmarks found")
    cfg = BlendConfig(blend_ratios=(1.0,)) if full_strength else BlendConfig()
    fake, _ = self_blend(image, faces[0].landmarks, np.random.default_rng(seed), cfg=cfg)
    return fake
