"""The report's learning curves: every N in learning_curve_{design}.csv, fits that recover the law, verdicts."""

import csv
import json
import math

import numpy as np
import pytest

from octtl import runs
from octtl.results import annotation_budget, learning_curve, page

from test_page import CURVE_LAW, result, write_curve_points


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A learning-curve study whose whole-folds runs (16 volumes) follow the same law as its points."""
    root = tmp_path_factory.mktemp("curve-study")
    rng = np.random.default_rng(5)
    results = write_curve_points(root, rng, n_values=(1, 2, 4, 8))
    for arch, (a, b, c) in CURVE_LAW.items():
        for fold in range(5):
            auc = a - b * 16 ** -c + rng.normal(0, 0.01)
            r = dict(result("baseline", 8, arch, fold, auc - 0.05, auc, 6, folds=5), train_volume_count=16,
                     val_size=48, train_size=128)
            folder = runs.run_of(r).folder(root)
            folder.mkdir(parents=True)
            (folder / runs.RESULT).write_text(json.dumps(r))
            results.append(r)
    out = root / "report"
    page.write_report(results, out, "test", logdir=root, targets=annotation_budget.TARGETS)
    return results, out


def test_every_n_and_the_means_recomputed(report):
    results, out = report
    rows = read_csv(out / "learning_curve_baseline.csv")
    for arch in CURVE_LAW:
        mine = [r for r in rows if r["arch"] == arch and r["metric"] == "auc"]
        assert [int(r["n"]) for r in mine] == [1, 2, 4, 8, 16]
        assert {(r["setting"], r["on"], r["target"]) for r in mine} == {("batch 8", "validation", "0.95")}
        for row in mine:
            n = int(row["n"])
            values = [r for r in results if r["arch"] == arch and r.get("train_volume_count") == n]
            # The mean over folds of each fold's mean over its repeats.
            by_fold = [np.mean([r["best_auc"] for r in values if r["fold"] == f]) for f in range(5)]
            assert float(row["mean"]) == pytest.approx(np.mean(by_fold), abs=1e-4)


def test_the_fit_recovers_the_law_and_the_verdicts_follow(report):
    _, out = report
    rows = read_csv(out / "learning_curve_baseline.csv")
    first = {r["arch"]: r for r in rows if r["metric"] == "auc" and r["n"] == "1"}
    for arch, (a, b, c) in CURVE_LAW.items():
        assert float(first[arch]["fit_a"]) == pytest.approx(a, abs=0.03), arch
    # vgg16's law reaches 0.95 at N = (0.25 / 0.02)^(1/0.8) = 23.5 volumes: within 4x 16, a figure, which is the
    # fitted law's own, and an interval around the true one.
    vgg = first["vgg16"]
    fitted = learning_curve.volumes_needed(tuple(float(vgg[k]) for k in ("fit_a", "fit_b", "fit_c")), 0.95)
    assert vgg["verdict"].startswith(f"{math.ceil(fitted)} volumes (95% bootstrap interval ")
    assert int(vgg["needed_low"]) <= 23.5 <= (int(vgg["needed_high"]) if vgg["needed_high"] else math.inf)
    assert first["squeezenet"]["verdict"] == learning_curve.NOT_REACHED  # its plateau 0.90 < 0.95
    page_text = (out / "index.html").read_text()
    assert learning_curve.NOT_REACHED in page_text and annotation_budget.MISLEAD[:40] in page_text


def test_a_flat_curve_says_it_does_not_rise(tmp_path):
    rng = np.random.default_rng(0)
    results = []
    for n in (1, 2, 4, 8):
        for fold in range(5):
            auc = 0.8 - 0.01 * np.log(n) + rng.normal(0, 0.002)  # falling slightly with N
            results.append(dict(result("baseline", 8, "vgg16", fold, auc, auc, 6, folds=5), train_volumes=n,
                                repeat=0, train_volume_count=n))
    written, by_design = annotation_budget.write(results, tmp_path, annotation_budget.TARGETS)
    rows = read_csv(tmp_path / "learning_curve_baseline.csv")
    assert {r["verdict"] for r in rows} == {learning_curve.NOT_RISING}
    assert sorted(p.name for p in written) == ["learning_curve_baseline.csv", "learning_curve_baseline_accuracy.png",
                                               "learning_curve_baseline_auc.png"]
