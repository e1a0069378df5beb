"""An Open Policy Agent guardrail: ask OPA's data API whether a request may run.

For every generation request it POSTs ``{"input": {...}}`` to ``<url>/v1/data/<policy>``
(OPA's documented data API) and reads ``result``: ``true`` allows, ``false`` refuses; an
object allows when its ``allow`` is true and may give a ``reason``. An undefined result (no
such policy), an error status, a timeout or an unreachable server refuse the request
(fail closed). The input holds ``model``, ``endpoint``, ``request_id``, ``key_id``,
``scopes`` and, unless ``send_prompt: false``, the prompt ``text``.

Options: ``url`` (e.g. ``http://127.0.0.1:8181``), ``policy`` (the data path, e.g.
``inferflux/allow``), ``timeout_seconds`` (default 2), ``send_prompt`` (default true).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import Field

from inferflux_core.contracts import Guardrail, GuardrailInput, GuardrailVerdict, PluginOptions
from inferflux_core.hookspecs import hookimpl

#: The version of inferflux's hook contract this plugin was written against.
INFERFLUX_HOOKSPEC_VERSION = 1

MAX_ANSWER_BYTES = 64 * 1024


class OpaOptions(PluginOptions):
    """``guardrails[].options`` of ``opa``."""

    url: str = Field(description="OPA's base URL, `http(s)://host:port`")
    policy: str = Field(description="the data path, e.g. `inferflux/allow`")
    timeout_seconds: float = Field(2.0, gt=0, description="per decision")
    send_prompt: bool = Field(True, description="include the prompt `text` in the input")


class OpaGuardrail(Guardrail):
    """Asks OPA; see the module docstring."""

    options_model = OpaOptions

    def __init__(
        self, *, url: str, policy: str, timeout_seconds: float = 2.0, send_prompt: bool = True
    ) -> None:
        super().__init__(url=url, policy=policy)
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ValueError(f"url must be an http(s) URL, got {url!r}")
        path = "/".join(quote(part, safe="") for part in policy.strip("/").split("/") if part)
        if not path:
            raise ValueError("policy must name a data path, e.g. inferflux/allow")
        self._endpoint = f"{url.rstrip('/')}/v1/data/{path}"
        self._timeout = timeout_seconds
        self._send_prompt = send_prompt
        self._client: httpx.AsyncClient | None = None

    async def check_input(self, request: GuardrailInput) -> GuardrailVerdict:
        """OPA's decision; raises (so the request is refused) if there is none."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        response = await self._client.post(self._endpoint, json={"input": self._input(request)})
        response.raise_for_status()
        if len(response.content) > MAX_ANSWER_BYTES:
            raise ValueError("OPA's answer is too large")
        return _verdict(response.json())

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _input(self, request: GuardrailInput) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": request.model,
            "endpoint": request.endpoint,
            "request_id": request.request_id,
            "key_id": request.key_id,
            "scopes": list(request.scopes),
        }
        if self._send_prompt:
            data["text"] = request.text
        return data


def _verdict(answer: Any) -> GuardrailVerdict:
    if not isinstance(answer, dict) or "result" not in answer:
        raise ValueError("OPA returned no result: the policy is undefined")
    result = answer["result"]
    if isinstance(result, bool):
        return GuardrailVerdict(result, "" if result else "refused by policy")
    if isinstance(result, dict) and isinstance(result.get("allow"), bool):
        reason = result.get("reason")
        return GuardrailVerdict(result["allow"], str(reason)[:500] if reason else "")
    raise ValueError("OPA's result is neither a boolean nor an object with 'allow'")


@hookimpl
def register_guardrails() -> dict[str, type[Guardrail]]:
    """The OPA guardrail, as ``opa``."""
    return {"opa": OpaGuardrail}
