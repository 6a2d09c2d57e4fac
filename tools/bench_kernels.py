"""Benchmark spikeline's compiled kernels against their baselines: every family in one run, and the SOS filter.

Not a test. The one entry point for the kernel benchmarks. By default it runs every family in this
process, one after the other, prints one JSON document (every family's report, the targets and the
run-to-run noise when measured), then the tables:

- l2mu: the L2MU cell at HAR size (tools/bench_l2mu.py): numpy reference, snnTorch one sample per
  call, ONNX Runtime and LiteRT one-step models;
- lmu: LegendreMemory and LMUCell (tools/bench_lmu.py): numpy reference, PyTorch per step, ONNX
  Runtime and LiteRT one-step LMUCell models;
- neurons: LIF / CuBa-LIF populations, delta modulator, LIF encoder (tools/bench_neurons.py): numpy
  reference, snnTorch per step, ONNX Runtime and LiteRT one-step LIF 256 models;
- delta: DeltaGRU 16->64 and 64->128 at input temporal sparsity 0 / 50 / 90 / 99 %
  (tools/bench_delta.py): numpy reference, torch GRUCell, ONNX Runtime and LiteRT dense GRU steps;
- sos: the streaming SOS filter (this file, described below): numpy reference, scipy.signal.sosfilt;
- infer: the onnx and litert stages (tools/bench_infer.py): per-call cost of a stage call over the bare
  ONNX Runtime / LiteRT call on the same one-step and windowed models.

--only FAMILY[,FAMILY] runs a subset, --quick shortens every time budget (~0.15 s per case instead of
~1 s). --write-docs also times the target families (l2mu, delta without its crossover sweep) a second
time, to measure the run-to-run noise, and writes docs/benchmarks.md: machine and versions, how to
reproduce, the targets (met / missed, with the numbers and, where missed, the measured context), the
noise, and one section per family with medians, p99 and the ratios to every baseline.

The SOS family: filters a 250 Hz EEG-like float32 stream (64 and 8 channels) through an 8-30 Hz
order-4 Butterworth band-pass plus a 50 Hz notch (5 sections), chunk sizes 1, 8, 32 and 256,
one call per chunk as the runtime would: the kernels write into a preallocated out, scipy carries
zi from call to call and allocates its (float64) output. Each call is timed on its own with
perf_counter_ns (GC off), giving the median and 99th-percentile latency per call; samples/s is
chunk / median (rows of n_channels), and "x realtime" is that over the 250 Hz stream rate.

    python tools/bench_kernels.py [--quick] [--only FAMILY[,FAMILY]] [--write-docs]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy
import scipy.signal as ss

from benchlib import cpu_name, format_table, ratio_table, results_table, time_calls, timing, versions
from spikeline.kernels import SOSFilterRef, design_bandpass, design_notch

FS = 250.0
CHANNELS = (64, 8)
CHUNKS = (1, 8, 32, 256)
POOL = 16  # distinct input chunks cycled through, so every call does not read the same cache lines
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SOS_DOC = (__doc__ or "").partition("The SOS family: ")[2].split("\n\n", 1)[0]


def _compiled_class() -> type[Any] | None:
    """The compiled kernel, or None when it is not built (then only the reference and scipy run)."""
    try:
        from spikeline._ext.sosfilt import SOSFilter
    except ImportError:
        return None
    return SOSFilter


COMPILED = _compiled_class()


# --- the SOS filter family -------------------------------------------------------------------------


def _callers(sos: npt.NDArray[np.float64], chunks: list[npt.NDArray[np.float32]]) -> dict[str, Callable[[int], object]]:
    """One stateful callable per implementation, each processing chunks[i % POOL] on call i."""
    n_channels = chunks[0].shape[1]
    out = np.empty_like(chunks[0])
    callers: dict[str, Callable[[int], object]] = {}
    if COMPILED is not None:
        ext = COMPILED(sos, n_channels)
        callers["compiled"] = lambda i: ext.step(chunks[i % POOL], out)
    ref = SOSFilterRef(sos, n_channels)
    callers["reference"] = lambda i: ref.step(chunks[i % POOL], out)
    zi = [np.zeros((sos.shape[0], 2, n_channels))]

    def scipy_call(i: int) -> object:
        y, zi[0] = ss.sosfilt(sos, chunks[i % POOL], axis=0, zi=zi[0])
        return y

    callers["scipy"] = scipy_call
    return callers


def run(quick: bool) -> dict[str, Any]:
    """The SOS filter family."""
    budget_s, min_calls, max_calls = (0.15, 30, 20_000) if quick else (1.0, 200, 200_000)
    sos = np.vstack([design_bandpass(8.0, 30.0, FS, order=4), design_notch(50.0, FS)])
    rng = np.random.default_rng(0)
    results: list[dict[str, Any]] = []
    for n_channels in CHANNELS:
        offsets = rng.uniform(-3000.0, 3000.0, n_channels)
        for chunk in CHUNKS:
            chunks = [(20.0 * rng.standard_normal((chunk, n_channels)) + offsets).astype(np.float32)
                      for _ in range(POOL)]
            for impl, call in _callers(sos, chunks).items():
                t = timing(time_calls(call, budget_s, min_calls, max_calls), chunk)
                results.append({"impl": impl, "channels": n_channels, "chunk": chunk, **t,
                                "x_realtime": round(t["samples_per_s"] / FS, 1)})
    return {
        "meta": {
            "fs_hz": FS, "sections": int(sos.shape[0]), "dtype": "float32", "quick": quick,
            "compiled": COMPILED is not None,
            "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "machine": platform.machine(), "cpu": cpu_name(),
        },
        "results": results,
    }


def table(report: dict[str, Any], markdown: bool = False) -> str:
    """The SOS family's tables (a sample is one row of n_channels values)."""
    res = report["results"]
    keys = (("impl", "impl"), ("channels", "ch"), ("chunk", "chunk"))
    return "\n".join([
        "All implementations:", results_table(res, keys, markdown, extra=(("x_realtime", "x realtime"),)), "",
        "Other implementations' median µs/sample ÷ the compiled kernel's (how many times faster the kernel is):",
        ratio_table(res, (("channels", "ch"), ("chunk", "chunk")), markdown=markdown)])


# --- the families ----------------------------------------------------------------------------------

# name -> (module, title); also the order they run and appear in
FAMILIES = {
    "l2mu": ("bench_l2mu", "L2MU cell, HAR size (6 inputs)"),
    "lmu": ("bench_lmu", "LMU: LegendreMemory and LMUCell"),
    "neurons": ("bench_neurons", "Spiking neurons: LIF population, CuBa-LIF, encoders"),
    "delta": ("bench_delta", "DeltaGRU against dense one-step GRUs"),
    "sos": ("bench_kernels", "SOS filter (EEG band-pass + notch)"),
    "infer": ("bench_infer", "Model stages: ONNX Runtime and LiteRT per-call overhead"),
}
NOISE_FAMILIES = ("l2mu", "delta")  # timed twice with --write-docs: the targets depend on them


def _module(name: str) -> ModuleType:
    module = FAMILIES[name][0]
    if module == "bench_kernels":
        return sys.modules[__name__]
    return importlib.import_module(module)


def _run_family(name: str, quick: bool, second_pass: bool = False) -> dict[str, Any]:
    mod = _module(name)
    if name == "delta" and second_pass:
        report: dict[str, Any] = mod.run(quick, crossover=False)
    else:
        report = mod.run(quick)
    return report


def _tables(name: str, report: dict[str, Any], markdown: bool) -> str:
    mod = _module(name)
    render = mod.tables if name == "delta" else mod.table
    text: str = render(report, markdown=markdown)
    return text


def _description(name: str) -> str:
    """A family's method, from its module docstring (without the usage line)."""
    if name == "sos":
        return SOS_DOC[:1].upper() + SOS_DOC[1:]
    doc = _module(name).__doc__ or ""
    return "\n\n".join(p for p in doc.strip().split("\n\n") if not p.strip().startswith("python tools/"))


# --- targets and noise -----------------------------------------------------------------------------


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _l2mu_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    res = report["results"]
    one = _find(res, impl="compiled", chunk=1)
    snn = [r for r in res if r["chunk"] == 1 and r["impl"].startswith("snntorch")]
    if one is None or not snn:
        return []
    fastest = min(snn, key=lambda r: r["us_per_sample"])
    sparsity = report["meta"]["sparsity"]
    context = (f"compiled step {one['median_us']:.2f} µs median, p99 {one['p99_us']:.2f} µs; spike rates "
               + ", ".join(f"{p} {v:.0%}" for p, v in sparsity["spike_rate"].items())
               + f"; synaptic operations {sparsity['synops_vs_dense']:.0%} of a dense step")
    speed = fastest["us_per_sample"] / one["us_per_sample"]
    return [
        {"id": "l2mu-step", "target": "L2MU HAR step ≤ 5 µs (1 sample per call, median)", "baseline": "-",
         "value": one["median_us"], "limit": 5.0, "better": "lower", "unit": " µs",
         "measured": f"{one['median_us']:.2f} µs (p99 {one['p99_us']:.2f} µs)", "context": context},
        {"id": "l2mu-speedup", "target": "L2MU HAR step ≥ 20x faster per step",
         "baseline": f"snnTorch ({fastest['impl']}, the faster variant)",
         "value": round(speed, 1), "limit": 20.0, "better": "higher", "unit": "x",
         "measured": f"{fastest['us_per_sample']:.1f} µs ÷ {one['us_per_sample']:.2f} µs = "
                     f"{speed:.1f}x",
         "context": f"snnTorch steps five Leaky populations and eight matmuls through PyTorch's dispatcher per "
                    f"sample ({fastest['us_per_sample']:.0f} µs); {context}"},
    ]


def _delta_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    res, out = report["results"], []
    info = {(s["config"], s["input_sparsity"]): s for s in report["sparsity"]}
    baselines = [b for b in ("litert", "onnxruntime") if _find(res, impl=b, config="16->64", chunk=1)]
    for k, baseline in enumerate(baselines):  # the target is against LiteRT, else ONNX Runtime; both shown
        ref = _find(res, impl=baseline, config="16->64", chunk=1)
        invoke = _find(res, impl="litert-invoke", config="16->64", chunk=1)
        assert ref is not None
        for sparsity, limit in ((0.9, 0.5), (0.0, 1.5)):
            d = _find(res, impl="delta", config="16->64", chunk=1, input_sparsity=sparsity)
            if d is None:
                continue
            s = info[("16->64", sparsity)]
            name = {"litert": "LiteRT", "onnxruntime": "ONNX Runtime"}[baseline]
            context = (f"DeltaGRU {d['median_us']:.2f} µs (p99 {d['p99_us']:.2f}) vs the dense {name} step "
                       f"{ref['median_us']:.2f} µs (p99 {ref['p99_us']:.2f})"
                       + (f", of which invoke() alone is {invoke['median_us']:.2f} µs" if invoke and baseline == "litert"
                          else "")
                       + f"; at {sparsity:.0%} input sparsity the hidden deltas were {s['h_sparsity']:.0%} sparse and "
                         f"the DeltaGRU did {s['macs_fraction']:.0%} of the dense MACs")
            out.append({
                "id": f"delta-{int(sparsity * 100)}-{baseline}",
                "target": f"DeltaGRU 16→64 at {sparsity:.0%} input sparsity ≤ {limit}x the dense GRU step",
                "baseline": name + ("" if k == 0 or "litert" not in baselines else " (for comparison)"),
                "value": round(d["median_us"] / ref["median_us"], 3), "limit": limit, "better": "lower", "unit": "x",
                "measured": f"{d['median_us']:.2f} / {ref['median_us']:.2f} µs = {d['median_us'] / ref['median_us']:.2f}x",
                "context": context, "primary": k == 0})
    return out


def _met(t: dict[str, Any], value: float) -> bool:
    return bool(value <= t["limit"] if t["better"] == "lower" else value >= t["limit"])


def targets(reports: dict[str, Any], second: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with its value in the run (and in the second pass, when there is one)."""
    extract = {"l2mu": _l2mu_targets, "delta": _delta_targets}
    out = []
    for family, fn in extract.items():
        if family not in reports:
            continue
        again = {t["id"]: t for t in fn(second[family])} if family in second else {}
        for t in fn(reports[family]):
            t.setdefault("primary", True)
            t["met"] = _met(t, t["value"])
            if t["id"] in again:
                t["second_value"] = again[t["id"]]["value"]
                t["second_met"] = _met(t, t["second_value"])
            out.append(t)
    return out


def _row_key(family: str, r: dict[str, Any]) -> str:
    if family == "delta":
        sparsity = f" {r['input_sparsity']:.0%}" if "input_sparsity" in r else ""
        return f"{r['impl']} {r['config']}{sparsity} x{r['chunk']}"
    return f"{r['impl']} x{r['chunk']}"


KERNEL_IMPLS = ("compiled", "delta")
DENSE_RUNTIMES = ("onnxruntime", "litert")


def noise(reports: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """How much the median of the same case moved between the two passes: over every case timed twice,
    over the spikeline kernels' cases and over the ONNX Runtime / LiteRT cases."""
    changes: list[tuple[float, str, str]] = []  # (relative change, case, impl)
    for family, again in second.items():
        first = {_row_key(family, r): r for r in reports[family]["results"]}
        for r in again["results"]:
            before = first.get(_row_key(family, r))
            if before is not None and before["median_us"] > 0:
                changes.append((r["median_us"] / before["median_us"] - 1.0, f"{family}: {_row_key(family, r)}",
                                r["impl"]))
    if not changes:
        return {}

    def stats(subset: list[tuple[float, str, str]]) -> dict[str, Any]:
        rel = np.abs([c for c, _, _ in subset])
        worst = max(subset, key=lambda c: abs(c[0]))
        return {"cases": len(subset), "median_abs_change": round(float(np.median(rel)), 4),
                "p90_abs_change": round(float(np.percentile(rel, 90)), 4),
                "max_signed_change": round(worst[0], 4), "max_case": worst[1]}

    out = {"all": stats(changes)}
    kernels = [c for c in changes if c[2] in KERNEL_IMPLS]
    dense = [c for c in changes if c[2].startswith(DENSE_RUNTIMES) and c[2] != "litert-invoke"]
    if kernels:
        out["spikeline kernels"] = stats(kernels)
    if dense:
        out["ONNX Runtime / LiteRT"] = stats(dense)
    return out


# --- machine, report, docs -------------------------------------------------------------------------


def machine(quick: bool, names: list[str]) -> dict[str, Any]:
    return {
        "cpu": cpu_name(), "logical_cpus": os.cpu_count(), "machine": platform.machine(),
        "platform": platform.platform(), "python": platform.python_version(),
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__,
                     **versions("torch", "snntorch", "onnx", "onnxruntime", "ai_edge_litert", "flatbuffers")},
        "quick": quick, "families": names, "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }


def run_all(names: list[str], quick: bool, second_pass: bool) -> dict[str, Any]:
    """Every family in `names`, then (second_pass) the target families again; targets and noise."""
    meta = machine(quick, names)
    reports: dict[str, Any] = {}
    durations: dict[str, float] = {}
    t0 = time.monotonic()
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        t = time.monotonic()
        reports[name] = _run_family(name, quick)
        durations[name] = round(time.monotonic() - t, 1)
    second: dict[str, Any] = {}
    if second_pass:
        for name in (n for n in NOISE_FAMILIES if n in names):
            print(f"== {name} (second pass)", file=sys.stderr, flush=True)
            t = time.monotonic()
            second[name] = _run_family(name, quick, second_pass=True)
            durations[f"{name} (second pass)"] = round(time.monotonic() - t, 1)
    meta.update(durations_s=durations, total_s=round(time.monotonic() - t0, 1),
                loadavg_after=[round(x, 2) for x in os.getloadavg()],
                compiled={name: r["meta"].get("compiled") for name, r in reports.items()})
    return {"meta": meta, "families": reports, "targets": targets(reports, second), "noise": noise(reports, second),
            "second_pass": second}


# Per family, the 1-sample-per-call rows of the summary: (label, match) and the implementations per column.
SUMMARY_COLUMNS = ("numpy reference", "snnTorch / PyTorch", "ONNX Runtime", "LiteRT", "scipy")
SUMMARY_IMPLS = {  # family -> column -> implementations ("a / b" when several)
    "l2mu": {"numpy reference": ["reference"], "snnTorch / PyTorch": ["snntorch", "snntorch-f32"],
             "ONNX Runtime": ["onnxruntime", "onnxruntime-f32"], "LiteRT": ["litert-f32"]},
    "lmu": {"numpy reference": ["reference"], "snnTorch / PyTorch": ["torch"], "ONNX Runtime": ["onnxruntime"],
            "LiteRT": ["litert"]},
    "neurons": {"numpy reference": ["reference"], "snnTorch / PyTorch": ["snntorch"], "ONNX Runtime": ["onnxruntime"],
                "LiteRT": ["litert"]},
    "delta": {"numpy reference": ["delta-ref"], "snnTorch / PyTorch": ["torch"], "ONNX Runtime": ["onnxruntime"],
              "LiteRT": ["litert"]},
    "sos": {"numpy reference": ["reference"], "scipy": ["scipy"]},
    "infer": {},  # no spikeline kernel to compare with: its own table is stage vs bare runtime call
}


def _summary_rows(name: str, report: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, list[dict[str, Any] | None]]]]:
    res = [r for r in report["results"] if r["chunk"] == 1]
    cols = SUMMARY_IMPLS[name]
    rows = []

    def add(label: str, kernel: dict[str, Any] | None, **match: Any) -> None:
        if kernel is not None:
            rows.append((label, kernel, {c: [_find(res, impl=i, **match) for i in impls] for c, impls in cols.items()}))

    if name == "l2mu":
        add("L2MU HAR cell (6 inputs, 64 hidden)", _find(res, impl="compiled"))
    elif name == "lmu":
        for r in (r for r in res if r["impl"] == "compiled"):
            add(f"LMU {r['case']}", r, case=r["case"])
    elif name == "neurons":
        add("LIF population 256", _find(res, impl="compiled", case="LIF 256"), case="LIF 256")
    elif name == "delta":
        for r in (r for r in res if r["impl"] == "delta"):
            add(f"DeltaGRU {r['config'].replace('->', '→')} at {r['input_sparsity']:.0%} input sparsity", r,
                config=r["config"])
    elif name == "sos":
        add("SOS filter 64 ch (5 sections)", _find(res, impl="compiled", channels=64), channels=64)
    return rows


def summary(report: dict[str, Any], markdown: bool = True) -> str:
    """One row per headline case at one sample per call: the kernel, then baseline ÷ kernel per baseline."""
    header = ["case", "spikeline µs/sample", "p99 µs", "samples/s", *(f"{c} ÷ spikeline" for c in SUMMARY_COLUMNS)]
    rows = [header]
    for name, rep in report["families"].items():
        for label, k, cols in _summary_rows(name, rep):
            cells = []
            for c in SUMMARY_COLUMNS:
                found = [b for b in cols.get(c, []) if b is not None]
                cells.append(" / ".join(f"{b['us_per_sample'] / k['us_per_sample']:.1f}x" for b in found) or "-")
            rows.append([label, f"{k['us_per_sample']:.3f}", f"{k['p99_us']:.2f}", f"{k['samples_per_s']:,}", *cells])
    return format_table(rows, markdown=markdown)


NOT_BUILT = [
    ("L2MU on LiteRT, float64 currents",
     "the twin sums every synaptic current in float64 and rounds once (what makes it spike like the kernel), but "
     "LiteRT has no float64 arithmetic: FULLY_CONNECTED (\"input->type != kTfLiteFloat32 (FLOAT64 != FLOAT32)\"), "
     "BATCH_MATMUL (float32/int8/int16 only), ADD (\"Type FLOAT64 is unsupported by op Add\"), MUL and SUM all refuse "
     "FLOAT64 tensors. The LiteRT row is therefore a float32 model (litert-f32, the same dense work); its output "
     "and hidden spikes are compared with the kernel's in the checks. No op was missing otherwise: the strict "
     "Heaviside is GREATER + CAST (both builtins), and no loop is needed for one step per call."),
    ("Chunked (more than one sample per call) ONNX Runtime / LiteRT runs of L2MU, LMU and LIF",
     "the dense baselines are one-step models by design (one sample per call, the state carried by the caller); "
     "only the DeltaGRU family also has 32-step models (its GRU operator / unrolled graph)."),
    ("ONNX Runtime / LiteRT for LegendreMemory alone, CuBa-LIF, the LIF encoder, the delta modulator and the "
     "16-stream LIF case", "not built: outside the requirement (which names L2MU, LMUCell, the LIF population and "
     "the GRU); their snnTorch / PyTorch and numpy rows remain."),
    ("snnTorch delta modulator", "snntorch.spikegen.delta differences a whole recorded sequence; there is no "
     "streaming one to step."),
    ("SOS filter in PyTorch / ONNX Runtime / LiteRT", "not built; scipy.signal.sosfilt (carrying zi between calls) "
     "is the outside baseline of the SOS family."),
    ("ONNX export with the dynamo exporter", "torch.onnx.export's default (dynamo=True) needs onnxscript, which the "
     "bench extra does not install; the L2MU step is exported with the TorchScript exporter (dynamo=False, "
     "opset 17), which torch 2.13 still ships (deprecated)."),
]


def _num(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def _verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def markdown(report: dict[str, Any]) -> str:
    meta, fams = report["meta"], report["families"]
    v = meta["versions"]
    compiled = ", ".join(f"{n}: {'built' if c else 'NOT built (numpy fallback)'}" for n, c in meta["compiled"].items())
    lines = [
        "# Kernel benchmarks",
        "",
        f"Generated by `python tools/bench_kernels.py --write-docs` on {meta['started'][:10]}"
        + (" (**quick mode**: short budgets, rough numbers)" if meta["quick"] else "")
        + ". Every such run rewrites this file; edit tools/bench_kernels.py instead.",
        "",
        "Each spikeline kernel serves a live stream: state kept between calls, one call per chunk (one sample per "
        "call is the latency case), the output written into a preallocated array. Every baseline is called the "
        "same way and checked against the kernel before it is timed. Times are per call (perf_counter_ns around "
        "each call, GC off, after a warm-up): the median and the 99th percentile; µs/sample is the median over the "
        "samples per call, samples/s its inverse. \"A ÷ spikeline\" is A's median µs/sample over the kernel's: "
        "how many times faster the kernel is.",
        "",
        "## Summary (one sample per call)",
        summary(report),
        "",
        "Where a column shows two ratios, the baseline ran in two variants: snnTorch / ONNX Runtime with the "
        "twin's float64 current sums (spike-identical to the kernel) / with float32 matmuls. LiteRT's L2MU is "
        "float32 only (see *Baselines not built*).",
        "",
        "## Targets",
        "",
    ]
    ts = report["targets"]
    if ts:
        second = any("second_value" in t for t in ts)
        rows = [["target", "baseline", "measured", "verdict", *(["second pass", "verdict"] if second else [])]]
        for t in ts:
            row = [t["target"], t["baseline"], t["measured"], _verdict(t["met"])]
            if second:
                row += [f"{_num(t['second_value'])}{t['unit']}" if "second_value" in t else "-",
                        _verdict(t["second_met"]) if "second_met" in t else "-"]
            rows.append(row)
        lines += [format_table(rows, left=2, markdown=True).lstrip("\n"), ""]
        missed = [t for t in ts if not t["met"] or not t.get("second_met", True)]
        for t in ts:
            status = ("met" if t["met"] else "MISSED") + ("" if t.get("second_met", t["met"]) == t["met"] else
                                                          f" (the second pass: {'met' if t['second_met'] else 'missed'})")
            vs = "" if t["baseline"] == "-" else f" vs {t['baseline']}"
            lines.append(f"- {t['target']}{vs}: {status}. {t['context']}.")
        lines.append("")
        if missed:
            lines += ["Where a target is missed, the context above gives the measured reasons: the kernel's own "
                      "time, the baseline's, and the sparsity the delta kernels could exploit.", ""]
    else:
        lines += ["(No target family in this run.)", ""]
    nz = report["noise"]
    lines += ["## Run-to-run noise", ""]
    lines += [f"The machine is a shared {meta['logical_cpus']}-core box (load average {meta['loadavg_before'][0]} "
              f"before the run, {meta['loadavg_after'][0]} after), so every number here moves from run to run."]
    if nz:
        lines += ["", f"The target families ({', '.join(report['second_pass'])}) were timed a second time at the end "
                  "of the run (the same cases, budgets and inputs, in the same process). How much the median of a "
                  "case moved between the two passes:", ""]
        rows = [["cases", "count", "median abs. change", "90th percentile abs. change", "largest change", "where"]]
        rows += [[name, str(st["cases"]), f"{st['median_abs_change']:.1%}", f"{st['p90_abs_change']:.1%}",
                  f"{st['max_signed_change']:+.1%}", st["max_case"]] for name, st in nz.items()]
        lines += [format_table(rows, markdown=True).lstrip("\n"), "",
                  "Read a ratio within a few percent of its target as borderline. The p99 columns show the "
                  "within-run jitter (preemption by other tenants, timer interrupts); the numpy reference rows, "
                  "long Python loops, move the most."]
    else:
        lines += ["", "(No second pass in this run: run with --write-docs and the l2mu / delta families to measure it.)"]
    lines += ["", "## Machine and versions", ""]
    rows = [["", ""], ["CPU", f"{meta['cpu']} ({meta['logical_cpus']} logical CPUs, {meta['machine']})"],
            ["OS", meta["platform"]], ["Python", meta["python"]]]
    rows += [[k, v[k]] for k in ("numpy", "scipy", "torch", "snntorch", "onnx", "onnxruntime", "ai_edge_litert",
                                  "flatbuffers") if k in v]
    rows += [["compiled kernels", compiled],
             ["run time", f"{meta['total_s'] / 60:.1f} min (" + ", ".join(f"{k} {s:.0f} s" for k, s in
                                                                       meta["durations_s"].items()) + ")"]]
    lines += [format_table(rows, left=2, markdown=True).lstrip("\n"), ""]
    lines += ["## How to reproduce", "", "```sh",
              ". .venv/bin/activate                      # pip install -e \".[bench]\"; Cython kernels built",
              "python tools/bench_kernels.py --write-docs  # every family (~"
              f"{max(1, round(meta['total_s'] / 60))} min here), rewrites this file",
              "python tools/bench_kernels.py --quick --only l2mu,delta   # a rough look at some families",
              "python tools/bench_l2mu.py                # one family on its own (also bench_lmu, bench_neurons, "
              "bench_delta)", "```", "",
              "The JSON document printed before the tables holds every number, the checks and the skipped baselines.",
              ""]
    for name, rep in fams.items():
        lines += [f"## {FAMILIES[name][1]} (`{name}`)", "", "<details><summary>What is measured, and how</summary>",
                  "", "```text", _description(name), "```", "", "</details>", "", _tables(name, rep, True), ""]
    lines += ["## Baselines not built", ""]
    for what, why in NOT_BUILT:
        lines.append(f"- **{what}**: {why}")
    for name, rep in fams.items():
        for impl, why in rep["meta"].get("skipped", {}).items():
            lines.append(f"- **{name}: {impl}** skipped in this run: {why}")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short time budget per case (~0.15 s instead of ~1 s)")
    parser.add_argument("--only", metavar="FAMILY[,FAMILY]",
                        help=f"run only these families, of {', '.join(FAMILIES)} (default: all)")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"time the target families twice and write {DOCS.relative_to(DOCS.parents[1])}")
    args = parser.parse_args()
    names = list(FAMILIES)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in FAMILIES]
        if unknown or not wanted:
            parser.error(f"unknown family {', '.join(unknown) or '(none)'}; choose from {', '.join(FAMILIES)}")
        names = [n for n in FAMILIES if n in wanted]
    report = run_all(names, args.quick, second_pass=args.write_docs)
    print(json.dumps(report, indent=2))
    for name, rep in report["families"].items():
        print(f"\n=== {FAMILIES[name][1]} ({name})\n")
        print(_tables(name, rep, False))
    if report["targets"]:
        print("\n=== Targets\n")
        for t in report["targets"]:
            again = f"; second pass {_num(t['second_value'])}{t['unit']}" if "second_value" in t else ""
            vs = "" if t["baseline"] == "-" else f" vs {t['baseline']}"
            print(f"{'met   ' if t['met'] else 'MISSED'}  {t['target']}{vs}: {t['measured']}{again}")
    if args.write_docs:
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        DOCS.write_text(markdown(report), encoding="utf-8")
        print(f"\nwrote {DOCS}", file=sys.stderr)


if __name__ == "__main__":
    main()
