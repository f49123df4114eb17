"""Content types the server reads and writes, and `Accept` negotiation (pure, no imports).

Requests: image bytes (`image/jpeg`, `image/png`, `application/x-image`; also no type or
`application/octet-stream`, sniffed), `application/json` (base64 images) and
`application/jsonlines` (one JSON object with a base64 image per line, for batch transform).
Responses: `application/json`, its JumpStart variant `application/json;verbose` (optionally
`;n_predictions=K`), and `application/jsonlines`.
"""

from __future__ import annotations

from dataclasses import dataclass

JSON = "application/json"
JSONLINES = "application/jsonlines"
IMAGE_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/png", "application/x-image", "application/octet-stream"}
)
JSON_TYPES = frozenset({JSON})
JSONLINES_TYPES = frozenset({JSONLINES, "application/x-jsonlines", "application/jsonl"})
REQUEST_TYPES = ("image/jpeg", "image/png", "application/x-image", JSON, JSONLINES)
RESPONSE_TYPES = (JSON, f"{JSON};verbose", JSONLINES)

IMAGE, JSON_BODY, JSONLINES_BODY = "image", "json", "jsonlines"


class MediaTypeError(ValueError):
    """A Content-Type or Accept the server cannot honour; `status` is 415 or 406."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_media_type(header: str) -> tuple[str, dict[str, str]]:
    """`application/json; verbose; n_predictions=5` -> ("application/json", {"verbose": "",
    "n_predictions": "5"}): the type lower-cased, parameters without quotes."""
    parts = [part.strip() for part in header.split(";")]
    params: dict[str, str] = {}
    for part in parts[1:]:
        if not part:
            continue
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return parts[0].lower(), params


def request_kind(content_type: str | None) -> str:
    """IMAGE, JSON_BODY or JSONLINES_BODY for a Content-Type header; MediaTypeError(415) else."""
    media_type, _ = parse_media_type(content_type or "")
    if media_type in ("", *IMAGE_TYPES):
        return IMAGE
    if media_type in JSON_TYPES:
        return JSON_BODY
    if media_type in JSONLINES_TYPES:
        return JSONLINES_BODY
    raise MediaTypeError(
        415,
        f"Content-Type {content_type!r} is not supported; send one of {', '.join(REQUEST_TYPES)}",
    )


@dataclass(frozen=True)
class ResponseFormat:
    """What to answer with: the media type, JumpStart's verbose shape, and its n_predictions."""

    media_type: str
    verbose: bool = False
    n_predictions: int | None = None


def _format_of(media_type: str, params: dict[str, str], header: str) -> ResponseFormat | None:
    if media_type in (JSON, "application/*"):
        verbose = "verbose" in params
        n_predictions = None
        if "n_predictions" in params:
            try:
                n_predictions = int(params["n_predictions"])
            except ValueError:
                n_predictions = -1
            if n_predictions < 1:
                raise MediaTypeError(
                    406,
                    f"Accept {header!r}: n_predictions must be a whole number of at least 1",
                )
        return ResponseFormat(JSON, verbose, n_predictions)
    if media_type in JSONLINES_TYPES:
        return ResponseFormat(JSONLINES, "verbose" in params)
    return None


def negotiate(accept: str | None, kind: str, default_accept: str) -> ResponseFormat:
    """The response format for an Accept header (several, with q-values, are understood).

    No Accept or `*/*`: JSON Lines for a JSON Lines request (batch transform joins lines),
    else `default_accept` (SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT).
    """
    candidates: list[tuple[float, int, str, dict[str, str]]] = []
    for position, item in enumerate((accept or "").split(",")):
        if not item.strip():
            continue
        media_type, params = parse_media_type(item)
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 1.0
        if quality > 0:
            candidates.append((-quality, position, media_type, params))
    if not candidates or all(candidate[2] == "*/*" for candidate in candidates):
        fallback = JSONLINES if kind == JSONLINES_BODY else default_accept
        media_type, params = parse_media_type(fallback)
        found = _format_of(media_type, params, fallback)
        assert found is not None, f"default accept {fallback!r} was validated at start"
        return found
    for _, _, media_type, params in sorted(candidates):
        if media_type == "*/*":
            return negotiate(None, kind, default_accept)
        found = _format_of(media_type, params, accept or "")
        if found is not None:
            return found
    raise MediaTypeError(
        406, f"Accept {accept!r} is not supported; ask for one of {', '.join(RESPONSE_TYPES)}"
    )


def check_default_accept(value: str) -> str | None:
    """A problem with SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT, or None when it is usable."""
    media_type, params = parse_media_type(value)
    try:
        if _format_of(media_type, params, value) is not None:
            return None
    except MediaTypeError as error:
        return str(error)
    return f"{value!r} is not a response type this server writes; use one of " + ", ".join(
        RESPONSE_TYPES
    )
