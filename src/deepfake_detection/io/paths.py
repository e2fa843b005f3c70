"""Paths in outputs and output targets: checked before any work, written without loss or injection.

File names on Linux are bytes. Python gives a name that is not valid UTF-8 (`b"\\xff\\xfe.jpg"`) back
as a str with surrogate escapes ("\\udcff\\udcfe.jpg"), which no UTF-8 writer accepts: one such name
used to make every output format fail and lose the batch. The rules, one per format:

* JSON and JSONL: the surrogates are written as JSON escapes (`"\\udcff\\udcfe.jpg"`): valid JSON,
  and `os.fsencode(json.loads(line)["path"])` gives back the exact bytes.
* CSV: the name's own bytes (Python's `surrogateescape`), as `ls > file` writes them; read it back with
  `open(..., encoding="utf-8", errors="surrogateescape")`. Cells that a spreadsheet would run as a
  formula (starting with `=`, `+`, `-`, `@`, tab or carriage return) get a leading `'`.
* Parquet (`dfd scan`): `path` is text with undecodable bytes shown as `\\xNN`, and `path_bytes`
  holds the exact bytes for such names (null otherwise).
* The table (for people): names with control characters, undecodable bytes, backslashes or quotes
  are shown quoted with backslash escapes (`"new\\nline.jpg"`), so a name cannot forge a row or send
  escape sequences to the terminal.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from deepfake_detection.io.atomic import check_writable, unwritable_folder

__all__ = ["STDOUT", "check_output_dir", "check_output_file", "csv_cell", "display_path", "is_stdout",
           "json_safe", "path_bytes", "terminal_text"]

STDOUT = "-"  # `-o -`: write to standard output
_SURROGATES = re.compile("[\ud800-\udfff]")
_NEEDS_QUOTING = re.compile(r'[\x00-\x1f\x7f-\x9f\\"\ud800-\udfff]')
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"'}


def is_stdout(target: str | os.PathLike[str] | None) -> bool:
    return target is not None and os.fspath(target) == STDOUT


def check_output_file(target: str | os.PathLike[str] | None) -> None:
    """OutputError now, before any work, unless `target` (a file; None or `-`: stdout) can be written."""
    if target is not None and not is_stdout(target):
        check_writable(target)


def check_output_dir(folder: str | os.PathLike[str] | None) -> None:
    """OutputError now unless `folder` is (or can be made) a writable folder; it is created."""
    from deepfake_detection.errors import OutputError

    if folder is None:
        return
    path = Path(folder)
    reason = unwritable_folder(path)
    if reason is not None:
        raise OutputError(f"cannot write into {path}: {reason}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {path}: {exc.strerror or exc}") from None


def path_bytes(path: str) -> bytes | None:
    """The exact bytes of a name that is not valid UTF-8 (None for ordinary names)."""
    try:
        path.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return os.fsencode(path)


def display_path(path: str) -> str:
    """Valid UTF-8 text for a path: undecodable bytes as `\\xNN` (Parquet's `path` column)."""
    raw = path_bytes(path)
    return path if raw is None else raw.decode("utf-8", "backslashreplace")


def json_safe(text: str) -> str:
    """JSON text (from json.dumps(..., ensure_ascii=False)) with lone surrogates as JSON escapes."""
    return _SURROGATES.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def csv_cell(value: object) -> object:
    """A CSV cell no spreadsheet runs as a formula: text starting with = + - @ (or tab, CR) gets `'`.
    Numbers stay numbers (a negative probability cannot occur, but -1 is not a formula anyway)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _escape_char(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def terminal_text(text: str) -> str:
    """`text` as is when it is plain; else quoted with backslash escapes: no control character,
    escape sequence or undecodable byte reaches the terminal, and a newline cannot forge a row."""
    if not _NEEDS_QUOTING.search(text):
        return text
    return '"' + _NEEDS_QUOTING.sub(lambda m: _escape_char(m.group()), text) + '"'
