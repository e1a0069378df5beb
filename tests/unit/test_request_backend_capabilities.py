"""``RequestBackendCapabilities.check``: what a backend lacks is a 400 naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from inferflux_core.contracts import (
    ChatMessage,
    GenerationOptions,
    InferenceRequest,
    OutputConstraint,
    RequestBackendCapabilities,
)
from inferflux_core.errors import InvalidRequestError

MESSAGES = (ChatMessage("user", "hi"),)
GRAMMAR = OutputConstraint("grammar", grammar='root ::= "a"', param="grammar")
SCHEMA = OutputConstraint("json_schema", schema={"type": "object"}, param="text.format")


@pytest.mark.parametrize(
    ("fields", "capability", "param"),
    [
        ({"options": GenerationOptions(logprobs=0)}, "logprobs", "logprobs"),
        ({"options": GenerationOptions(n=2)}, "n", "n"),
        ({"constraint": GRAMMAR}, "grammar", "grammar"),
        ({"constraint": SCHEMA}, "json_schema", "text.format"),
    ],
)
def test_a_missing_capability_is_refused_and_a_present_one_passes(
    fields: dict[str, Any], capability: str, param: str
) -> None:
    request = InferenceRequest("m", messages=MESSAGES, **fields)
    with pytest.raises(InvalidRequestError) as caught:
        RequestBackendCapabilities().check(request)
    assert caught.value.param == param and caught.value.code == "unsupported"
    RequestBackendCapabilities(**{capability: True}).check(request)  # type: ignore[arg-type]


def test_token_ids_need_a_backend_that_takes_tokens_and_priority_is_never_refused() -> None:
    request = InferenceRequest("m", prompt=(1, 2, 3), priority=5)
    assert RequestBackendCapabilities().refusal(request) is not None
    assert RequestBackendCapabilities(input="tokens").refusal(request) is None
    plain = InferenceRequest("m", messages=MESSAGES, priority=5)
    assert RequestBackendCapabilities().refusal(plain) is None
