"""`spikeline events info|send`: describing and plotting event files, and streaming them as AEStream datagrams."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from spikeline.cli import main
from spikeline.events import AEStreamDecoder, read

pytestmark = pytest.mark.data


def test_info_describes_every_format_and_plots(data_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    files = [data_dir / "prophesee_samples_expelliarmus" / "evt3_sample.raw",
             data_dir / "prophesee_samples_expelliarmus" / "evt2_sample.raw",
             data_dir / "dvs_samples_tonic" / "sample.aedat4",
             data_dir / "dvs_samples_tonic" / "sample_ncars.dat",
             data_dir / "dvs_samples_tonic" / "sample_nmnist.bin"]
    png = tmp_path / "events.png"
    assert main(["events", "info", *map(str, files), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    for f, fmt in zip(files, ["evt3", "evt2", "aedat4", "dat", "nmnist"], strict=True):
        ef = read(f)
        line = next(x for x in out.splitlines() if x.startswith(str(f)))
        assert f"{fmt}, sensor {ef.sensor[0]}x{ef.sensor[1]}, {len(ef.events):,} events" in line
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_info_on_a_bad_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.dat"
    bad.write_bytes(b"% Version 2\n% Height 10\n% Width 10\n\x00\x08" + b"\x01" * 13)
    assert main(["events", "info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "x.dat" in err and "spikeline events:" in err


@pytest.mark.parametrize("timestamps", [True, False])
def test_send_streams_files_back_to_back_as_aestream_datagrams(data_dir: Path, timestamps: bool) -> None:
    files = [data_dir / "nmnist_small_slayer" / f"{60001 + i}.bs2" for i in range(3)]
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    port = rx.getsockname()[1]
    packets: list[bytes] = []
    want = [read(f).events for f in files]
    n_want = sum(len(w) for w in want)

    def receive() -> None:
        n = 0
        while n < n_want:
            data = rx.recv(65536)
            packets.append(data)
            n += len(data) // (8 if timestamps else 4)

    th = threading.Thread(target=receive, daemon=True)
    th.start()
    cmd = [sys.executable, "-m", "spikeline", "events", "send", *map(str, files), "--udp", f"127.0.0.1:{port}",
           "--speed", "20", "--gap-ms", "100", "--quiet"] + ([] if timestamps else ["--no-timestamps"])
    subprocess.run(cmd, check=True, timeout=60)
    th.join(10)
    rx.close()
    assert all(len(p) <= 512 for p in packets)
    dec = AEStreamDecoder((34, 34))
    got = np.concatenate([dec.decode(p, 0) for p in packets])
    assert dec.rejected_events == dec.rejected_packets == 0
    allw = np.concatenate(want)
    for f in "xyp":
        np.testing.assert_array_equal(got[f], allw[f])
    if timestamps:  # files after the first start 100 ms (+1 µs) after the previous one ended
        t = got["t"]
        b1, b2 = len(want[0]), len(want[0]) + len(want[1])
        np.testing.assert_array_equal(t[:b1], want[0]["t"])
        assert t[b1] - t[b1 - 1] == 100_001 and t[b2] - t[b2 - 1] == 100_001
        np.testing.assert_array_equal(np.diff(t[b1:b2]), np.diff(want[1]["t"]))
