"""The plugins in ``examples/plugin_examples`` work as ``examples/README.md`` says: each on its
own, and all of them loaded through the plugin host behind a real server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin, RoleBody
from inferflux_core.config import Settings
from inferflux_core.contracts import GuardrailInput, ScheduledSequence, SchedulerLimits
from inferflux_core.errors import PolicyStoreError, QueueFullError
from inferflux_core.plugins import PluginHost
from tests.conftest import MODEL_NAME, RunningServer, free_port, start_server
from tests.integration.test_examples import EXAMPLES, run_python

sys.path.insert(0, str(EXAMPLES))
from plugin_examples import (
    pii_guardrail,
    sjf_scheduler,
    sqlite_policy,
    status_route,
)

PLUGINS = [
    ("sjf_scheduler", sjf_scheduler),
    ("sqlite_policy", sqlite_policy),
    ("pii_guardrail", pii_guardrail),
    ("status_route", status_route),
]
QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
LIMITS = SchedulerLimits(
    max_sequences=2,
    context_length=256,
    kv_capacity=512,
    token_budget=64,
    prefill_chunk=32,
    max_queue=3,
)


def _sequence(name: str, n_prompt: int, arrival: float = 0.0) -> ScheduledSequence:
    return ScheduledSequence(name, list(range(n_prompt)), arrival=arrival)


# -- the shortest-job-first scheduler ------------------------------------------------------


def test_sjf_admits_the_shortest_prompts_first() -> None:
    scheduler = sjf_scheduler.ShortestJobFirstScheduler(LIMITS, max_wait_seconds=1e9)
    long, short, medium = _sequence("long", 90), _sequence("short", 5), _sequence("medium", 40)
    for sequence in (long, short, medium):
        scheduler.add(sequence)
    assert [s.request_id for s in scheduler.admission_order()] == ["short", "medium", "long"]
    plan = scheduler.plan_step()
    assert [c.sequence.request_id for c in plan.chunks] == ["short", "medium"]
    assert [c.n_tokens for c in plan.chunks] == [5, 32]
    assert (scheduler.running_count, scheduler.waiting_count) == (2, 1)


def test_sjf_decodes_running_sequences_and_admits_after_a_finish() -> None:
    scheduler = sjf_scheduler.ShortestJobFirstScheduler(LIMITS, max_wait_seconds=1e9)
    first, second, third = _sequence("a", 4), _sequence("b", 6), _sequence("c", 8)
    for sequence in (first, second, third):
        scheduler.add(sequence)
    for chunk in scheduler.plan_step().chunks:
        chunk.sequence.n_prefilled += chunk.n_tokens
    decode = scheduler.plan_step()
    assert [(c.sequence.request_id, c.n_tokens) for c in decode.chunks] == [("a", 1), ("b", 1)]
    scheduler.finish(first)
    plan = scheduler.plan_step()
    assert ("c", 8) in [(c.sequence.request_id, c.n_tokens) for c in plan.chunks]


def test_sjf_lets_an_overdue_request_go_first() -> None:
    scheduler = sjf_scheduler.ShortestJobFirstScheduler(LIMITS, max_wait_seconds=5)
    old_long = _sequence("old", 90, arrival=-100.0)
    scheduler.add(_sequence("new", 3, arrival=1e12))
    scheduler.add(old_long)
    assert scheduler.admission_order()[0] is old_long


def test_sjf_queue_is_bounded() -> None:
    scheduler = sjf_scheduler.ShortestJobFirstScheduler(LIMITS)
    for index in range(LIMITS.max_queue):
        scheduler.add(_sequence(str(index), 3))
    with pytest.raises(QueueFullError):
        scheduler.add(_sequence("one too many", 3))


# -- the SQLite policy store ---------------------------------------------------------------


def test_sqlite_store_is_registered_through_the_plugin_host(tmp_path: Path) -> None:
    host = PluginHost(autoload=False, extra_plugins=[("sqlite_policy", sqlite_policy)])
    store = host.get("policy_stores", "sqlite")(path=str(tmp_path / "p.db"))
    assert store.persistent and store.read().version == 0
    store.close()


def test_sqlite_store_create_read_update_delete(tmp_path: Path) -> None:
    path = tmp_path / "policy.db"
    store = sqlite_policy.SqlitePolicyStore(path=str(path))
    admin = PolicyAdmin(store)
    created = admin.create_key(KeyCreate(name="alice", roles=["user"]))
    key_id = created["id"]
    assert admin.get_key(key_id)["name"] == "alice"
    admin.set_role("auditor", RoleBody(scopes=["models:read"]))
    assert store.read().roles == {"auditor": ("models:read",)}
    admin.revoke_key(key_id)
    admin.delete_role("auditor")
    assert store.read().keys[key_id].revoked and store.read().roles == {}
    assert store.history() == [1, 2, 3, 4]
    store.close()

    reopened = sqlite_policy.SqlitePolicyStore(path=str(path))
    assert reopened.read().version == 4 and reopened.read().keys[key_id].revoked
    reopened.close()


def test_sqlite_store_sees_another_connections_writes_and_loses_no_update(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "policy.db")
    one, two = (
        sqlite_policy.SqlitePolicyStore(path=path),
        sqlite_policy.SqlitePolicyStore(path=path),
    )
    barrier = threading.Barrier(8)

    def add_role(index: int) -> None:
        barrier.wait()
        store = one if index % 2 else two
        store.update(lambda policy: policy.with_role(f"role{index}", ["models:read"]))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(add_role, range(8)))
    assert one.read().version == two.read().version == 8
    assert set(two.read().roles) == {f"role{i}" for i in range(8)}
    one.close()
    two.close()


def test_sqlite_store_refuses_a_damaged_database(tmp_path: Path) -> None:
    path = tmp_path / "policy.db"
    with sqlite3.connect(path) as db:
        db.execute(sqlite_policy.SCHEMA)
        db.execute("INSERT INTO policy_versions VALUES (1, 'not json', 0)")
    with pytest.raises(PolicyStoreError, match="unreadable"):
        sqlite_policy.SqlitePolicyStore(path=str(path))


# -- the PII guardrail ---------------------------------------------------------------------


def _request(text: str) -> GuardrailInput:
    return GuardrailInput(text=text, model="m", endpoint="chat.completions", request_id="r")


def test_pii_guardrail_refuses_a_prompt_naming_the_kind_not_the_text() -> None:
    guardrail = pii_guardrail.PiiGuardrail()
    verdict = asyncio.run(guardrail.check_input(_request("write to ann@example.com please")))
    assert not verdict.allowed and "email" in verdict.reason and "ann@" not in verdict.reason
    assert asyncio.run(guardrail.check_input(_request("nothing personal"))).allowed


def test_pii_filter_redacts_a_match_split_across_chunks() -> None:
    guardrail = pii_guardrail.PiiGuardrail(detect=["email"])
    output = guardrail.output_filter(_request(""))
    sent = ""
    for piece in ("Contact ann", "@exam", "ple.com or", " call."):
        text, blocked = output.push(piece)
        assert not blocked and "ann@" not in sent + text
        sent += text
    sent += output.flush()
    assert sent == "Contact [REDACTED:email] or call."


def test_pii_guardrail_rejects_unknown_kinds_and_bad_patterns() -> None:
    with pytest.raises(ValueError, match="unknown detect kinds"):
        pii_guardrail.PiiGuardrail(detect=["dna"])
    with pytest.raises(ValueError, match="invalid pattern"):
        pii_guardrail.PiiGuardrail(detect=[], patterns={"bad": "("})


# -- everything behind a real server -------------------------------------------------------


@pytest.fixture(scope="module")
def examples_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The default model served with every example plugin, registered with the host."""
    directory = tmp_path_factory.mktemp("example_plugins")
    settings = Settings.model_validate(
        {
            "server": {"port": free_port(), "log_level": "warning"},
            "models": [{"name": MODEL_NAME, "context_length": 1024, "max_sequences": 2}],
            "scheduler": {"name": "sjf", "options": {"max_wait_seconds": 10}},
            "policy": {"store": "sqlite", "options": {"path": str(directory / "policy.db")}},
            "guardrails": [{"name": "pii", "options": {"patterns": {"city": "Paris"}}}],
        }
    )
    running = start_server(settings, extra_plugins=PLUGINS)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(examples_server: RunningServer) -> openai.OpenAI:
    """The OpenAI SDK pointed at the examples server."""
    return openai.OpenAI(
        base_url=examples_server.api_url, api_key=examples_server.api_key, max_retries=0
    )


def test_the_server_runs_the_example_plugins(examples_server: RunningServer) -> None:
    model = examples_server.engine.model(MODEL_NAME)
    assert isinstance(model.runner.scheduler, sjf_scheduler.ShortestJobFirstScheduler)
    records = examples_server.engine.plugins.records
    assert {name for name, _ in PLUGINS} <= set(records)
    assert records["status_route"].hooks == ["register_routes"]


def test_status_route_needs_a_key_and_reports_the_models(examples_server: RunningServer) -> None:
    url = f"{examples_server.base_url}/v1/status"
    assert httpx.get(url, timeout=30).status_code == 401
    response = httpx.get(url, headers=examples_server.auth_headers, timeout=30)
    assert response.status_code == 200
    status = response.json()["models"][MODEL_NAME]
    assert status["context_length"] == 1024 and status["waiting"] == 0


def test_whole_and_streamed_answers_are_redacted(
    examples_server: RunningServer, client: openai.OpenAI
) -> None:
    # logit_bias makes the model say " Paris" whatever its greedy answer on this CPU.
    paris = examples_server.engine.model(MODEL_NAME).backend.tokenize(" Paris", add_special=False)
    forced = {"logit_bias": {str(paris[0]): 100}}
    reply = client.chat.completions.create(
        model=MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=6, **forced
    )
    text = reply.choices[0].message.content or ""
    assert "[REDACTED:city]" in text and "Paris" not in text
    stream = client.chat.completions.create(
        model=MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=6, stream=True, **forced
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == text


def test_a_prompt_with_an_email_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": "my address is bob@example.org"}],
            max_tokens=4,
        )
    assert caught.value.code == "content_blocked"


def test_concurrent_requests_all_finish_under_sjf(
    examples_server: RunningServer, client: openai.OpenAI
) -> None:
    prompts = ["Hi", "Tell me a long story about a dragon and a knight in a castle.", "Count."]

    def ask(prompt: str) -> str:
        reply = client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=8,
            temperature=0,
        )
        return reply.choices[0].finish_reason

    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        assert set(pool.map(ask, prompts)) <= {"length", "stop"}
    assert examples_server.wait_idle()


def test_the_servers_keys_live_in_the_sqlite_database(examples_server: RunningServer) -> None:
    path = examples_server.access.store.inner.path  # type: ignore[attr-defined]
    reopened = sqlite_policy.SqlitePolicyStore(path=str(path))
    assert [record.name for record in reopened.list_keys()] == ["tests"]
    reopened.close()


# -- embedding in a plain asyncio program --------------------------------------------------


@pytest.mark.timeout(240)
def test_asyncio_app_example_serves_and_prints_its_answers() -> None:
    result = run_python(str(EXAMPLES / "asyncio_app.py"), timeout=200)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    # What the model answers differs between CPUs: the redaction itself is tested above.
    assert lines["chat"] and "Paris" not in lines["chat"]
    assert lines["refused"] == "400 content_blocked"
    assert lines["keys"] == "['asyncio-app']"
    assert MODEL_NAME in lines["status"]
    assert int(lines["heartbeat ticks"]) > 0
