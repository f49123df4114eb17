"""Find a TFLite interpreter (ai-edge-litert first, then tflite-runtime), or onnxruntime.

None needs TensorFlow. The import is done when a model is opened, so `--help` works
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


def load_onnx_session(model_path: str, threads: int):
    """An onnxruntime session for `model_path` on `threads` CPU threads (imported here, lazily:
    only ONNX models need onnxruntime)."""
    try:
        import onnxruntime
    except ImportError:
        raise EdgeError(
            f"{model_path}: ONNX models need onnxruntime; run `pip install onnxruntime` "
            "(or install the project's `onnx` extra), or use the .tflite files"
        ) from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings are framework chatter here
    try:
        return onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own exception types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise EdgeError(
            f"{model_path}: not an ONNX model onnxruntime can load ({type(error).__name__}: "
            f"{first_line}); pass the model.onnx written by the training container"
        ) from None
