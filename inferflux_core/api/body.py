"""Reading a JSON request body within the configured size."""

from __future__ import annotations

import json
from typing import Any

import falcon.asgi

from inferflux_core.errors import InvalidRequestError, PayloadTooLargeError


async def read_json(req: falcon.asgi.Request, limit: int) -> Any:
    """The parsed JSON body; 413 past ``limit`` bytes, 400 if it is not JSON."""
    if req.content_length is not None and req.content_length > limit:
        raise PayloadTooLargeError(
            f"the request body has {req.content_length} bytes; the limit is {limit}"
        )
    data = await req.bounded_stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(f"the request body exceeds the limit of {limit} bytes")
    if not data:
        raise InvalidRequestError("the request body is empty; send a JSON object")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequestError("the request body's JSON is nested too deeply") from None
