"""`invoke ENDPOINT IMAGE...`: send images to an endpoint, print its detections, draw them.

The response is the container's own JSON (container/serving/responses.py); drawing reuses the
Raspberry Pi side's code (`edge.draw`), so an endpoint's boxes look like `edge detect`'s.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any, TextIO

from sagemaker_tfod.launch.errors import LaunchError, aws_action

# SageMaker's InvokeEndpoint accepts at most this many bytes in a request body.
REALTIME_PAYLOAD_LIMIT = 6 * 1024 * 1024
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def content_type(path: pathlib.Path) -> str:
    """image/jpeg or image/png by suffix; anything else goes as application/x-image (the
    server reads the format from the bytes)."""
    return CONTENT_TYPES.get(path.suffix.lower(), "application/x-image")


def custom_attributes(score_threshold: float | None, max_detections: int | None) -> str | None:
    """The CustomAttributes string the server reads its per-request options from."""
    parts = []
    if score_threshold is not None:
        parts.append(f"score_threshold={score_threshold:g}")
    if max_detections is not None:
        parts.append(f"max_detections={max_detections}")
    return ",".join(parts) or None


def build_invoke_request(
    endpoint: str, path: pathlib.Path, body: bytes, attributes: str | None
) -> dict[str, Any]:
    if len(body) > REALTIME_PAYLOAD_LIMIT:
        raise LaunchError(
            f"{path}: {len(body) / (1024 * 1024):.1f} MiB, above SageMaker's 6 MiB real-time "
            "limit; resize or re-compress it, or use `transform` (batch) for large images"
        )
    request: dict[str, Any] = {
        "EndpointName": endpoint,
        "ContentType": content_type(path),
        "Accept": "application/json",
        "Body": body,
    }
    if attributes:
        request["CustomAttributes"] = attributes
    return request


def detections_of(response: dict):
    """The container's JSON -> edge Detections and a label list indexed by label_index."""
    from sagemaker_tfod.edge.detect import Detection

    detections, names = [], {}
    for item in response.get("detections", []):
        index = int(item["label_index"])
        names[index] = item.get("label", f"class {index}")
        detections.append(Detection(index, float(item["score"]), tuple(item["box"])))
    labels = [names.get(i, f"class {i}") for i in range(max(names, default=-1) + 1)]
    return detections, labels


def _draw(source: pathlib.Path, response: dict, target: pathlib.Path) -> None:
    from PIL import Image

    from sagemaker_tfod.data_prep.files import atomic_output_path
    from sagemaker_tfod.edge.draw import draw_detections
    from sagemaker_tfod.edge.preprocess import load_rgb

    detections, labels = detections_of(response)
    drawn = draw_detections(load_rgb(str(source)), detections, labels)
    with atomic_output_path(target) as temporary:
        Image.fromarray(drawn).save(temporary)


def image_paths(inputs: Sequence[str]) -> list[pathlib.Path]:
    """Image files, folders expanded (sorted), as `edge detect` reads them; videos refused."""
    from sagemaker_tfod.edge.errors import EdgeError
    from sagemaker_tfod.edge.sources import expand_inputs

    try:
        sources = expand_inputs(list(inputs))
    except EdgeError as error:
        raise LaunchError(str(error)) from None
    others = [source.location for source in sources if source.kind != "image"]
    if others:
        raise LaunchError(
            f"{others[0]}: invoke sends images; for video use `python -m edge detect` locally"
        )
    return [pathlib.Path(source.location) for source in sources]


def draw_targets(paths: Sequence[pathlib.Path], out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Where each annotated image goes: the same names `edge detect` gives."""
    from sagemaker_tfod.edge.outputs import output_paths
    from sagemaker_tfod.edge.sources import Source

    return output_paths([Source("image", str(path)) for path in paths], out_dir)


def invoke_images(
    runtime: Any,
    endpoint: str,
    inputs: Sequence[str],
    out: TextIO,
    draw_dir: pathlib.Path | None = None,
    score_threshold: float | None = None,
    max_detections: int | None = None,
) -> int:
    """Invoke once per image, print one JSON line each; returns how many were sent."""
    paths = image_paths(inputs)
    targets = draw_targets(paths, draw_dir) if draw_dir is not None else [None] * len(paths)
    attributes = custom_attributes(score_threshold, max_detections)
    for path, target in zip(paths, targets, strict=True):
        try:
            body = path.read_bytes()
        except OSError as error:
            raise LaunchError(f"{path}: cannot read ({error.strerror})") from None
        request = build_invoke_request(endpoint, path, body, attributes)
        with aws_action(f"invoking endpoint '{endpoint}' with {path}"):
            response = runtime.invoke_endpoint(**request)
            payload = response["Body"].read()
        try:
            result = json.loads(payload)
        except ValueError:
            raise LaunchError(
                f"endpoint '{endpoint}' answered {path} with something that is not JSON "
                f"({payload[:80]!r}); is it serving this project's image?"
            ) from None
        record = {"image": str(path), **result}
        if target is not None:
            _draw(path, result, target)
            record["drawn"] = str(target)
        out.write(json.dumps(record) + "\n")
        out.flush()
    return len(paths)
