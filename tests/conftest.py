"""Test harness: loopback-only LSL, real brokers, and no silent skips in CI.

LSLAPICFG is pointed at the project's loopback-only liblsl configuration here, before anything can
import pylsl. Tests that need mosquitto, liblsl or ../shared/data call `need(...)`: on a developer's
machine without the resource they skip with the reason; with SPIKELINE_REQUIRE_ALL=1 (set by
tools/test.sh, which CI runs) they fail instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spikeline.broker import free_port, wait_port

ROOT = Path(__file__).resolve().parents[1]
os.environ["LSLAPICFG"] = str(ROOT / "runtime" / "spikeline" / "lsl_api.cfg")
DATA = Path(os.environ.get("SPIKELINE_DATA", ROOT.parent / "shared" / "data"))
REQUIRE_ALL = os.environ.get("SPIKELINE_REQUIRE_ALL") == "1"


def need(ok: bool, reason: str, required: bool | None = None) -> None:
    """Skip (developer machine) or fail (CI) when a required resource is missing."""
    if ok:
        return
    if REQUIRE_ALL if required is None else required:
        pytest.fail(f"required test resource missing (SPIKELINE_REQUIRE_ALL=1): {reason}")
    pytest.skip(reason)


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)


class Mosquitto:
    """A real mosquitto on 127.0.0.1, TCP_NODELAY on, persistence off. Can be killed and restarted.
    `extra`: configuration lines appended (e.g. a bridge section)."""

    def __init__(self, workdir: Path, persistence: bool = False, extra: list[str] | None = None) -> None:
        binary = mosquitto_binary()
        assert binary is not None
        self.binary = binary
        self.port = free_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.log = workdir / f"mosquitto-{self.port}.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "set_tcp_nodelay true",
            *(["persistence true", f"persistence_location {workdir}/"] if persistence else ["persistence false"]),
            "max_queued_messages 100000",
            f"log_dest file {self.log}",
            # started as root, mosquitto would switch to user "mosquitto", who cannot write in tmp_path
            *(["user root"] if os.geteuid() == 0 else []),
            *(extra or []),
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    need(mosquitto_binary() is not None, "mosquitto is not installed (tools/test.sh installs it)")
    m = Mosquitto(tmp_path).start()
    yield m
    m.stop()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[type[Mosquitto]]:
    """Make brokers of your own (e.g. with persistence, to restart them); all are stopped at the end."""
    need(mosquitto_binary() is not None, "mosquitto is not installed (tools/test.sh installs it)")
    made: list[Mosquitto] = []

    def make(persistence: bool = False, extra: list[str] | None = None) -> Mosquitto:
        m = Mosquitto(tmp_path, persistence, extra)
        made.append(m)
        return m

    yield make  # type: ignore[misc]
    for m in made:
        m.stop()


@pytest.fixture
def embedded_broker() -> Iterator[str]:
    from spikeline.broker import EmbeddedBroker

    b = EmbeddedBroker().start()
    yield b.url
    b.stop()


@pytest.fixture
def data_dir() -> Path:
    need(DATA.is_dir(), f"recordings not found at {DATA} (set SPIKELINE_DATA or provide ../shared/data)",
         required=REQUIRE_ALL and os.environ.get("SPIKELINE_REQUIRE_DATA") != "0")
    return DATA


async def collect_results(url: str, topic: str, expected: int, run: Callable[[], Awaitable[None]],
                          timeout: float = 90.0) -> list[dict[str, Any]]:
    """Subscribe (QoS 1) to `topic` on the broker at `url`, start `run()` (the daemon and whatever feeds it),
    and collect `expected` JSON results; `run()` is awaited before returning."""
    import aiomqtt

    from spikeline.mqtt import MqttSettings

    s = MqttSettings.from_url(url)
    got: list[dict[str, Any]] = []
    async with aiomqtt.Client(s.host, s.port, identifier=f"sub-{uuid.uuid4().hex[:6]}",
                              max_queued_incoming_messages=expected * 2 + 100) as sub:
        await sub.subscribe(topic, qos=1)
        task = asyncio.create_task(run())
        try:
            async with asyncio.timeout(timeout):
                async for msg in sub.messages:
                    assert isinstance(msg.payload, bytes)
                    got.append(json.loads(msg.payload))
                    if len(got) >= expected:
                        break
        finally:
            await task
    return got
