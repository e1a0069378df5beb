"""Conformance tests for KV transports (:class:`~inferflux_core.contracts.KVTransport`).

Subclass :class:`TransportConformance`, set ``transport_name`` and ``transport_options``
(``{tmp}`` in a string value becomes a per-test directory). Each test runs its own event loop.
By default one instance is both ends; a transport whose sender and receiver are separate
objects overrides the ``open_ends`` fixture.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from inferflux_core.contracts import KVBlock, KVTransport
from inferflux_core.errors import KVTransportClosedError
from inferflux_core.testing.lookup import fill_tmp, plugin_factory
from inferflux_core.testing.settings import PluginSettings

#: ``await open_ends()`` -> (sender, receiver), inside the test's event loop.
EndsOpener = Callable[[], Awaitable[tuple[KVTransport, KVTransport]]]
#: A bound on every wait in these tests, so a transport that hangs fails instead.
WAIT = 10.0


def block(n: int, size: int = 16) -> KVBlock:
    """The ``n``-th test block, ``size`` bytes of data derived from ``n``."""
    return KVBlock(f"req-{n}", "model", n, bytes((n + i) % 256 for i in range(size)))


class TransportConformance:
    """The KV-transport contract as tests. Set ``transport_name``."""

    #: The name the transport is registered under.
    transport_name: ClassVar[str] = ""
    transport_options: ClassVar[dict[str, Any]] = {}
    #: Blocks a sender gets out while nobody receives must stay below this.
    backpressure_blocks: ClassVar[int] = 64

    @pytest.fixture(scope="class")
    @classmethod
    def transport_settings(cls) -> PluginSettings:
        """What to construct; override this fixture to compute it (the CLI options do)."""
        if not cls.transport_name:
            pytest.fail(f"{cls.__name__} must set transport_name")
        return PluginSettings(cls.transport_name, cls.transport_options)

    @pytest.fixture
    def open_ends(self, transport_settings: PluginSettings, tmp_path: Path) -> EndsOpener:
        """One instance as both the sending and the receiving end."""
        factory = plugin_factory("kv_transports", transport_settings.name)

        async def open_() -> tuple[KVTransport, KVTransport]:
            transport: KVTransport = factory(**fill_tmp(transport_settings.options, tmp_path))
            return transport, transport

        return open_

    def test_blocks_arrive_whole(self, open_ends: EndsOpener) -> None:
        async def scenario() -> None:
            sender, receiver = await open_ends()
            sent = [block(1, 0), block(2, 1), block(3, 1 << 20)]
            received = []
            for item in sent:
                await asyncio.wait_for(sender.send(item), WAIT)
                received.append(await asyncio.wait_for(receiver.receive(), WAIT))
            assert received == sent
            await sender.close()
            await receiver.close()

        asyncio.run(scenario())

    def test_blocks_arrive_in_the_order_sent(self, open_ends: EndsOpener) -> None:
        async def scenario() -> None:
            sender, receiver = await open_ends()
            sent = [block(n) for n in range(200)]

            async def send_all() -> None:
                for item in sent:
                    await sender.send(item)

            sending = asyncio.create_task(send_all())
            received = [await asyncio.wait_for(receiver.receive(), WAIT) for _ in sent]
            await asyncio.wait_for(sending, WAIT)
            assert received == sent
            await sender.close()

        asyncio.run(scenario())

    def test_a_sender_waits_while_nobody_receives(self, open_ends: EndsOpener) -> None:
        total = self.backpressure_blocks

        async def scenario() -> None:
            sender, receiver = await open_ends()
            sent: list[KVBlock] = []

            async def send_all() -> None:
                for n in range(total):
                    await sender.send(block(n))
                    sent.append(block(n))

            sending = asyncio.create_task(send_all())
            for _ in range(20):  # give the sender every chance to run ahead
                await asyncio.sleep(0.005)
            assert len(sent) < total, "the sender never waited: no back-pressure"
            received = [await asyncio.wait_for(receiver.receive(), WAIT) for _ in range(total)]
            await asyncio.wait_for(sending, WAIT)
            assert received == [block(n) for n in range(total)]
            await sender.close()

        asyncio.run(scenario())

    def test_a_cancelled_receive_loses_no_block(self, open_ends: EndsOpener) -> None:
        async def scenario() -> None:
            sender, receiver = await open_ends()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(receiver.receive(), 0.05)
            await asyncio.wait_for(sender.send(block(7)), WAIT)
            assert await asyncio.wait_for(receiver.receive(), WAIT) == block(7)
            await sender.close()

        asyncio.run(scenario())

    def test_closing_wakes_a_waiting_sender_with_an_error(self, open_ends: EndsOpener) -> None:
        async def scenario() -> None:
            sender, receiver = await open_ends()
            sent: list[int] = []

            async def send_all() -> None:
                for n in range(self.backpressure_blocks):
                    await sender.send(block(n))
                    sent.append(n)

            sending = asyncio.create_task(send_all())
            for _ in range(20):
                await asyncio.sleep(0.005)
            await receiver.close()
            with pytest.raises(KVTransportClosedError):
                await asyncio.wait_for(sending, WAIT)
            with pytest.raises(KVTransportClosedError):
                await asyncio.wait_for(sender.send(block(999)), WAIT)

        asyncio.run(scenario())

    def test_after_close_the_receiver_drains_then_gets_an_error(
        self, open_ends: EndsOpener
    ) -> None:
        async def scenario() -> None:
            sender, receiver = await open_ends()
            waiting = asyncio.create_task(receiver.receive())
            await asyncio.wait_for(sender.send(block(1)), WAIT)
            assert await asyncio.wait_for(waiting, WAIT) == block(1)
            await asyncio.wait_for(sender.send(block(2)), WAIT)
            await sender.close()
            assert await asyncio.wait_for(receiver.receive(), WAIT) == block(2)
            with pytest.raises(KVTransportClosedError):
                await asyncio.wait_for(receiver.receive(), WAIT)

        asyncio.run(scenario())

    def test_closing_wakes_a_waiting_receiver_with_an_error(self, open_ends: EndsOpener) -> None:
        async def scenario() -> None:
            sender, receiver = await open_ends()
            waiting = asyncio.create_task(receiver.receive())
            await asyncio.sleep(0.01)
            await sender.close()
            with pytest.raises(KVTransportClosedError):
                await asyncio.wait_for(waiting, WAIT)

        asyncio.run(scenario())

    def test_unknown_options_are_refused_with_type_error(
        self, transport_settings: PluginSettings, tmp_path: Path
    ) -> None:
        factory = plugin_factory("kv_transports", transport_settings.name)
        options = fill_tmp(transport_settings.options, tmp_path)
        with pytest.raises(TypeError):
            factory(**options, no_such_option_xyz=1)
