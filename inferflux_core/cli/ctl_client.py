"""What ``inferctl chat`` and ``inferctl complete`` send, and how they read the replies."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from inferflux_core.errors import InferfluxError

#: inferctl's system message unless ``--system`` says otherwise (``--system ""``: none).
DEFAULT_SYSTEM = "You are a helpful assistant."


def server_error(response: httpx.Response) -> InferfluxError:
    """The server's error message (and a hint for a missing key), as an InferfluxError."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    hint = " (pass --api-key or set INFERFLUX_API_KEY)" if response.status_code == 401 else ""
    return InferfluxError(f"{response.status_code}: {message}{hint}")


def get_json(client: httpx.Client, path: str) -> Any:
    """``GET path``'s JSON; InferfluxError on an error status."""
    response = client.get(path)
    if response.is_error:
        raise server_error(response)
    return response.json()


def default_model(client: httpx.Client) -> str:
    """The first model the server lists for this key."""
    listed = get_json(client, "/v1/models").get("data") or []
    if not listed:
        raise InferfluxError("the server lists no model this key may use")
    return str(listed[0]["id"])


def sampling_body(
    *,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    seed: int | None,
) -> dict[str, Any]:
    """The sampling fields given on the command line; the rest are left to the server, which
    applies the model's own defaults (``/v1/models/{id}`` shows them)."""
    fields = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
    return {name: value for name, value in fields.items() if value is not None}


def post_json(client: httpx.Client, path: str, body: dict[str, Any]) -> Any:
    """``POST path`` without streaming; the whole response object."""
    response = client.post(path, json={**body, "stream": False})
    if response.is_error:
        raise server_error(response)
    return response.json()


def stream_text(
    client: httpx.Client,
    path: str,
    body: dict[str, Any],
    delta: Callable[[dict[str, Any]], str | None],
) -> Iterator[str]:
    """``POST path`` with ``stream: true``; each text piece as it comes.

    Leaving the iteration early (a ``KeyboardInterrupt`` from Ctrl-C included) closes the
    connection, which makes the server cancel the request and free its sequence.
    """
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        if response.is_error:
            response.read()
            raise server_error(response)
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise InferfluxError(str(chunk["error"].get("message", chunk["error"])))
            for choice in chunk.get("choices", []):
                text = delta(choice)
                if text:
                    yield text


def chat_delta(choice: dict[str, Any]) -> str | None:
    """A chat chunk's text."""
    return (choice.get("delta") or {}).get("content")


def completion_delta(choice: dict[str, Any]) -> str | None:
    """A completion chunk's text."""
    return choice.get("text")
