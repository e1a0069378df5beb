"""Embedding inferflux in a plain asyncio program, with the example plugins.

Run it from the repository root::

    python examples/asyncio_app.py

One event loop runs everything: the engine (the SmolLM2 default model), the OpenAI-compatible
HTTP API served by uvicorn as one task among the program's own, and a client calling it. The
engine is built with the plugins in ``examples/plugin_examples`` registered directly (no
packaging needed): the shortest-job-first scheduler, the SQLite policy store, the PII
guardrail (here also redacting the word "Paris") and the ``/v1/status`` route.
It prints ``status:``, ``chat:``, ``refused:`` and ``keys:`` lines, then shuts down.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import httpx
import uvicorn

from inferflux_core import Engine, Settings, create_app
from inferflux_core.auth.access import AccessControl
from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plugin_examples import pii_guardrail, sjf_scheduler, sqlite_policy, status_route

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


def settings_for(directory: Path) -> Settings:
    """The default model, with every example plugin configured."""
    return Settings.model_validate(
        {
            "server": {"port": 0, "log_level": "warning"},
            "models": [{"context_length": 1024, "max_sequences": 2}],
            "scheduler": {"name": "sjf", "options": {"max_wait_seconds": 10}},
            "policy": {"store": "sqlite", "options": {"path": str(directory / "policy.db")}},
            "guardrails": [{"name": "pii", "options": {"patterns": {"city": "Paris"}}}],
        }
    )


async def heartbeat(ticks: list[int]) -> None:
    """The program's own work, running beside the server on the same loop."""
    while True:
        ticks.append(len(ticks))
        await asyncio.sleep(0.1)


async def main() -> None:
    """Serve on a free loopback port, call the API a few times, and stop."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp))
        engine = Engine(settings, extra_plugins=PLUGINS)
        access = AccessControl.from_settings(settings, engine.plugins)
        admin = PolicyAdmin(access.store)
        key = admin.create_key(KeyCreate(name="asyncio-app", roles=["user"]))["key"]
        await engine.start()
        server = uvicorn.Server(
            uvicorn.Config(create_app(engine, access=access), port=0, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        ticks: list[int] = []
        beating = asyncio.create_task(heartbeat(ticks))
        try:
            while not server.started:
                await asyncio.sleep(0.05)
            port = server.servers[0].sockets[0].getsockname()[1]
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120
            ) as client:
                status = (await client.get("/v1/status")).json()
                print("status:", status["models"])
                body = {"model": settings.models[0].name, "messages": QUESTION, "max_tokens": 16}
                reply = await client.post("/v1/chat/completions", json={**body, "temperature": 0})
                print("chat:", reply.json()["choices"][0]["message"]["content"])
                private = [{"role": "user", "content": "Mail me at ann@example.com"}]
                refused = await client.post(
                    "/v1/chat/completions", json={**body, "messages": private}
                )
                print("refused:", refused.status_code, refused.json()["error"]["code"])
            print("keys:", [record.name for record in access.store.list_keys()])
            print("heartbeat ticks:", len(ticks))
        finally:
            beating.cancel()
            server.should_exit = True
            await serving
            await engine.stop()


if __name__ == "__main__":
    asyncio.run(main())
