"""Make the pseudo-fake sample images from the public-domain portraits in samples/.

Each `*_selfblended.jpg` is the project's own self-blended image (data/blend.py, the recipe the default
model trains with) of the matching real portrait: the face found by RetinaFace, its 5 landmarks, a
full-strength blend (ratio 1), random seed 0, saved as JPEG quality 95. Nothing is chosen by looking
at the model's score; `samples/README.md` gives the model's hit rate over many seeds.

    .venv/bin/python scripts/make_samples.py
"""

from __future__ import annotations

from pathlib import Path

from deepfake_detection.io.atomic import atomic_path
from deepfake_detection.io.images import load_image
from dfd_testkit.synthetic import self_blended

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
PORTRAITS = ("astronaut", "grace_hopper")


def main() -> int:
    from PIL import Image

    for name in PORTRAITS:
        fake = self_blended(load_image(SAMPLES / f"{name}.jpg"), seed=0)
        out = SAMPLES / f"{name}_selfblended.jpg"
        with atomic_path(out) as tmp:
            Image.fromarray(fake).save(tmp, format="JPEG", quality=95)
        print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
