"""systemd service notifications (sd_notify), without libsystemd.

Under a `Type=notify` unit systemd passes `NOTIFY_SOCKET`; the daemon sends `READY=1` once every pipeline is up,
`WATCHDOG=1` from its event loop at half of `WATCHDOG_USEC` (a stalled loop stops the pings, and systemd restarts
the service), `RELOADING=1` + `MONOTONIC_USEC` then `READY=1` around a SIGHUP reload, `STOPPING=1` when it
starts draining, and a one-line `STATUS=` that `systemctl status` shows. Without `NOTIFY_SOCKET` every call is
a no-op. The protocol: newline-separated `KEY=value` assignments in one datagram on an AF_UNIX socket, a path
or (leading `@`) an abstract name; see sd_notify(3).
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("spikeline.systemd")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address = ("\0" + path[1:]) if path.startswith("@") else path
        self.sent = 0  # datagrams sent
        self.failures = 0  # datagrams the socket refused (logged once)
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)  # a full socket buffer must never block the event loop
        self.watchdog_s = watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """Send one notification, e.g. send(READY=1, STATUS="3 pipelines running"). False when not sent."""
        if self._sock is None:
            return False
        text = "\n".join(f"{k}={v}" for k, v in fields.items())
        try:
            self._sock.sendto(text.encode(), self.address)
        except OSError as e:
            self.failures += 1
            if self.failures == 1:
                log.warning("systemd notification %r not sent: %s", text.split("\n", 1)[0], e)
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload; older ones ignore it
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
                         STATUS="reloading the configuration")

    def stopping(self, status: str = "draining") -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """The watchdog timeout systemd expects pings within (s), or None when the watchdog is off or meant for
    another process (WATCHDOG_PID)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        v = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number: watchdog pings off", usec)
        return None
    return v / 1e6 if v > 0 else None
