"""MQTT security against a real mosquitto: TLS with a CA made by the test, logins, client certificates, the ACL.

The test makes its own PKI with the openssl CLI (EC prime256v1 keys: a CA, a server certificate for
127.0.0.1/localhost, a client certificate, and a second "other" CA that signed nothing the broker knows), and
starts a mosquitto with three TLS listeners on free 127.0.0.1 ports: logins checked against a password file
(made with mosquitto_passwd, or hashed here when it is missing), client certificates required, and a server
certificate naming another host.

- Results published over TLS with a login arrive; a daemon whose watch_mqtt source and results both go over
  TLS with a password from a file works end to end.
- The wrong CA, a certificate for another host, a wrong password, a missing or foreign client certificate: a
  clear error naming TLS/the certificate/the login, retried with backoff, the daemon keeps running.
- The password never appears in logs (DEBUG, paho's included), reprs, errors or the metrics.
- deploy/mosquitto/spikeline-tls.conf with deploy/mosquitto/acl (paths rewritten to tmp): the spikeline user
  publishes its results and reads the watches, and can neither publish nor subscribe outside its topics.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from conftest import ROOT, mosquitto_binary, need
from spikeline.broker import free_port, wait_port
from spikeline.config import parse
from spikeline.daemon import Daemon
from spikeline.metrics import PipelineMetrics
from spikeline.mqtt import MQTT_PARAMS, MqttPublisher, MqttSettings
from spikeline.params import ConfigError
from spikeline.pipeline import State
from spikeline.watch.frames import encode_json
from test_mqtt_publisher import chunk, collect

pytestmark = [pytest.mark.broker]

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


def report(msg: str) -> None:
    """Numbers the tests observe, on stderr (pytest -s shows them), so they can be quoted."""
    print(f"[mqtt-security] {msg}", file=sys.stderr)


# -- PKI, password file, broker ----------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path
    other_ca: Path  # a CA the broker's certificate does not chain to
    rogue_crt: Path  # a client certificate signed by other_ca
    rogue_key: Path
    elsewhere_crt: Path  # signed by ca, for another host name only
    elsewhere_key: Path
    seconds: float  # time openssl took


def _openssl(*args: str | Path) -> None:
    r = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {r.stderr.strip()}")


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    crt, key = d / f"{name}.crt", d / f"{name}.key"
    _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", crt, "-days", "2", "-subj", f"/CN=spikeline test {name}")
    return crt, key


def _leaf(d: Path, name: str, cn: str, ca: tuple[Path, Path], ext: list[str]) -> tuple[Path, Path]:
    crt, key, csr, extfile = d / f"{name}.crt", d / f"{name}.key", d / f"{name}.csr", d / f"{name}.ext"
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
    extfile.write_text("\n".join([*ext, "basicConstraints=CA:FALSE", "keyUsage=digitalSignature",
                                  "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid,issuer"]) + "\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-out", crt,
             "-days", "2", "-extfile", extfile)
    key.chmod(0o600)
    return crt, key


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ca = _ca(d, "ca")
    other = _ca(d, "other-ca")
    server = _leaf(d, "server", "127.0.0.1", ca,
                   ["subjectAltName=IP:127.0.0.1,DNS:localhost", "extendedKeyUsage=serverAuth"])
    client = _leaf(d, "client", "spikeline", ca, ["extendedKeyUsage=clientAuth"])
    rogue = _leaf(d, "rogue", "spikeline", other, ["extendedKeyUsage=clientAuth"])
    elsewhere = _leaf(d, "elsewhere", "elsewhere.invalid", ca,
                      ["subjectAltName=DNS:elsewhere.invalid", "extendedKeyUsage=serverAuth"])
    return Pki(ca[0], *server, *client, other[0], *rogue, *elsewhere, seconds=time.perf_counter() - t0)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """mosquitto 2's password file hash ($7$: PBKDF2-SHA512, 101 iterations, 12-byte salt), for machines without
    mosquitto_passwd."""
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def write_password_file(path: Path, users: dict[str, str]) -> str:
    """A mosquitto password file: with mosquitto_passwd -b when installed, else hashed here. Returns which."""
    path.write_text("")
    path.chmod(0o600)
    if os.access(MOSQUITTO_PASSWD, os.X_OK):
        for user, pw in users.items():
            subprocess.run([MOSQUITTO_PASSWD, "-b", str(path), user, pw], check=True, capture_output=True,
                           timeout=10)
        return "mosquitto_passwd -b"
    path.write_text("".join(f"{u}:{hash_password(pw)}\n" for u, pw in users.items()))
    return "hashed by the test"


class Broker:
    """A mosquitto of this test's own with the given configuration lines (listeners on `ports`), logging to a
    file; can be stopped (SIGTERM: it saves its persistence), killed (SIGKILL) and started again on the same
    ports."""

    def __init__(self, workdir: Path, lines: list[str], ports: list[int], persistence: bool = False,
                 name: str = "broker") -> None:
        binary = mosquitto_binary()
        assert binary is not None
        self.binary = binary
        self.ports = ports
        self.port = ports[0]
        self.log = workdir / f"{name}.log"
        self.conf = workdir / f"{name}.conf"
        store = workdir / f"{name}-store"
        store.mkdir(exist_ok=True)
        self.conf.write_text("\n".join([
            *lines,
            *(["persistence true", f"persistence_location {store}/"] if persistence else ["persistence false"]),
            f"log_dest file {self.log}",
            "log_type all",
            *(["user root"] if os.geteuid() == 0 else []),  # as root it would switch to "mosquitto"
        ]) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Broker:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            for port in self.ports:
                wait_port(port)
        except TimeoutError:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None and \
                self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {err}\n{self.log_text()[-2000:]}") from None
        self.starts += 1
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p is not None and p.stderr:
            p.stderr.close()

    def kill(self) -> None:
        p, self.proc = self.proc, None
        if p is not None:
            p.kill()
            p.wait()
            if p.stderr:
                p.stderr.close()


async def collect_for(client: aiomqtt.Client, seconds: float) -> list[Any]:
    """Every message that arrives within `seconds`."""
    got: list[Any] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for msg in client.messages:
                got.append(msg)
    return got


class NoJitter(random.Random):
    """The reconnect delay's upper bound every time (no jitter), and a record of each bound."""

    def __init__(self) -> None:
        super().__init__(0)
        self.bounds: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append(b)
        return b


async def wait_for(cond: Any, timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


# -- fixtures ----------------------------------------------------------------------------------------------

USERS = {name: f"pw-{name}-{secrets.token_hex(8)}" for name in ("spikeline", "watch", "dashboard", "observer")}


@dataclass
class Tls:
    pki: Pki
    broker: Broker
    password_file: Path
    login_port: int  # TLS + password file
    cert_port: int  # TLS + client certificate required (its CN is the user name)
    elsewhere_port: int  # TLS with a certificate for another host name, password file

    def settings(self, port: int | None = None, **kw: Any) -> MqttSettings:
        kw.setdefault("ca_file", str(self.pki.ca))
        kw.setdefault("reconnect_min_s", 0.05)
        kw.setdefault("reconnect_max_s", 0.2)
        kw.setdefault("connect_timeout_s", 3.0)
        if "username" not in kw and (port or self.login_port) != self.cert_port:
            kw["username"] = "spikeline"
            kw.setdefault("password", USERS["spikeline"])
        return MqttSettings.from_url(f"mqtts://127.0.0.1:{port or self.login_port}", **kw)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    need(mosquitto_binary() is not None, "mosquitto is not installed (tools/test.sh installs it)")
    need(os.access(OPENSSL, os.X_OK), "the openssl CLI is not installed")
    d = tmp_path_factory.mktemp("tls")
    pki = make_pki(d / "pki")
    pw = d / "passwd"
    how = write_password_file(pw, USERS)
    report(f"PKI (2 CAs, 4 certificates, EC prime256v1) made with openssl in {pki.seconds * 1e3:.0f} ms; "
           f"password file: {how}")
    login, cert, elsewhere = free_port(), free_port(), free_port()
    tls_files = [f"cafile {pki.ca}", f"certfile {pki.server_crt}", f"keyfile {pki.server_key}"]
    broker = Broker(d, [
        "per_listener_settings true",
        f"listener {login} 127.0.0.1", *tls_files, "allow_anonymous false", f"password_file {pw}",
        f"listener {cert} 127.0.0.1", *tls_files, "require_certificate true", "use_identity_as_username true",
        "allow_anonymous false",
        f"listener {elsewhere} 127.0.0.1", f"cafile {pki.ca}", f"certfile {pki.elsewhere_crt}",
        f"keyfile {pki.elsewhere_key}", "allow_anonymous false", f"password_file {pw}",
        "set_tcp_nodelay true",
    ], [login, cert, elsewhere], name="tls").start()
    yield Tls(pki, broker, pw, login, cert, elsewhere)
    broker.stop()


def subscriber(s: MqttSettings, **kw: Any) -> aiomqtt.Client:
    return aiomqtt.Client(**s.client_kwargs(), identifier=f"sub-{uuid.uuid4().hex[:6]}",
                          max_queued_incoming_messages=10_000, **kw)


async def failing_publisher(s: MqttSettings, failures: int = 3, timeout: float = 10.0) -> tuple[MqttPublisher, float]:
    """Run a publisher that cannot connect until it has failed `failures` times; it must still be running then
    (retrying, not crashed), having backed off between attempts (no jitter here: the full bound each time).
    Returns it (stopped) and how long that took."""
    rng = NoJitter()
    pub = MqttPublisher(s, "sec", rng=rng)
    pub.submit("spikeline/sec/p/result", chunk(0, 5), {"pipeline": "p"}, None)
    t0 = time.monotonic()
    task = asyncio.create_task(pub.run())
    try:
        await wait_for(lambda: pub.stats.connect_failures >= failures or task.done(), timeout,
                       f"{failures} failed connects")
        assert not task.done(), "the connection loop ended: it must keep retrying"
        elapsed = time.monotonic() - t0
        assert not pub.connected and pub.stats.connects == 0
        bounds = rng.bounds[:failures - 1]  # the waits before attempts 2..failures
        assert bounds == [min(s.reconnect_min_s * 2 ** k, s.reconnect_max_s) for k in range(failures - 1)]
        assert elapsed >= sum(bounds)
    finally:
        await pub.stop(0.5)
        await asyncio.wait_for(task, 5)
    assert pub.stats.dropped_shutdown == 5  # what never got out is counted, not lost silently
    return pub, elapsed


# -- configuration -----------------------------------------------------------------------------------------


def _doc(**mqtt: Any) -> dict[str, Any]:
    return {"mqtt": {"url": "mqtts://127.0.0.1:8883", **mqtt},
            "pipeline": [{"name": "p", "budget_ms": 20, "source": {"type": "lsl", "name": "x"},
                          "sinks": [{"type": "mqtt"}]}]}


def _problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(doc)
    return e.value.problems


def test_password_file_and_tls_files_are_read_and_checked_at_config_time(
        tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = USERS["spikeline"]
    pw = tmp_path / "pw"
    pw.write_text(secret + "\n")
    pw.chmod(0o640)
    cfg = parse(_doc(username="spikeline", password_file=str(pw), ca_file=str(tls.pki.ca),
                     cert_file=str(tls.pki.client_crt), key_file=str(tls.pki.client_key)))
    s = cfg.mqtt
    assert s is not None and s.password == secret  # the trailing newline stripped
    kw = s.client_kwargs()
    ctx = kw["tls_context"]
    assert ctx is not None and ctx.check_hostname and ctx.verify_mode.name == "CERT_REQUIRED"
    assert (kw["hostname"], kw["port"], kw["username"], kw["password"]) == ("127.0.0.1", 8883, "spikeline", secret)
    assert "tls_insecure" not in MQTT_PARAMS and "insecure" not in " ".join(MQTT_PARAMS)
    for text in (repr(s), repr(cfg), str(s)):
        assert secret not in text
    # ca_file implies TLS, and the TLS port
    s2 = MqttSettings.from_url("mqtt://broker.lan", ca_file=str(tls.pki.ca))
    assert (s2.tls, s2.port, s2.url) == (True, 8883, "mqtts://broker.lan:8883")
    assert MqttSettings.from_url("mqtt://broker.lan").client_kwargs()["tls_context"] is None

    pw.chmod(0o644)
    (problem,) = _problems(_doc(username="spikeline", password_file=str(pw)))
    assert problem.startswith("mqtt.password_file:") and "readable by every user" in problem and "chmod" in problem
    pw.chmod(0o600)
    problems = [
        *_problems(_doc(username="spikeline", password_file=str(tmp_path / "missing"))),
        *_problems(_doc(username="spikeline", password_file=str(tmp_path))),  # a directory
        *_problems(_doc(username="u", password_file=str(pw), password_env="SPIKELINE_TEST_PW")),
        *_problems(_doc(password_file=str(pw))),
        *_problems(_doc(ca_file=str(tmp_path / "no-ca.pem"))),
        *_problems(_doc(ca_file=str(pw))),  # not a certificate
        *_problems(_doc(cert_file=str(tls.pki.client_crt), key_file=str(tls.pki.server_key))),  # not its key
        *_problems(_doc(key_file=str(tls.pki.client_key))),
    ]
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "empty").chmod(0o600)
    problems += _problems(_doc(username="u", password_file=str(tmp_path / "empty")))
    monkeypatch.delenv("SPIKELINE_TEST_PW", raising=False)
    problems += _problems(_doc(username="u", password_env="SPIKELINE_TEST_PW"))
    for p in problems:
        report(f"config problem: {p}")
        assert secret not in p
    expect = [
        r"^mqtt\.password_file: .*/missing: cannot read: No such file or directory$",
        r"^mqtt\.password_file: .*: cannot read: Is a directory$",
        r"^mqtt\.password_file: give the password one way: password_env or password_file$",
        r"^mqtt\.username: a password needs a username$",
        r"^mqtt\.ca_file: .*/no-ca\.pem: cannot read: No such file or directory$",
        r"^mqtt\.ca_file: .*/pw: not a PEM CA certificate",
        r"^mqtt\.cert_file: .*client\.crt with key_file .*server\.key: not a PEM certificate and its unencrypted key"
        r" \(KEY_VALUES_MISMATCH\)$",
        r"^mqtt\.key_file: the client certificate's key needs cert_file too$",
        r"^mqtt\.password_file: .*/empty is empty$",
        r"^mqtt\.password_env: environment variable SPIKELINE_TEST_PW is not set$",
    ]
    assert len(problems) == len(expect), problems
    for p, e in zip(problems, expect, strict=True):
        assert re.match(e, p), (p, e)


# -- connections -------------------------------------------------------------------------------------------


async def test_results_over_tls_with_a_login_arrive(tls: Tls) -> None:
    s = tls.settings(qos=1)
    pub = MqttPublisher(s, "sec")
    task = asyncio.create_task(pub.run())
    metrics = PipelineMetrics("p", budget_s=1.0)
    dash = tls.settings(username="dashboard", password=USERS["dashboard"])
    async with subscriber(dash) as sub:
        await sub.subscribe("spikeline/sec/p/result", qos=1)
        await wait_for(lambda: pub.socket() is not None, 10, "the publisher to connect")
        sock = pub.socket()
        assert isinstance(sock, ssl.SSLSocket)
        version = sock.version()
        for k in range(10):
            pub.submit("spikeline/sec/p/result", chunk(10 * k, 10), {"pipeline": "p"}, metrics)
        got = await collect(sub, 100, 10)
    await pub.stop(2.0)
    await asyncio.wait_for(task, 5)
    seqs = [json.loads(m.payload)["seq"] for m in got]
    assert seqs == list(range(100))
    assert (pub.stats.connect_failures, pub.stats.protocol, metrics.results) == (0, "5", 100)
    report(f"over {version} with a login: {len(seqs)} of 100 QoS 1 results arrived; MQTT {pub.stats.protocol}")

    # "localhost" is named in the certificate too
    local = MqttSettings.from_url(f"mqtts://localhost:{tls.login_port}", ca_file=str(tls.pki.ca),
                                  username="spikeline", password=USERS["spikeline"])
    async with aiomqtt.Client(**local.client_kwargs()) as c:
        await c.publish("spikeline/sec/hello", b"x", qos=1)


async def test_wrong_ca_is_a_clear_tls_error_retried_with_backoff(tls: Tls) -> None:
    pub, elapsed = await failing_publisher(tls.settings(ca_file=str(tls.pki.other_ca)))
    err = pub.stats.last_error
    report(f"wrong CA: {pub.stats.connect_failures} failed connects in {elapsed:.2f} s, no crash: {err}")
    assert err.startswith(f"mqtts://127.0.0.1:{tls.login_port}: TLS: the broker's certificate was not accepted")
    assert "check ca_file" in err and ("self-signed certificate in certificate chain" in err
                                       or "unable to get local issuer certificate" in err)


async def test_host_name_is_verified(tls: Tls) -> None:
    pub, _ = await failing_publisher(tls.settings(tls.elsewhere_port), failures=2)
    err = pub.stats.last_error
    report(f"certificate for another host: {pub.stats.connect_failures} failed connects: {err}")
    assert "TLS: the broker's certificate was not accepted" in err and "mismatch" in err and "127.0.0.1" in err


async def test_wrong_password_is_a_clear_error_retried(tls: Tls, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spikeline.mqtt")
    pub, elapsed = await failing_publisher(tls.settings(password="not-" + USERS["spikeline"]))
    err = pub.stats.last_error
    report(f"wrong password: {pub.stats.connect_failures} failed connects in {elapsed:.2f} s, no crash: {err}")
    assert "the broker refused the login" in err and "Not authorized" in err and "not authorised" in err
    assert 'user "spikeline"' in err
    # a refused login is not a protocol problem: protocol "auto" does not fall back to 3.1.1 for it
    assert not any("trying 3.1.1" in r.getMessage() for r in caplog.records)
    assert sum("mqtt connect failed" in r.getMessage() for r in caplog.records) == pub.stats.connect_failures


async def test_client_certificate_required(tls: Tls) -> None:
    cert = {"cert_file": str(tls.pki.client_crt), "key_file": str(tls.pki.client_key)}
    s = tls.settings(tls.cert_port, qos=1, **cert)
    pub = MqttPublisher(s, "sec")
    task = asyncio.create_task(pub.run())
    async with subscriber(tls.settings(tls.cert_port, **cert)) as sub:
        await sub.subscribe("spikeline/sec/c/result", qos=1)
        await wait_for(lambda: pub.connected, 10, "the publisher to connect with its certificate")
        pub.submit("spikeline/sec/c/result", chunk(0, 20), {"pipeline": "c"}, None)
        got = await collect(sub, 20, 10)
    await pub.stop(2.0)
    await asyncio.wait_for(task, 5)
    assert [json.loads(m.payload)["seq"] for m in got] == list(range(20))
    report(f"client certificate given: {len(got)} of 20 results arrived")

    t0 = time.monotonic()
    pub, elapsed = await failing_publisher(tls.settings(tls.cert_port), failures=3)
    err = pub.stats.last_error
    report(f"no client certificate: {pub.stats.connect_failures} failed connects in {elapsed:.2f} s: {err}")
    assert "TLS handshake failed" in err and "requires a client certificate: set cert_file and key_file" in err
    assert time.monotonic() - t0 < 2.5, "a refused handshake must fail at once, not after the connect timeout"

    rogue = {"cert_file": str(tls.pki.rogue_crt), "key_file": str(tls.pki.rogue_key)}
    pub, elapsed = await failing_publisher(tls.settings(tls.cert_port, **rogue), failures=2)
    err = pub.stats.last_error
    report(f"client certificate from another CA: {pub.stats.connect_failures} failed connects: {err}")
    assert "TLS handshake failed" in err and "did not accept the client certificate" in err


async def test_password_never_appears(tls: Tls, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """DEBUG logs (spikeline's, aiomqtt's, paho's) across a refused and a successful login; reprs, errors and the
    publisher's stats (what the metrics report): neither the wrong nor the right password appears."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="mqtt")  # paho's, through aiomqtt (which sets it to WARNING)
    right, wrong = USERS["spikeline"], "not-" + USERS["spikeline"] + "-x"
    monkeypatch.setenv("SPIKELINE_TEST_PW", wrong)
    pw = tmp_path / "pw"
    pw.write_text(right + "\n")
    pw.chmod(0o600)
    base = {"url": f"mqtts://127.0.0.1:{tls.login_port}", "ca_file": str(tls.pki.ca), "username": "spikeline",
            "reconnect_min_s": 0.05, "reconnect_max_s": 0.1}
    bad_cfg = parse({**_doc(), "mqtt": {**base, "password_env": "SPIKELINE_TEST_PW"}})
    good_cfg = parse({**_doc(), "mqtt": {**base, "password_file": str(pw), "qos": 1}})
    assert bad_cfg.mqtt is not None and good_cfg.mqtt is not None

    bad, _ = await failing_publisher(bad_cfg.mqtt, failures=2)
    good = MqttPublisher(good_cfg.mqtt, "sec")
    task = asyncio.create_task(good.run())
    await wait_for(lambda: good.connected, 10, "the publisher to connect")
    good.submit("spikeline/sec/p/result", chunk(0, 3), {"pipeline": "p"}, None)
    await wait_for(lambda: good.stats.published == 3, 10, "3 results published")
    await good.stop(1.0)
    await asyncio.wait_for(task, 5)

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logged = "\n".join(formatter.format(r) for r in caplog.records)
    assert "Sending CONNECT" in logged and "refused the login" in logged  # paho's DEBUG lines were captured
    seen = [logged, repr(bad_cfg), repr(good_cfg), json.dumps(asdict(bad.stats)), json.dumps(asdict(good.stats)),
            str(bad.stats), repr(bad_cfg.mqtt), str(good_cfg.mqtt), bad.stats.last_error]
    for text in seen:
        assert right not in text and wrong not in text
    report(f"password never seen in {len(caplog.records)} DEBUG log records (a refused and a successful login), "
           f"reprs, errors, stats")


def _csv(path: Path, n: int) -> Path:
    path.write_text("a\n" + "".join(f"{k % 7}\n" for k in range(n)))
    return path


async def test_daemon_keeps_running_with_a_tls_failure(tls: Tls, tmp_path: Path) -> None:
    """A daemon whose broker's certificate it cannot verify: its pipeline runs, the results wait in the offline
    buffer, the metrics say why, and it stops cleanly. A watch_mqtt source (same settings) keeps retrying with
    backoff, each failure logged with the certificate error and counted; neither pipeline fails."""
    csv = _csv(tmp_path / "x.csv", 100_000)
    cfg = parse({"node": {"name": "sec", "metrics_interval_s": 0.2, "drain_s": 0.5},
                 "mqtt": {"url": f"mqtts://127.0.0.1:{tls.login_port}", "ca_file": str(tls.pki.other_ca),
                          "qos": 1, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2, "offline_buffer": 50},
                 "pipeline": [{"name": "p", "budget_ms": 100, "policy": "mark_late",
                               "source": {"type": "replay", "file": str(csv), "rate_hz": 200, "speed": 1},
                               "sinks": [{"type": "mqtt", "expiry_s": 0}]},
                              {"name": "gw", "budget_ms": 100,
                               "source": {"type": "watch_mqtt", "topic": "watch/+/imu"},
                               "sinks": [{"type": "mqtt", "expiry_s": 0}]}]})
    reports: list[list[dict[str, Any]]] = []
    d = Daemon(cfg, on_metrics=reports.append)
    task = asyncio.create_task(d.run())
    with caplog_at_warning() as logs:
        await asyncio.sleep(1.5)
    assert not task.done() and [p.state for p in d.pipelines] == [State.RUNNING, State.RUNNING]
    watch = d.pipelines[1].metrics.source_counters
    d.request_stop()
    rc = await asyncio.wait_for(task, 10)
    assert rc == 0  # nothing failed; the daemon ran on and stopped cleanly
    m = reports[-1][0]["mqtt"]
    watch_errors = [r for r in logs if r.startswith("watch_mqtt: broker")]
    report(f"daemon with the wrong CA: ran 1.5 s, exit {rc}; metrics mqtt: connected {m['connected']}, "
           f"connect_failures {m['connect_failures']}, dropped_offline {m['dropped_offline']}, "
           f"last_error {m['last_error']!r}; watch_mqtt: {watch['connect_failures']} failures, "
           f"{watch_errors[0] if watch_errors else '-'}")
    assert watch["connect_failures"] >= 3 and watch["connects"] == 0
    assert watch_errors and "CERTIFICATE_VERIFY_FAILED" in watch_errors[0]
    assert not m["connected"] and m["connect_failures"] >= 3 and "TLS" in m["last_error"]
    assert m["dropped_offline"] > 0 and m["backlog"] == 50  # the bound held, the overflow counted


async def test_watch_source_and_results_over_tls_with_password_file(tls: Tls, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The daemon's two MQTT clients (the watch_mqtt source and the publisher) use the same TLS and login."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="mqtt")
    pw = tmp_path / "pw"
    pw.write_text(USERS["spikeline"] + "\n")
    pw.chmod(0o600)
    node = f"s{uuid.uuid4().hex[:6]}"
    cfg = parse({"node": {"name": node, "metrics_interval_s": 0.2},
                 "mqtt": {"url": f"mqtts://127.0.0.1:{tls.login_port}", "ca_file": str(tls.pki.ca), "qos": 1,
                          "username": "spikeline", "password_file": str(pw)},
                 "pipeline": [{"name": "gw", "budget_ms": 200, "policy": "mark_late",
                               "source": {"type": "watch_mqtt", "topic": f"{node}/+/imu", "format": "json",
                                          "qos": 1},
                               "sinks": [{"type": "mqtt", "expiry_s": 0}]}]})
    reports: list[list[dict[str, Any]]] = []
    d = Daemon(cfg, on_metrics=reports.append)
    task = asyncio.create_task(d.run())
    n = 50
    try:
        watch = tls.settings(username="watch", password=USERS["watch"])
        async with subscriber(tls.settings(username="dashboard", password=USERS["dashboard"])) as sub, \
                aiomqtt.Client(**watch.client_kwargs(), identifier="watch-1") as w:
            await sub.subscribe(f"spikeline/{node}/gw/+/result", qos=1)
            await wait_for(lambda: d.pipelines[0].state == State.RUNNING and d.publisher is not None
                           and d.publisher.connected, 15, "the daemon to be up")
            await asyncio.sleep(0.3)  # the source's subscription is in place
            rng = np.random.default_rng(1)
            for k in range(n):
                payload = encode_json(rng.normal(size=(1, 6)), k, 1_000_000 + 20_000 * k)
                await w.publish(f"{node}/w1/imu", payload, qos=1)
            got = await collect(sub, n, 15)
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 10)
    assert sorted(json.loads(m.payload)["seq"] for m in got) == list(range(n))
    assert {m.topic.value for m in got} == {f"spikeline/{node}/gw/w1/result"}
    text = "\n".join(r.getMessage() for r in caplog.records) + json.dumps(reports)
    assert USERS["spikeline"] not in text
    report(f"watch_mqtt source and results over TLS, password from a file: {len(got)} of {n} samples in and "
           "results out")


# -- the deployment example: TLS, logins and the ACL ---------------------------------------------------------


def deploy_config(tls: Tls, d: Path, port: int) -> list[str]:
    """deploy/mosquitto/spikeline-tls.conf with its paths pointed at this test's files and its listener at a free
    loopback port."""
    acl = d / "acl"
    # the test's observer sees (and may publish) everything: what it does not see was not delivered to anyone
    acl.write_text((ROOT / "deploy" / "mosquitto" / "acl").read_text() + "\nuser observer\ntopic readwrite #\n")
    files = {"/etc/mosquitto/certs/ca.crt": tls.pki.ca, "/etc/mosquitto/certs/server.crt": tls.pki.server_crt,
             "/etc/mosquitto/certs/server.key": tls.pki.server_key, "/etc/mosquitto/passwd": tls.password_file,
             "/etc/mosquitto/acl": acl}
    out = []
    for line in (ROOT / "deploy" / "mosquitto" / "spikeline-tls.conf").read_text().splitlines():
        if line.startswith("listener "):
            line = f"listener {port} 127.0.0.1"
        for a, b in files.items():
            line = line.replace(a, str(b))
        out.append(line)
    assert sum(line.startswith("listener ") for line in out) == 1
    assert any(line.startswith("acl_file ") for line in out) and any(line.startswith("password_file ") for line in out)
    return out


async def test_deploy_acl_keeps_spikeline_to_its_topics(tls: Tls, tmp_path: Path) -> None:
    port = free_port()
    broker = Broker(tmp_path, deploy_config(tls, tmp_path, port), [port], name="deploy").start()
    node = "lab"
    try:
        def login(user: str) -> MqttSettings:
            return tls.settings(port, username=user, password=USERS[user], qos=1)

        v5 = aiomqtt.ProtocolVersion.V5
        pw = tmp_path / "pw"
        pw.write_text(USERS["spikeline"] + "\n")
        pw.chmod(0o600)
        cfg = parse({"node": {"name": node, "metrics_interval_s": 0.2},
                     "mqtt": {"url": f"mqtts://127.0.0.1:{port}", "ca_file": str(tls.pki.ca), "qos": 1,
                              "username": "spikeline", "password_file": str(pw)},
                     "pipeline": [{"name": "gw", "budget_ms": 200, "policy": "mark_late",
                                   "source": {"type": "watch_mqtt", "topic": "watch/+/imu", "format": "json",
                                              "qos": 1},
                                   "sinks": [{"type": "mqtt", "expiry_s": 0}]}]})
        d = Daemon(cfg)
        task = asyncio.create_task(d.run())
        try:
            async with subscriber(login("observer"), protocol=v5) as obs, \
                    subscriber(login("dashboard"), protocol=v5) as dash, \
                    aiomqtt.Client(**login("watch").client_kwargs(), identifier="watch-1") as w, \
                    aiomqtt.Client(**login("spikeline").client_kwargs(), identifier="spikeline-probe",
                                   protocol=v5, max_queued_incoming_messages=100) as probe:
                await obs.subscribe("#", qos=1)
                dash_codes = await dash.subscribe("spikeline/#", qos=1)
                await wait_for(lambda: d.pipelines[0].state == State.RUNNING and d.publisher is not None
                               and d.publisher.connected, 15, "the daemon to be up")
                await asyncio.sleep(0.3)  # the source's subscription is in place
                # the spikeline user outside its topics: subscriptions deliver nothing, publishes are dropped
                codes = [(await probe.subscribe(t, qos=1))[0] for t in ("other/#", "#", "watch/+/gps")]
                for t in ("other/topic", "watch/w9/imu", "spikelinex/a"):
                    await probe.publish(t, b"not allowed", qos=1)
                await obs.publish("other/topic", b"for the observer only", qos=1)
                for k in range(20):
                    await w.publish("watch/w1/imu", encode_json(np.full((1, 6), k / 10), k, 20_000 * k), qos=1)
                seen = await collect_for(obs, 1.5)  # everything anyone could see
                dash_got = await collect_for(dash, 0.2)
                probe_got = await collect_for(probe, 0.2)
        finally:
            d.request_stop()
            await asyncio.wait_for(task, 10)
    finally:
        broker.stop()
    topics = [m.topic.value for m in seen]
    results = [m for m in seen if m.topic.value == f"spikeline/{node}/gw/w1/result"]
    dash_results = [m for m in dash_got if m.topic.value == f"spikeline/{node}/gw/w1/result"]
    not_spikeline_own = sorted({t for t in topics if not t.startswith(("spikeline/", "watch/w1/"))})
    probe_topics = sorted({m.topic.value for m in probe_got})
    report(f"deploy ACL (TLS, password file): spikeline's subscriptions to other/#, #, watch/+/gps (SUBACK "
           f"{[getattr(c, 'value', c) for c in codes]}) delivered {len(probe_got)} messages, on {probe_topics} only "
           f"(its watch topic) though other/topic was published; its publishes to other/topic, watch/w9/imu, "
           f"spikelinex/a reached no one (the observer saw {not_spikeline_own}); its results: {len(results)} of 20, "
           f"the dashboard got {len(dash_results)}")
    assert sorted(json.loads(m.payload)["seq"] for m in results) == list(range(20))
    assert sorted(json.loads(m.payload)["seq"] for m in dash_results) == list(range(20))
    assert [getattr(c, "value", c) for c in dash_codes] == [1]
    # what it may read: the watches' samples, through its "#" subscription; nothing else reached it
    assert probe_topics == ["watch/w1/imu"] and len(probe_got) == 20
    assert not_spikeline_own == ["other/topic"]  # the observer's own message only
    assert [m.payload for m in seen if m.topic.value == "other/topic"] == [b"for the observer only"]
    log = broker.log_text()
    assert "Denied PUBLISH from spikeline-probe" in log


@contextlib.contextmanager
def caplog_at_warning() -> Iterator[list[str]]:
    """The messages logged at WARNING or above by spikeline while the block runs."""
    got: list[str] = []

    class _H(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record.getMessage())

    h = _H(logging.WARNING)
    root = logging.getLogger("spikeline")
    root.addHandler(h)
    try:
        yield got
    finally:
        root.removeHandler(h)
