"""Tests of octtl/training/metrics.py: hand-computed values on small fixed inputs, and properties.

Every expected number below was worked out by hand from the fixture next to it (the working is in the comments);
sklearn is used only as an independent reference in property checks, never to produce an expected value.
"""

import json
import math

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from octtl.training import metrics

# Five fluid B-scans (label 1) and five normal ones; two scores sit exactly at 0.5, one of each class.
P = np.array([0.95, 0.85, 0.70, 0.50, 0.40, 0.65, 0.50, 0.30, 0.20, 0.10])
Y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])


def rates(**expected):
    return pytest.approx(expected)


# --- Operating points ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("threshold, expected", [
    # >= 0.5: positives 0.95 0.85 0.70 0.50 | 0.65 0.50; negatives 0.40 | 0.30 0.20 0.10.
    (0.5, dict(tp=4, fp=2, tn=3, fn=1, n=10, prevalence=0.5, sensitivity=0.8, specificity=0.6, ppv=4 / 6,
               npv=3 / 4, accuracy=0.7)),
    # >= 0.7: 0.95 0.85 0.70 called; the 0.65 negative is not.
    (0.7, dict(tp=3, fp=0, tn=5, fn=2, n=10, prevalence=0.5, sensitivity=0.6, specificity=1.0, ppv=1.0,
               npv=5 / 7, accuracy=0.8)),
    # Above every score: nothing called, so PPV's denominator is 0.
    (0.99, dict(tp=0, fp=0, tn=5, fn=5, n=10, prevalence=0.5, sensitivity=0.0, specificity=1.0, ppv=None,
                npv=0.5, accuracy=0.5)),
])
def test_two_by_two_by_hand(threshold, expected):
    assert metrics.two_by_two(P, Y, threshold) == rates(**expected)


def test_two_by_two_one_class_leaves_the_other_rates_undefined():
    table = metrics.two_by_two([0.2, 0.9], [0, 0], 0.5)
    assert table == rates(tp=0, fp=1, tn=1, fn=0, n=2, prevalence=0.0, sensitivity=None, specificity=0.5,
                          ppv=0.0, npv=1.0, accuracy=0.5)
    assert metrics.two_by_two([], [], 0.5)["accuracy"] is None


def test_two_by_two_at_a_roc_threshold_is_the_roc_point():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    p = np.round(rng.random(200) * 0.6 + 0.4 * labels, 2)  # rounded: ties at many thresholds
    fpr, tpr, thresholds = sk_metrics.roc_curve(labels, p, drop_intermediate=False)
    for f, t, threshold in zip(fpr[1:], tpr[1:], thresholds[1:]):  # the first threshold is +inf
        table = metrics.two_by_two(p, labels, threshold)
        assert (1 - table["specificity"], table["sensitivity"]) == pytest.approx((f, t))


@pytest.mark.parametrize("target, expected", [
    # Positives' scores, highest first: 0.95 0.85 0.70 0.50 0.40; sensitivity k/5 at the k-th.
    (1.0, 0.40), (0.95, 0.40), (0.8, 0.50), (0.61, 0.50), (0.6, 0.70), (0.2, 0.95), (0.01, 0.95)])
def test_threshold_for_sensitivity_by_hand(target, expected):
    assert metrics.threshold_for_sensitivity(P, Y, target) == expected


def test_threshold_for_sensitivity_counts_tied_positives_together():
    # Two positives at 0.8: the threshold 0.8 already gives 3/4, so 0.75 is reached there.
    assert metrics.threshold_for_sensitivity([0.9, 0.8, 0.8, 0.3, 0.5], [1, 1, 1, 1, 0], 0.75) == 0.8


def test_threshold_for_sensitivity_without_positives_or_with_a_bad_target():
    assert metrics.threshold_for_sensitivity([0.3, 0.6], [0, 0], 0.95) is None
    for target in (0.0, 1.2):
        with pytest.raises(ValueError):
            metrics.threshold_for_sensitivity(P, Y, target)


def test_threshold_for_sensitivity_is_the_highest_that_reaches_the_target():
    rng = np.random.default_rng(5)
    for _ in range(20):
        labels = rng.integers(0, 2, 60)
        p = np.round(rng.random(60), 1)
        if not labels.any():
            continue
        target = rng.choice([0.5, 0.9, 0.95, 1.0])
        t = metrics.threshold_for_sensitivity(p, labels, target)
        assert t in p and metrics.two_by_two(p, labels, t)["sensitivity"] >= target
        higher = p[p > t]
        if len(higher):
            assert metrics.two_by_two(p, labels, higher.min())["sensitivity"] < target


def test_youden_threshold_by_hand_takes_the_higher_of_tied_thresholds():
    # J = tp/5 - fp/5 at each observed score: 0.95 .2, 0.85 .4, 0.70 .6, 0.65 .4, 0.50 .4, 0.40 .6, 0.30 .4,
    # 0.20 .2, 0.10 0. The maximum .6 is reached at 0.70 and at 0.40.
    assert metrics.youden_threshold(P, Y) == 0.70


def test_youden_threshold_is_undefined_with_one_class_and_maximal_otherwise():
    assert metrics.youden_threshold([0.2, 0.7], [1, 1]) is None
    assert metrics.youden_threshold([0.2, 0.7], [0, 0]) is None
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 2, 80)
    p = np.round(rng.random(80) * 0.7 + 0.3 * labels, 2)
    j = {t: (np.mean(p[labels == 1] >= t) - np.mean(p[labels == 0] >= t)) for t in np.unique(p)}
    best = metrics.youden_threshold(p, labels)
    assert j[best] == pytest.approx(max(j.values()))
    assert all(j[t] < j[best] - 1e-12 for t in j if t > best)


def test_operating_points_are_chosen_on_validation_and_applied_to_test():
    test_p = np.array([0.9, 0.6, 0.45, 0.3, 0.55, 0.2])
    test_y = np.array([1, 1, 1, 0, 0, 0])
    result = metrics.operating_points(P, Y, test_p, test_y, target_sensitivity=0.95)
    # Validation thresholds (by hand above): 0.95 sensitivity at 0.40, Youden at 0.70.
    assert result["thresholds"] == {"0.5": 0.5, "target_sensitivity": 0.40, "youden": 0.70}
    assert result["target_sensitivity"] == 0.95
    test = result["test"]
    # >= 0.5: 0.9 0.6 | 0.55 called.
    assert test["0.5"] == rates(tp=2, fp=1, tn=2, fn=1, n=6, prevalence=0.5, sensitivity=2 / 3,
                                specificity=2 / 3, ppv=2 / 3, npv=2 / 3, accuracy=4 / 6)
    # >= 0.40: 0.9 0.6 0.45 | 0.55 called.
    assert test["target_sensitivity"] == rates(tp=3, fp=1, tn=2, fn=0, n=6, prevalence=0.5, sensitivity=1.0,
                                               specificity=2 / 3, ppv=3 / 4, npv=1.0, accuracy=5 / 6)
    # >= 0.70: 0.9 only.
    assert test["youden"] == rates(tp=1, fp=0, tn=3, fn=2, n=6, prevalence=0.5, sensitivity=1 / 3,
                                   specificity=1.0, ppv=1.0, npv=3 / 5, accuracy=4 / 6)
    assert result["validation"]["youden"]["sensitivity"] == pytest.approx(0.6)
    json.dumps(result, allow_nan=False)


def test_operating_points_without_validation_negatives_leave_youden_undefined():
    result = metrics.operating_points([0.8, 0.6], [1, 1], [0.7, 0.2], [1, 0], target_sensitivity=0.9)
    assert result["thresholds"] == {"0.5": 0.5, "target_sensitivity": 0.6, "youden": None}
    assert result["test"]["youden"] is None and result["validation"]["youden"] is None
    assert result["test"]["target_sensitivity"]["tp"] == 1
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("p, labels", [([0.2, 0.8], [0, 2]), ([0.2, 0.8], [0, 1, 1]), ([[0.2, 0.8]], [1])])
def test_binary_inputs_are_checked(p, labels):
    with pytest.raises(ValueError):
        metrics.two_by_two(p, labels, 0.5)


def test_auc_is_none_with_one_class():
    assert metrics.auc([0.1, 0.9], [1, 1]) is None
    assert metrics.auc([], []) is None
    # Positives 0.8 0.4 against negatives 0.5 0.1: 3 of 4 pairs ordered.
    assert metrics.auc([0.8, 0.4, 0.5, 0.1], [1, 1, 0, 0]) == 0.75


# --- Bootstrap over groups ----------------------------------------------------------------------------------

def test_bootstrap_resamples_whole_groups():
    groups = np.array(["a", "b", "a", "c", "b", "b"])  # rows of one group need not be adjacent
    sizes = {"a": 2, "b": 3, "c": 1}
    seen = []

    def statistic(g, rows):
        seen.append((g.copy(), rows.copy()))
        return float(len(rows))

    metrics.bootstrap_interval(statistic, groups, groups, np.arange(6), draws=200, seed=1)
    assert len(seen) == 200
    for g, rows in seen:
        assert np.array_equal(groups[rows], g)  # arrays stay aligned
        per_row = np.bincount(rows, minlength=6)
        drawn = {name: per_row[groups == name] for name in sizes}
        # Every row of a group appears as often as the group was drawn, and three groups are drawn.
        assert all(len(set(counts)) == 1 for counts in drawn.values())
        assert sum(counts[0] for counts in drawn.values()) == 3
        assert len(rows) == sum(sizes[name] * counts[0] for name, counts in drawn.items())


def test_bootstrap_is_fixed_by_its_seed():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    groups = np.repeat(np.arange(10), 4)
    first = metrics.bootstrap_interval(np.mean, groups, x, draws=300, seed=7)
    assert metrics.bootstrap_interval(np.mean, groups, x, draws=300, seed=7) == first
    assert metrics.bootstrap_interval(np.mean, groups, x, draws=300, seed=8) != first
    assert first.low < x.mean() < first.high and first.skipped == 0


def test_bootstrap_with_one_row_per_group_is_the_row_bootstrap():
    rng = np.random.default_rng(21)
    x = rng.normal(size=300)
    grouped = metrics.bootstrap_interval(np.mean, np.arange(300), x, draws=4000, seed=3)
    means = [x[rng.integers(0, 300, 300)].mean() for _ in range(4000)]  # an ordinary row bootstrap
    row = np.percentile(means, [2.5, 97.5])
    half = 1.96 * x.std(ddof=1) / math.sqrt(300)  # both about the normal interval too
    assert (grouped.low, grouped.high) == pytest.approx(tuple(row), abs=0.1 * half)
    assert grouped.high - grouped.low == pytest.approx(2 * half, rel=0.1)


def test_bootstrap_over_volumes_is_wider_than_over_rows_when_rows_cluster():
    rng = np.random.default_rng(6)
    volume_means = rng.normal(size=20)
    x = np.repeat(volume_means, 10) + rng.normal(0, 0.1, 200)  # ten near-copies per volume
    volumes = np.repeat(np.arange(20), 10)
    by_volume = metrics.bootstrap_interval(np.mean, volumes, x, draws=1000)
    by_row = metrics.bootstrap_interval(np.mean, np.arange(200), x, draws=1000)
    assert by_volume.high - by_volume.low > 2.5 * (by_row.high - by_row.low)


def test_bootstrap_skips_undefined_draws_and_counts_them():
    labels = np.array([0, 0, 0, 0, 1])
    scores = np.array([0.1, 0.4, 0.3, 0.6, 0.5])
    draws = []

    def recorded_auc(p, y):
        draws.append(y.copy())
        return metrics.auc(p, y)

    interval = metrics.bootstrap_interval(recorded_auc, np.arange(5), scores, labels, draws=500, seed=2)
    # One class only: no positive (about (4/5)^5 of draws) or, rarely, nothing but the positive.
    one_class = sum(1 for y in draws if len(set(y)) < 2)
    assert interval.skipped == one_class and 100 < one_class < 250
    assert 0 <= interval.low <= interval.high <= 1
    # NaN counts as undefined too; all draws undefined leaves no interval.
    assert metrics.bootstrap_interval(lambda v: math.nan, [0, 1], [1, 2], draws=10) == (None, None, 10)
    assert metrics.bootstrap_interval(lambda v: 0.5, [0, 1, 1], [1, 2, 3], draws=10)._asdict() == {
        "low": 0.5, "high": 0.5, "skipped": 0}


# --- K classes ----------------------------------------------------------------------------------------------

THREE = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6],
                  [0.3, 0.4, 0.3], [0.2, 0.2, 0.6], [0.1, 0.6, 0.3]])
THREE_Y = np.array([0, 1, 2, 0, 1, 2])


def test_multiclass_scores_by_hand():
    result = metrics.multiclass_scores(THREE, THREE_Y, ["NORMAL", "CNV", "DME"])
    # Predicted 0 1 2 1 2 1 against 0 1 2 0 1 2: three right.
    assert result["accuracy"] == 0.5 and result["n"] == 6
    assert result["confusion"] == [[1, 1, 0], [0, 1, 1], [0, 1, 1]]
    # NORMAL: positives 0.7 0.3 beat every negative (0.2 0.1 0.2 0.1): 8/8. CNV: 0.5 beats 0.2 0.3 0.4, loses
    # to 0.6; 0.2 ties 0.2, loses the rest: 3.5/8. DME: 0.6 beats 0.1 0.3 0.3, ties 0.6; 0.3 beats 0.1, ties
    # 0.3 0.3: 5.5/8.
    assert result["auc"] == pytest.approx({"NORMAL": 1.0, "CNV": 0.4375, "DME": 0.6875})
    assert result["macro_auc"] == pytest.approx((1.0 + 0.4375 + 0.6875) / 3)
    picked = [0.7, 0.5, 0.6, 0.3, 0.2, 0.3]
    assert result["cross_entropy"] == pytest.approx(-sum(math.log(v) for v in picked) / 6)
    assert result["classes"] == ["NORMAL", "CNV", "DME"]
    json.dumps(result, allow_nan=False)


def test_multiclass_auc_is_none_for_a_class_without_rows():
    labels = np.array([0, 1, 0, 1, 0, 1])  # no DME
    result = metrics.multiclass_scores(THREE, labels, ["NORMAL", "CNV", "DME"])
    assert result["auc"]["DME"] is None
    # NORMAL: positives 0.7 0.1 0.2 vs negatives 0.2 0.3 0.1: 0.7 beats 3; 0.1 ties 0.1; 0.2 beats 0.1, ties
    # 0.2: (3 + 0.5 + 1.5) / 9.
    assert result["auc"]["NORMAL"] == pytest.approx(5 / 9)
    assert result["macro_auc"] == pytest.approx((result["auc"]["NORMAL"] + result["auc"]["CNV"]) / 2)
    assert metrics.multiclass_scores(THREE, np.zeros(6, int), "abc")["macro_auc"] is None
    json.dumps(result, allow_nan=False)


def test_argmax_ties_go_to_the_lowest_class():
    assert list(metrics.predicted_classes([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4]])) == [0, 1]
    assert list(metrics.predicted_classes([[0.5, 0.5], [0.3, 0.7]])) == [0, 1]


def test_two_classes_score_as_early_stop_does():
    keras = pytest.importorskip("keras")
    from octtl.training import early_stop

    assert metrics.EPSILON == keras.backend.epsilon()
    # Float32 softmax rows need not sum to 1: here argmax and p_fluid > 0.5 disagree on rows 3 and 4 (p_fluid > 0.5
    # calls fluid, normal), and the tie at 0.5 is normal under both; rows with p = 0 and 1 exercise the clipping.
    # Right: rows 0, 1, 3, 4; wrong: 2 (tie, fluid), 5 and 6 (confidently wrong).
    rows = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.6, 0.50000006], [0.4, 0.5], [0.0, 1.0], [1.0, 0.0]],
                    np.float32)
    labels = np.array([0, 1, 1, 1, 0, 0, 1])
    reference = early_stop.evaluate_probabilities(rows, labels, iteration=0, check=True)
    result = metrics.multiclass_scores(rows, labels, ["normal", "fluid"])
    assert result["accuracy"] == reference.val_accuracy == 4 / 7
    assert result["cross_entropy"] == reference.val_loss
    assert result["auc"]["fluid"] == reference.val_auc
    assert result["confusion"] == [[2, 1], [2, 2]]


def test_multiclass_scores_properties():
    rng = np.random.default_rng(9)
    rows = rng.dirichlet(np.ones(4), 120)
    labels = rng.integers(0, 4, 120)
    result = metrics.multiclass_scores(rows, labels, ["a", "b", "c", "d"])
    confusion = np.array(result["confusion"])
    assert confusion.sum() == 120 and np.trace(confusion) / 120 == result["accuracy"]
    assert list(confusion.sum(axis=1)) == list(np.bincount(labels, minlength=4))
    for k, name in enumerate("abcd"):
        assert result["auc"][name] == pytest.approx(sk_metrics.roc_auc_score(labels == k, rows[:, k]))
    with pytest.raises(ValueError):
        metrics.multiclass_scores(rows, labels, ["a", "b", "c"])
    with pytest.raises(ValueError):
        metrics.multiclass_scores(rows, labels + 1, "abcd")


# --- Fluid types ----------------------------------------------------------------------------------------------

# Twelve B-scans of five volumes: (volume, vendor, IRF/SRF/PED voxel counts, IRF/SRF/PED sigmoid outputs).
BSCANS = [
    ("v1", "cirrus", (0, 0, 0), (0.10, 0.20, 0.05)),
    ("v1", "cirrus", (12, 0, 3), (0.70, 0.30, 0.40)),
    ("v1", "cirrus", (5, 0, 0), (0.60, 0.10, 0.20)),
    ("v2", "cirrus", (0, 0, 0), (0.75, 0.60, 0.10)),
    ("v2", "cirrus", (0, 8, 0), (0.20, 0.90, 0.30)),
    ("v3", "spectralis", (0, 0, 20), (0.40, 0.20, 0.80)),
    ("v3", "spectralis", (2, 0, 0), (0.50, 0.10, 0.60)),
    ("v4", "spectralis", (0, 0, 0), (0.20, 0.30, 0.10)),
    ("v4", "spectralis", (0, 0, 0), (0.60, 0.20, 0.30)),
    ("v4", "spectralis", (0, 0, 0), (0.30, 0.70, 0.20)),
    ("v5", "cirrus", (30, 0, 0), (0.80, 0.40, 0.45)),
    ("v5", "cirrus", (0, 0, 0), (0.20, 0.10, 0.10)),
]
VOLUME_IDS = np.array([b[0] for b in BSCANS])
COUNTS = np.array([b[2] for b in BSCANS])
P_TYPES = np.array([b[3] for b in BSCANS])
LABELS_1 = metrics.type_labels(*COUNTS.T, min_voxels=1)


def test_type_labels_by_hand():
    assert metrics.FLUID_TYPES == ("irf", "srf", "ped")
    assert LABELS_1.tolist() == [[0, 0, 0], [1, 0, 1], [1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1],
                                 [1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]]
    # At 5 voxels the 3 PED voxels of v1's second B-scan and the 2 IRF voxels of v3's second drop out.
    assert metrics.type_labels(*COUNTS.T, min_voxels=5)[:, 0].tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    assert metrics.type_labels(*COUNTS.T, min_voxels=5)[:, 2].tolist() == [0] * 5 + [1] + [0] * 6
    with pytest.raises(ValueError):
        metrics.type_labels([-1], [-1], [-1])


def test_volume_scores_and_labels_by_hand_in_any_row_order():
    expected_scores = [[0.70, 0.30, 0.40], [0.75, 0.90, 0.30], [0.50, 0.20, 0.80], [0.60, 0.70, 0.30],
                       [0.80, 0.40, 0.45]]
    expected_labels = [[1, 0, 1], [0, 1, 0], [1, 0, 1], [0, 0, 0], [1, 0, 0]]
    for order in (np.arange(12), np.random.default_rng(0).permutation(12)):
        ids, scores = metrics.volume_scores(P_TYPES[order], VOLUME_IDS[order])
        label_ids, labels = metrics.volume_labels(LABELS_1[order], VOLUME_IDS[order])
        assert ids == label_ids == ["v1", "v2", "v3", "v4", "v5"]
        assert scores.tolist() == expected_scores and labels.tolist() == expected_labels


def test_per_volume_auc_by_hand_per_vendor():
    _, scores = metrics.volume_scores(P_TYPES, VOLUME_IDS)
    _, labels = metrics.volume_labels(LABELS_1, VOLUME_IDS)
    vendors = ["cirrus", "cirrus", "spectralis", "spectralis", "cirrus"]
    result = metrics.per_volume_auc(scores, labels, vendors)
    # Cirrus v1 v2 v5. IRF: with 0.70 0.80 against 0.75, 1 of 2 pairs; SRF: 0.90 against 0.30 0.40; PED: 0.40
    # against 0.30 0.45, 1 of 2.
    assert result["cirrus"] == {"volumes": 3, "with_type": {"irf": 2, "srf": 1, "ped": 1},
                                "auc": {"irf": 0.5, "srf": 1.0, "ped": 0.5}}
    # Spectralis v3 v4. IRF: 0.50 against 0.60; no volume with SRF; PED: 0.80 against 0.30.
    assert result["spectralis"] == {"volumes": 2, "with_type": {"irf": 1, "srf": 0, "ped": 1},
                                    "auc": {"irf": 0.0, "srf": None, "ped": 1.0}}
    json.dumps(result, allow_nan=False)


def test_per_bscan_type_accuracy_and_auc_by_hand():
    # p > 0.5. IRF wrong on 0.75 (no IRF), 0.50 (IRF, a tie is absent) and 0.60 (no IRF): 9/12. SRF wrong on
    # 0.60 and 0.70 (no SRF): 10/12. PED wrong on 0.40 (PED) and 0.60 (no PED): 10/12.
    assert metrics.type_accuracy(P_TYPES, LABELS_1) == pytest.approx({"irf": 0.75, "srf": 10 / 12, "ped": 10 / 12})
    # IRF positives 0.70 0.60 0.50 0.80 against 0.10 0.75 0.20 0.40 0.20 0.60 0.30 0.20: 7 + 6.5 + 6 + 8 of 32.
    # SRF: 0.90 above all 11. PED positives 0.40 0.80 against ten: 8 + 10 of 20.
    assert metrics.type_auc(P_TYPES, LABELS_1) == pytest.approx({"irf": 27.5 / 32, "srf": 1.0, "ped": 0.9})
    assert metrics.type_auc(P_TYPES[7:10], LABELS_1[7:10]) == {"irf": None, "srf": None, "ped": None}


def test_auc_is_scikit_learns_with_and_without_ties():
    rng = np.random.default_rng(7)
    for i in range(50):
        labels = np.r_[0, 1, rng.integers(0, 2, 60)]
        scores = rng.integers(0, 5, labels.size) / 4 if i % 2 else rng.random(labels.size)  # ties every other draw
        assert metrics.auc(scores, labels) == pytest.approx(sk_metrics.roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.auc([0.2, 0.9], [1, 1]) is None
