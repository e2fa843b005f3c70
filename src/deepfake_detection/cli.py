"""`dfd`: one sub-command per job, each a thin call into the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfake_detection.errors import DFDError, MissingExtraError

if TYPE_CHECKING:
    from deepfake_detection.infer.results import ImageResult, VideoResult

log = logging.getLogger("deepfake_detection")


def _cmd_detect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from deepfake_detection.infer.predictor import Predictor
    from deepfake_detection.infer.results import VideoResult
    from deepfake_detection.infer.writers import ResultWriter, open_output
    from deepfake_detection.io.atomic import remove_stale_temporaries
    from deepfake_detection.io.paths import check_output_dir, check_output_file, is_stdout
    from deepfake_detection.io.sources import expand_inputs
    from deepfake_detection.signals import interrupt_exit_code, interrupt_name

    # Every output target first: a bad one must fail now, not after the whole batch was scored.
    check_output_file(args.output)
    check_output_dir(args.annotate)
    check_output_dir(args.plot)
    if args.output and not is_stdout(args.output):
        remove_stale_temporaries(args.output)  # left by a run that was killed (SIGKILL)
    items = expand_inputs(args.paths)
    if not items:
        print("dfd detect: no image or video found in the given paths", file=sys.stderr)
        return 1
    videos = sum(item.is_video for item in items)
    if args.annotate and videos:
        print(f"dfd detect: --annotate draws on images only: {videos} video(s) get no annotated copy "
              "(--plot DIR saves a video's score timeline; dfd live --source VIDEO --save OUT.mp4 draws "
              "on every frame)", file=sys.stderr)
    predictor = Predictor.load(args.model, backend=args.backend, detector=args.detector,
                               threshold=args.threshold, max_pixels=args.max_pixels,
                               batch_size=args.batch_size)
    processed = done = 0
    annotated: set[str] = set()
    plotted: set[str] = set()
    show_progress = _progress_wanted(args.no_progress, len(items))
    interrupted = False
    with open_output(args.output) as stream:
        writer = ResultWriter(stream, args.format)
        frames_bar = _VideoProgress(enabled=show_progress)
        results = predictor.predict_many(items, workers=args.workers, video_frames=args.frames,
                                         video_stride=args.stride, video_progress=frames_bar.update)
        try:
            for result in tqdm(results, total=len(items), disable=not show_progress, unit="input",
                               file=sys.stderr, dynamic_ncols=True):
                frames_bar.close()
                writer.write(result)
                done += 1
                processed += result.status != "error"
                if isinstance(result, VideoResult):
                    if args.plot and result.status != "error" and result.path:
                        _save_plot(result, Path(args.plot), plotted)
                elif args.annotate and result.status != "error" and result.path:
                    _save_annotated(result, result.path, Path(args.annotate), annotated, args.max_pixels)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: publish what was scored, as a complete file
            interrupted = True
        finally:
            frames_bar.close()
            results.close()  # type: ignore[attr-defined]  # a generator: stops its worker threads
        writer.close()
    if interrupted:
        published = args.output and not is_stdout(args.output)
        where = f"; the results so far are in {args.output}" if published else ""
        print(f"dfd detect: stopped by {interrupt_name()} after {done} of {len(items)} inputs{where}",
              file=sys.stderr)
        return interrupt_exit_code()
    return 0 if processed else 1


def _progress_wanted(disabled: bool, inputs: int) -> bool:
    """A progress bar on a terminal whatever the count (one long video deserves one); in logs only
    for long runs (10 inputs or more), where it is worth its lines."""
    return not disabled and (sys.stderr.isatty() or inputs >= 10)


class _VideoProgress:
    """A second bar for the frames of the video being scored (one long video can take minutes)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def update(self, path: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, unit="frame", desc=Path(path).name[:30], leave=False, position=1,
                             file=sys.stderr, dynamic_ncols=True)
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _save_annotated(result: ImageResult, path: str, folder: Path, used: set[str],
                    max_pixels: int | None = None) -> None:
    """Write a copy of the image with boxes and labels (decodes it again, with the same pixel limit as
    scoring: an opt-in extra). Same-named inputs from different folders get `name_2.jpg`, ... instead
    of overwriting each other. A copy that cannot be written is a warning, never the end of the batch."""
    import cv2

    from deepfake_detection.infer.render import draw_result
    from deepfake_detection.io.atomic import write_bytes_atomic
    from deepfake_detection.io.images import DEFAULT_MAX_PIXELS, load_image

    try:
        image = load_image(path, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
        out = draw_result(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), result, bgr=True)
        ok, encoded = cv2.imencode(".jpg", out)
        if ok:
            write_bytes_atomic(folder / _unique_name(path, ".jpg", used), encoded.tobytes())
    except (DFDError, OSError) as exc:
        log.warning("no annotated copy of %s: %s: %s", path, type(exc).__name__, exc)


def _save_plot(result: VideoResult, folder: Path, used: set[str]) -> None:
    """`<video name>.timeline.png` (`_2`, ... for same-named videos); a plot that fails is a warning,
    never the end of the batch."""
    from deepfake_detection.infer.render import plot_timeline

    try:
        plot_timeline(result, folder / _unique_name(result.path or "video", ".timeline.png", used))
    except ModuleNotFoundError as exc:  # the slim install has no matplotlib: say how to get it, once
        raise MissingExtraError(f"--plot needs {exc.name}: pip install 'deepfake-detection[train]'") from exc
    except Exception as exc:  # an optional extra: no plot for this video, the results go on
        log.warning("no timeline plot for %s: %s: %s", result.path, type(exc).__name__, exc)


def _unique_name(path: str, suffix: str, used: set[str]) -> str:
    """`<stem><suffix>`, or `<stem>_2<suffix>`, ... when inputs from different folders share a name."""
    stem, n = Path(path).stem, 1
    name = f"{stem}{suffix}"
    while name in used:
        n += 1
        name = f"{stem}_{n}{suffix}"
    used.add(name)
    return name


def _cmd_live(args: argparse.Namespace) -> int:
    from deepfake_detection.infer.predictor import Predictor
    from deepfake_detection.live.pipeline import LiveConfig
    from deepfake_detection.live.run import run_live

    config = LiveConfig(min_detect_every=args.detect_every, max_detect_every=max(15, args.detect_every),
                        rescore_every=args.rescore_every, max_faces=args.max_faces)
    predictor = Predictor.load(args.model, backend=args.backend, detector=args.detector,
                               threshold=args.threshold, batch_size=args.max_faces)
    summary = run_live(predictor, args.source, config=config, realtime=args.realtime,
                       display=False if args.no_display else None, save=args.save, jsonl=args.jsonl,
                       max_frames=args.max_frames)
    print(f"dfd live: {summary.describe()}", file=sys.stderr)
    if summary.error:
        print(f"dfd live: error: {summary.error}", file=sys.stderr)
    return 0 if summary.frames and not summary.error else 1


def _cmd_models(args: argparse.Namespace) -> int:
    from deepfake_detection.models.registry import list_models

    print(f"{'name':<20} {'input':>5} {'offline ImageNet':>16}  description")
    for info in list_models():
        print(f"{info.name:<20} {info.input_size:>5} {'yes' if info.offline_pretrained else 'no':>16}  "
              f"{info.description}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from deepfake_detection.data.prepare import PrepareConfig, prepare
    from deepfake_detection.data.summary import format_summary

    config = PrepareConfig(
        crop_size=args.crop_size, crop_scale=args.crop_scale, align=args.align, frames=args.frames,
        stride=args.stride, faces=args.faces, cropped=args.cropped, detector=args.detector,
        ratios=tuple(args.ratios), seed=args.seed, leave_out_method=args.leave_out_method,
        dedup_distance=-1 if args.no_dedup else args.dedup_distance, layout=args.layout,
        chunk_size=args.chunk_size, max_side=args.max_side, landmarks68=args.landmarks68, pad=args.pad,
    )
    from deepfake_detection.io.paths import check_output_dir

    check_output_dir(args.out)  # before any work
    try:
        summary = prepare(args.sources, args.out, config, workers=args.workers, progress=not args.no_progress,
                          ray_address=args.ray_address)
    except MissingExtraError as exc:  # --ray-address without Ray: a setup problem, told like a usage error
        print(f"dfd prepare: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"manifest: {Path(args.out) / 'manifest.parquet'}")
    return 0


def _cmd_augment_preview(args: argparse.Namespace) -> int:
    from deepfake_detection.data.augment import AugmentConfig
    from deepfake_detection.data.preview import preview_from_paths

    try:  # pydantic's ValidationError is a ValueError: unknown keys and bad ranges land here
        augment = AugmentConfig.from_yaml(args.config) if args.config else AugmentConfig()
    except (OSError, ValueError) as exc:
        print(f"dfd augment-preview: invalid config: {exc}", file=sys.stderr)
        return 2
    out = preview_from_paths(args.inputs, Path(args.out), augment=augment, seed=args.seed, per_row=args.count,
                             input_size=args.input_size, detector=args.detector, max_rows=args.max_rows)
    print(out)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from deepfake_detection.evaluate.robustness import PERTURBATIONS
    from deepfake_detection.evaluate.run import PRODUCT_ROBUSTNESS, ROBUSTNESS_DEFAULT, evaluate_model
    from deepfake_detection.io.paths import check_output_dir

    # Product mode re-runs detection for each perturbation: the three that the bars name, not all ten.
    sweep = PRODUCT_ROBUSTNESS if args.mode == "product" else ROBUSTNESS_DEFAULT
    if args.robustness is not None:
        sweep = tuple(name for name in args.robustness.split(",") if name)
        unknown = [name for name in sweep if name not in PERTURBATIONS]
        if unknown or not sweep:
            print(f"dfd evaluate: unknown perturbation(s) {unknown or [args.robustness]}; choose from "
                  f"{', '.join(PERTURBATIONS)}", file=sys.stderr)
            return 2
    check_output_dir(args.out)  # before any work: a report that cannot be written must not cost a run
    robustness: tuple[str, ...] = () if args.no_robustness else sweep
    split = None if args.split == "all" else args.split
    results = evaluate_model(args.model, args.data, args.out, split=split, robustness=robustness,
                             n_boot=args.bootstrap, mode=args.mode, frames=args.frames,
                             video_frames=args.video_frames, progress=not args.no_progress)
    frame, video = results["frame"]["at_threshold"], (results.get("video") or {}).get("at_threshold", {})
    ci = results["frame"].get("auc_ci")
    print(f"frames {results['data']['n_frames']}: AUC {frame['auc']:.4f} (95% CI {ci}), "
          f"F1 {frame['f1']}, EER {frame['eer']}, ECE {frame.get('ece')}")
    if video:
        # product mode: dfd detect's verdicts on the video files; crops mode: frames pooled per source
        n_videos = results["data"].get("n_video_verdicts", results["data"]["n_sources"])
        print(f"videos {n_videos}: AUC {video.get('auc')}")
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from deepfake_detection.evaluate.recalibrate import recalibrate

    tta = None if args.tta is None else args.tta == "hflip"
    spec, n = recalibrate(args.model, args.data, args.out, tta_hflip=tta, strategy=args.strategy,
                          target_fpr=args.target_fpr, split=args.split, calibration=args.calibration,
                          jpeg_quality=args.jpeg_quality)
    pooled = "" if args.jpeg_quality is None else f" with JPEG {args.jpeg_quality} copies"
    print(f"temperature {spec.temperature:.4f}, bias {spec.bias:.4f}, threshold {spec.threshold:.4f} "
          f"({args.calibration} on {n} {args.split} frames{pooled}, "
          f"mirror TTA {'on' if spec.tta_hflip else 'off'}): {Path(args.out) / 'model.onnx'}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from deepfake_detection.evaluate.report import compare_table
    from deepfake_detection.evaluate.run import compare_runs
    from deepfake_detection.io.paths import check_output_dir

    check_output_dir(args.out)
    rows = compare_runs(args.runs, args.out, latency=not args.no_latency)
    print(compare_table(rows))
    print(f"comparison: {Path(args.out) / 'comparison.md'}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from deepfake_detection.train import ConfigError, load_config, train

    try:  # unknown keys, wrong types, bad override syntax: a usage error naming the key
        config = load_config(args.config, args.set or [])
    except ConfigError as exc:
        print(f"dfd train: invalid config: {exc}", file=sys.stderr)
        return 2
    import os

    # Per-epoch lines from rank 0 only: under torchrun every process runs this command.
    rank0 = os.environ.get("RANK", "0") == "0"
    logging.getLogger("deepfake_detection.train").setLevel(logging.INFO if rank0 else logging.WARNING)
    out = train(config, resume=args.resume)
    print(out)
    if not rank0:
        return 0
    from deepfake_detection.train.checks import check_run

    problems = check_run(out)
    for problem in problems:  # loud: a useless model must not be taken for a trained one
        print(f"dfd train: WARNING: {problem}", file=sys.stderr)
    if problems and args.strict:
        print(f"dfd train: failing (--strict): the model in {out} should not be used", file=sys.stderr)
        return 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from deepfake_detection.serve.server import run
    from deepfake_detection.serve.settings import ServeSettings

    given = {name: getattr(args, name) for name in ServeSettings.model_fields if hasattr(args, name)}
    try:  # flags override DFD_* environment variables, which override the defaults
        settings = ServeSettings(**given)
    except ValidationError as exc:
        print(f"dfd serve: invalid setting: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("deepfake_detection").setLevel(logging.INFO)
    return run(settings)


def _number(text: str, kind: type[int] | type[float], ok: Callable[[float], bool], rule: str) -> Any:
    """An argparse type: `text` as `kind`, refused (a usage error, exit 2) unless `ok(value)`."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {'a whole number' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if not ok(value):  # comparisons with nan are false: nan is refused too
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
    return value


def _positive_int(text: str) -> int:
    return int(_number(text, int, lambda v: v >= 1, ">= 1"))


def _positive_float(text: str) -> float:
    return float(_number(text, float, lambda v: v > 0, "> 0"))


def _count(text: str) -> int:
    return int(_number(text, int, lambda v: v >= 0, ">= 0"))


def _probability(text: str) -> float:
    return float(_number(text, float, lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]"))


class _DefaultsFormatter(argparse.HelpFormatter):
    """--help shows each option's default (not the empty ones: None, False, or flags without one)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "%(default)" in text or "default" in text
                or default in (None, False, argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)".lstrip()


def _add_video_sampling(parser: argparse.ArgumentParser, frames: int = 32) -> None:
    """--frames N or --stride N, never both (one would silently win)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--frames", type=_positive_int, default=frames,
                       help="videos: score this many evenly spaced frames")
    group.add_argument("--stride", type=_positive_int, help="videos: score every N-th frame instead")


def _cmd_scan(args: argparse.Namespace) -> int:
    from deepfake_detection.errors import MissingExtraError
    from deepfake_detection.scan import ScanConfig, scan

    config = ScanConfig(model=args.model, backend=args.backend, detector=args.detector,
                        threshold=args.threshold, batch_size=args.batch_size, classifiers=args.classifiers,
                        max_pixels=args.max_pixels, ray_address=args.ray_address,
                        allow_outside_listing=args.allow_outside_listing, progress=not args.no_progress)
    try:
        summary = scan(args.sources, args.output, config)
    except MissingExtraError as exc:  # a setup problem, told like a usage error
        print(f"dfd scan: {exc}", file=sys.stderr)
        return 2
    print(summary.format())
    return 0 if summary.total > summary.counts["error"] else 1


def _model_flags(*, defaults: bool = True) -> argparse.ArgumentParser:
    """The flags of `Predictor.load`, shared by detect, live, scan and serve. defaults=False leaves
    unset flags absent (serve: DFD_* environment variables fill them instead)."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("model")
    group.add_argument("--model", default=default(None),
                       help="model file (.onnx or .safetensors) or a bundled model's name "
                            "(default: the bundled default model)")
    group.add_argument("--backend", choices=("auto", "onnx", "torch"), default=default("auto"),
                       help="which sibling file runs: .onnx on ONNX Runtime, .safetensors on PyTorch")
    group.add_argument("--detector", default=default("auto"), help="face detector: auto, retinaface, haar")
    group.add_argument("--threshold", type=_probability, default=default(None),
                       help="override the model's calibrated threshold (0..1)")
    return flags


def _pixel_flag(*, defaults: bool = True) -> argparse.ArgumentParser:
    """--max-pixels for the commands that decode image files and uploads (detect, scan, serve)."""
    from deepfake_detection.io.images import DEFAULT_MAX_PIXELS

    flags = argparse.ArgumentParser(add_help=False)
    default = DEFAULT_MAX_PIXELS if defaults else argparse.SUPPRESS
    flags.add_argument("--max-pixels", type=_positive_int, default=default,
                       help="refuse images with more pixels (decompression bombs)")
    return flags


class _VersionAction(argparse.Action):
    """`dfd --version`: the package and the bundled model it carries (name, architecture, sha256)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the version and the bundled model, then exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"dfd {version('deepfake-detection')}; {bundled_model_line()}")
        parser.exit()


def bundled_model_line() -> str:
    from deepfake_detection.infer.backends import load_backend
    from deepfake_detection.infer.bundled import default_model_path

    try:
        backend = load_backend(default_model_path(), "onnx", threads=1, require_checksum=True)
    except DFDError as exc:
        return f"bundled model unusable: {exc}"
    info = backend.spec
    return f"bundled model {info.name or info.arch} ({info.arch}, sha256 {backend.sha256[:12]})"


def build_parser() -> argparse.ArgumentParser:
    from deepfake_detection.infer.writers import FORMATS

    parser = argparse.ArgumentParser(prog="dfd", description="Tell real face images from deepfakes.")
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model_flags, env_model_flags = _model_flags(), _model_flags(defaults=False)
    pixels, env_pixels = _pixel_flag(), _pixel_flag(defaults=False)
    detect = sub.add_parser("detect", help="score the faces in images, videos, folders and globs",
                            parents=[model_flags, pixels])
    detect.add_argument("paths", nargs="+", metavar="PATH",
                        help="image or video files, folders (recursive) or globs")
    detect.add_argument("--format", choices=FORMATS, default="table", help="output format")
    detect.add_argument("--output", "-o", help="write results to this file (atomically); - for stdout")
    detect.add_argument("--batch-size", type=_positive_int, default=32, help="faces per classifier batch")
    detect.add_argument("--workers", type=_positive_int, default=None, help="decode/detect threads")
    detect.add_argument("--annotate", metavar="DIR",
                        help="also save images with boxes and labels drawn (images only, not videos)")
    detect.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_video_sampling(detect)
    detect.add_argument("--plot", metavar="DIR", help="videos: save a per-second score timeline PNG here")
    detect.set_defaults(func=_cmd_detect)

    live = sub.add_parser("live", help="boxes and labels on a webcam, video file or network stream, live",
                          parents=[model_flags])
    live.add_argument("--source", default="0", help="webcam index (0), video file, or rtsp:// / http:// URL")
    live.add_argument("--realtime", action="store_true",
                      help="files: keep pace with the clock, dropping frames when slower "
                           "(default: every frame)")
    live.add_argument("--no-display", action="store_true",
                      help="no window (headless); automatic when there is no DISPLAY")
    live.add_argument("--save", metavar="OUT.mp4", help="write the annotated video here")
    live.add_argument("--jsonl", metavar="FILE", help="write one JSON line of results per frame here")
    live.add_argument("--max-frames", type=_positive_int, help="stop after this many frames")
    live.add_argument("--detect-every", type=_positive_int, default=2,
                      help="detect faces at most every N frames (raised automatically under load; "
                           "faces are tracked in between)")
    live.add_argument("--rescore-every", type=_positive_int, default=3,
                      help="classify each tracked face again every N frames (sooner when it moves)")
    live.add_argument("--max-faces", type=_positive_int, default=8, help="faces per frame, biggest first")
    live.set_defaults(func=_cmd_live)

    prep = sub.add_parser("prepare", help="datasets -> face crops + a Parquet manifest (resumable)")
    prep.add_argument("sources", nargs="+", metavar="SOURCE", help="dataset roots or CSV listings")
    prep.add_argument("--out", required=True, help="output folder (re-run the same command to resume)")
    prep.add_argument("--layout", default="auto", help="auto, folders, ffpp, dfdc, celebdf, csv")
    prep.add_argument("--cropped", action="store_true", help="inputs are face crops already: no detection")
    prep.add_argument("--pad", type=float, default=0.0,
                      help="tight face crops: pad images with black borders of PAD x their side before "
                           "detection, so the crop protocol's margin fits (e.g. 0.3)")
    _add_video_sampling(prep)
    prep.add_argument("--faces", choices=("biggest", "all"), default="biggest", help="faces kept per frame")
    prep.add_argument("--crop-size", type=_positive_int, default=256, help="crop side in pixels")
    prep.add_argument("--crop-scale", type=_positive_float, default=1.3, help="crop side / face box side")
    prep.add_argument("--align", action="store_true", help="5-point alignment of crops")
    prep.add_argument("--landmarks68", action="store_true",
                      help="also store dlib 68-point landmarks (extra 'landmarks68') for blending masks")
    prep.add_argument("--detector", default="auto", help="face detector: auto, retinaface, haar")
    prep.add_argument("--max-side", default=640,
                      type=lambda t: int(_number(t, int, lambda v: v >= 32, ">= 32")),
                      help="detect faces on a copy this size (crops come from the original): smaller is "
                           "faster and misses small faces")
    prep.add_argument("--workers", type=_positive_int, help="processes (default: all cores)")
    prep.add_argument("--ray-address", help="run the chunks as Ray tasks on this cluster (host:port, "
                      "ray://..., auto) or 'local'; --out must be a folder every node sees")
    prep.add_argument("--ratios", type=float, nargs=3, default=(0.8, 0.1, 0.1), help="split shares",
                      metavar=("TRAIN", "VAL", "TEST"))
    prep.add_argument("--seed", type=int, default=0, help="seed of the split assignment")
    prep.add_argument("--leave-out-method",
                      help="put every group with this method in test, none in train/val")
    prep.add_argument("--dedup-distance", type=int, default=4, help="pHash bits for near-duplicates")
    prep.add_argument("--no-dedup", action="store_true")
    prep.add_argument("--chunk-size", type=_positive_int, help="sources per unit of resumable work "
                      "(default 256 with --cropped, else 32)")
    prep.add_argument("--no-progress", action="store_true")
    prep.set_defaults(func=_cmd_prepare)

    ev = sub.add_parser("evaluate", help="metrics, plots and a report for a model on a manifest or folder")
    ev.add_argument("model", help="model file (.onnx or .safetensors) or a bundled model's name (default)")
    ev.add_argument("data", help="manifest.parquet from `dfd prepare`, or a folder with real/ and fake/")
    ev.add_argument("--split", default="test", help="manifest split to evaluate (train, val, test, all)")
    ev.add_argument("--out", required=True, help="report folder")
    robust = ev.add_mutually_exclusive_group()
    robust.add_argument("--no-robustness", action="store_true", help="skip the JPEG/blur/resize/noise sweep")
    robust.add_argument("--robustness", metavar="NAMES",
                        help="comma-separated perturbations instead of the mode's sweep (product: "
                             "jpeg50,blur1,down0.5); also jpeg90/70/30, blur2/3, down0.25, noise, "
                             "h264_crf32, h264_crf40")
    ev.add_argument("--bootstrap", type=_count, default=1000,
                    help="bootstrap resamples for AUC intervals (0: no intervals)")
    ev.add_argument("--mode", choices=("product", "crops"), default="product",
                    help="product: the split's source files through decode, detect, crop, classify (what "
                         "users get); crops: the stored crops only (fast, classifier alone)")
    ev.add_argument("--frames", type=_positive_int, default=16,
                    help="product mode: frames per video for frame metrics")
    ev.add_argument("--video-frames", type=_positive_int, default=32,
                    help="product mode: frames per video for the video verdict (as dfd detect)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    ev.set_defaults(func=_cmd_evaluate)

    cal = sub.add_parser("calibrate", help="refit a model's calibration and threshold on validation files "
                         "through the product path (optionally with mirror-image TTA)")
    cal.add_argument("model", help="the model's .safetensors weights")
    cal.add_argument("data", help="manifest.parquet from `dfd prepare` whose split holds the source files")
    cal.add_argument("--out", required=True, help="folder for the refitted model.safetensors + model.onnx")
    cal.add_argument("--split", default="val", help="manifest split to fit on (default val: never test)")
    cal.add_argument("--tta", choices=("hflip", "none"),
                     help="hflip: average each crop's logit with its mirror image's (twice the classifier "
                          "compute); default: keep the model's setting")
    cal.add_argument("--strategy", choices=("fpr", "youden", "f1"), default="fpr",
                     help="threshold rule (default fpr, as configs/default.yaml)")
    cal.add_argument("--target-fpr", type=_probability, default=0.05, help="for --strategy fpr")
    cal.add_argument("--calibration", choices=("platt", "temperature"), default="platt",
                     help="platt: sigmoid(z / T + bias), slope and offset (default, as "
                          "configs/default.yaml); temperature: T alone")
    # The qualities of robustness.PERTURBATIONS, written out so the CLI starts without importing it.
    cal.add_argument("--jpeg-quality", type=int, choices=(90, 70, 50, 30),
                     help="also fit on every frame re-encoded as JPEG at this quality, pooled with the clean "
                          "ones, so the threshold serves compressed uploads too (default: clean frames only)")
    cal.set_defaults(func=_cmd_calibrate)

    cmp = sub.add_parser("compare", help="one table across `dfd evaluate` report folders")
    cmp.add_argument("runs", nargs="+", metavar="RUN", help="folders written by `dfd evaluate --out`")
    cmp.add_argument("--out", required=True)
    cmp.add_argument("--no-latency", action="store_true", help="skip the ONNX Runtime latency measurement")
    cmp.set_defaults(func=_cmd_compare)

    models = sub.add_parser("models", help="list the registered architectures")
    models.set_defaults(func=_cmd_models)

    aug = sub.add_parser("augment-preview", help="contact sheet of augmented crops and self-blended fakes")
    aug.add_argument("inputs", nargs="+", metavar="INPUT", help="images (biggest face) or manifests")
    aug.add_argument("--out", required=True, help="PNG to write (atomically)")
    aug.add_argument("--config", help="YAML: the augment block, or a file with an 'augment:' key")
    aug.add_argument("--seed", type=int, default=0, help="random seed")
    aug.add_argument("--count", type=_positive_int, default=4, help="augmented versions and fakes per face")
    aug.add_argument("--input-size", type=_positive_int, default=224, help="model input size (tile size)")
    aug.add_argument("--detector", default="auto", help="face detector for image inputs")
    aug.add_argument("--max-rows", type=_positive_int, default=8, help="faces (rows) on the sheet at most")
    aug.set_defaults(func=_cmd_augment_preview)
    tr = sub.add_parser("train", help="train a classifier from manifests (YAML config; torchrun-ready)")
    tr.add_argument("--config", required=True, help="YAML training config (see configs/default.yaml)")
    tr.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE",
                    help="override config values, e.g. --set optim.lr=1e-3 epochs=4 (repeatable; YAML-typed)")
    tr.add_argument("--resume", action="store_true", help="continue the run in the config's out folder")
    tr.add_argument("--strict", action="store_true",
                    help="fail (exit 1) when validation AUC is at or below chance or the calibration "
                         "temperature hits a bound (without it: a loud warning)")
    tr.set_defaults(func=_cmd_train)

    sc = sub.add_parser("scan", help="batch detection on Ray (millions of images, a cluster) -> Parquet",
                        parents=[model_flags, pixels])
    sc.add_argument("sources", nargs="+", metavar="SOURCE",
                    help="files, folders, globs, CSV/Parquet listings of paths or URIs, s3://... prefixes")
    sc.add_argument("--output", "-o", required=True, help="Parquet file to write (atomically)")
    sc.add_argument("--ray-address", help="join this Ray cluster (host:port, ray://..., auto); "
                    "default: start a local runtime sized to this machine")
    sc.add_argument("--batch-size", type=_positive_int, default=32, help="images per classifier batch")
    sc.add_argument("--classifiers", type=_positive_int, help="classifier actors (default: one per GPU, "
                    "else a third of the CPUs)")
    sc.add_argument("--allow-outside-listing", action="store_true",
                    help="let CSV/Parquet listings name absolute paths, file:// URIs and ../ paths "
                    "(default: only files inside the listing's folder)")
    sc.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    sc.set_defaults(func=_cmd_scan)

    # Unset flags stay absent (SUPPRESS), so DFD_* environment variables still apply.
    srv = sub.add_parser("serve", help="web page, REST API, live stream and metrics (FastAPI on uvicorn)",
                         argument_default=argparse.SUPPRESS, parents=[env_model_flags, env_pixels])
    srv.add_argument("--host", help="address to bind (default 127.0.0.1; env DFD_HOST)")
    srv.add_argument("--port", type=int, help="port (default 8000; env DFD_PORT)")
    srv.add_argument("--workers", type=int, help="inference threads (default: cores, at most 4)")
    srv.add_argument("--queue", type=int, help="requests waiting for a worker before 503 (default 32)")
    srv.add_argument("--max-upload-mb", type=float, help="request body limit in MB (default 20) -> 413")
    srv.add_argument("--max-batch", type=int, help="images per batch request (default 32)")
    srv.add_argument("--api-key", help="require this key in the X-API-Key header (env DFD_API_KEY)")
    srv.add_argument("--rate-limit", help="requests per client, e.g. 120/min or 2/s (default: none) -> 429")
    srv.add_argument("--cors", nargs="+", metavar="ORIGIN",
                     help="allow these browser origins (default: none)")
    srv.add_argument("--job-ttl", type=float, help="seconds a finished video job is kept (default 3600)")
    srv.add_argument("--jobs-dir",
                     help="where video jobs are stored (default ~/.cache/deepfake-detection/jobs)")
    srv.add_argument("--video-frames", type=int, help="frames sampled per clip (default 32)")
    srv.add_argument("--no-explain", dest="explain", action="store_false", default=argparse.SUPPRESS,
                     help="no explanations (Grad-CAM with PyTorch, loaded on first use; else occlusion maps)")
    srv.add_argument("--allowed-hosts", nargs="+", metavar="HOST",
                     help="host names clients may reach the service by, beside loopback (Host header "
                          "check against DNS rebinding; * for any; env DFD_ALLOWED_HOSTS)")
    srv.add_argument("--header-timeout", type=float,
                     help="seconds a request's headers may take to arrive (default 10)")
    srv.add_argument("--body-timeout", type=float, help="seconds an upload may pause (default 30)")
    srv.add_argument("--stream-idle-timeout", type=float,
                     help="seconds a live stream may send no frame before it is closed (default 60)")
    srv.add_argument("--max-client-connections", type=int,
                     help="open connections per client address (default 32)")
    srv.add_argument("--max-connections", type=int, help="open connections in all (default 1024)")
    srv.set_defaults(func=_cmd_serve)
    for command in sub.choices.values():
        command.formatter_class = _DefaultsFormatter
    return parser


# Commands whose paths may come after options too (`dfd detect a.jpg --plot d b.mp4`): argparse stops
# a positional list at the first option, and its intermixed parsing does not support sub-commands.
_PATH_LISTS = {"detect": "paths", "scan": "sources", "prepare": "sources", "augment-preview": "inputs",
               "compare": "runs"}


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    command = getattr(args, "command", None)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    target = sub.choices.get(command, parser) if command else parser
    dest = _PATH_LISTS.get(command or "")
    if dest is None or any(text.startswith("-") and text != "-" for text in extra):
        target.error(f"unrecognized arguments: {' '.join(extra)}")
        raise AssertionError  # error() exits
    getattr(args, dest).extend(extra)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from deepfake_detection.signals import interrupt_exit_code, terminate_as_interrupt

    parser = build_parser()
    args = _parse(parser, argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM (docker stop, systemd, timeout) stops like Ctrl-C; `dfd serve` leaves signals to uvicorn,
    # which drains requests on SIGTERM and exits as a container's PID 1 must (0).
    stopping = nullcontext() if args.command == "serve" else terminate_as_interrupt()
    try:
        with stopping:
            return int(args.func(args))
    except DFDError as exc:  # expected failures: a message, not a traceback
        print(f"dfd {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return interrupt_exit_code()
    except BrokenPipeError:  # the reader left (`dfd detect DIR | head`): stop quietly, as cat does
        # Python flushes stdout again at exit and would print a second error: point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE: what a shell shows for a writer whose pipe closed


if __name__ == "__main__":
    sys.exit(main())
