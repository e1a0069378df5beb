"""``POST /v1/embeddings`` on a real server: the chat model in embedding mode, the OpenAI SDK."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import math
import struct
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import openai
import pytest

from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from inferflux_core.config import ModelConfig, ServerConfig, Settings
from inferflux_core.gguf_check import read_gguf_header
from tests.conftest import (
    BLOCKED_PHRASE,
    MODEL_NAME,
    RunningServer,
    SecuredServer,
    free_port,
    start_server,
)
from tests.integration.test_examples import bigram_package

TEXTS = [
    "The capital of France is Paris.",
    "Cats are small furry animals that purr.",
    "def add(a, b): return a + b",
]
#: The default model's micro-batch (``options.batch_size``): the longest input it embeds.
MAX_INPUT_TOKENS = 512
MATRYOSHKA_MODEL = "smollm2-matryoshka"
NO_EMBEDDINGS_MODEL = "smollm2-chat-only"


def vectors(response: Any) -> list[list[float]]:
    """The SDK response's vectors, in input order."""
    assert [item.index for item in response.data] == list(range(len(response.data)))
    return [item.embedding for item in response.data]


def norm(vector: Sequence[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


def max_difference(a: Sequence[float], b: Sequence[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def model_embedding_length(server: RunningServer) -> int:
    """``<arch>.embedding_length`` from the GGUF file itself, not from the backend."""
    path = server.engine.model(MODEL_NAME).path
    header = read_gguf_header(path)
    arch = header.metadata["general.architecture"]
    return int(header.metadata[f"{arch}.embedding_length"])


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=120) as c:
        yield c


# -- shape, length, determinism ----------------------------------------------------------------


def test_each_input_gets_one_unit_vector_of_the_models_size(
    openai_client: openai.OpenAI, server: RunningServer
) -> None:
    response = openai_client.embeddings.create(model=MODEL_NAME, input=TEXTS)
    result = vectors(response)
    assert len(result) == len(TEXTS)
    size = model_embedding_length(server)
    for vector in result:
        assert len(vector) == size
        assert norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert response.object == "list" and response.model == MODEL_NAME
    assert all(item.object == "embedding" for item in response.data)
    n_tokens = sum(len(server.engine.model(MODEL_NAME).backend.tokenize(t)) for t in TEXTS)
    assert response.usage.prompt_tokens == response.usage.total_tokens == n_tokens
    # different texts, different directions
    assert max_difference(result[0], result[1]) > 1e-2


def test_the_same_input_twice_gives_identical_vectors(openai_client: openai.OpenAI) -> None:
    first = vectors(openai_client.embeddings.create(model=MODEL_NAME, input=TEXTS))
    second = vectors(openai_client.embeddings.create(model=MODEL_NAME, input=TEXTS))
    assert first == second


def test_a_batch_equals_its_inputs_embedded_one_at_a_time(openai_client: openai.OpenAI) -> None:
    batched = vectors(openai_client.embeddings.create(model=MODEL_NAME, input=TEXTS))
    for text, vector in zip(TEXTS, batched, strict=True):
        [alone] = vectors(openai_client.embeddings.create(model=MODEL_NAME, input=text))
        assert max_difference(alone, vector) < 1e-4


def test_concurrent_requests_get_the_vectors_they_would_get_alone(
    openai_client: openai.OpenAI, server: RunningServer
) -> None:
    alone = [
        vectors(openai_client.embeddings.create(model=MODEL_NAME, input=text))[0] for text in TEXTS
    ]
    with concurrent.futures.ThreadPoolExecutor(len(TEXTS) + 1) as pool:
        chat = pool.submit(
            openai_client.chat.completions.create,
            model=MODEL_NAME,
            messages=[{"role": "user", "content": "Count to five."}],
            max_tokens=16,
            temperature=0,
        )
        futures = [
            pool.submit(openai_client.embeddings.create, model=MODEL_NAME, input=text)
            for text in TEXTS
        ]
        together = [vectors(f.result())[0] for f in futures]
        assert chat.result().choices[0].message.content
    for a, b in zip(alone, together, strict=True):
        assert max_difference(a, b) < 1e-4
    assert server.wait_idle()


# -- input forms and encodings -----------------------------------------------------------------


def test_token_ids_embed_like_the_text_they_tokenize(
    openai_client: openai.OpenAI, http: httpx.Client
) -> None:
    ids = [
        http.post("/tokenize", json={"model": MODEL_NAME, "prompt": t}).json()["tokens"]
        for t in TEXTS[:2]
    ]
    [from_text] = vectors(openai_client.embeddings.create(model=MODEL_NAME, input=TEXTS[0]))
    [from_ids] = vectors(openai_client.embeddings.create(model=MODEL_NAME, input=ids[0]))
    assert from_ids == from_text
    text_pair = vectors(openai_client.embeddings.create(model=MODEL_NAME, input=TEXTS[:2]))
    id_pair = vectors(openai_client.embeddings.create(model=MODEL_NAME, input=ids))
    assert id_pair == text_pair


def test_base64_is_little_endian_float32_of_the_float_vectors(http: httpx.Client) -> None:
    body = {"model": MODEL_NAME, "input": TEXTS}
    floats = http.post("/v1/embeddings", json={**body, "encoding_format": "float"}).json()
    encoded = http.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    for as_float, as_base64 in zip(floats["data"], encoded["data"], strict=True):
        raw = base64.b64decode(as_base64["embedding"])
        decoded = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        assert decoded == as_float["embedding"]
    assert floats["usage"] == encoded["usage"]


def test_the_sdk_default_base64_decodes_to_the_float_result(
    openai_client: openai.OpenAI,
) -> None:
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    default = vectors(openai_client.embeddings.create(model=MODEL_NAME, input=TEXTS))
    floats = vectors(
        openai_client.embeddings.create(model=MODEL_NAME, input=TEXTS, encoding_format="float")
    )
    assert default == floats


def test_dimensions_equal_to_the_models_size_is_accepted(
    openai_client: openai.OpenAI, server: RunningServer
) -> None:
    size = model_embedding_length(server)
    plain = vectors(openai_client.embeddings.create(model=MODEL_NAME, input=TEXTS[0]))
    sized = vectors(
        openai_client.embeddings.create(model=MODEL_NAME, input=TEXTS[0], dimensions=size)
    )
    assert sized == plain


# -- refusals ----------------------------------------------------------------------------------


def test_other_dimensions_are_400_for_a_model_that_cannot_shorten(
    openai_client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.embeddings.create(model=MODEL_NAME, input="hello", dimensions=64)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "dimensions" and error["code"] == "unsupported"
    assert "Matryoshka" in error["message"]


@pytest.mark.parametrize(
    "value",
    ["", [], [[]], ["fine", ""], [1, "a"], [[1], ["a"]], 7, None, [True], [-1]],
)
def test_empty_or_malformed_input_is_400(http: httpx.Client, value: object) -> None:
    response = http.post("/v1/embeddings", json={"model": MODEL_NAME, "input": value})
    error = error_of(response, 400)
    assert error["param"] == "input"
    assert error["type"] == "invalid_request_error"


def test_an_input_longer_than_a_batch_is_400_with_both_lengths(http: httpx.Client) -> None:
    ids = list(range(1000, 1000 + MAX_INPUT_TOKENS + 1))
    body = {"model": MODEL_NAME, "input": [[1000, 1001], ids]}
    error = error_of(http.post("/v1/embeddings", json=body), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "input"
    assert f"input[1] has {MAX_INPUT_TOKENS + 1} tokens" in error["message"]
    assert f"at most {MAX_INPUT_TOKENS}" in error["message"]
    # exactly the limit is fine
    ok = http.post("/v1/embeddings", json={"model": MODEL_NAME, "input": [ids[:-1]]})
    assert ok.status_code == 200, ok.text


def test_too_many_inputs_and_bad_fields_are_400(http: httpx.Client) -> None:
    many = {"model": MODEL_NAME, "input": ["a"] * 2049}
    assert "at most 2048" in error_of(http.post("/v1/embeddings", json=many), 400)["message"]
    bad_format = {"model": MODEL_NAME, "input": "a", "encoding_format": "int8"}
    assert error_of(http.post("/v1/embeddings", json=bad_format), 400)["param"] == (
        "encoding_format"
    )
    outside = {"model": MODEL_NAME, "input": [1, 10_000_000]}
    assert (
        "outside the vocabulary"
        in error_of(http.post("/v1/embeddings", json=outside), 400)["message"]
    )


def test_an_unknown_model_is_404(http: httpx.Client) -> None:
    response = http.post("/v1/embeddings", json={"model": "nope", "input": "a"})
    assert error_of(response, 404)["code"] == "model_not_found"


def test_embeddings_need_the_inference_scope(server: RunningServer) -> None:
    admin = PolicyAdmin(server.access.store)
    monitor = admin.create_key(KeyCreate(name="emb-monitor", roles=["monitor"]))["key"]
    user = admin.create_key(KeyCreate(name="emb-user", roles=["user"]))["key"]
    body = {"model": MODEL_NAME, "input": "hello"}
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        assert error_of(client.post("/v1/embeddings", json=body), 401)
        refused = client.post(
            "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {monitor}"}
        )
        assert error_of(refused, 403)["code"] == "insufficient_scope"
        allowed = client.post(
            "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {user}"}
        )
        assert allowed.status_code == 200, allowed.text


def test_metrics_count_embedding_requests_and_tokens(
    openai_client: openai.OpenAI, server: RunningServer
) -> None:
    def sample(name: str) -> float:
        value = server.engine.metrics.registry.get_sample_value(name, {"model": MODEL_NAME})
        return value or 0.0

    requests = sample("inferflux_embedding_requests_total")
    tokens = sample("inferflux_embedding_tokens_total")
    response = openai_client.embeddings.create(model=MODEL_NAME, input=TEXTS)
    assert sample("inferflux_embedding_requests_total") == requests + 1
    assert sample("inferflux_embedding_tokens_total") == tokens + response.usage.prompt_tokens
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers) as client:
        assert "inferflux_embedding_batch_inputs_bucket" in client.get("/metrics").text


# -- guardrails and audit ----------------------------------------------------------------------


def test_guardrails_see_embedding_inputs_and_the_audit_logs_them(
    secured: SecuredServer,
) -> None:
    server = secured.running
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=60) as c:
        blocked = c.post(
            "/v1/embeddings",
            json={"model": MODEL_NAME, "input": ["fine", f"a {BLOCKED_PHRASE} here"]},
        )
        assert error_of(blocked, 400)["code"] == "content_blocked"
        text = "Embed me for the auditor."
        ok = c.post(
            "/v1/embeddings",
            json={"model": MODEL_NAME, "input": text},
            headers={"X-Request-ID": "audit-embeddings"},
        )
        assert ok.status_code == 200, ok.text
    deadline = time.monotonic() + 10
    line: dict[str, Any] = {}
    while not line and time.monotonic() < deadline:
        lines = [json.loads(x) for x in secured.audit_path.read_text().splitlines()]
        line = next((x for x in lines if x["request_id"] == "audit-embeddings"), {})
        time.sleep(0.05)
    assert line["path"] == "/v1/embeddings" and line["status"] == 200
    assert line["prompt_tokens"] == ok.json()["usage"]["prompt_tokens"] > 0
    assert line["prompt_sha256"] == hashlib.sha256(text.encode()).hexdigest()


# -- models that cannot embed, or shorten -------------------------------------------------------


@pytest.fixture(scope="module")
def other_models(model_path: Any) -> Iterator[RunningServer]:
    """The bigram example (no embeddings), SmolLM2 with Matryoshka sizes, and SmolLM2 with
    embeddings switched off."""
    models = [
        ModelConfig(
            name="bigram",
            backend="bigram",
            source=str(bigram_package().corpus_path()),
            context_length=256,
            max_sequences=1,
        ),
        ModelConfig(
            name=MATRYOSHKA_MODEL,
            context_length=256,
            max_sequences=1,
            matryoshka_dimensions=[64, 128],
            options={"batch_size": 64},
        ),
        ModelConfig(
            name=NO_EMBEDDINGS_MODEL, context_length=256, max_sequences=1, embeddings=False
        ),
    ]
    running = start_server(
        Settings(server=ServerConfig(port=free_port(), log_level="warning"), models=models)
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def other_client(other_models: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=other_models.api_url, api_key=other_models.api_key, max_retries=0, timeout=120
    )


@pytest.mark.parametrize("model", ["bigram", NO_EMBEDDINGS_MODEL])
def test_a_model_that_cannot_embed_is_400(other_client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        other_client.embeddings.create(model=model, input="hello")
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["message"] == f"model '{model}' cannot produce embeddings"
    assert error["code"] == "unsupported" and error["param"] == "model"
    # the model still generates
    reply = other_client.completions.create(model=model, prompt="The", max_tokens=4)
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_a_matryoshka_model_shortens_then_renormalizes(other_client: openai.OpenAI) -> None:
    [full] = vectors(other_client.embeddings.create(model=MATRYOSHKA_MODEL, input=TEXTS[0]))
    for size in (64, 128):
        [short] = vectors(
            other_client.embeddings.create(model=MATRYOSHKA_MODEL, input=TEXTS[0], dimensions=size)
        )
        assert len(short) == size
        assert norm(short) == pytest.approx(1.0, abs=1e-5)
        scale = norm(full[:size])
        assert max_difference(short, [x / scale for x in full[:size]]) < 1e-6
    with pytest.raises(openai.BadRequestError) as caught:
        other_client.embeddings.create(model=MATRYOSHKA_MODEL, input="hello", dimensions=100)
    assert "64, 128, 576" in str(caught.value)


def test_batch_size_bounds_the_input_length(other_models: RunningServer) -> None:
    body = {"model": MATRYOSHKA_MODEL, "input": [list(range(1000, 1065))]}
    with httpx.Client(base_url=other_models.base_url, headers=other_models.auth_headers) as c:
        error = error_of(c.post("/v1/embeddings", json=body), 400)
        assert "has 65 tokens" in error["message"] and "at most 64" in error["message"]
        # Many inputs of the limit's length take several batches, in order.
        many = {"model": MATRYOSHKA_MODEL, "input": [[1000 + i] * 64 for i in range(5)]}
        data = c.post("/v1/embeddings", json=many, timeout=120).json()["data"]
        assert [item["index"] for item in data] == list(range(5))
        assert len({tuple(item["embedding"]) for item in data}) == 5
