"""The statistics against values computed by hand (and published worked examples)."""

import pytest

from tracking import stats


def test_wilson_45_of_100():
    # p = 0.45, z = 1.96, z^2 = 3.8415, n = 100
    # centre = (0.45 + 3.8415/200) / (1 + 3.8415/100) = 0.469207 / 1.038415 = 0.451850
    # half = 1.96/1.038415 * sqrt(0.45*0.55/100 + 3.8415/40000)
    #      = 1.887456 * sqrt(0.002475 + 0.0000960) = 1.887456 * 0.050705 = 0.095704
    # interval = (0.35615, 0.54755)
    interval = stats.wilson(45, 100)
    assert interval.estimate == 0.45
    assert interval.low == pytest.approx(0.35615, abs=5e-5)
    assert interval.high == pytest.approx(0.54755, abs=5e-5)


def test_wilson_edges():
    assert stats.wilson(0, 0) is None
    zero = stats.wilson(0, 10)
    # x = 0: centre = half = (z^2/20)/(1+z^2/10) -> (0, 2*0.13835) = (0, 0.27753)
    assert zero.low == 0 and zero.high == pytest.approx(0.27753, abs=5e-5)
    with pytest.raises(ValueError):
        stats.wilson(11, 10)


def test_newcombe_matches_his_worked_example():
    # Newcombe (1998), Stat Med 17:873, example (a): 56/70 - 48/80, method 10.
    # Wilson: 56/70 -> (0.6920, 0.8798); 48/80 -> (0.4904, 0.7000)
    # d = 0.8 - 0.6 = 0.2; low = 0.2 - sqrt(0.1080^2 + 0.1000^2) = 0.0524
    # high = 0.2 + sqrt(0.0798^2 + 0.1096^2) = 0.3339; the paper prints 0.0524 to 0.3339.
    d = stats.newcombe_difference(56, 70, 48, 80)
    assert d.estimate == pytest.approx(0.2)
    assert d.low == pytest.approx(0.0524, abs=5e-5)
    assert d.high == pytest.approx(0.3339, abs=5e-5)


def test_risk_ratio_and_relative_reduction_by_hand():
    # treated 20/100 churned, control 35/100: RR = 0.2/0.35 = 0.571429
    # se(ln RR) = sqrt(1/20 - 1/100 + 1/35 - 1/100) = sqrt(0.058571) = 0.242015
    # exp(1.96 * 0.242015) = exp(0.474340) = 1.606960 -> RR in (0.355597, 0.918260)
    rr = stats.risk_ratio(20, 100, 35, 100)
    assert rr.estimate == pytest.approx(0.571429, abs=1e-6)
    assert rr.low == pytest.approx(0.355597, abs=1e-5)
    assert rr.high == pytest.approx(0.918260, abs=1e-5)
    # relative reduction = 1 - RR = 0.428571, interval (1 - 0.918260, 1 - 0.355597)
    rel = stats.relative_reduction(20, 100, 35, 100)
    assert rel.estimate == pytest.approx(0.428571, abs=1e-6)
    assert (rel.low, rel.high) == (
        pytest.approx(0.081740, abs=1e-5),
        pytest.approx(0.644403, abs=1e-5),
    )


def test_risk_ratio_with_a_zero_cell_uses_the_half_correction():
    # 0/50 vs 10/50 -> (0.5/51)/(10.5/51) = 0.047619; finite bounds instead of log(0)
    rr = stats.risk_ratio(0, 50, 10, 50)
    assert rr.estimate == pytest.approx(0.5 / 10.5)
    assert 0 < rr.low < rr.estimate < rr.high


def test_saves_roi_and_annualisation():
    # ARR 0.15 (0.05, 0.25) on 400 treated -> 60 saves (20, 100)
    saves = stats.incremental_saves(stats.Interval(0.15, 0.05, 0.25), 400)
    assert (saves.estimate, saves.low, saves.high) == pytest.approx((60, 20, 100))
    # revenue 60 x 3000 = 180000 against 2000 of cost: (180000 - 2000)/2000 = 89
    assert stats.roi(180_000, 2_000) == pytest.approx(89.0)
    assert stats.roi(100, 0) is None
    # 60 saves in 30 days -> 60 * 365.25 / 30 = 730.5 a year
    assert stats.annualise(60, 30) == pytest.approx(730.5)
    assert stats.annualise(60, 0) is None


def test_histogram_percentiles():
    # two latencies in [0, 60) and two in [300, 900): the median is the 2nd of 4,
    # the top of bucket 0 -> 60 s; p75 is the 3rd: 300 + 600 * (3 - 2)/2 = 600 s
    hist = [0] * stats.BUCKETS
    for seconds in (10, 20, 400, 800):
        hist[stats.bucket_of(seconds)] += 1
    assert hist[0] == 2 and hist[2] == 2
    assert stats.histogram_percentile(hist, 0.5) == pytest.approx(60)
    assert stats.histogram_percentile(hist, 0.75) == pytest.approx(600)
    assert stats.histogram_percentile([0] * stats.BUCKETS, 0.5) is None
    # beyond the last edge the open bucket answers its lower edge (30 days)
    assert stats.bucket_of(10**9) == stats.BUCKETS - 1
