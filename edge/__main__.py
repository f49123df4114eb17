"""`python -m edge detect|benchmark|evaluate`: the Raspberry Pi side.

detect and benchmark need only numpy, Pillow and a TFLite runtime (OpenCV for video and
cameras); evaluate adds pycocotools, and TensorFlow only for SavedModels and frozen graphs.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import time

from data_prep import schema
from edge.errors import EdgeError
from edge.labels import check_label_index, read_labels

log = logging.getLogger("edge")

DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_OUTPUT = "detections"


def _write_image(path: pathlib.Path, pixels) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    Image.fromarray(pixels).save(temporary)
    temporary.replace(path)


def run_detect(args: argparse.Namespace) -> int:
    from edge.detect import above, open_detector
    from edge.draw import draw_detections
    from edge.sources import expand_inputs, frames, open_capture, read_image

    sources = expand_inputs(args.inputs)
    labels = read_labels(args.labels, args.model)
    detector = open_detector(args.model, threads=args.threads)
    output = args.output
    labels_path = args.labels or args.model.parent / schema.LABELS_FILE
    records = []

    def detect_above_threshold(image) -> list:
        detections = above(detector.detect(image), args.score_threshold)
        for detection in detections:
            check_label_index(labels, labels_path, detection.label_index)
        return detections

    def emit(record: dict) -> None:
        if args.json is None:
            print(json.dumps(record), flush=True)
        records.append(record)

    for source in sources:
        if source.kind == "image":
            image = read_image(source)
            detections = detect_above_threshold(image)
            if not args.no_images:
                suffix = pathlib.Path(source.location).suffix.lower()
                target = output / (source.name + (suffix if suffix in (".png", ".jpg") else ".jpg"))
                _write_image(target, draw_detections(image, detections, labels))
            emit({"input": source.location, "detections": [d.as_dict(labels) for d in detections]})
            continue
        capture = open_capture(source)
        writer, started = None, time.monotonic()
        try:
            for number, frame in enumerate(frames(capture, args.max_frames)):
                detections = detect_above_threshold(frame)
                if not args.no_images:
                    writer = writer or _video_writer(output / f"{source.name}.mp4", frame, capture)
                    import cv2

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
            log.info("stopped by Ctrl-C")
        finally:
            capture.release()
            if writer is not None:
                writer.release()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        temporary = args.json.with_name(args.json.name + ".tmp")
        temporary.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
        temporary.replace(args.json)
    if not args.no_images:
        log.info("annotated output in %s", output)
    return 0


def _video_writer(path: pathlib.Path, frame, capture):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    height, width = frame.shape[:2]
    return cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps if fps > 0 else 15.0, (width, height)
    )


def run_benchmark(args: argparse.Namespace) -> int:
    from edge.benchmark import benchmark

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
    from edge.detect import open_detector
    from edge.evaluate import evaluate, samples_from_path, write_per_class_plot

    labels = read_labels(args.labels, args.model)
    if not labels:
        labels_path = args.data / schema.LABELS_FILE
        labels = read_labels(labels_path, args.model) if labels_path.is_file() else []
    samples = samples_from_path(args.data, labels or None)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edge", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    commands = parser.add_subparsers(dest="command", required=True)
    formatter = argparse.ArgumentDefaultsHelpFormatter

    detect = commands.add_parser(
        "detect",
        help="detect objects in images, folders, videos or a camera",
        formatter_class=formatter,
    )
    detect.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image, folder, video or camera index"
    )
    detect.add_argument(
        "--model", type=pathlib.Path, required=True, help=".tflite, SavedModel or .pb"
    )
    detect.add_argument(
        "--labels", type=pathlib.Path, help="labels.txt (default: beside the model)"
    )
    detect.add_argument("--threads", type=int, default=4, help="CPU threads for TFLite")
    detect.add_argument(
        "--score-threshold",
        type=float,
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
    detect.add_argument("--max-frames", type=int, help="stop a video or camera after N frames")

    bench = commands.add_parser("benchmark", help="TFLite latency", formatter_class=formatter)
    bench.add_argument("--model", type=pathlib.Path, required=True, help=".tflite file")
    bench.add_argument("--threads", type=int, nargs="+", default=[1, 4], help="thread counts")
    bench.add_argument("--runs", type=int, default=50, help="timed runs per thread count")
    bench.add_argument("--warmup", type=int, default=5, help="untimed runs first")

    evaluation = commands.add_parser(
        "evaluate",
        help="COCO AP of any export on a channel or VOC folder",
        formatter_class=formatter,
    )
    evaluation.add_argument(
        "--model", type=pathlib.Path, required=True, help=".tflite, SavedModel or .pb"
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
    evaluation.add_argument("--threads", type=int, default=4, help="CPU threads for TFLite")
    evaluation.add_argument("--limit", type=int, help="evaluate at most N images")
    evaluation.add_argument("--plot", type=pathlib.Path, help="write a per-class AP chart (PNG)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    handlers = {"detect": run_detect, "benchmark": run_benchmark, "evaluate": run_evaluate}
    try:
        return handlers[args.command](args)
    except EdgeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
