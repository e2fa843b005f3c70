"""What `dfd scan` reads: local files, folders and globs (as `dfd detect`), CSV or Parquet listings of
paths or URIs, and object-store URIs (s3://, gs://, hdfs://, file://) through pyarrow's file systems.

A listing is recognised by its suffix (.csv, .parquet); its `path` column (or `uri`, or its only
column) names one input per row; a CSV without a `path`/`uri` header row is read as paths from its
first row. Local paths are relative to the listing's folder and must stay inside it (absolute paths,
file:// URIs and ../ are refused unless allowed); other URIs (s3://, gs://, ...) are kept. A URI may
name one object or a prefix, which is listed recursively for image files.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from deepfake_detection.errors import DFDError, ImageError
from deepfake_detection.io.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from deepfake_detection.io.sources import InputItem, expand_inputs

LISTING_SUFFIXES = frozenset({".csv", ".parquet"})
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_PATH_COLUMNS = ("path", "uri")


def is_uri(path: str) -> bool:
    return bool(_URI.match(path))


def _read_csv(listing: Path) -> Any:
    """The listing as a table of text columns. Its first row is a header only when it names a `path`
    or `uri` column; otherwise every row is an input (columns f0, f1, ...). No type guessing: `007`
    stays `007`."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(listing, newline="", encoding="utf-8-sig") as f:
        first = next(csv.reader(f), [])
    if not first:
        return pa.table({"path": pa.array([], pa.string())})
    header = any(name in _PATH_COLUMNS for name in first)
    names = first if header else [f"f{i}" for i in range(len(first))]
    return pacsv.read_csv(
        listing, read_options=pacsv.ReadOptions(column_names=None if header else names),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                             strings_can_be_null=False, auto_dict_encode=False))


def _listing_paths(listing: Path, *, allow_outside: bool = False) -> list[str]:
    import pyarrow.parquet as pq

    try:
        table = _read_csv(listing) if listing.suffix.lower() == ".csv" else pq.read_table(listing)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...: one message for the user
        raise DFDError(f"cannot read the listing {listing}: {exc}") from None
    names = table.column_names
    column = next((c for c in _PATH_COLUMNS if c in names), names[0] if len(names) == 1 else None)
    if column is None:
        raise DFDError(f"{listing}: no 'path' or 'uri' column (columns: {', '.join(names)})")
    root = listing.resolve().parent
    paths, outside = [], []
    for value in table.column(column).cast("string").to_pylist():
        if value is None or not value.strip():
            continue
        value = value.strip()
        if is_uri(value) and not value.lower().startswith("file:"):
            paths.append(value)  # object stores: the listing's folder says nothing about them
            continue
        absolute = is_uri(value) or os.path.isabs(value)  # file:// names an absolute path
        path = value if absolute else os.path.normpath(root / value)
        # As data/layouts/csv: a listing names files in its own folder, not /etc/... or ../../...
        if not allow_outside and (absolute or not Path(path).is_relative_to(root)):
            outside.append(value)
        paths.append(path)
    if outside:
        raise DFDError(f"{listing}: {len(outside)} entries are not inside its folder {root} (first: "
                       f"{outside[0]!r}); list paths relative to it, or pass --allow-outside-listing")
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


def list_inputs(sources: Sequence[str], *, allow_outside_listing: bool = False,
                skipped_videos: list[str] | None = None) -> list[InputItem]:
    """Every input once, in the order given (folders sorted, as `dfd detect`). A listing's local
    entries must lie inside its folder unless `allow_outside_listing`. Video files found in folders,
    globs and prefixes are left out (scan scores images) and appended to `skipped_videos`; a video
    named explicitly, or in a listing, stays an input (its row says to use `dfd detect`)."""
    seen: set[str] = set()
    items: list[InputItem] = []

    def add(found: Iterable[InputItem], *, named: bool = False) -> None:
        for item in found:
            key = item.path if is_uri(item.path) else os.path.abspath(item.path)
            if key in seen:
                continue
            seen.add(key)
            if not named and item.error is None and item.is_video:
                if skipped_videos is not None:
                    skipped_videos.append(item.path)
                continue
            items.append(item)

    for source in sources:
        if is_uri(source):
            add((InputItem(p) for p in _uri_objects(source)), named=not source.endswith("/")
                and Path(source).suffix.lower() in VIDEO_EXTENSIONS)
        elif Path(source).suffix.lower() in LISTING_SUFFIXES and os.path.isfile(source):
            add((InputItem(p) for p in _listing_paths(Path(source), allow_outside=allow_outside_listing)),
                named=True)
        else:
            add(expand_inputs([source]), named=os.path.isfile(source))
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
