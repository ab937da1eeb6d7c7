# An MQTT broker inside this process (amqtt, MQTT 3.1.1) for `citynode demo`: no broker to
# install. It runs its own asyncio loop in a thread, binds 127.0.0.1 only (amqtt's default
# is 0.0.0.0), and lets anonymous clients in (an empty plugin set would refuse them all).
import asyncio
import logging
import socket
import threading
from typing import Self


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self._loop = None
        self._broker = None
        self._thread = None
        self._ready = threading.Event()
        self._error = None

    def start(self, timeout: int = 10) -> Self:
        for name in ("amqtt", "transitions"):  # their INFO lines would break the demo's table
            logging.getLogger(name).setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the embedded MQTT broker did not start on 127.0.0.1:{self.port}")
        if self._error:
            raise RuntimeError(f"the embedded MQTT broker failed: {self._error}")
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except Exception as e:  # noqa: BLE001 - reported by start() as one line
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._broker = Broker(config)  # made inside the running loop, as amqtt wants
        await self._broker.start()

    def stop(self, timeout: int = 10) -> None:
        if self._loop is None or self._broker is None or self._thread is None:
            return  # not started
        fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            fut.result(timeout)
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
