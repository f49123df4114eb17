"""Which export of `/opt/ml/model` serves: the file `TFOD_SERVE_EXPORT` names, or the fastest one
the training job wrote for the hardware (`auto`).

Why these defaults (measured; see README "Serving"): on CPU the int8 TFLite file ran about twice
as fast as the float one and several times faster than the SavedModel, and `train` ships it only
when its AP50 is within 3% of the float model's; TFLite's Python runtime has no GPU delegate on
x86-64 Linux (its GPU delegate is built for Android and iOS), so with a GPU only the SavedModel
(TensorFlow with CUDA) uses it.

Pure apart from looking at which files exist; no TensorFlow, no numpy (runs in the master).
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from sagemaker_tfod.container.serving.config import ServeConfigError

# Export name -> path inside the model folder, as container/export.py and export_edge.py write
# them (tests/test_serving_units.py checks these against those modules' constants).
EXPORT_FILES: dict[str, str] = {
    "tflite_int8": "model_int8.tflite",
    "tflite": "model.tflite",
    "tflite_fp16": "model_fp16.tflite",
    "saved_model": "saved_model",
    "frozen_graph": "frozen_inference_graph.pb",
}
CPU_PREFERENCE = ("tflite_int8", "tflite", "tflite_fp16", "saved_model", "frozen_graph")
GPU_PREFERENCE = ("saved_model", "frozen_graph", "tflite_int8", "tflite", "tflite_fp16")
TENSORFLOW_EXPORTS = ("saved_model", "frozen_graph")
AUTO = "auto"


@dataclass(frozen=True)
class ExportChoice:
    """The export that serves and why it was picked."""

    name: str
    path: pathlib.Path
    reason: str

    @property
    def uses_tensorflow(self) -> bool:
        return self.name in TENSORFLOW_EXPORTS

    @property
    def file_name(self) -> str:
        return EXPORT_FILES[self.name]


def _present(model_dir: pathlib.Path, name: str) -> bool:
    path = model_dir / EXPORT_FILES[name]
    if name == "saved_model":
        return (path / "saved_model.pb").is_file()
    return path.is_file()


def available_exports(model_dir: pathlib.Path) -> list[str]:
    return [name for name in EXPORT_FILES if _present(model_dir, name)]


def choose_export(model_dir: pathlib.Path, requested: str, gpu: bool) -> ExportChoice:
    """The export to serve from `model_dir`; ServeConfigError names what is missing and the fix."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        raise ServeConfigError(
            f"{model_dir}: model folder not found; on SageMaker it is the training job's "
            "model.tar.gz unpacked (CreateModel ModelDataUrl), locally pass the folder "
            "`python -m launch download` unpacked"
        )
    available = available_exports(model_dir)
    if not available:
        raise ServeConfigError(
            f"{model_dir}: no export found (expected one of "
            f"{', '.join(EXPORT_FILES.values())}); serve the model folder a training job wrote"
        )
    requested = requested.strip().lower() or AUTO
    if requested == AUTO:
        order = GPU_PREFERENCE if gpu else CPU_PREFERENCE
        name = next(name for name in order if name in available)
        hardware = "a GPU" if gpu else "CPU only"
        reason = f"auto on {hardware}: first of {', '.join(order)} present"
        return ExportChoice(name, model_dir / EXPORT_FILES[name], reason)
    if requested not in EXPORT_FILES:
        raise ServeConfigError(
            f"TFOD_SERVE_EXPORT={requested!r} is not an export name; use one of "
            f"{AUTO}, {', '.join(EXPORT_FILES)}"
        )
    if requested not in available:
        raise ServeConfigError(
            f"TFOD_SERVE_EXPORT={requested}: {model_dir / EXPORT_FILES[requested]} is not in the "
            f"model; this model has {', '.join(available)} (train with export_edge=true, and "
            "quantize=true for the int8 file, to get the TFLite files)"
        )
    return ExportChoice(requested, model_dir / EXPORT_FILES[requested], "TFOD_SERVE_EXPORT")
