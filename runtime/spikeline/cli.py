"""Command line: `spikeline run|check|demo`. Every flag can also come from the environment (systemd)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from . import __version__, logs
from .params import ConfigError


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"SPIKELINE_{name}", default)


async def serve(run: Callable[[], Awaitable[int]], request_stop: Callable[[], None],
                duration: float | None = None, reload: Callable[[], None] | None = None) -> int:
    """Run with signal handling: the first SIGINT/SIGTERM drains, a second one forces; SIGHUP calls `reload`
    (when given)."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    hits = 0

    def on_signal(signame: str) -> None:
        nonlocal hits
        hits += 1
        if hits == 1:
            logging.getLogger("spikeline").info("%s: draining (send again to force)", signame)
            request_stop()
        elif main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, reload)
    timer = loop.call_later(duration, request_stop) if duration else None
    try:
        return await run()
    except asyncio.CancelledError:
        return 130
    finally:
        if timer is not None:
            timer.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def cmd_check(args: argparse.Namespace) -> int:
    from . import config
    from .pipeline import describe

    try:
        cfg = config.load(args.config)
    except ConfigError as e:
        n = len(e.problems)
        print(f"{args.config}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    print(f"{args.config}: OK (node {cfg.node!r}, {len(cfg.pipelines)} pipeline(s))")
    for pc in cfg.pipelines:
        print(f"  {describe(pc)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from . import config
    from .daemon import Daemon

    try:
        cfg = config.load(args.config)
    except ConfigError as e:
        for p in e.problems:
            print(f"{args.config}: {p}", file=sys.stderr)
        return 2
    daemon = Daemon(cfg)
    return asyncio.run(serve(daemon.run, daemon.request_stop, args.duration, reload=daemon.request_reload))


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def cmd_replay(args: argparse.Namespace) -> int:
    from .sources.replay import replay_main

    return replay_main(args)


def cmd_models(args: argparse.Namespace) -> int:
    from .modelfile import ModelError
    from .registry import entries, resolve, search_path

    try:
        known = entries()
    except ModelError as err:
        print(f"spikeline: {err}", file=sys.stderr)
        return 1
    if args.id:
        entry = known.get(args.id)
        if entry is None:
            print(f"spikeline: no model {args.id!r} (known: {', '.join(sorted(known)) or 'none'})", file=sys.stderr)
            return 1
        try:
            resolve(args.id)
            status = "ok (sha256 verified)"
        except ModelError as err:
            status = f"BROKEN: {err}"
        print(f"{entry.id}\n  kind:   {entry.kind}\n  file:   {entry.file}\n  sha256: {entry.sha256}\n  status: {status}")
        if entry.card is not None and entry.card.is_file():
            print(f"  card:   {entry.card}\n")
            print(entry.card.read_text(encoding="utf-8"))
        return 0 if status.startswith("ok") else 1
    if not known:
        print("no registered models; searched: " + ", ".join(str(d) for d in search_path()))
        return 0
    width = max(len(i) for i in known)
    for mid, entry in sorted(known.items()):
        print(f"{mid:<{width}}  {entry.kind:<10}  {entry.summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spikeline", description="Real-time streaming edge runtime.")
    ap.add_argument("--version", action="version", version=f"spikeline {__version__}")
    ap.add_argument("--log-level", default=_env("LOG_LEVEL", "info"),
                    choices=["debug", "info", "warning", "error"], help="[env SPIKELINE_LOG_LEVEL]")
    ap.add_argument("--log-format", default=_env("LOG_FORMAT", "auto"), choices=logs.FORMATS,
                    help="text, json (one object per line), journal (syslog priority prefixes), or auto: journal "
                         "under systemd, else text [env SPIKELINE_LOG_FORMAT]")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="run the pipelines of a config file until SIGINT/SIGTERM (SIGHUP reloads it)")
    p.add_argument("config", nargs="?", default=_env("CONFIG"), help="[env SPIKELINE_CONFIG]")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a config file; print every problem with its key path")
    p.add_argument("config", nargs="?", default=_env("CONFIG"), help="[env SPIKELINE_CONFIG]")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="synthetic EEG on LSL -> band-pass -> band power -> decision -> MQTT")
    p.add_argument("--mqtt", default=_env("MQTT"), metavar="URL",
                   help="broker, e.g. mqtt://127.0.0.1:1883 (MQTT 5); default: embedded amqtt broker, "
                        "a development fallback [env SPIKELINE_MQTT]")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--channels", type=int, default=32, help="EEG channels (default 32)")
    p.add_argument("--rate", type=float, default=250.0, help="sampling rate in Hz (default 250)")
    p.add_argument("--budget-ms", type=float, default=20.0, help="latency budget (default 20 ms)")
    p.add_argument("--node", default=_env("NODE", "demo"), help="node name in topics (default demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("replay", help="describe a recording, play it on LSL (--lsl) or through a pipeline (--config)")
    p.add_argument("file", help="recording: .edf (EDF+), .xdf, UEA/UCR .ts, SPAR .npz, .csv")
    p.add_argument("--config", default="", help="run this config's pipeline with its source replaced by the file")
    p.add_argument("--pipeline", default="", help="which pipeline of --config (needed when it has several)")
    p.add_argument("--lsl", action="store_true", help="play the file as an LSL outlet (+ a marker outlet)")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--speed", type=float, default=1.0, help="1 = real time (default), N = N times faster")
    speed.add_argument("--fast", action="store_true", help="as fast as possible (no sample is dropped)")
    p.add_argument("--series", default="", help='series to play: indices "3", ranges "0:10", names (default all)')
    p.add_argument("--channels", default="", help="comma-separated subset of channels (default all)")
    p.add_argument("--loop", action="store_true", help="start again at the end")
    p.add_argument("--chunk-ms", type=float, default=20.0, help="chunk length (default 20 ms of signal)")
    p.add_argument("--rate-hz", type=float, default=0.0, help="sampling rate for files without one (.ts, CSV)")
    p.add_argument("--kind", default="", help="reader, when the suffix does not say (edf, xdf, ts, spar, csv)")
    p.add_argument("--name", default="", help="stream name (default replay-<file>)")
    p.add_argument("--type", default="", help='stream type, e.g. "EEG" (default: the file\'s, else replay)')
    p.add_argument("--wait", type=float, default=0.0, help="--lsl: wait up to this many s for a consumer")
    p.add_argument("--linger", type=float, default=1.0, help="--lsl: keep the outlets open this long at the end")
    p.set_defaults(func=cmd_replay)

    from .events import tool as events_tool

    events_tool.add_parser(sub)

    p = sub.add_parser("models", help="list the registered models (ids a config can name), or show one's card")
    p.add_argument("id", nargs="?", default="", help="a model id: print its entry, verify its file, show its card")
    p.set_defaults(func=cmd_models)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        logs.setup(args.log_level, args.log_format)
    except ValueError as e:  # SPIKELINE_LOG_FORMAT with a value argparse did not see
        print(f"spikeline: {e}", file=sys.stderr)
        return 2
    if getattr(args, "config", "") is None:
        print("spikeline: a config file is required (argument or SPIKELINE_CONFIG)", file=sys.stderr)
        return 2
    return int(args.func(args))
