"""Every bad request gets OpenAI's error body with the right status, and nothing leaks."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import MODEL_NAME, TEST_BODY_LIMIT, TEST_CONTEXT, RunningServer

CHAT = "/v1/chat/completions"


def _error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text
    return error


@pytest.fixture
def http(server: RunningServer):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=60) as client:
        yield client
    assert server.wait_idle(), "a request was left holding a sequence"


def test_malformed_json_is_400(http: httpx.Client) -> None:
    error = _error(
        http.post(
            CHAT,
            content=b'{"model": "x", "messages": [',
            headers={"content-type": "application/json"},
        ),
        400,
    )
    assert "not valid JSON" in str(error["message"])
    assert error["type"] == "invalid_request_error"


def test_json_nested_too_deeply_is_400(http: httpx.Client) -> None:
    body = b'{"model": "x", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    error = _error(http.post(CHAT, content=body, headers={"content-type": "application/json"}), 400)
    assert "nested too deeply" in str(error["message"])


def test_body_that_is_not_an_object_is_400(http: httpx.Client) -> None:
    _error(http.post(CHAT, json=[1, 2, 3]), 400)


def test_missing_field_is_400_naming_it(http: httpx.Client) -> None:
    error = _error(http.post(CHAT, json={"model": MODEL_NAME}), 400)
    assert error["param"] == "messages"
    assert "messages" in str(error["message"])


def test_ill_typed_field_is_400_naming_it(http: httpx.Client) -> None:
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": "hot",
    }
    error = _error(http.post(CHAT, json=body), 400)
    assert error["param"] == "temperature"


def test_bad_message_role_is_400_naming_the_message(http: httpx.Client) -> None:
    body = {"model": MODEL_NAME, "messages": [{"role": "wizard", "content": "hi"}]}
    error = _error(http.post(CHAT, json=body), 400)
    assert error["param"] == "messages.0.role"


def test_unknown_fields_are_ignored(http: httpx.Client) -> None:
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "some_future_field": {"x": 1},
    }
    assert http.post(CHAT, json=body).status_code == 200


def test_unknown_model_is_404(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.chat.completions.create(
            model="gpt-17", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_prompt_longer_than_context_is_400_with_both_lengths(http: httpx.Client) -> None:
    body = {"model": MODEL_NAME, "prompt": "hello " * (TEST_CONTEXT + 100), "max_tokens": 4}
    error = _error(http.post("/v1/completions", json=body), 400)
    assert error["code"] == "context_length_exceeded"
    assert str(TEST_CONTEXT) in str(error["message"])
    n_prompt = int(str(error["message"]).split(" tokens")[0].split()[-1])
    assert n_prompt > TEST_CONTEXT


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    body = {"model": MODEL_NAME, "prompt": "x" * (TEST_BODY_LIMIT + 10)}
    _error(http.post("/v1/completions", json=body), 413)


def test_wrong_method_is_405(http: httpx.Client) -> None:
    error = _error(http.get(CHAT), 405)
    assert error["code"] == "method_not_allowed"


def test_unknown_route_is_404_json(http: httpx.Client) -> None:
    _error(http.get("/v1/nothing-here"), 404)


def test_unsupported_feature_is_400_not_ignored(http: httpx.Client) -> None:
    # The default model has no fill-in-the-middle tokens, so it cannot honour a suffix.
    body = {"model": MODEL_NAME, "prompt": "def add(a, b):\n", "suffix": "\n    return c"}
    error = _error(http.post("/v1/completions", json=body), 400)
    assert (error["param"], error["code"]) == ("suffix", "unsupported")


def test_token_id_outside_vocabulary_is_400(http: httpx.Client) -> None:
    body = {"model": MODEL_NAME, "prompt": [1, 2, 10_000_000], "max_tokens": 2}
    error = _error(http.post("/v1/completions", json=body), 400)
    assert error["param"] == "prompt"


def test_the_server_still_serves_after_errors(openai_client: openai.OpenAI) -> None:
    reply = openai_client.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=3)
    assert reply.usage is not None and reply.usage.completion_tokens >= 1


def test_health_and_readiness(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_chat_template_in_the_request_is_refused(http: httpx.Client) -> None:
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "hi"}],
        "chat_template": "{{ cycler.__init__.__globals__.os.system('id') }}",
    }
    error = _error(http.post(CHAT, json=body), 400)
    assert error["param"] == "chat_template"


def test_model_without_a_chat_template_gives_a_clear_error(server: RunningServer) -> None:
    from dataclasses import replace

    from inferflux_core.errors import ChatTemplateError

    served = server.engine.model(MODEL_NAME)
    bare = replace(served, template=None)
    with pytest.raises(ChatTemplateError, match="no chat template"):
        bare.render_chat([{"role": "user", "content": "hi"}])
