"""A stand-in for systemd's notification socket: receives sd_notify datagrams and stamps their arrival."""

from __future__ import annotations

import socket
import threading
import time
import uuid


class NotifyListener:
    """An abstract AF_UNIX datagram socket (`NOTIFY_SOCKET=@name`, as systemd gives) read by a thread:
    `messages` holds (monotonic arrival time, {key: value}) per datagram."""

    def __init__(self) -> None:
        self.name = f"@spikeline-test-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def snapshot(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def times(self, key: str) -> list[float]:
        return [t for t, m in self.snapshot() if key in m]

    def wait_for(self, key: str, count: int = 1, timeout: float = 20.0) -> dict[str, str]:
        """The `count`-th message carrying `key` (e.g. READY), waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for _, m in self.snapshot() if key in m]
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.02)
        raise AssertionError(f"no {count}. {key} notification within {timeout} s; got {self.snapshot()}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
