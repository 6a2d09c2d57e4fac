"""Smartwatch HAR datasets for the training tools (tools/train_*.py): load, split, window, normalise.

Training only; the runtime never imports this. One `HARSet` per dataset, whatever the file format:

    >>> ds = load("spar")                      # or "basicmotions", "epilepsy", or a path (see `load`)
    >>> train, test = default_split(ds)        # series indices; SPAR: subjects 1-7 / 8-10, UEA: TRAIN / TEST
    >>> norm = Normalizer.fit(ds, train)       # per-channel mean/std of the training series only
    >>> w = make_windows(ds, train, window=100, hop=50)
    >>> w.x.shape, w.y.shape, w.series.shape   # (n, 100, C) float32, (n,) labels, (n,) series index
    >>> vote(pred, w.series, ds.n_classes)     # one prediction per series, by majority over its windows

Every series is one label (a SPAR set of ~20 repetitions of one exercise, a UEA case). Windows inherit
their series' label. Splits are by *series group* (subject) where the dataset has one, so no subject is
ever in both the training and the test data of the SPAR protocols. The protocols and what well-known
methods reach on them (data/README.md, measured on this machine class) are in `PROTOCOLS` / `BASELINES`,
so every model card compares against the same numbers.

Datasets (paths default to ../shared/data, or $SPIKELINE_DATA):

| name           | file(s)                                          | split                                  |
|----------------|--------------------------------------------------|----------------------------------------|
| `spar`         | spar_applewatch/spar_watch.npz (50 Hz, 6 ch)     | subjects 1-7 train, 8-10 test; or 5 folds by subject |
| `basicmotions` | uea_BasicMotions/BasicMotions_{TRAIN,TEST}.ts (10 Hz, 6 ch) | the archive's TRAIN / TEST (40 / 40)   |
| `epilepsy`     | uea_Epilepsy/Epilepsy_{TRAIN,TEST}.ts (16 Hz, 3 ch)          | the archive's TRAIN / TEST (137 / 138) |

A user's own data in the same formats loads with `load(path)`: a SPAR-layout `.npz` (see
spikeline.recordings.load_spar), a `<Name>_TRAIN.ts` / `<Name>_TEST.ts` pair (give either file or their
folder), or one `.ts` file (then `default_split` holds out a stratified fifth).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from spikeline.recordings import Recording, RecordingError, load_spar, load_ts
from trainlib import DATA, windows

__all__ = ["BASELINES", "DATASETS", "PROTOCOLS", "HARSet", "Normalizer", "Windows", "default_split", "load",
           "make_windows", "series_majority", "subject_folds", "subject_split", "vote"]

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

# name -> (path under DATA, channel names or None for the file's own, units or None)
DATASETS: dict[str, tuple[str, tuple[str, ...] | None, tuple[str, ...] | None]] = {
    "spar": ("spar_applewatch/spar_watch.npz", None, None),
    # BasicMotions.txt: accelerometer x, y, z then gyroscope x, y, z (order as the UEA description gives it);
    # units not documented.
    "basicmotions": ("uea_BasicMotions/BasicMotions_TRAIN.ts", ("ax", "ay", "az", "gx", "gy", "gz"), None),
    # Epilepsy.txt: tri-axial accelerometer on the dominant wrist; values z-normalised-looking, units unknown.
    "epilepsy": ("uea_Epilepsy/Epilepsy_TRAIN.ts", ("ax", "ay", "az"), None),
}

# The evaluation protocols of data/README.md, so every tool and card uses the same ones.
PROTOCOLS = {
    "spar": "train subjects 1-7, test subjects 8-10 (leave-subjects-out); windows of 2 s (100 samples), hop 1 s; "
            "window label = series label; series prediction = majority vote over its windows",
    "spar-5fold": "5-fold by subject: test {1,2}, {3,4}, {5,6}, {7,8}, {9,10}",
    "basicmotions": "the UEA archive's default TRAIN/TEST split (40/40 cases, 4 students)",
    "epilepsy": "the UEA archive's default TRAIN/TEST split (137/138 cases, 3 + 3 other participants)",
}
# What well-known methods reach (data/README.md; intervals there are 95 %).
BASELINES: dict[str, list[tuple[str, str]]] = {
    "spar": [("MiniRocket + ridge, per 2 s window (subjects 8-10)", "0.846"),
             ("MiniRocket + ridge, majority vote per series (subjects 8-10)", "0.889"),
             ("MiniRocket, 5-fold by subject, per window", "0.846"),
             ("MiniRocket, whole series resampled to 1000 points, 5-fold by subject", "0.893"),
             ("Burns et al. 2018, full 20-subject SPAR, subject-wise CV (not this subset)", "~0.98")],
    "basicmotions": [("ROCKET / MiniRocket (aeon 1.6)", "1.000"), ("1-NN DTW", "0.975"),
                     ("Ruiz et al. 2021 bake-off: ROCKET, HIVE-COTE, InceptionTime", "1.000")],
    "epilepsy": [("MiniRocket (aeon 1.6)", "1.000"), ("ROCKET (aeon 1.6)", "0.988"), ("1-NN DTW", "0.964"),
                 ("Ruiz et al. 2021 bake-off: ROCKET / HIVE-COTE", "~0.99-1.00")],
}


@dataclass(frozen=True, eq=False)
class HARSet:
    """Labelled series of one dataset. Series i is `series[i]` (n_i, channels) float32 with label `y[i]`."""

    name: str
    series: tuple[F32, ...]
    y: I64  # (S,) class index per series
    group: I64  # (S,) subject / participant per series; -1 where the file does not say
    is_test: npt.NDArray[np.bool_]  # (S,) the file's own test split (UEA _TEST.ts), else all False
    classes: tuple[str, ...]
    channels: tuple[str, ...]
    units: tuple[str, ...]
    rate_hz: float
    files: tuple[Path, ...]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_series(self) -> int:
        return len(self.series)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def lengths(self) -> I64:
        return np.array([len(s) for s in self.series], np.int64)

    def sha256(self) -> dict[str, str]:
        """sha256 of every file the set was read from (for the model card)."""
        out = {}
        for p in self.files:
            h = hashlib.sha256()
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[p.name] = h.hexdigest()
        return out

    def subset(self, idx: Sequence[int] | I64) -> list[F32]:
        return [self.series[int(i)] for i in idx]


def _from_recordings(name: str, recs: list[Recording], is_test: list[bool], files: tuple[Path, ...],
                     channels: tuple[str, ...] | None, units: tuple[str, ...] | None) -> HARSet:
    first = recs[0]
    classes = tuple(first.info.get("classes") or sorted({str(r.label) for r in recs}))
    for r in recs:
        if r.label is None:
            raise RecordingError(f"{r.name}: series without a class label; HAR training needs one label per series")
        if r.data.shape[1] != first.data.shape[1] or r.rate_hz != first.rate_hz:
            raise RecordingError(f"{r.name}: {r.data.shape[1]} channels at {r.rate_hz:g} Hz, the first series has "
                                 f"{first.data.shape[1]} at {first.rate_hz:g} Hz")
    if first.rate_hz <= 0:
        raise RecordingError(f"{files[0]}: no sampling rate (the .ts description does not state one); "
                             "pass rate_hz= to har_data.load")
    chans = channels or first.channels
    if len(chans) != first.data.shape[1]:
        raise RecordingError(f"{files[0]}: {first.data.shape[1]} channels but {len(chans)} names")
    return HARSet(
        name=name,
        series=tuple(r.data for r in recs),
        y=np.array([classes.index(str(r.label)) for r in recs], np.int64),
        group=np.array([int(r.info.get("subject", -1)) for r in recs], np.int64),
        is_test=np.array(is_test, bool),
        classes=classes, channels=tuple(chans), units=tuple(units or first.units), rate_hz=float(first.rate_hz),
        files=files, info={"side": [int(r.info.get("side", -1)) for r in recs]})


def _ts_pair(path: Path) -> tuple[Path, Path | None]:
    """(TRAIN file, TEST file or None) for a .ts file or a folder holding a *_TRAIN.ts / *_TEST.ts pair."""
    if path.is_dir():
        trains = sorted(path.glob("*_TRAIN.ts"))
        if len(trains) != 1:
            raise RecordingError(f"{path}: expected exactly one *_TRAIN.ts file, found {len(trains)}")
        path = trains[0]
    stem = path.name[:-len(".ts")]
    for a, b in (("_TRAIN", "_TEST"), ("_TEST", "_TRAIN")):
        if stem.upper().endswith(a):
            other = path.with_name(stem[:-len(a)] + b + ".ts")
            if other.is_file():
                return (path, other) if a == "_TRAIN" else (other, path)
    return path, None


def load(name_or_path: str | Path, *, rate_hz: float | None = None,
         channels: Sequence[str] | None = None) -> HARSet:
    """A dataset by name (`DATASETS`: spar, basicmotions, epilepsy) or by path (.npz SPAR layout, .ts, folder)."""
    key = str(name_or_path).lower()
    chans: tuple[str, ...] | None = tuple(channels) if channels is not None else None
    units = None
    if key in DATASETS:
        rel, default_chans, units = DATASETS[key]
        path = DATA / rel
        chans = chans or default_chans
        name = key
        if not path.exists():
            raise SystemExit(f"dataset {path} not found (set SPIKELINE_DATA to the recordings folder, "
                             "or give the dataset's path)")
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise SystemExit(f"dataset {path} not found")
        name = path.stem.split("_")[0].lower() if path.is_file() else path.name.lower()
    if path.suffix == ".npz":
        recs = load_spar(path, rate_hz=rate_hz, channels=chans)
        return _from_recordings(name, recs, [False] * len(recs), (path,), chans, units)
    train, test = _ts_pair(path)
    recs = load_ts(train, rate_hz=rate_hz, channels=chans)
    flags = [False] * len(recs)
    files: tuple[Path, ...] = (train,)
    if test is not None:
        more = load_ts(test, rate_hz=rate_hz, channels=chans)
        recs += more
        flags += [True] * len(more)
        files = (train, test)
    return _from_recordings(name, recs, flags, files, chans, units)


# --- splits -------------------------------------------------------------------------------------------


def subject_split(ds: HARSet, test_groups: Sequence[int]) -> tuple[I64, I64]:
    """(train, test) series indices: every series of the subjects in test_groups is a test series."""
    if (ds.group < 0).any():
        raise ValueError(f"{ds.name}: the file does not say which subject recorded each series")
    test = np.isin(ds.group, np.asarray(test_groups))
    return np.flatnonzero(~test).astype(np.int64), np.flatnonzero(test).astype(np.int64)


def subject_folds(ds: HARSet, n_folds: int = 5) -> Iterator[tuple[tuple[int, ...], I64, I64]]:
    """Folds by subject, consecutive subject ids per fold ({1,2}, {3,4}, ... for SPAR's 10 subjects):
    yields (test subjects, train indices, test indices)."""
    subjects = np.unique(ds.group)
    for part in np.array_split(subjects, n_folds):
        tr, te = subject_split(ds, part.tolist())
        yield tuple(int(s) for s in part), tr, te


def stratified_holdout(y: I64, fraction: float, seed: int) -> tuple[I64, I64]:
    """(rest, held out): about `fraction` of each class held out, chosen by a seeded generator."""
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        held += idx[:max(1, round(fraction * idx.size))].tolist()
    mask = np.zeros(y.size, bool)
    mask[held] = True
    return np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64)


def default_split(ds: HARSet) -> tuple[I64, I64]:
    """The protocol's (train, test) series indices.

    A file with its own test part (UEA _TRAIN/_TEST): that split. Else, by subject when the file says
    who recorded each series: SPAR's protocol (subjects 1-7 / 8-10) for the SPAR subjects, otherwise the
    last ~30 % of the subject ids held out. Else a stratified fifth of the series (seed 0).
    """
    if ds.is_test.any():
        return np.flatnonzero(~ds.is_test).astype(np.int64), np.flatnonzero(ds.is_test).astype(np.int64)
    if (ds.group >= 0).all():
        subjects = np.unique(ds.group)
        if set(subjects.tolist()) == set(range(1, 11)):
            return subject_split(ds, [8, 9, 10])
        n_test = max(1, round(0.3 * subjects.size))
        return subject_split(ds, subjects[-n_test:].tolist())
    return stratified_holdout(ds.y, 0.2, seed=0)


def validation_split(ds: HARSet, train: I64, seed: int = 0) -> tuple[I64, I64]:
    """Hold out part of the training series for model selection (never the test series): one training
    subject when the set has subjects (≥ 3 training subjects), else a stratified fifth."""
    groups = np.unique(ds.group[train])
    if (groups >= 0).all() and groups.size >= 3:
        rng = np.random.default_rng(seed)
        held = int(rng.choice(groups))
        mask = ds.group[train] == held
        return train[~mask], train[mask]
    rest, held_idx = stratified_holdout(ds.y[train], 0.2, seed)
    return train[rest], train[held_idx]


# --- windows and normalisation ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Windows:
    x: F32  # (n, window, channels)
    y: I64  # (n,) label of the window's series
    series: I64  # (n,) index of the series (into the HARSet) each window comes from
    start: I64  # (n,) first sample of each window within its series


def make_windows(ds: HARSet, idx: Sequence[int] | I64, window: int, hop: int) -> Windows:
    """Every full window of `window` samples, `hop` apart, of the series in idx. A series shorter than
    the window gives none (use window = the series length for the UEA sets' one-window-per-case)."""
    xs, ys, ss, st = [], [], [], []
    for i in idx:
        s = ds.series[int(i)]
        starts = windows(len(s), window, hop)
        if starts.size:
            xs.append(np.stack([s[a:a + window] for a in starts]))
            ys.append(np.full(starts.size, ds.y[int(i)], np.int64))
            ss.append(np.full(starts.size, int(i), np.int64))
            st.append(starts)
    if not xs:
        c = ds.n_channels
        return Windows(np.zeros((0, window, c), np.float32), *(np.zeros(0, np.int64) for _ in range(3)))
    return Windows(np.ascontiguousarray(np.concatenate(xs), dtype=np.float32), np.concatenate(ys),
                   np.concatenate(ss), np.concatenate(st))


@dataclass(frozen=True)
class Normalizer:
    """Per-channel standardisation, fitted on training series only: (x - mean) / std."""

    mean: F32
    std: F32

    @classmethod
    def fit(cls, ds: HARSet, idx: Sequence[int] | I64, floor: float = 1e-3) -> Normalizer:
        data = np.concatenate([ds.series[int(i)] for i in idx]).astype(np.float64)
        return cls(data.mean(axis=0).astype(np.float32), np.maximum(data.std(axis=0), floor).astype(np.float32))

    def __call__(self, x: npt.NDArray[Any]) -> F32:
        out: F32 = ((x - self.mean) / self.std).astype(np.float32)
        return out

    def as_dict(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}


def vote(pred: npt.ArrayLike, series: npt.ArrayLike, n_classes: int) -> tuple[I64, I64]:
    """(series indices, majority prediction of each) from per-window predictions; ties: lowest class."""
    pred, series = np.asarray(pred, np.int64), np.asarray(series, np.int64)
    ids = np.unique(series)
    return ids, np.array([int(np.argmax(np.bincount(pred[series == s], minlength=n_classes))) for s in ids],
                         np.int64)


def series_majority(ds: HARSet, pred: npt.ArrayLike, series: npt.ArrayLike) -> tuple[I64, I64]:
    """(true label, voted prediction) per series, for per-series accuracy."""
    ids, voted = vote(pred, series, ds.n_classes)
    return ds.y[ids], voted
