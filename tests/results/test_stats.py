"""Tests of octtl/results/stats.py against published worked examples and hand computations.

Demsar (2006), "Statistical comparisons of classifiers over multiple data sets", JMLR 7:1-30: Table 6 (AUC of
C4.5 and three variants on 14 UCI data sets, ranks in brackets), the Friedman and Nemenyi example of section
3.2.2, the Wilcoxon example of section 3.1.3, and the q_alpha of Table 5.
"""

import math

import numpy as np
import pytest

from octtl.results import stats

# Demsar's Table 6: C4.5, C4.5+m, C4.5+cf, C4.5+m+cf. The table prints voting's C4.5+cf and C4.5+m+cf both as
# 0.975 but ranks them 2 and 3 (their unrounded AUCs differ); 0.97501 gives the printed ranks.
TABLE_6 = np.array([
    [0.763, 0.768, 0.771, 0.798],  # adult (sample)
    [0.599, 0.591, 0.590, 0.569],  # breast cancer
    [0.954, 0.971, 0.968, 0.967],  # breast cancer wisconsin
    [0.628, 0.661, 0.654, 0.657],  # cmc
    [0.882, 0.888, 0.886, 0.898],  # ionosphere
    [0.936, 0.931, 0.916, 0.931],  # iris
    [0.661, 0.668, 0.609, 0.685],  # liver disorders
    [0.583, 0.583, 0.563, 0.625],  # lung cancer
    [0.775, 0.838, 0.866, 0.875],  # lymphography
    [1.000, 1.000, 1.000, 1.000],  # mushroom
    [0.940, 0.962, 0.965, 0.962],  # primary tumor
    [0.619, 0.666, 0.614, 0.669],  # rheum
    [0.972, 0.981, 0.97501, 0.975],  # voting
    [0.957, 0.978, 0.946, 0.970],  # wine
])
C45, C45_M, C45_CF, C45_M_CF = range(4)
# Table 5 (a) and (b): q_0.05 and q_0.10 of the Nemenyi test for k = 2..10 classifiers.
Q_05 = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
Q_10 = [1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920]


def test_average_ranks_are_demsars():
    assert stats.average_ranks(TABLE_6) == pytest.approx([3.143, 2.000, 2.893, 1.964], abs=5e-4)


def test_friedman_statistic_is_demsars_corrected_for_ties():
    result = stats.friedman(TABLE_6)
    # Demsar's chi2_F = 9.28 has no correction for ties; scipy (like R's friedman.test) divides by
    # 1 - sum(t^3 - t) / (N k (k^2 - 1)). Ties of Table 6: mushroom 4 ways, lung cancer, iris and primary
    # tumor 2 ways each.
    correction = 1 - (4 ** 3 - 4 + 3 * (2 ** 3 - 2)) / (14 * 4 * (4 ** 2 - 1))
    assert result.statistic * correction == pytest.approx(9.28, abs=0.005)
    assert (result.n, result.k) == (14, 4) and result.pvalue < 0.05
    assert result.ranks == pytest.approx([3.143, 2.000, 2.893, 1.964], abs=5e-4)


def test_iman_davenport_is_demsars():
    f, p = stats.iman_davenport(9.28, 14, 4)
    assert f == pytest.approx(3.69, abs=0.005)
    # Demsar: the critical value of F(3, 39) at 0.05 is 2.85, so the null hypothesis is rejected.
    assert f > 2.85 and p < 0.05


@pytest.mark.parametrize("k", range(2, 11))
def test_nemenyi_q_is_demsars_table_5(k):
    # The printed table rounds to three decimals (its k=3 and k=7 entries differ by 0.0007 from the quantile).
    assert stats.nemenyi_q(k, 0.05) == pytest.approx(Q_05[k - 2], abs=1e-3)
    assert stats.nemenyi_q(k, 0.10) == pytest.approx(Q_10[k - 2], abs=1e-3)


def test_critical_difference_is_demsars():
    assert stats.critical_difference(4, 14) == pytest.approx(1.25, abs=0.005)
    assert stats.critical_difference(4, 14, alpha=0.10) == pytest.approx(1.12, abs=0.005)


def test_nemenyi_p_values_agree_with_demsars_critical_differences():
    p = stats.nemenyi(TABLE_6)
    assert p.shape == (4, 4) and np.allclose(p, p.T) and np.all(np.diag(p) == 1)
    # C4.5 trails C4.5+m by 1.143 and C4.5+m+cf by 1.179 in average rank: more than CD_0.10 = 1.12, less than
    # CD_0.05 = 1.25, so Demsar finds them different at 0.10 and not at 0.05. Every other gap is under 1.12.
    for other in (C45_M, C45_M_CF):
        assert 0.05 < p[C45, other] < 0.10
    for a, b in [(C45, C45_CF), (C45_M, C45_CF), (C45_M, C45_M_CF), (C45_CF, C45_M_CF)]:
        assert p[a, b] > 0.10


def test_wilcoxon_is_demsars_c45_against_c45m():
    # Section 3.1.3: R+ = 93, R- = 12 (the two zero differences split between the signs), T = 12, below the
    # critical value 21 for 14 data sets at 0.05.
    result = stats.wilcoxon(TABLE_6[:, C45], TABLE_6[:, C45_M])
    assert result.statistic == 12
    assert result.pvalue < 0.05


def test_five_folds_cannot_reach_five_percent():
    better = stats.wilcoxon([0.81, 0.82, 0.83, 0.84, 0.85], [0.80, 0.80, 0.80, 0.80, 0.80])
    assert better.pvalue == pytest.approx(0.0625, abs=1e-12)  # 2 of the 2^5 equally likely sign patterns
    assert stats.smallest_wilcoxon_p(5) == 0.0625 and stats.smallest_wilcoxon_p(6) == 0.03125
    assert stats.smallest_pairwise_p(2, 5) == 0.0625
    assert stats.wilcoxon([0.8] * 5, [0.8] * 5).pvalue == 1.0


def test_smallest_nemenyi_p_is_the_p_of_one_network_always_best_and_one_always_worst():
    scores = np.tile([0.9, 0.8, 0.7], (5, 1))
    assert stats.nemenyi(scores)[0, 2] == pytest.approx(stats.smallest_nemenyi_p(3, 5), rel=1e-6)
    assert stats.smallest_pairwise_p(3, 5) < 0.05  # three networks over five folds can differ


def test_friedman_of_all_ties_is_undefined_not_an_error():
    result = stats.friedman(np.full((5, 3), 0.625))
    assert math.isnan(result.statistic) and math.isnan(result.pvalue)
    assert result.ranks == pytest.approx([2, 2, 2])


def test_corrected_interval_by_hand():
    values = [0.74, 0.80, 0.86, 0.74, 0.80, 0.86, 0.74, 0.80, 0.86, 0.80]
    mean, s = 0.80, math.sqrt(sum((v - 0.80) ** 2 for v in values) / 9)
    # Baseline design: 10 folds, validation 1/9 of training. t(0.975, 9) = 2.262 (printed t tables).
    low, high = stats.corrected_interval(values, 1 / 9)
    half = 2.262 * s * math.sqrt(1 / 10 + 1 / 9)
    assert (low, high) == pytest.approx((mean - half, mean + half), abs=2e-4)
    # Limited design: validation is 9 times training; the interval is sqrt(9.1 / 0.2111) = 6.6 times wider.
    low9, high9 = stats.corrected_interval(values, 9.0)
    assert (high9 - low9) / (high - low) == pytest.approx(math.sqrt(9.1 / (0.1 + 1 / 9)), rel=1e-9)
    # The naive interval (ratio 0) is the textbook one; t(0.975, 4) = 2.776 for five folds.
    five = [0.6, 0.7, 0.8, 0.9, 1.0]
    assert stats.corrected_interval(five, 0.0) == pytest.approx(
        (0.8 - 2.776 * math.sqrt(0.025 / 5), 0.8 + 2.776 * math.sqrt(0.025 / 5)), abs=2e-4)
    assert stats.corrected_interval(five, 0.25, bounds=(0, 1))[1] == 1.0
    assert all(math.isnan(x) for x in stats.corrected_interval([0.8], 0.1))


def test_pairing_key_uses_the_data_identity_when_there_is_one():
    run = {"design": "baseline", "folds": 10, "seed": 0, "group_by_volume": False, "data_dir": "/a"}
    assert stats.pairing_key(run) == stats.pairing_key(dict(run, arch="vgg16", batch=8, fold=3))
    for field, value in [("seed", 1), ("folds", 5), ("group_by_volume", True), ("design", "limited"),
                         ("data_dir", "/b")]:
        assert stats.pairing_key(dict(run, **{field: value})) != stats.pairing_key(run), field
    # The manifest identity wins over the folder: moved data pairs, different data with one path does not.
    data = {"manifest_sha256": "ab" * 32, "num_examples": 1176}
    assert stats.pairing_key(dict(run, data=data)) == stats.pairing_key(dict(run, data_dir="/moved", data=data))
    assert stats.pairing_key(dict(run, data=data)) != stats.pairing_key(dict(run, data=dict(data, num_examples=9)))
    assert stats.describe_key_difference(stats.pairing_key(dict(run, seed=1)), stats.pairing_key(run)) == \
        "seed 1 (the others: 0)"


def test_p_values_are_written_to_three_figures_or_below_0_001():
    assert [stats.format_p(p) for p in (0.0625, 0.1394, 1.0, 0.0004, float("nan"), None)] == [
        "0.0625", "0.139", "1", "<0.001", "n/a", "n/a"]
