"""What `dfd scan` reads: local files, folders and globs (as `dfd detect`), CSV or Parquet listings of
paths or URIs, and object-store URIs (s3://, gs://, hdfs://, file://) through pyarrow's file systems.

A listing is recognised by its suffix (.csv, .parquet); its `path` column (or `uri`, or its only
column) names one input per row; relative paths are relative to the listing's folder. A URI may name
one object or a prefix, which is listed recursively for image files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from deepfake_detection.errors import DFDError, ImageError
from deepfake_detection.io.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from deepfake_detection.io.sources import InputItem, expand_inputs

LISTING_SUFFIXES = frozenset({".csv", ".parquet"})
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_PATH_COLUMNS = ("path", "uri")


def is_uri(path: str) -> bool:
    return bool(_URI.match(path))


def _listing_paths(listing: Path) -> list[str]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if listing.suffix.lower() == ".csv":  # every column as text: no type guessing on paths
            table = pacsv.read_csv(listing, convert_options=pacsv.ConvertOptions(
                column_types={}, strings_can_be_null=False, auto_dict_encode=False))
        else:
            table = pq.read_table(listing)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...: one message for the user
        raise DFDError(f"cannot read the listing {listing}: {exc}") from None
    names = table.column_names
    column = next((c for c in _PATH_COLUMNS if c in names), names[0] if len(names) == 1 else None)
    if column is None:
        raise DFDError(f"{listing}: no 'path' or 'uri' column (columns: {', '.join(names)})")
    root = listing.resolve().parent
    paths = []
    for value in table.column(column).cast("string").to_pylist():
        if value is None or not value.strip():
            continue
        value = value.strip()
        paths.append(value if is_uri(value) or os.path.isabs(value) else str(root / value))
    return paths


def _uri_objects(uri: str) -> list[str]:
    """One object, or every image under a prefix; a URI that names nothing is kept (its error record)."""
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(path)
        if info.type != fs.FileType.Directory:
            return [uri]
        selector = fs.FileSelector(path, recursive=True)
        found = sorted(i.path for i in filesystem.get_file_info(selector) if i.type == fs.FileType.File
                       and Path(i.path).suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    except Exception as exc:  # unknown scheme, no credentials, network errors
        raise DFDError(f"cannot list {uri}: {exc}") from None
    # Listed paths start with the prefix's own path: swap it for the URI (keeps scheme and host).
    base = path.rstrip("/")
    return [uri.rstrip("/") + p[len(base):] for p in found if p.startswith(base)]


def list_inputs(sources: Sequence[str]) -> list[InputItem]:
    """Every input once, in the order given (folders sorted, as `dfd detect`)."""
    seen: set[str] = set()
    items: list[InputItem] = []

    def add(found: Iterable[InputItem]) -> None:
        for item in found:
            key = item.path if is_uri(item.path) else os.path.abspath(item.path)
            if key not in seen:
                seen.add(key)
                items.append(item)

    for source in sources:
        if is_uri(source):
            add(InputItem(p) for p in _uri_objects(source))
        elif Path(source).suffix.lower() in LISTING_SUFFIXES and os.path.isfile(source):
            add(InputItem(p) for p in _listing_paths(Path(source)))
        else:
            add(expand_inputs([source]))
    return items


def read_uri(uri: str, max_bytes: int) -> bytes:
    """The bytes of one object, refused above `max_bytes` before reading (load_image checks them)."""
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.NotFound:
            raise ImageError(f"{uri}: no such object")
        if info.type != fs.FileType.File:
            raise ImageError(f"{uri}: not a file")
        if info.size is not None and info.size > max_bytes:
            raise ImageError(f"{uri}: object is {info.size} bytes, over the limit of {max_bytes} bytes")
        with filesystem.open_input_stream(path) as stream:
            data: bytes = stream.read(max_bytes + 1)
    except ImageError:
        raise
    except Exception as exc:  # network, permissions, unknown scheme
        raise ImageError(f"{uri}: cannot read ({exc})") from None
    return data
