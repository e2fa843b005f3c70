"""Typed errors. Every failure a user can cause maps to one of these, never a bare crash."""

from __future__ import annotations


class DFDError(Exception):
    """Base class of every error this package raises on purpose."""


class ImageError(DFDError):
    """An input could not be turned into an image."""


class EmptyFileError(ImageError):
    """The file or buffer holds zero bytes."""


class UnsupportedFormatError(ImageError):
    """The data is not an image format we decode (text, PDF, video, ...)."""


class CorruptImageError(ImageError):
    """The data claims to be an image but cannot be decoded (truncated or damaged)."""


class DecompressionBombError(ImageError):
    """The image declares more pixels than the configured limit; refused before decoding."""


class ModelError(DFDError):
    """A model file is missing, unreadable, or does not match its checksum or spec."""


class UnknownModelError(ModelError):
    """An architecture name is not in the registry."""


class DatasetError(DFDError):
    """A dataset root, listing, split or manifest is unrecognised, malformed or inconsistent."""


class MissingExtraError(DFDError):
    """A feature needs an optional extra that is not installed; the message says how to install it."""


class OutputError(DFDError):
    """An output file or folder cannot be written (missing permission, a folder in the way, ...)."""
