"""Find a TFLite interpreter: ai-edge-litert (maintained) first, then tflite-runtime.

Neither needs TensorFlow. The import is done when a model is opened, so `--help` works
on a machine where no runtime is installed yet.
"""

from __future__ import annotations

import importlib

from sagemaker_tfod.edge.errors import EdgeError

# (module, what to pip install) in order of preference.
_RUNTIMES = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
)


def interpreter_class() -> tuple[type, str]:
    """The Interpreter class of the first runtime installed, and the runtime's package name."""
    for module_name, package in _RUNTIMES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return module.Interpreter, package
    raise EdgeError(
        "no TFLite runtime is installed; run `pip install ai-edge-litert` "
        "(or `pip install tflite-runtime` where ai-edge-litert has no wheel)"
    )


def load_interpreter(model_path: str, threads: int):
    """An allocated interpreter for `model_path` using `threads` CPU threads."""
    interpreter_type, _ = interpreter_class()
    try:
        interpreter = interpreter_type(model_path=str(model_path), num_threads=threads)
    except ValueError as error:
        raise EdgeError(
            f"{model_path}: not a TFLite model this runtime can load ({error}); "
            "pass a .tflite file written by the training container"
        ) from None
    interpreter.allocate_tensors()
    return interpreter
