"""The spike rule alone, over hand-made per-minute counts (no servers)."""

from __future__ import annotations

from moodwire.alerts.detect import DetectorConfig, baseline_share, detect
from moodwire.sinks.redis_aggregates import Bucket

T0 = 1_767_225_600
CONFIG = DetectorConfig()


def minutes(counts: dict[int, tuple[int, int]]) -> dict[int, Bucket]:
    """minute index -> (posts, negatives) as buckets keyed by epoch second."""
    return {
        T0 + m * 60: Bucket(n=n, neg=neg, neu=n - neg, pos=0, score_sum=0.0)
        for m, (n, neg) in counts.items()
    }


def steady(n: int, neg: int, upto: int = 90) -> dict[int, tuple[int, int]]:
    return {m: (n, neg) for m in range(upto)}


WATERMARK = T0 + 89 * 60  # windows up to [86, 88) are closed (lateness 1 minute)


def test_a_spike_alerts_once_in_its_first_window() -> None:
    counts = steady(40, 8)
    counts.update({80: (40, 30), 81: (40, 30), 82: (40, 32), 83: (40, 31)})
    spikes = detect({"apple": minutes(counts)}, WATERMARK, CONFIG)
    # Two windows ([80,82) and [82,84)) spike; the second continues the first.
    assert [(s.brand, s.window_start) for s in spikes] == [("apple", T0 + 80 * 60)]
    spike = spikes[0]
    assert (spike.posts, spike.negative) == (80, 60)
    assert spike.baseline_share == 0.2
    assert spike.negative_share == 0.75


def test_flat_feed_small_windows_and_pseudo_brands_never_alert() -> None:
    tiny = steady(1, 0)
    tiny[80] = (2, 2)  # 100% negative, but two posts
    everything = steady(40, 8)
    everything[80] = (40, 40)
    series = {
        "apple": minutes(steady(40, 8)),
        "spotify": minutes(tiny),
        "*": minutes(everything),
        "(none)": minutes(everything),
    }
    assert detect(series, WATERMARK, CONFIG) == []


def test_an_open_window_waits_for_lateness() -> None:
    counts = steady(40, 8, upto=88)
    counts[86] = counts[87] = (40, 35)
    series = {"apple": minutes(counts)}
    # Newest minute 87: window [86, 88) is still open.
    assert detect(series, T0 + 87 * 60, CONFIG) == []
    assert [s.window_start for s in detect(series, T0 + 89 * 60, CONFIG)] == [T0 + 86 * 60]


def test_past_spikes_in_the_baseline_do_not_mask_the_next_one() -> None:
    counts = steady(40, 8)
    for m in range(4, 52, 6):  # an outage every six minutes, before the lookback
        counts[m] = (40, 36)
    counts[80] = counts[81] = (40, 26)
    spikes = detect({"apple": minutes(counts)}, WATERMARK, CONFIG)
    assert [s.window_start for s in spikes] == [T0 + 80 * 60]
    assert spikes[0].baseline_share == 0.2


def test_thresholds_each_hold_back_a_marginal_window() -> None:
    counts = steady(40, 8)
    counts[80] = counts[81] = (40, 13)  # 32.5% vs 20%: ratio 1.63, +12.5 points, z 2.8
    series = {"apple": minutes(counts)}
    assert detect(series, WATERMARK, CONFIG) == []
    assert len(detect(series, WATERMARK, DetectorConfig(min_z=2.5))) == 1
    assert detect(series, WATERMARK, DetectorConfig(min_z=2.5, min_ratio=1.7)) == []
    assert detect(series, WATERMARK, DetectorConfig(min_z=2.5, min_increase=0.2)) == []


def test_thin_baseline_is_not_judged() -> None:
    counts = {m: (1, 0) for m in range(60, 80)}  # 20 baseline posts < 50
    counts[80] = counts[81] = (40, 40)
    assert detect({"apple": minutes(counts)}, WATERMARK, CONFIG) == []


def test_baseline_leaves_out_minutes_that_spike_against_it() -> None:
    assert baseline_share({}, CONFIG) is None
    # Small minutes are never outliers: the plain pooled share.
    assert baseline_share(minutes({0: (3, 0), 1: (3, 1), 2: (3, 2)}), CONFIG) == 1 / 3
    # A busy 90% minute is an outage, not the brand's usual mood.
    busy = minutes({0: (100, 10), 1: (100, 10), 2: (40, 36)})
    assert baseline_share(busy, CONFIG) == 0.1


def test_windows_are_aligned_and_bounded_by_lookback() -> None:
    windows = CONFIG.closed_windows(WATERMARK)
    assert windows[-1] == T0 + 86 * 60
    assert len(windows) == CONFIG.lookback_minutes // CONFIG.window_minutes
    assert all(w % (CONFIG.window_minutes * 60) == 0 for w in windows)
    start, end = CONFIG.span(WATERMARK)
    assert end == T0 + 88 * 60
    assert start == windows[0] - 120 - CONFIG.baseline_minutes * 60
