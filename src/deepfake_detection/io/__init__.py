"""Input readers: images (and, elsewhere in this package, folders and videos)."""

from deepfake_detection.io.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    load_image,
)

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "load_image"]
