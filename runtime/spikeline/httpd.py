"""What the daemon's two small HTTP endpoints (Prometheus, the operator page) share: reading one request from an
asyncio stream (one request per connection, no dependency)."""

from __future__ import annotations

import asyncio

LINE_TIMEOUT_S = 5.0  # per request or header line: a client that stalls is dropped
MAX_HEADERS = 100  # header lines read; the rest are ignored


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    """(method, path without its query, headers by lower-case name) of the next request, or None when the request
    line is malformed. Raises TimeoutError (a stalled client), ValueError (a line over the stream's limit),
    ConnectionError."""
    line = await asyncio.wait_for(reader.readline(), LINE_TIMEOUT_S)
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        h = await asyncio.wait_for(reader.readline(), LINE_TIMEOUT_S)
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    parts = line.decode("latin-1").split()
    if len(parts) < 2:
        return None
    return parts[0], parts[1].split("?", 1)[0], headers
