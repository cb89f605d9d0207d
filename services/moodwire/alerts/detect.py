"""Alert detection, pure over per-minute aggregates (no I/O: testable alone, and the same
code the benchmark replays, ``bench/alerts.py``).

Two kinds, each its own alert type:

``negative_shift``, a negative-share shift: per window (``window_minutes`` of event time,
aligned to the epoch) the evidence is a binomial log-likelihood ratio of "baseline share +
d" against "baseline share", for d = 1, 2 and 4 x ``shift_points``, divided by the brand's
over-dispersion factor 1 + (n - 1) rho (minute shares wander more than binomial noise;
without it a busy brand, or a volume surge, alerts on noise). A windowed CUSUM sums it:
the best sum over the last ``memory_minutes`` ending now. An alert is raised when that sum
reaches ``threshold`` nats and none did in the ``rearm_minutes`` before, so an incident
alerts once. A window's evidence is positive only when its share is about d / 2 above the
baseline, so shifts under half ``shift_points`` never add up, however busy the brand.

The baseline is hourly. For a window in clock hour H it is read from hours H -
``baseline_hours`` .. H - 1: hours whose share is off the span's usual level (a low
quantile of the hours) by ``baseline_outlier_z`` standard errors and half
``shift_points`` are left out (an outage, a promotion); of the rest, the newest that hold
``baseline_posts`` (at least ``baseline_min_hours``) are pooled, so a busy brand's baseline
is recent and follows a drift, a quiet brand's is long and not noise. It is never below
the whole span's pooled share (a dip just before must not make the return to normal look
like a shift), and the window is judged against ``baseline_margin_se`` of its standard
errors above it, so a baseline that came out low by chance does not alert.

``volume_surge``: mentions in the last ``surge_minutes`` are ``surge_min_ratio`` times the
rate of the ``surge_reference_minutes`` before them or more, ``surge_min_excess`` posts
more than expected or more, and ``surge_min_z`` standard deviations above it (counts are
over-dispersed: the variance is the reference's own, at least Poisson). A volume surge
does not move the share, and the share test scales its evidence by the dispersion, so a
surge alone raises ``volume_surge`` only.

Each window's verdict depends only on a fixed span of minutes before it, so detection is
stateless: any pass (or a restarted detector) reading ``config.span(watermark)`` decides
exactly what a detector that had watched forever would, and the benchmark can judge a
whole stream in one call (``shift_alarms``, ``surge_alarms``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from numpy.typing import NDArray

from moodwire.aggregates.keys import ALL_BRANDS, NO_BRAND, Bucket
from moodwire.settings import Settings

MINUTE = 60
HOUR = 3600
KIND = "negative_shift"  # rows stored before volume surges existed say "negative_spike"
SURGE = "volume_surge"
KINDS = (KIND, SURGE)
# Shares are kept strictly inside (0, 1) so that every log-likelihood ratio is finite.
_SHARE_FLOOR = 0.01
_MAX_RHO = 0.2
_RHO_PRIOR = 0.003  # a minute's share wanders like a beta of about 300 pseudo-posts
_RHO_PRIOR_PAIRS = 5000.0
# Design shifts, as multiples of ``shift_points``: one small, one typical, one large, so a
# big shift is caught at the speed of a test designed for it.
_SHIFT_MULTIPLES = (1.0, 2.0, 4.0)

Array = NDArray[np.float64]
Mask = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Every knob of both detectors; per-brand rules replace fields of it."""

    window_minutes: int = 1
    lateness_minutes: int = 1
    lookback_minutes: int = 30
    # negative_shift
    shift_points: float = 0.10
    threshold: float = 8.0
    memory_minutes: int = 60
    rearm_minutes: int = 60
    baseline_hours: int = 8
    baseline_min_hours: int = 2
    baseline_posts: int = 2000
    baseline_outlier_z: float = 3.0
    baseline_margin_se: float = 1.5
    baseline_guard_minutes: int = 10
    min_baseline_posts: int = 50
    # volume_surge
    surge_minutes: int = 5
    surge_reference_minutes: int = 60
    surge_min_ratio: float = 3.0
    surge_min_z: float = 5.0
    surge_min_excess: int = 30

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            # Counts of minutes, hours and posts are whole numbers (rules files are YAML).
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{f.name} must be a whole number (got {value!r})")
        if self.window_minutes < 1 or 60 % self.window_minutes:
            raise ValueError("window_minutes must divide 60")
        if self.lateness_minutes < 0 or self.lookback_minutes < 1:
            raise ValueError("lateness_minutes must be >= 0 and lookback_minutes >= 1")
        if not 0 < self.shift_points <= 0.5:
            raise ValueError("shift_points must be in (0, 0.5]")
        if self.threshold <= 0:
            raise ValueError("threshold must be > 0")
        for name in ("memory_minutes", "rearm_minutes", "surge_minutes"):
            if getattr(self, name) < self.window_minutes:
                raise ValueError(f"{name} must be at least window_minutes")
        if self.surge_reference_minutes < self.window_minutes:
            raise ValueError("surge_reference_minutes must be at least window_minutes")
        if not 1 <= self.baseline_min_hours <= self.baseline_hours:
            raise ValueError("baseline_min_hours must be in [1, baseline_hours]")
        if self.baseline_guard_minutes < 0 or self.baseline_guard_minutes >= 60:
            raise ValueError("baseline_guard_minutes must be in [0, 60)")
        if self.baseline_margin_se < 0:
            raise ValueError("baseline_margin_se must be >= 0")
        if self.baseline_posts < 1 or self.baseline_outlier_z <= 0:
            raise ValueError("baseline_posts must be >= 1 and baseline_outlier_z > 0")
        if self.min_baseline_posts < 1 or self.surge_min_excess < 0:
            raise ValueError("min_baseline_posts must be >= 1 and surge_min_excess >= 0")
        if self.surge_min_ratio < 1 or self.surge_min_z < 0:
            raise ValueError("surge_min_ratio must be >= 1 and surge_min_z >= 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectorConfig:
        return cls(
            window_minutes=settings.alert_window_minutes,
            lateness_minutes=settings.alert_lateness_minutes,
            lookback_minutes=settings.alert_lookback_minutes,
            shift_points=settings.alert_shift_points,
            threshold=settings.alert_threshold,
            baseline_hours=settings.alert_baseline_hours,
            min_baseline_posts=settings.alert_min_baseline_posts,
            surge_minutes=settings.alert_surge_minutes,
            surge_min_ratio=settings.alert_surge_min_ratio,
        )

    @property
    def window_s(self) -> int:
        return self.window_minutes * MINUTE

    def windows(self, minutes: int) -> int:
        """``minutes`` as a whole number of windows (at least one)."""
        return max(1, minutes // self.window_minutes)

    def closed_windows(self, watermark: int) -> list[int]:
        """Starts of the closed windows within the lookback, oldest first."""
        last_end = (watermark - self.lateness_minutes * MINUTE) // self.window_s * self.window_s
        first_end = last_end - self.lookback_minutes * MINUTE
        return [end - self.window_s for end in range(last_end, first_end, -self.window_s)][::-1]

    def span(self, watermark: int) -> tuple[int, int]:
        """Minutes ``[start, end)`` that detection at ``watermark`` reads: the lookback,
        what the re-arm and CUSUM memory look back over, and whole baseline hours."""
        windows = self.closed_windows(watermark)
        if not windows:
            return watermark, watermark
        back = max(
            self.rearm_minutes + self.memory_minutes,
            self.rearm_minutes + self.surge_minutes + self.surge_reference_minutes,
        )
        first = windows[0] - back * MINUTE
        start = first // HOUR * HOUR - self.baseline_hours * HOUR
        return start, windows[-1] + self.window_s

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class Spike:
    """One alert as detected. For ``negative_shift`` the window is the one whose close
    raised it (``details`` say where the CUSUM's run began); for ``volume_surge`` the last
    ``surge_minutes``."""

    brand: str
    window_start: int  # epoch seconds, inclusive
    window_end: int  # epoch seconds, exclusive
    posts: int
    negative: int
    negative_share: float
    baseline_share: float
    baseline_posts: int
    ratio: float  # negative share / baseline (shift); posts / expected posts (surge)
    z: float
    kind: str = KIND
    score: float = 0.0  # CUSUM nats (shift); expected posts (surge)
    details: dict[str, float | int] = field(default_factory=dict)


# --- array helpers --------------------------------------------------------------------


def _shift_right(a: Array, k: int, fill: float) -> Array:
    """``out[..., t] = a[..., t - k]``, ``fill`` before the start."""
    out = np.full_like(a, fill)
    if k < a.shape[-1]:
        out[..., k:] = a[..., : a.shape[-1] - k]
    return out


def rolling_min(a: Array, width: int) -> Array:
    """Minimum of ``a[..., t - width + 1 .. t]`` (fewer at the start), by doubling."""
    out = a.copy()
    span = 1
    while span * 2 <= width:
        out = np.minimum(out, _shift_right(out, span, np.inf))
        span *= 2
    if span < width:
        out = np.minimum(out, _shift_right(out, width - span, np.inf))
    return out


def _rolling_sum(a: Array, width: int) -> Array:
    """Sum of ``a[..., t - width + 1 .. t]`` (zeros before the start)."""
    c = np.cumsum(a, axis=-1)
    return c - _shift_right(c, width, 0.0)


def first_in_run(cond: Mask, rearm: int) -> Mask:
    """``cond`` where it did not hold in the ``rearm`` windows before: one per incident."""
    held = _rolling_sum(cond.astype(np.float64), rearm)
    before = _shift_right(held, 1, 0.0)
    out: Mask = cond & (before == 0)
    return out


# --- negative_shift --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Baseline:
    share: Array  # per window; nan where the baseline is too thin to judge against
    posts: Array
    rho: Array
    se: Array  # standard error of ``share``


def baseline(n: Array, neg: Array, config: DetectorConfig) -> Baseline:
    """Per window, the trimmed hourly baseline share, its posts and rho.

    ``n``, ``neg``: (brands, windows) counts whose first window starts on a clock hour.
    """
    brands, length = n.shape
    per_hour = 60 // config.window_minutes
    hours = -(-length // per_hour)
    pad = hours * per_hour - length
    nh = np.pad(n, ((0, 0), (0, pad))).reshape(brands, hours, per_hour)
    xh = np.pad(neg, ((0, 0), (0, pad))).reshape(brands, hours, per_hour)
    posts_h = nh.sum(-1)
    neg_h = xh.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share_h = np.where(posts_h > 0, neg_h / posts_h, np.nan)
        p = np.clip(np.nan_to_num(share_h, nan=0.5), _SHARE_FLOOR, 1 - _SHARE_FLOOR)
        # Method of moments for the beta-binomial: E[(x - np)^2] = n p (1 - p) (1 + (n-1) rho).
        chi = ((xh - nh * p[..., None]) ** 2).sum(-1) / (p * (1 - p))
        used = (nh > 0).sum(-1)
        pairs = (nh * (nh - 1)).sum(-1)
        measured = (pairs > 0) & (used > 1)
        excess_h = np.where(measured, chi * used / np.maximum(used - 1, 1) - posts_h, 0.0)
        pairs_h = np.where(measured, pairs, 0.0)
        rho_h = np.clip(np.where(measured, excess_h / pairs_h, np.nan), 0.0, _MAX_RHO)

    # The baseline of hour H: hours H - k .. H - 1 (windows over a front-padded axis).
    k = config.baseline_hours

    def past(a: Array, fill: float) -> Array:
        padded = np.concatenate([np.full((brands, k), fill), a], axis=1)
        return np.lib.stride_tricks.sliding_window_view(padded, k, axis=1)[:, :hours]

    s = past(share_h, np.nan)
    posts = past(posts_h.astype(np.float64), 0.0)
    negs = past(neg_h.astype(np.float64), 0.0)
    rhos = past(rho_h, np.nan)
    excess = past(excess_h, 0.0)
    pairs_past = past(pairs_h, 0.0)
    valid = ~np.isnan(s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an hour span with no estimate
        # The median hour's rho, to tell outlying hours; then the pooled one below.
        rho = np.nan_to_num(np.nanmedian(np.where(valid, rhos, np.nan), axis=-1), nan=0.0)
        # A low quantile, not the median: after a long outage half the hours can be high,
        # and the brand's usual mood is the lower cluster (promotions, on the low side,
        # last an hour or two of the span).
        center = np.nan_to_num(np.nanquantile(s, 0.35, axis=-1), nan=0.5)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        # Hours off that center by more than baseline_outlier_z standard errors (with
        # the over-dispersion) and by half of shift_points are an outage or a promotion,
        # not the brand's usual mood; a drift, slower than that, stays in.
        pc = np.clip(center, _SHARE_FLOOR, 1 - _SHARE_FLOOR)
        per_window_posts = posts / per_hour
        se = np.sqrt(pc * (1 - pc) * (1 + np.maximum(per_window_posts - 1, 0) * rho[..., None]))
        off = np.abs(np.nan_to_num(s - pc))
        outlier = (off * np.sqrt(posts) > config.baseline_outlier_z * se) & (
            off > config.shift_points / 2
        )
    usable = valid & ~outlier
    # Hours split into two far-apart groups can all be "off the center": then judge
    # against them all rather than not at all.
    none_left = ((posts * usable).sum(-1) < config.min_baseline_posts)[..., None]
    usable = np.where(none_left, valid, usable)
    # rho pooled over the usable hours: one hour's estimate is noisy and skewed, and the
    # median of them comes out low, which would let a busy brand's noise through.
    # Shrunk toward a typical rho by _RHO_PRIOR_PAIRS pseudo-pairs: a quiet brand's
    # windows (a few posts each) hardly measure it, and a wild guess would either let
    # noise through or drown a real shift.
    pooled_rho = ((excess * usable).sum(-1) + _RHO_PRIOR * _RHO_PRIOR_PAIRS) / (
        (pairs_past * usable).sum(-1) + _RHO_PRIOR_PAIRS
    )
    rho = np.clip(pooled_rho, 0.0, _MAX_RHO)
    # Newest usable hours first, as many as hold baseline_posts (at least
    # baseline_min_hours): a busy brand's baseline is recent, so it follows a drift
    # closely; a quiet brand's is long, so it is not noise.
    newest = (posts * usable)[..., ::-1]
    before = np.cumsum(newest, axis=-1) - newest
    hours_before = np.cumsum(usable[..., ::-1], axis=-1) - usable[..., ::-1]
    recent = (hours_before < config.baseline_min_hours) | (before < config.baseline_posts)
    kept = usable & recent[..., ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        kept_posts = (posts * kept).sum(-1)
        share = np.where(
            kept_posts >= config.min_baseline_posts, (negs * kept).sum(-1) / kept_posts, np.nan
        )
        # Never below the whole span's share: a recent dip (a promotion, the tail of a
        # downward drift) would make the return to normal look like a shift; a baseline
        # that errs high only delays an alert.
        whole = (negs * usable).sum(-1) / (posts * usable).sum(-1)
        share = np.where(np.isnan(share), share, np.fmax(share, whole))
        # The baseline's own standard error (over-dispersed, like every window's).
        per_window_kept = kept_posts / np.maximum(kept.sum(-1) * per_hour, 1)
        sc = np.clip(np.nan_to_num(share, nan=0.5), _SHARE_FLOOR, 1 - _SHARE_FLOOR)
        share_se = np.sqrt(
            sc
            * (1 - sc)
            * (1 + np.maximum(per_window_kept - 1, 0) * rho)
            / np.maximum(kept_posts, 1)
        )

    def per_window(a: Array) -> Array:
        return np.repeat(a, per_hour, axis=1)[:, :length]

    out_share, out_posts = per_window(share), per_window(kept_posts)
    out_rho, out_se = per_window(rho), per_window(share_se)
    # A young history (the first hour or so): the usable earlier hours, if any, plus this
    # hour's windows up to baseline_guard_minutes before the judged one.
    guard = config.windows(config.baseline_guard_minutes) + 1
    part_n = _shift_right(np.cumsum(nh, axis=-1), guard, 0.0).reshape(brands, -1)[:, :length]
    part_x = _shift_right(np.cumsum(xh, axis=-1), guard, 0.0).reshape(brands, -1)[:, :length]
    young = np.isnan(out_share)
    if young.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            total_n = per_window((posts * usable).sum(-1)) + part_n
            total_x = per_window((negs * usable).sum(-1)) + part_x
            fallback = np.where(total_n >= config.min_baseline_posts, total_x / total_n, np.nan)
            fc = np.clip(np.nan_to_num(fallback, nan=0.5), _SHARE_FLOOR, 1 - _SHARE_FLOOR)
            fallback_se = np.sqrt(fc * (1 - fc) / np.maximum(total_n, 1))
        out_share = np.where(young, fallback, out_share)
        out_posts = np.where(young, np.where(np.isnan(fallback), 0.0, total_n), out_posts)
        # Over-dispersed like any window: at the partial hour's mean posts a window.
        in_hour = np.arange(length) % per_hour
        mean_posts = part_n / np.maximum(in_hour - guard + 1, 1)
        dispersion = 1 + np.maximum(mean_posts - 1, 0) * out_rho
        out_se = np.where(young, fallback_se * np.sqrt(dispersion), out_se)
    return Baseline(share=out_share, posts=out_posts, rho=out_rho, se=out_se)


@dataclass(frozen=True, slots=True)
class ShiftTrace:
    base: Baseline
    cusum: Array  # (designs, brands, windows + 1): running sums of the evidence, from 0
    stat: Array  # (designs, brands, windows): windowed CUSUM of each design
    alarms: Mask  # (brands, windows)


def shift_trace(n: Array, neg: Array, config: DetectorConfig) -> ShiftTrace:
    base = baseline(n, neg, config)
    judged = ~np.isnan(base.share)
    # Judged against the top of the baseline's error band, not its middle: a baseline that
    # came out low by chance would otherwise make ordinary windows look like a shift.
    p0 = np.nan_to_num(base.share + config.baseline_margin_se * base.se, nan=0.5)
    p0 = np.clip(p0, _SHARE_FLOOR, 1 - _SHARE_FLOOR)
    dispersion = 1.0 + np.maximum(n - 1, 0) * base.rho
    memory = config.windows(config.memory_minutes)
    sums = []
    stats = []
    for multiple in _SHIFT_MULTIPLES:
        p1 = np.minimum(p0 + multiple * config.shift_points, 1 - _SHARE_FLOOR)
        llr = (neg * np.log(p1 / p0) + (n - neg) * np.log((1 - p1) / (1 - p0))) / dispersion
        llr = np.where(judged, llr, 0.0)
        c = np.concatenate([np.zeros((n.shape[0], 1)), np.cumsum(llr, axis=1)], axis=1)
        # Best sum over the last 1..memory windows: c[t+1] minus the lowest c before it.
        stats.append(c[:, 1:] - rolling_min(c, memory + 1)[:, 1:])
        sums.append(c)
    stat = np.stack(stats)
    cond = (stat.max(axis=0) >= config.threshold) & judged
    alarms = first_in_run(cond, config.windows(config.rearm_minutes))
    return ShiftTrace(base=base, cusum=np.stack(sums), stat=stat, alarms=alarms)


def shift_alarms(n: Array, neg: Array, config: DetectorConfig) -> Mask:
    """(brands, windows) -> where a ``negative_shift`` alert is raised."""
    return shift_trace(n, neg, config).alarms


# --- volume_surge ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SurgeTrace:
    posts: Array  # posts in the last surge_minutes
    expected: Array
    z: Array
    reference_posts: Array
    alarms: Mask


def surge_trace(n: Array, config: DetectorConfig) -> SurgeTrace:
    span = config.windows(config.surge_minutes)
    ref = config.windows(config.surge_reference_minutes)
    recent = _rolling_sum(n, span)
    ref_sum = _shift_right(_rolling_sum(n, ref), span, 0.0)
    ref_sq = _shift_right(_rolling_sum(n * n, ref), span, 0.0)
    mean = ref_sum / ref
    # At least Poisson, and at least half a post per reference span: a brand silent for an
    # hour still needs a real burst to alert.
    var = np.maximum(np.maximum(ref_sq / ref - mean**2, mean), 0.5 / ref)
    expected = span * mean
    z = (recent - expected) / np.sqrt(span * var)
    # Only with the whole reference inside the series (before it there is no telling
    # "silent" from "not read").
    whole = np.arange(n.shape[-1]) >= span + ref - 1
    cond = (
        whole
        & (ref_sum > 0)
        & (recent >= config.surge_min_ratio * expected)
        & (recent - expected >= config.surge_min_excess)
        & (z >= config.surge_min_z)
    )
    alarms = first_in_run(cond, config.windows(config.rearm_minutes))
    return SurgeTrace(posts=recent, expected=expected, z=z, reference_posts=ref_sum, alarms=alarms)


def surge_alarms(n: Array, config: DetectorConfig) -> Mask:
    """(brands, windows) -> where a ``volume_surge`` alert is raised."""
    return surge_trace(n, config).alarms


# --- online: the runner's per-minute series -------------------------------------------


def _arrays(
    series: Mapping[str, Mapping[int, Bucket]], brands: list[str], start: int, length: int, ws: int
) -> tuple[Array, Array]:
    n = np.zeros((len(brands), length))
    neg = np.zeros((len(brands), length))
    for i, brand in enumerate(brands):
        for minute, bucket in series[brand].items():
            t = (minute - start) // ws
            if 0 <= t < length:
                n[i, t] += bucket.n
                neg[i, t] += bucket.neg
    return n, neg


def _shift_spike(
    brand: str,
    i: int,
    t: int,
    start: int,
    n: Array,
    neg: Array,
    tr: ShiftTrace,
    config: DetectorConfig,
) -> Spike:
    ws = config.window_s
    design = int(np.argmax(tr.stat[:, i, t]))
    c = tr.cusum[design, i]  # c[j]: evidence summed over windows before j
    lo = max(0, t + 1 - config.windows(config.memory_minutes))
    run = lo + int(np.argmin(c[lo : t + 2]))  # the evidence added up over windows run .. t
    run_posts = int(n[i, run : t + 1].sum())
    run_negative = int(neg[i, run : t + 1].sum())
    posts, negative = int(n[i, t]), int(neg[i, t])
    share = negative / posts if posts else 0.0
    p0 = float(tr.base.share[i, t])
    rho = float(tr.base.rho[i, t])
    sd = math.sqrt(max(p0, _SHARE_FLOOR) * (1 - p0) * (1 + max(posts - 1, 0) * rho))
    return Spike(
        brand=brand,
        # The window that crossed the threshold: fixed once it is closed, so the alert's
        # key does not move; where the run began is in the details.
        window_start=start + t * ws,
        window_end=start + (t + 1) * ws,
        posts=posts,
        negative=negative,
        negative_share=share,
        baseline_share=p0,
        baseline_posts=int(tr.base.posts[i, t]),
        ratio=share / max(p0, _SHARE_FLOOR),
        z=(share - p0) / sd * math.sqrt(posts) if posts else 0.0,
        kind=KIND,
        score=float(tr.stat[design, i, t]),
        details={
            "run_start": start + run * ws,
            "run_posts": run_posts,
            "run_negative": run_negative,
            "rho": round(rho, 5),
            "design_shift": _SHIFT_MULTIPLES[design],
        },
    )


def _surge_spike(
    brand: str,
    i: int,
    t: int,
    start: int,
    neg: Array,
    tr: SurgeTrace,
    base: Baseline,
    ws: int,
    span: int,
) -> Spike:
    first = max(0, t + 1 - span)
    posts = int(tr.posts[i, t])
    negative = int(neg[i, first : t + 1].sum())
    share = negative / posts if posts else 0.0
    p0 = base.share[i, t]
    expected = float(tr.expected[i, t])
    return Spike(
        brand=brand,
        window_start=start + first * ws,
        window_end=start + (t + 1) * ws,
        posts=posts,
        negative=negative,
        negative_share=share,
        baseline_share=share if np.isnan(p0) else float(p0),
        baseline_posts=int(tr.reference_posts[i, t]),
        ratio=posts / max(expected, 1e-9),
        z=float(tr.z[i, t]),
        kind=SURGE,
        score=expected,
        details={"expected_posts": round(expected, 2)},
    )


def detect(
    series: Mapping[str, Mapping[int, Bucket]], watermark: int, config: DetectorConfig
) -> list[Spike]:
    """New alerts among the closed windows at ``watermark``, oldest first (then by brand,
    ``negative_shift`` before ``volume_surge``).

    ``series``: brand -> minute -> counts (all sources together), covering
    ``config.span(watermark)``. ``*`` and ``(none)`` are not brands and never alert.
    """
    windows = config.closed_windows(watermark)
    brands = sorted(b for b in series if b not in (ALL_BRANDS, NO_BRAND))
    if not windows or not brands:
        return []
    start, end = config.span(watermark)
    ws = config.window_s
    length = (end - start) // ws
    n, neg = _arrays(series, brands, start, length, ws)
    shifts = shift_trace(n, neg, config)
    surges = surge_trace(n, config)
    first = (windows[0] - start) // ws
    spikes: list[Spike] = []
    span = config.windows(config.surge_minutes)
    for t in range(first, length):
        for i, brand in enumerate(brands):
            if shifts.alarms[i, t]:
                spikes.append(_shift_spike(brand, i, t, start, n, neg, shifts, config))
            if surges.alarms[i, t]:
                spikes.append(_surge_spike(brand, i, t, start, neg, surges, shifts.base, ws, span))
    return spikes
