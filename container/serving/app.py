"""The WSGI application: SageMaker's three routes over one `ServedModel`.

    GET  /ping                   200 once this worker's model is loaded, 503 while it loads
    POST /invocations            detections (see responses.py for the shapes)
    GET  /execution-parameters   what batch transform should send (concurrency, payload size)

Bad input is a `RequestError` and gets its 4xx with a one-line JSON error; anything else is a
bug: logged with its traceback, answered 500. Either way the worker keeps serving.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable

from sagemaker_tfod.container.serving import decoding, media_types, responses
from sagemaker_tfod.container.serving.config import ServeConfig
from sagemaker_tfod.container.serving.decoding import Options, RequestError
from sagemaker_tfod.container.serving.model import ServedModel

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], object]
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# SageMaker's batch transform sends one image per request (SplitType None) or one JSON line.
BATCH_STRATEGY = "SINGLE_RECORD"
# Requests of one worker that decode or detect at once: one on the model while the next one
# decodes. More only oversubscribe the CPUs (every worker has its own), and make waiting
# unfair: the semaphore queues in arrival order, the model's lock would not.
COMPUTE_SLOTS = 2
MAX_TRANSFORM_PAYLOAD_MB = 100  # SageMaker's upper bound for MaxPayloadInMB


class ServingApp:
    """`app(environ, start_response)`: one instance per worker process."""

    def __init__(self, config: ServeConfig, model: ServedModel) -> None:
        self.config = config
        self.model = model
        self.defaults = Options(config.score_threshold, config.max_detections)
        self._compute = threading.Semaphore(COMPUTE_SLOTS)
        decoding.use_own_pixel_limit()

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        try:
            if path == "/ping":
                self._allow(method, ("GET", "HEAD"))
                return self._ping(start_response)
            if path == "/invocations":
                self._allow(method, ("POST",))
                return self._invocations(environ, start_response)
            if path == "/execution-parameters":
                self._allow(method, ("GET",))
                return self._execution_parameters(start_response)
            raise RequestError(
                404, f"no route {path!r}; use /ping, /invocations or /execution-parameters"
            )
        except RequestError as error:
            if error.status >= 500:
                log.warning("%s %s: %d %s", method, path, error.status, error.message)
            else:
                log.info("%s %s: %d %s", method, path, error.status, error.message)
            return self._respond(
                start_response,
                error.status,
                responses.error_body(error.status, error.message),
                media_types.JSON,
            )
        except Exception as error:
            log.exception("internal error answering %s %s", method, path)
            message = (
                f"internal error ({type(error).__name__}); this is a bug in the serving "
                "container, not in the request: the traceback is in the endpoint's log"
            )
            return self._respond(
                start_response, 500, responses.error_body(500, message), media_types.JSON
            )

    @staticmethod
    def _allow(method: str, allowed: tuple[str, ...]) -> None:
        if method not in allowed:
            raise RequestError(405, f"method {method} is not allowed here; use {allowed[0]}")

    @staticmethod
    def _respond(
        start_response: StartResponse, status: int, body: bytes, content_type: str
    ) -> list[bytes]:
        start_response(
            f"{status} {REASONS.get(status, '')}".rstrip(),
            [("Content-Type", content_type), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _ping(self, start_response: StartResponse) -> list[bytes]:
        if self.model.ready:
            body = json.dumps({"status": "ok", "model": self.model.info}).encode()
            return self._respond(start_response, 200, body, media_types.JSON)
        body = json.dumps({"status": "loading", "export": self.model.choice.name}).encode()
        return self._respond(start_response, 503, body, media_types.JSON)

    def _execution_parameters(self, start_response: StartResponse) -> list[bytes]:
        payload_mb = max(1, min(MAX_TRANSFORM_PAYLOAD_MB, int(self.config.max_payload_mb)))
        body = json.dumps(
            {
                "MaxConcurrentTransforms": self.config.max_concurrent_transforms,
                "BatchStrategy": BATCH_STRATEGY,
                "MaxPayloadInMB": payload_mb,
            }
        ).encode()
        return self._respond(start_response, 200, body, media_types.JSON)

    def _invocations(self, environ: dict, start_response: StartResponse) -> list[bytes]:
        try:
            kind = media_types.request_kind(environ.get("CONTENT_TYPE"))
            response_format = media_types.negotiate(
                environ.get("HTTP_ACCEPT"), kind, self.config.default_accept
            )
        except media_types.MediaTypeError as error:
            raise RequestError(error.status, str(error)) from None
        body = decoding.read_body(
            environ["wsgi.input"], environ.get("CONTENT_LENGTH"), self.config.max_payload_bytes
        )
        images, body_options, batch = decoding.split_images(body, kind, self.config.max_batch)
        del body
        options = decoding.parse_options(
            environ.get("QUERY_STRING", ""),
            environ.get("HTTP_X_AMZN_SAGEMAKER_CUSTOM_ATTRIBUTES"),
            body_options,
            response_format.n_predictions,
            self.defaults,
        )
        if not self.model.wait_ready(self.config.timeout_s):
            raise RequestError(503, "the model is still loading; retry in a few seconds")
        results = []
        for encoded in images:
            if not self._compute.acquire(timeout=self.config.timeout_s):
                raise RequestError(
                    503,
                    f"the server was busy for {self.config.timeout_s} s "
                    "(SAGEMAKER_MODEL_SERVER_TIMEOUT); send fewer requests at once or add "
                    "instances",
                )
            try:
                image = decoding.decode_image(
                    encoded, self.config.max_pixels, self.model.input_size
                )
                detections = self.model.detect(image, options, self.config.timeout_s)
            finally:
                self._compute.release()
            results.append(responses.ImageResult(image.width, image.height, detections))
        body = responses.render(results, batch, response_format, self.model.info, self.model.labels)
        return self._respond(start_response, 200, body, response_format.media_type)
