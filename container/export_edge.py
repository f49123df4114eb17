"""Edge exports: frozen graph, TFLite (float always; fp16 or int8 on request), ONNX (gated, see
container/export_onnx.py), `export.json`.

Every file is evaluated on the eval shards with the Pi-side code (`edge.evaluate`), and a
quantised file ships only if its AP50 is at least `AP50_RATIO_FLOOR` of the float model's;
otherwise the float file stays the answer, export.json says why, and the safer variant is tried.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from sagemaker_tfod.container import export_frozen, export_onnx, export_tflite
from sagemaker_tfod.data_prep import schema
from sagemaker_tfod.data_prep.files import atomic_output_path, atomic_write_bytes
from sagemaker_tfod.edge import detect as edge_detect
from sagemaker_tfod.edge import evaluate as edge_evaluate
from sagemaker_tfod.edge.labels import EXPORT_JSON
from sagemaker_tfod.edge.preprocess import letterbox

log = logging.getLogger(__name__)

Commit = Callable[[], contextlib.AbstractContextManager]  # held while a file is put in place

FROZEN_GRAPH = "frozen_inference_graph.pb"
FLOAT_TFLITE = "model.tflite"
# A quantised model must keep this share of the float model's AP50 to ship.
AP50_RATIO_FLOOR = 0.97
# Evaluating more than this many images adds time, not information, to the gate.
MAX_EVAL_IMAGES = 500

# inference_type -> (file name, recipes to try in order: the preferred one, then safer ones).
QUANTIZED_FILES = {
    # FLOAT keeps float arithmetic: float16 weights halve the file. (Dynamic-range int8 weights,
    # the TF1 image's FLOAT, measured ~3x slower than float on CPU: hybrid kernels.)
    "FLOAT": ("model_fp16.tflite", ("fp16",)),
    "QUANTIZED_UINT8": ("model_int8.tflite", ("int8", "int8_float_io")),
    "INT8": ("model_int8.tflite", ("int8", "int8_float_io")),
}


def _tflite_input_size(params) -> tuple[int, int]:
    """The network's input: the training size, padded to a multiple of 2**max_level."""
    from official.vision.ops import preprocess_ops

    size = list(params.task.model.input_size[:2])
    if params.task.train_data.parser.pad:
        padded = preprocess_ops.compute_padded_size(size, 2**params.task.model.max_level)
        size = [int(v) for v in np.asarray(padded).reshape(-1)]
    return size[0], size[1]


def calibration_images(
    train_shards: Sequence[str], count: int, height: int, width: int
) -> list[np.ndarray]:
    """`count` training images letterboxed exactly as the Pi does, as [1, H, W, 3] uint8."""
    images = []
    for sample in edge_evaluate.samples_from_shards(train_shards):
        pixels, _ = letterbox(sample.image, height, width)
        images.append(pixels[np.newaxis])
        if len(images) >= count:
            break
    if len(images) < count:
        log.warning(
            "calibration: asked for %d images, the train shards hold %d", count, len(images)
        )
    return images


def tflite_description(path: pathlib.Path) -> dict[str, Any]:
    """Input shape/dtype/quantisation and output names of a TFLite file, read back from it."""
    detector = edge_detect.TfliteDetector(path)
    scale, zero_point = detector.input["quantization"]
    return {
        "input": {
            "shape": [int(v) for v in detector.input["shape"]],
            "dtype": np.dtype(detector.input["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)},
        },
        "outputs": list(edge_detect.TFLITE_OUTPUTS),
        "size_bytes": path.stat().st_size,
    }


class _Evaluator:
    """Scores exports on the same images (loaded once) with the Pi-side code."""

    def __init__(self, eval_shards: Sequence[str], train_shards: Sequence[str], num_classes: int):
        shards, self.data = list(eval_shards), "eval shards"
        if not shards:
            shards, self.data = list(train_shards), "train shards (the channel has no eval shards)"
        self.samples = list(self._take(edge_evaluate.samples_from_shards(shards)))
        self.data = f"{len(self.samples)} images from the {self.data}"
        self.num_classes = num_classes

    @staticmethod
    def _take(samples: Iterator) -> Iterator:
        for number, sample in enumerate(samples):
            if number >= MAX_EVAL_IMAGES:
                return
            yield sample

    def score(self, path: pathlib.Path) -> dict[str, Any]:
        started = time.monotonic()
        detector = edge_detect.open_detector(path, threads=2)
        scores = edge_evaluate.evaluate(detector, self.samples, self.num_classes)
        log.info(
            "evaluated %s: AP=%.4f AP50=%.4f (%.1f s)",
            path.name,
            scores["AP"],
            scores["AP50"],
            time.monotonic() - started,
        )
        return scores


def _named_per_class(scores: dict[str, Any], label_map: dict[int, str]) -> dict[str, Any]:
    """per_class_AP keyed by class name (index i is label-map id i + 1)."""
    named = dict(scores)
    named["per_class_AP"] = {
        label_map.get(index + 1, str(index)): value
        for index, value in scores["per_class_AP"].items()
    }
    named.pop("seconds", None)
    return named


def quantization_verdict(
    float_ap50: float, quantized_ap50: float, ratio_floor: float = AP50_RATIO_FLOOR
) -> tuple[bool, str]:
    """Whether a quantised model may ship, and the reason in words."""
    floor = ratio_floor * float_ap50
    if float_ap50 <= 0.0:
        return True, "the float model's AP50 is 0, so the gate cannot tell; shipped unverified"
    ratio = quantized_ap50 / float_ap50
    if quantized_ap50 >= floor:
        return True, f"AP50 {quantized_ap50:.4f} is {ratio:.1%} of float's {float_ap50:.4f}"
    return False, (
        f"AP50 {quantized_ap50:.4f} is {ratio:.1%} of float's {float_ap50:.4f}, "
        f"below the {ratio_floor:.0%} floor"
    )


class EdgeExporter:
    """The edge exports of one checkpoint, one output per step (see `steps`), so that a stop
    can leave the slow ones out: each step writes its file and its `export.json` entry, and
    `write_record` writes `export.json` for whatever has been done, listing what was not."""

    def __init__(
        self,
        params,
        checkpoint_path: str,
        model_dir: pathlib.Path,
        *,
        quantize: bool,
        inference_type: str,
        calibration_samples: int,
        train_shards: list[str],
        eval_shards: list[str],
        label_map: dict[int, str],
        onnx: bool = True,
        ap50_ratio_floor: float = AP50_RATIO_FLOOR,
        commit: Commit = contextlib.nullcontext,
    ) -> None:
        self.params = params
        self.checkpoint_path = checkpoint_path
        self.model_dir = pathlib.Path(model_dir)
        self.quantize = quantize
        self.inference_type = inference_type
        self.calibration_samples = calibration_samples
        self.train_shards = train_shards
        self.eval_shards = eval_shards
        self.label_map = label_map
        self.onnx = onnx
        self.ap50_ratio_floor = ap50_ratio_floor
        self.onnx_decision: dict[str, Any] = {"requested": False}
        self.commit = commit  # held while a file is put in place (a stop's watchdog waits)
        self.started = time.monotonic()
        self.height, self.width = _tflite_input_size(params)
        self.files: dict[str, Any] = {}
        self.quantization: dict[str, Any] = {
            "requested": bool(quantize),
            "inference_type": inference_type,
        }
        self.shipped = FLOAT_TFLITE
        self._evaluator: _Evaluator | None = None
        self._module = None

    @property
    def quantized_file(self) -> str:
        return QUANTIZED_FILES[self.inference_type][0]

    @property
    def evaluator(self) -> _Evaluator:
        if self._evaluator is None:
            self._evaluator = _Evaluator(self.eval_shards, self.train_shards, len(self.label_map))
            log.info(
                "edge exports: input %dx%d, scoring on %s",
                self.height,
                self.width,
                self._evaluator.data,
            )
        return self._evaluator

    def _put(self, path: pathlib.Path, data: bytes) -> None:
        with self.commit():
            atomic_write_bytes(path, data)

    def steps(self) -> list[tuple[str, Callable[[], None], tuple[str, ...]]]:
        """(output name, step, names of the outputs it needs), in the order to run them."""
        steps = [
            (FROZEN_GRAPH, self.frozen_graph, ()),
            (FLOAT_TFLITE, self.float_tflite, ()),
        ]
        if self.quantize:
            steps.append((self.quantized_file, self.quantized_tflite, (FLOAT_TFLITE,)))
        # Last: under a stop the quantised file (what a Pi runs) matters more than ONNX.
        if self.onnx:
            steps.append((export_onnx.ONNX_FILE, self.onnx_model, (FLOAT_TFLITE,)))
        else:
            (self.model_dir / export_onnx.ONNX_FILE).unlink(missing_ok=True)  # an earlier run's
        return steps

    # ------------------------------------------------------------------ the steps
    def score_saved_model(self) -> None:
        saved_model = self.model_dir / "saved_model"
        if (saved_model / "saved_model.pb").is_file():
            self.files["saved_model"] = {
                "size_bytes": sum(p.stat().st_size for p in saved_model.rglob("*") if p.is_file()),
                "eval": _named_per_class(self.evaluator.score(saved_model), self.label_map),
            }

    def frozen_graph(self) -> None:
        log.info("freezing the serving graph to %s", FROZEN_GRAPH)
        graph_def = export_frozen.frozen_graph_def(self.params, self.checkpoint_path)
        frozen_path = self.model_dir / FROZEN_GRAPH
        self._put(frozen_path, graph_def.SerializeToString())
        # Listed as soon as it is in place (a stop may cut the scoring short).
        self.files[FROZEN_GRAPH] = entry = {
            "input": {"name": "image_tensor", "shape": [1, None, None, 3], "dtype": "uint8"},
            "outputs": list(export_frozen.OUTPUT_NAMES),
            "size_bytes": frozen_path.stat().st_size,
        }
        entry["eval"] = _named_per_class(self.evaluator.score(frozen_path), self.label_map)

    def _tflite_module(self):
        if self._module is None:
            model = export_tflite.build_model(self.params, self.height, self.width)
            export_tflite.restore(model, self.checkpoint_path)
            self._module = export_tflite.TfliteDetectionModule(
                self.params, model, self.height, self.width
            )
        return self._module

    def _convert_and_score(
        self, recipe_name: str, path: pathlib.Path, calibration=None, listed_as: str = ""
    ) -> dict:
        recipe = export_tflite.RECIPES[recipe_name]
        log.info("converting %s (%s)", path.name, recipe.description)
        self._put(path, export_tflite.convert(self._tflite_module(), recipe, calibration))
        entry = {"recipe": recipe.name, "recipe_description": recipe.description}
        entry.update(tflite_description(path))
        if listed_as:  # in place under its final name: listed before the (long) scoring
            self.files[listed_as] = entry
        entry["eval"] = _named_per_class(self.evaluator.score(path), self.label_map)
        return entry

    def float_tflite(self) -> None:
        path = self.model_dir / FLOAT_TFLITE
        self._convert_and_score("float", path, listed_as=FLOAT_TFLITE)

    def quantized_tflite(self) -> None:
        """The quantised file, shipped only if it keeps ap50_ratio_floor of the float AP50."""
        float_ap50 = self.files[FLOAT_TFLITE]["eval"]["AP50"]
        file_name, recipes = QUANTIZED_FILES[self.inference_type]
        images: list[np.ndarray] = []
        if any(export_tflite.RECIPES[name].quantize == "int8" for name in recipes):
            images = calibration_images(
                self.train_shards, self.calibration_samples, self.height, self.width
            )
            self.quantization["calibration_images"] = len(images)
        attempts = []
        for recipe_name in recipes:
            trial = self.model_dir / f".trial-{recipe_name}.tflite"
            try:
                entry = self._convert_and_score(recipe_name, trial, lambda: iter(images))
                accepted, reason = quantization_verdict(
                    float_ap50, entry["eval"]["AP50"], self.ap50_ratio_floor
                )
                attempts.append(
                    {"recipe": recipe_name, "AP50": entry["eval"]["AP50"], "shipped": accepted}
                    | {"reason": reason}
                )
                log.info("%s: %s -> %s", recipe_name, reason, "ship" if accepted else "reject")
                if accepted:
                    with self.commit():
                        trial.replace(self.model_dir / file_name)
                    self.files[file_name] = entry
                    self.shipped = file_name
                    break
            finally:
                trial.unlink(missing_ok=True)
        self.quantization["attempts"] = attempts
        if self.shipped == FLOAT_TFLITE:
            self.quantization["note"] = (
                f"no quantised model kept {self.ap50_ratio_floor:.0%} of the float AP50; "
                f"{file_name} was not written, use {FLOAT_TFLITE}"
            )
            log.warning("%s", self.quantization["note"])

    def onnx_model(self) -> None:
        """model.onnx, shipped only if it agrees with the float TFLite file (export_onnx)."""
        decision = export_onnx.export_onnx(
            self._tflite_module(),
            export_tflite.postprocess_settings(self.params),
            self.model_dir,
            float_tflite=self.model_dir / FLOAT_TFLITE,
            float_ap50=self.files[FLOAT_TFLITE]["eval"]["AP50"],
            images=[sample.image for sample in self.evaluator.samples],
            score=lambda path: _named_per_class(self.evaluator.score(path), self.label_map),
        )
        if decision["shipped"]:
            self.files[export_onnx.ONNX_FILE] = decision.pop("file")
        self.onnx_decision = decision

    # ------------------------------------------------------------------ the record
    def content(self, skipped: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
        """export.json: what was written, how it scored, and what a stop left out."""
        quantization = dict(self.quantization, shipped=self.shipped)
        content = {
            "labels": schema.LABELS_FILE,
            # edge.labels checks labels.txt against this before detecting.
            "num_classes": len(self.label_map),
            "class_index": "0-based into labels.txt (label-map id - 1)",
            "boxes": "normalised [ymin, xmin, ymax, xmax]",
            "tflite_preprocessing": (
                "raw RGB pixels, resized with the aspect ratio kept into the top-left corner of "
                "the input and padded with the mean pixel (edge.preprocess.letterbox)"
            ),
            "eval_data": self._evaluator.data if self._evaluator else None,
            "ap50_ratio_floor": self.ap50_ratio_floor,
            "quantization": quantization,
            "onnx": self.onnx_decision,
            "files": dict(self.files),
            "seconds": round(time.monotonic() - self.started, 1),
        }
        if skipped:
            content["skipped"] = skipped
        return content

    def write_record(
        self, skipped: dict[str, dict[str, str]] | None = None, plot: bool = True
    ) -> dict[str, Any]:
        """Write export.json (and export.png with `plot`) for what has been done so far."""
        content = self.content(skipped)
        self._put(
            self.model_dir / EXPORT_JSON, (json.dumps(content, indent=2) + "\n").encode("utf-8")
        )
        if plot and any("eval" in entry for entry in content["files"].values()):
            _write_summary_plot(content, self.model_dir / "export.png", self.commit)
        return content


def _write_summary_plot(content: dict[str, Any], path: pathlib.Path, commit: Commit) -> None:
    """AP50 and size of every export side by side, for a glance at what quantisation cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, entry in content["files"].items() if "eval" in entry]
    ap50 = [content["files"][name]["eval"]["AP50"] for name in names]
    sizes = [content["files"][name].get("size_bytes", 0) / 1e6 for name in names]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.barh(names, ap50, color="#3a7")
    for row, value in enumerate(ap50):
        left.text(value, row, f" {value:.3f}", va="center", fontsize=8)
    left.set_xlim(0, 1.15)
    left.set_title(f"AP50 on {content['eval_data']}", fontsize=9)
    right.barh(names, sizes, color="#37a")
    for row, value in enumerate(sizes):
        right.text(value, row, f" {value:.2f}", va="center", fontsize=8)
    right.set_title("size (MB)", fontsize=9)
    figure.tight_layout()
    try:
        with commit(), atomic_output_path(path) as temporary:
            figure.savefig(temporary, dpi=100)
    finally:
        plt.close(figure)
