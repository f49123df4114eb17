"""`tfod-edge detect|benchmark|evaluate` (or `python -m edge`): the Raspberry Pi side.

detect and benchmark need only numpy, Pillow and a TFLite runtime, or onnxruntime for
model.onnx (OpenCV for video files and USB cameras, picamera2 for the Pi camera module);
evaluate adds pycocotools, and TensorFlow only for SavedModels and frozen graphs.
`pip install 'sagemaker-tf-object-detection[pi]'` installs all but picamera2 (apt), onnxruntime
(the `onnx` extra) and TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import pathlib
import sys
import time

from sagemaker_tfod.data_prep import schema
from sagemaker_tfod.data_prep.console import log_level, missing_extra_message, prog_name
from sagemaker_tfod.data_prep.files import atomic_output_path, atomic_write_text
from sagemaker_tfod.edge.arguments import (
    megapixels,
    non_negative_int,
    positive_int,
    score_threshold,
)
from sagemaker_tfod.edge.errors import EdgeError
from sagemaker_tfod.edge.labels import check_label_index, read_labels
from sagemaker_tfod.edge.outputs import output_paths

log = logging.getLogger("sagemaker_tfod.edge")

DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_OUTPUT = "detections"


def _write_image(path: pathlib.Path, pixels) -> None:
    from PIL import Image

    with atomic_output_path(path) as temporary:
        Image.fromarray(pixels).save(temporary)


def run_detect(args: argparse.Namespace) -> int:
    from sagemaker_tfod.edge.detect import above, open_detector
    from sagemaker_tfod.edge.draw import draw_detections
    from sagemaker_tfod.edge.sources import (
        check_image_sizes,
        expand_inputs,
        frames,
        open_frames,
        read_image,
    )

    sources = expand_inputs(args.inputs)
    max_pixels = int(args.max_megapixels * 1_000_000)
    check_image_sizes(sources, max_pixels)
    labels = read_labels(args.labels, args.model)
    detector = open_detector(args.model, threads=args.threads)
    output = args.output
    labels_path = args.labels or args.model.parent / schema.LABELS_FILE
    records = []
    targets = output_paths(sources, output)

    def detect_above_threshold(image) -> list:
        detections = above(detector.detect(image), args.score_threshold)
        for detection in detections:
            check_label_index(labels, labels_path, detection.label_index)
        return detections

    def emit(record: dict) -> None:
        if args.json is None:
            print(json.dumps(record), flush=True)
        records.append(record)

    for source, target in zip(sources, targets, strict=True):
        if source.kind == "image":
            image = read_image(source, max_pixels)
            detections = detect_above_threshold(image)
            if not args.no_images:
                _write_image(target, draw_detections(image, detections, labels))
            emit({"input": source.location, "detections": [d.as_dict(labels) for d in detections]})
            continue
        frame_source = open_frames(source)
        writer, started = None, time.monotonic()
        # The video goes to a temporary name beside the target (same extension, which
        # cv2.VideoWriter needs) and is renamed once released; on an error it is removed.
        # The stack unwinds in reverse: writer released, then renamed, then the source closed.
        with contextlib.ExitStack() as stack:
            stack.callback(frame_source.close)
            try:
                for number, frame in enumerate(frames(frame_source, args.max_frames)):
                    detections = detect_above_threshold(frame)
                    if not args.no_images:
                        import cv2

                        if writer is None:
                            temporary = stack.enter_context(atomic_output_path(target))
                            writer = _video_writer(temporary, frame, frame_source.fps)
                            stack.callback(writer.release)
                        drawn = draw_detections(frame, detections, labels)
                        writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                    emit(
                        {
                            "input": source.location,
                            "frame": number,
                            "detections": [d.as_dict(labels) for d in detections],
                        }
                    )
                    if (number + 1) % 30 == 0:
                        rate = (number + 1) / (time.monotonic() - started)
                        log.info("%s: %d frames, %.1f frames/s", source.location, number + 1, rate)
            except KeyboardInterrupt:
                log.info("stopped by Ctrl-C")  # keeps (and renames) the frames written so far
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(records, indent=2) + "\n")
    if not args.no_images:
        log.info("annotated output in %s", output)
    return 0


def _video_writer(path: pathlib.Path, frame, fps: float):
    import cv2

    height, width = frame.shape[:2]
    return cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps if fps > 0 else 15.0, (width, height)
    )


def run_benchmark(args: argparse.Namespace) -> int:
    from sagemaker_tfod.edge.benchmark import benchmark

    result = benchmark(args.model, threads=args.threads, runs=args.runs, warmup=args.warmup)
    for row in result["results"]:
        log.info(
            "%s, %d thread(s): median %.2f ms, p90 %.2f ms, %.1f frames/s",
            args.model.name,
            row["threads"],
            row["median_ms"],
            row["p90_ms"],
            row["fps"],
        )
    print(json.dumps(result, indent=2))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from sagemaker_tfod.edge.detect import open_detector
    from sagemaker_tfod.edge.evaluate import evaluate, samples_from_path, write_per_class_plot

    labels = read_labels(args.labels, args.model)
    if not labels:
        labels_path = args.data / schema.LABELS_FILE
        labels = read_labels(labels_path, args.model) if labels_path.is_file() else []
    samples = samples_from_path(
        args.data, labels or None, max_pixels=int(args.max_megapixels * 1_000_000)
    )
    if not labels:
        raise EdgeError(f"{args.model}: no labels.txt beside it; pass --labels labels.txt")
    detector = open_detector(args.model, threads=args.threads)
    scores = evaluate(detector, samples, len(labels), limit=args.limit)
    scores["per_class_AP"] = {
        labels[i] if i < len(labels) else str(i): value
        for i, value in scores["per_class_AP"].items()
    }
    log.info("AP %.4f  AP50 %.4f  AP75 %.4f", scores["AP"], scores["AP50"], scores["AP75"])
    if args.plot is not None:
        plotted = dict(scores)
        plotted["per_class_AP"] = {labels.index(k): v for k, v in scores["per_class_AP"].items()}
        write_per_class_plot(plotted, labels, args.plot)
        log.info("per-class AP chart written to %s", args.plot)
    print(json.dumps({"model": str(args.model), "data": str(args.data), **scores}, indent=2))
    return 0


def _add_max_megapixels(parser: argparse.ArgumentParser) -> None:
    from sagemaker_tfod.data_prep.images import DEFAULT_MAX_MEGAPIXELS

    parser.add_argument(
        "--max-megapixels",
        type=megapixels,
        default=DEFAULT_MAX_MEGAPIXELS,
        help="refuse images with more pixels than this (read from the header, so a "
        "decompression bomb is never decoded)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("edge"), description=__doc__.splitlines()[0], allow_abbrev=False
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging (also TFOD_LOG_LEVEL=debug)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    formatter = argparse.ArgumentDefaultsHelpFormatter

    detect = commands.add_parser(
        "detect",
        help="detect objects in images, folders, videos or a camera",
        formatter_class=formatter,
    )
    detect.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image, folder, video file, USB camera index (0, 1, ...) or picam (picam:1) for "
        "the Raspberry Pi camera module",
    )
    detect.add_argument(
        "--model", type=pathlib.Path, required=True, help=".tflite, .onnx, SavedModel or .pb"
    )
    detect.add_argument(
        "--labels", type=pathlib.Path, help="labels.txt (default: beside the model)"
    )
    detect.add_argument(
        "--threads", type=positive_int, default=4, help="CPU threads for TFLite and ONNX"
    )
    detect.add_argument(
        "--score-threshold",
        type=score_threshold,
        default=DEFAULT_SCORE_THRESHOLD,
        help="report and draw only detections with at least this score (0-1)",
    )
    detect.add_argument(
        "--output",
        type=pathlib.Path,
        default=pathlib.Path(DEFAULT_OUTPUT),
        help="annotated images/videos",
    )
    detect.add_argument("--json", type=pathlib.Path, help="write all detections to this JSON file")
    detect.add_argument("--no-images", action="store_true", help="only print detections")
    detect.add_argument(
        "--max-frames", type=positive_int, help="stop a video or camera after N frames"
    )
    _add_max_megapixels(detect)

    bench = commands.add_parser(
        "benchmark", help="TFLite or ONNX latency", formatter_class=formatter
    )
    bench.add_argument("--model", type=pathlib.Path, required=True, help=".tflite or .onnx file")
    bench.add_argument(
        "--threads", type=positive_int, nargs="+", default=[1, 4], help="thread counts"
    )
    bench.add_argument("--runs", type=positive_int, default=50, help="timed runs per thread count")
    bench.add_argument("--warmup", type=non_negative_int, default=5, help="untimed runs first")

    evaluation = commands.add_parser(
        "evaluate",
        help="COCO AP of any export on a channel or VOC folder",
        formatter_class=formatter,
    )
    evaluation.add_argument(
        "--model", type=pathlib.Path, required=True, help=".tflite, .onnx, SavedModel or .pb"
    )
    evaluation.add_argument(
        "--data",
        type=pathlib.Path,
        required=True,
        help="channel (eval shards), shard or VOC folder",
    )
    evaluation.add_argument(
        "--labels", type=pathlib.Path, help="labels.txt (default: beside model)"
    )
    evaluation.add_argument(
        "--threads", type=positive_int, default=4, help="CPU threads for TFLite and ONNX"
    )
    evaluation.add_argument("--limit", type=positive_int, help="evaluate at most N images")
    evaluation.add_argument("--plot", type=pathlib.Path, help="write a per-class AP chart (PNG)")
    _add_max_megapixels(evaluation)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=log_level(args.verbose),
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    handlers = {"detect": run_detect, "benchmark": run_benchmark, "evaluate": run_evaluate}
    try:
        return handlers[args.command](args)
    except EdgeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:  # a package of the 'pi' extra is not installed
        message = missing_extra_message(error, f"{prog_name('edge')} {args.command}")
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
