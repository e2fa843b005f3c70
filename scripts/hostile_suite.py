"""The hostile-input suite: everything a careless user or an attacker throws at `dfd`, in one run.

Categories: the bad-image corpus, odd file names in every output format, unreadable and looping paths,
bad arguments for every command, signals (SIGINT, SIGTERM, SIGKILL then a re-run) and attacks on a real
`dfd serve` on loopback (half-sent requests, a stalled upload, idle streams, DNS rebinding). Each try
counts as a clear error (refused or recorded with a reason, or handled as designed), a crash (a
traceback, an internal error, an unexpected exit code) or a lost output (results that should have
been published and were not). It prints a table and exits 1 when anything crashed or was lost.

    .venv/bin/python scripts/hostile_suite.py [--quick]

CI runs it through tests/test_hostile.py (part of scripts/test.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-m", "deepfake_detection.cli"]
JSONL = ["--format", "jsonl", "--no-progress"]


@dataclass
class Row:
    category: str
    tried: int = 0
    clear: int = 0
    crashes: int = 0
    lost: int = 0
    notes: list[str] = field(default_factory=list)

    def outcome(self, *, clear: bool = True, crash: bool = False, lost: bool = False, note: str = "") -> None:
        """One try: `crash` and `lost` are failures (with a `note` saying what)."""
        self.tried += 1
        self.crashes += crash
        self.lost += lost
        self.clear += clear and not crash and not lost
        if (crash or lost) and note:
            self.notes.append(note)


def _jpeg(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG")
    return buffer.getvalue()


def _portrait() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[::2, ::2])


def _png_bomb(width: int, height: int) -> bytes:
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _run(args: list[str], timeout: float = 300, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, errors="surrogateescape", **kwargs
    )  # type: ignore[call-overload]


def _crashed(stderr: str) -> bool:
    return "Traceback (most recent call last)" in stderr


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the bad-image corpus ------------------------------------------------------------------------


def bad_images(work: Path) -> Row:
    row = Row("bad-image corpus")
    folder = work / "corpus"
    folder.mkdir()
    good = _jpeg(_portrait())
    corpus = {
        "empty.jpg": b"",
        "truncated.jpg": good[: len(good) // 3],
        "corrupt.jpg": b"\xff\xd8\xff\xe0" + os.urandom(3000),
        "random.png": os.urandom(4000),
        "document.jpg": b"%PDF-1.7\n" + os.urandom(500),
        "text.jpg": b"hello, I am not an image\n",
        "bomb.png": _png_bomb(60_000, 60_000),
        "clip-named.jpg": b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + os.urandom(500),
        "photo.avif": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + os.urandom(200),
        "photo.heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + os.urandom(200),
        "zero.mp4": b"",
        "noise.mp4": os.urandom(20_000),
        "tiny.gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        "ok.jpg": good,
    }
    for name, data in corpus.items():
        (folder / name).write_bytes(data)
    os.mkfifo(folder / "fifo.jpg")  # would block a reader that opens it
    (folder / "folder.jpg").mkdir()  # a folder with an image name
    out = work / "corpus.jsonl"
    named = ["fifo.jpg", "photo.avif", "photo.heic"]  # not image extensions: only named ones are inputs
    done = _run(["detect", str(folder), *(str(folder / n) for n in named), *JSONL, "-o", str(out)])
    if _crashed(done.stderr) or done.returncode not in (0, 1):
        row.outcome(crash=True, note=f"detect exit {done.returncode}: {done.stderr[-300:]}")
        return row
    records = {Path(str(r["path"])).name: r for r in _records(out)} if out.exists() else {}
    for name in [*corpus, "fifo.jpg"]:
        record = records.get(name)
        if record is None:
            row.outcome(lost=True, note=f"no record for {name}")
            continue
        error = str(record.get("error") or "")
        internal = "internal error" in error
        row.outcome(crash=internal, note=f"{name}: {error}")
    return row


# --- odd file names ------------------------------------------------------------------------------

ODD_NAMES = [
    os.fsdecode(b"latin1-\xe9t\xe9.jpg"),
    os.fsdecode(b"\xff\xfe.jpg"),
    "new\nline.jpg",
    "esc\x1b[2Jclear.jpg",
    '=HYPERLINK("x").jpg',
    "+1.jpg",
    "-dash.jpg",
    "@at.jpg",
    "tab\there.jpg",
    "quote\"and'.jpg",
    "back\\slash.jpg",
    "spaces  .jpg",
    "日本語.jpg",
    "r" * 250 + ".jpg",
]


def odd_names(work: Path) -> Row:
    row = Row("odd file names x 4 formats")
    folder = work / "names"
    folder.mkdir()
    good = _jpeg(_portrait())
    for name in ODD_NAMES:
        (folder / name).write_bytes(good)
    expected = sorted(os.listdir(folder))
    for fmt in ("jsonl", "json", "csv", "table"):
        out = work / f"names.{fmt}"
        done = _run(["detect", str(folder), "--format", fmt, "-o", str(out), "--no-progress"])
        if _crashed(done.stderr) or done.returncode != 0:
            row.outcome(crash=True, note=f"{fmt}: exit {done.returncode}: {done.stderr[-300:]}")
            continue
        if not out.exists():
            row.outcome(lost=True, note=f"{fmt}: no output file")
            continue
        found = _names_in(out, fmt)
        missing = [n for n in expected if n not in found]
        injected = fmt == "table" and (
            "\x1b" in out.read_text(errors="replace")
            or len(out.read_text(errors="replace").splitlines()) != len(expected) + 1
        )
        formula = fmt == "csv" and any(
            line.split(",", 1)[0].startswith(("=", "+", "-", "@"))
            for line in out.read_text(errors="replace").splitlines()[1:]
        )
        for name in expected:
            row.outcome(lost=name in missing, note=f"{fmt}: {name!r} lost")
        if injected or formula:
            row.outcome(crash=True, note=f"{fmt}: injection reached the output")
    return row


def _names_in(out: Path, fmt: str) -> set[str]:
    import csv

    if fmt == "jsonl":
        return {Path(str(r["path"])).name for r in _records(out)}
    if fmt == "json":
        return {Path(r["path"]).name for r in json.loads(out.read_text(encoding="utf-8"))}
    if fmt == "csv":
        with open(out, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            return {Path(r["path"]).name for r in csv.DictReader(handle)}
    from deepfake_detection.io.paths import terminal_text

    text = out.read_text(encoding="utf-8")
    return {name for name in ODD_NAMES if terminal_text(name) in text or terminal_text(name)[1:-1] in text}


# --- unreadable and looping paths ----------------------------------------------------------------


def bad_paths(work: Path) -> Row:
    row = Row("unreadable and looping paths")
    folder = work / "paths"
    folder.mkdir()
    (folder / "loop.jpg").symlink_to("loop.jpg")
    (folder / "a.jpg").symlink_to("b.jpg")
    (folder / "b.jpg").symlink_to("a.jpg")
    (folder / "broken.jpg").symlink_to("nowhere.jpg")
    (folder / "cycle").mkdir()
    (folder / "cycle" / "up").symlink_to("..", target_is_directory=True)  # a folder cycle
    named = [folder / "loop.jpg", folder / "a.jpg", folder / "broken.jpg", folder / "missing.jpg"]
    locked: Path | None = None
    if os.geteuid() != 0:
        locked = folder / "locked"
        locked.mkdir()
        (locked / "x.jpg").write_bytes(b"x")
        locked.chmod(0)
        secret = folder / "secret.jpg"
        secret.write_bytes(_jpeg(_portrait()))
        secret.chmod(0)
        named += [locked, secret]
    elif _unlistable(Path("/proc/1/map_files")):
        named.append(Path("/proc/1/map_files"))
    out = work / "paths.jsonl"
    done = _run(
        ["detect", str(folder), *map(str, named), "--format", "jsonl", "-o", str(out), "--no-progress"],
        timeout=120,
    )
    if locked is not None:
        locked.chmod(0o755)
    if _crashed(done.stderr) or done.returncode not in (0, 1):
        row.outcome(crash=True, note=f"exit {done.returncode}: {done.stderr[-300:]}")
        return row
    records = {str(r["path"]): r for r in _records(out)} if out.exists() else {}
    for path in named:
        record = records.get(str(path))
        reason = str((record or {}).get("error") or "")
        # "no such file" is right only for the path that is really missing
        vague = "no such file" in reason and path.name != "missing.jpg"
        row.outcome(
            lost=record is None,
            crash=vague or "internal error" in reason,
            note=f"{path.name}: {reason or 'no record'}",
        )
    return row


def _unlistable(folder: Path) -> bool:
    try:
        os.listdir(folder)
    except PermissionError:
        return True
    except OSError:
        return False
    return False


# --- bad arguments for every command --------------------------------------------------------------

# One command line a line (no argument holds a space); "(nothing)": `dfd` alone.
BAD_ARGUMENTS: list[list[str]] = [[] if line == "(nothing)" else line.split() for line in """
(nothing)
frobnicate
--bogus
detect
detect x --batch-size 0
detect x --batch-size -3
detect x --max-pixels 0
detect x --threshold 1.5
detect x --threshold nan
detect x --threshold abc
detect x --frames 4 --stride 2
detect x --frames 0
detect x --workers 0
detect x --format xml
detect x --bogus
detect {img} --model {img}
detect {img} --model {work}
detect {img} --model missing.onnx
detect {img} --detector nope
detect {img} -o {work}
detect {img} -o /proc/self/x/r.jsonl
detect {img} --annotate {img}
detect {img} --plot /proc/self/x
detect {work}/nothing-here
live --source {work}
live --source {work}/missing.mp4 --no-display
live --max-faces 0
live --threshold 2
live --source {work}/missing.mp4 --save out.txt
prepare
prepare {work} --out {img}
prepare {work}/nope --out {work}/p
prepare x --out o --frames 3 --stride 2
prepare x --out o --crop-size 0
prepare {work} --out {work}/p --layout nonsense
prepare x --out o --crop-scale -1
prepare x --out o --max-side 10
evaluate {img} {work} --out {img}
evaluate missing.onnx {work} --out {work}/e
evaluate m d --out o --bootstrap -1
evaluate {img} {work} --out {work}/e
calibrate
calibrate {img} {work} --out {work}/cal
calibrate {work}/missing.safetensors {work} --out {work}/cal
calibrate m.safetensors d --out o --tta vflip
calibrate m.safetensors d --out o --target-fpr 2
compare {work} --out {img}
compare {work}/nope --out {work}/c
augment-preview {work}/nope.jpg --out {work}/s.png
augment-preview {img} --out {work}/s.png --count 0
augment-preview {img} --out {work}/s.png --config {img}
train
train --config {work}/nope.yaml
train --config {img}
train --config configs/tiny.yaml --set nonsense
scan
scan x -o -
scan x -o {work}
scan x -o r.parquet --batch-size 0
scan {img} -o /proc/self/x/r.parquet
serve --port -1
serve --port 70000
serve --workers 0
serve --rate-limit fast
serve --max-upload-mb 0
serve --header-timeout 0
serve --model {img} --port 0 --jobs-dir {work}/jobs
serve --port 0 --no-explain --jobs-dir /proc/self/jobs
models --bogus
""".strip().splitlines()]


def bad_arguments(work: Path) -> Row:
    row = Row("bad arguments, every command")
    img = work / "args.jpg"
    img.write_bytes(_jpeg(_portrait()))
    for args in BAD_ARGUMENTS:
        argv = [a.format(img=img, work=work) for a in args]
        code, err, crash = _main(argv)
        # 2: usage error; 1: a one-line "error:", or a record saying why (a missing input)
        clear = code in (1, 2) and not crash and bool(err.strip())
        row.outcome(
            clear=clear,
            crash=crash or not clear,
            note=f"dfd {' '.join(argv)} -> exit {code}: {err.strip()[-200:]}",
        )
    return row


def _main(argv: list[str]) -> tuple[int | None, str, bool]:
    """main(argv) in this process: (exit code, stderr, crashed)."""
    import logging

    from deepfake_detection.cli import main

    err = io.StringIO()
    handler = logging.StreamHandler(err)
    logging.getLogger().addHandler(handler)
    code: int | None
    out = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 2
    except Exception as exc:  # an exception out of main is a crash by definition
        return None, f"{type(exc).__name__}: {exc}", True
    finally:
        logging.getLogger().removeHandler(handler)
    text = err.getvalue() + out.getvalue()
    return code, text, _crashed(text)


# --- signals ---------------------------------------------------------------------------------------


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


def _partial_output_written(folder: Path) -> bool:
    return any(p.stat().st_size > 0 for p in _temporaries(folder))


def _wait(predicate: Callable[[], bool], timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def signals(work: Path, quick: bool) -> Row:
    row = Row("signals (INT, TERM, KILL + re-run)")
    folder = work / "many"
    good = _jpeg(_portrait())
    for i in range(150):
        (folder / f"{i:03d}.jpg").parent.mkdir(exist_ok=True)
        (folder / f"{i:03d}.jpg").write_bytes(good)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        out_dir = work / f"sig-{sig.name}"
        out_dir.mkdir()
        out = out_dir / "r.jsonl"
        args = [*CLI, "detect", str(folder), *JSONL, "-o", str(out), "--workers", "1"]
        # SIGINT back to its default in the child: a suite started in the background by a
        # non-interactive shell inherits SIGINT ignored, and the child would rightly ignore it too.
        proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
        started = _wait(functools.partial(_partial_output_written, out_dir))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        if not started:
            row.outcome(crash=True, note=f"{sig.name}: detect never started writing: {err[-200:]}")
            continue
        if sig == signal.SIGKILL:  # nothing to publish; the re-run must clean up and finish
            again = _run(["detect", str(folder), "--format", "jsonl", "-o", str(out), "--no-progress"])
            complete = out.exists() and len(_records(out)) == 150
            row.outcome(
                crash=_crashed(again.stderr) or again.returncode != 0,
                lost=not complete or bool(_temporaries(out_dir)),
                note=f"SIGKILL then re-run: exit {again.returncode}, temporaries {_temporaries(out_dir)}",
            )
            continue
        published = out.exists() and 0 < len(_records(out)) <= 150
        row.outcome(
            crash=_crashed(err) or proc.returncode != 128 + sig,
            lost=not published or bool(_temporaries(out_dir)),
            note=f"{sig.name}: exit {proc.returncode}: {err[-200:]}",
        )
    row = _live_sigterm(work, row)
    if not quick:
        row = _prepare_sigkill(work, folder, row)
        row = _scan_sigkill(work, folder, row)
    return row


def _scan_sigkill(work: Path, images: Path, row: Row) -> Row:
    """`dfd scan` killed mid-run: its Ray helpers must go with it, and the re-run must finish and
    remove the temporary Parquet file the killed run left."""
    from deepfake_detection.raywatch import marked_processes

    out = work / "scan" / "r.parquet"
    out.parent.mkdir()
    args = ["scan", str(images), "-o", str(out), "--no-progress"]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = _wait(lambda: bool(_temporaries(out.parent)), timeout=180)
    proc.kill()
    proc.wait()
    gone = _wait(lambda: not marked_processes(proc.pid), timeout=10)
    row.outcome(crash=not started or not gone, note=f"scan SIGKILL: started {started}, Ray helpers left "
                f"{marked_processes(proc.pid)}")
    again = _run(args, timeout=300)
    row.outcome(crash=_crashed(again.stderr) or again.returncode != 0,
                lost=not out.exists() or bool(_temporaries(out.parent)),
                note=f"scan re-run after SIGKILL: exit {again.returncode}: {again.stderr[-200:]}")
    return row


def _live_sigterm(work: Path, row: Row) -> Row:
    import cv2

    clip = work / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (256, 256))
    face = cv2.cvtColor(cv2.resize(_portrait(), (256, 256)), cv2.COLOR_RGB2BGR)
    for i in range(300):
        writer.write(np.roll(face, i % 20, axis=1))
    writer.release()
    out = work / "live"
    out.mkdir()
    args = [*CLI, "live", "--source", str(clip), "--no-display", "--jsonl", str(out / "f.jsonl"), "--save",
            str(out / "v.mp4")]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    started = _wait(
        lambda: any(p.name.startswith(".f.jsonl") and p.stat().st_size > 0 for p in out.iterdir())
    )
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    published = (out / "f.jsonl").exists() and (out / "v.mp4").exists()
    row.outcome(
        crash=_crashed(err) or not started,
        lost=not published or bool(_temporaries(out)),
        note=f"live SIGTERM: exit {proc.returncode}: {err[-200:]}",
    )
    return row


def _prepare_sigkill(work: Path, images: Path, row: Row) -> Row:
    import psutil

    data = work / "dataset"
    for label in ("real", "fake"):
        (data / label).mkdir(parents=True)
        for path in sorted(images.iterdir())[:75]:
            (data / label / path.name).write_bytes(path.read_bytes())
    out = work / "prepared"
    args = [
        "prepare",
        str(data),
        "--out",
        str(out),
        "--cropped",
        "--workers",
        "2",
        "--chunk-size",
        "2",
        "--no-progress",
    ]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: (out / "parts").is_dir() and any((out / "parts").glob("*.parquet")))
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    row.outcome(crash=bool(alive), note=f"prepare workers alive after SIGKILL of the parent: {alive}")
    again = _run(args)
    row.outcome(
        crash=_crashed(again.stderr) or again.returncode != 0,
        lost=not (out / "manifest.parquet").exists(),
        note=f"prepare re-run after SIGKILL: exit {again.returncode}: {again.stderr[-200:]}",
    )
    return row


# --- a real server on loopback ---------------------------------------------------------------------


@contextlib.contextmanager
def _server(work: Path) -> Iterator[tuple[str, int]]:
    from deepfake_detection.serve import ServeSettings
    from deepfake_detection.serve.server import running_server

    settings = ServeSettings(
        port=0,
        jobs_dir=work / "jobs",
        explain=False,
        header_timeout=1.5,
        body_timeout=1.5,
        stream_idle_timeout=1.5,
    )
    with running_server(settings) as url:
        yield url, int(url.rsplit(":", 1)[1])


def _ws(port: int, host: str, origin: str | None = None) -> socket.socket:
    import base64

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = [
        "GET /v1/stream HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _closed_with(sock: socket.socket, timeout: float = 10) -> int | None:
    """The close code the server sent (after its 101), or None when it sent none."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
            frame = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
            if len(frame) >= 4 and frame[0] & 0x0F == 0x8:
                return int.from_bytes(frame[2:4], "big")
    except (TimeoutError, ConnectionResetError):
        return None
    return None


def server_attacks(work: Path) -> Row:
    import httpx

    row = Row("server attacks on loopback")
    with _server(work) as (url, port):
        stalled = []
        for _ in range(110):  # slowloris: headers that never end
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /v1/recent HTTP/1.1\r\nHost: localhost\r\n")
            stalled.append(sock)
        health = httpx.get(url + "/healthz", timeout=5).status_code
        api = httpx.get(url + "/v1/recent", timeout=5).status_code
        row.outcome(crash=health != 200, note=f"/healthz under 110 half-sent requests: {health}")
        row.outcome(crash=api != 200, note=f"/v1/recent under 110 half-sent requests: {api}")
        time.sleep(3)
        held = sum(1 for s in stalled if _still_open(s))
        row.outcome(crash=held > 0, note=f"{held} half-sent requests still held after the header timeout")
        upload = socket.create_connection(("127.0.0.1", port), timeout=10)  # a body that stops
        upload.sendall(
            b"POST /v1/detect HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; "
            b"boundary=x\r\nContent-Length: 99999\r\n\r\n--x\r\n"
        )
        time.sleep(3)
        row.outcome(crash=_still_open(upload), note="a stalled upload is still held after the body timeout")
        streams = [
            _ws(port, "localhost") for _ in range(6)
        ]  # idle streams, and more than one client may hold
        codes = [_closed_with(s) for s in streams]
        row.outcome(
            crash=sorted(c or 0 for c in codes) != [1001] * 4 + [1008] * 2,
            note=f"idle and surplus streams closed with {codes}",
        )
        evil = httpx.get(url + "/v1/recent", headers={"Host": "evil.example"}).status_code
        row.outcome(crash=evil != 400, note=f"a rebound Host got {evil} from /v1/recent")
        code = _closed_with(_ws(port, f"evil.example:{port}", f"http://evil.example:{port}"))
        row.outcome(crash=code != 1008, note=f"a rebound page's stream: close code {code}")
        code = _closed_with(_ws(port, f"localhost:{port}", "http://evil.example"), timeout=3)
        row.outcome(crash=code != 1008, note=f"another site's page on the stream: close code {code}")
        metrics = httpx.get(url + "/metrics").text
        row.outcome(
            crash="dfd_connections_closed_total" not in metrics, note="closings missing from /metrics"
        )
    return row


def _still_open(sock: socket.socket) -> bool:
    sock.settimeout(0.3)
    try:
        while sock.recv(4096):
            pass
        return False
    except TimeoutError:
        return True
    except OSError:
        return False
    finally:
        sock.close()


# --- the run ---------------------------------------------------------------------------------------


def run_suite(quick: bool = False) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="dfd-hostile-") as tmp:
        work = Path(tmp)
        rows = []
        for name, step in (
            ("corpus", bad_images),
            ("names", odd_names),
            ("paths", bad_paths),
            ("arguments", bad_arguments),
            ("signals", lambda w: signals(w, quick)),
            ("server", server_attacks),
        ):
            folder = work / name
            folder.mkdir()
            start = time.monotonic()
            row = step(folder)
            row.notes.append(f"{time.monotonic() - start:.0f} s")
            rows.append(row)
        for path in work.rglob("*"):  # chmod'ed test files must not stop the clean-up
            with contextlib.suppress(OSError):
                if not path.is_symlink():
                    path.chmod(0o755)
        return rows


def format_table(rows: list[Row]) -> str:
    lines = [
        f"{'category':<36} {'inputs tried':>12} {'clear errors':>12} {'crashes':>8} {'outputs lost':>12}"
    ]
    for r in rows:
        lines.append(f"{r.category:<36} {r.tried:>12} {r.clear:>12} {r.crashes:>8} {r.lost:>12}")
    total = Row(
        "total",
        sum(r.tried for r in rows),
        sum(r.clear for r in rows),
        sum(r.crashes for r in rows),
        sum(r.lost for r in rows),
    )
    lines.append(
        f"{total.category:<36} {total.tried:>12} {total.clear:>12} {total.crashes:>8} {total.lost:>12}"
    )
    for r in rows:
        for note in r.notes[:-1]:
            lines.append(f"  {r.category}: {note}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="leave out the slowest try (prepare killed)")
    args = parser.parse_args()
    rows = run_suite(quick=args.quick)
    print(format_table(rows))
    return 1 if any(r.crashes or r.lost for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
