"""Tests of the report (octtl/report.py, octtl/results/tables.py, octtl/results/comparisons.py, octtl/results/figures.py, octtl/results/page.py).

Results with known values go through `python -m octtl.report`; every mean, std and interval in the CSVs is
recomputed here with numpy. A mini sweep's run folders (3 networks, 1 batch size, 5 folds, predictions.csv
included) give the statistics page, which is also loaded in headless Chromium. The end-to-end report of a real
sweep is in test_sweep.py; the statistics themselves are checked against published examples in test_stats.py.
"""

import csv
import html.parser
import json
import math
import os
import re
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
from scipy import stats as scipy_stats

from conftest import REPO
import browser  # tools/browser.py: conftest puts tools/ on the path
from octtl.results import comparisons
from octtl.results import figures
from octtl.results import stats
from octtl.results import tables

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
FOLDS = 10


def result(design, batch, arch, fold, accuracy, auc, iterations, params=1_000_000, status="ok", folds=FOLDS):
    r = {"design": design, "batch": batch, "arch": arch, "fold": fold, "folds": folds, "status": status,
         "weights": "imagenet", "image_size": 224, "wall_seconds": 10.0 + fold, "seed": 0,
         "group_by_volume": False, "data_dir": "data/records",
         # 1176 B-scans in 10 folds: 117 or 118 validate; the limited design swaps the two sides.
         "train_size": 1058 + fold % 2 if design == "baseline" else 118 - fold % 2,
         "val_size": 118 - fold % 2 if design == "baseline" else 1058 + fold % 2}
    if status == "ok":
        r.update(best_accuracy=accuracy, best_auc=auc, iterations_to_best=iterations, params=params,
                 checks=[{"iteration": i, "val_accuracy": accuracy * i / iterations, "val_loss": 0.5,
                          "val_auc": auc, "check": True} for i in range(1, iterations + 1)])
    else:
        r["error"] = "out of memory at batch 64: OOM when allocating tensor"
    return r


@pytest.fixture(scope="module")
def known():
    """Results of 2 designs x batches 8/16 x 4 networks x 10 folds, with a few special cases:

    - baseline/8/vgg16 accuracies are 0.74, 0.80, 0.86 repeated (mean 0.80, std 0.06 on three of them is
      exact; on ten it is whatever numpy says);
    - baseline/16/alexnet has 3 failed folds (not averaged; 7 of 10 folds);
    - baseline/16/googlenet has AUC undefined (None) in two folds;
    - limited/8/densenet201 has a single fold (std undefined).
    """
    rng = np.random.default_rng(11)
    results = []
    params = {"vgg16": 138_000_000, "alexnet": 61_000_000, "googlenet": 7_000_000, "densenet201": 20_000_000}
    for design in ("baseline", "limited"):
        for batch in (8, 16):
            for arch in params:
                for fold in range(FOLDS):
                    if (design, batch, arch) == ("limited", 8, "densenet201") and fold > 0:
                        continue
                    acc = float(rng.uniform(0.6, 0.95))
                    auc = float(rng.uniform(0.6, 0.99))
                    if (design, batch, arch) == ("baseline", 8, "vgg16"):
                        acc = (0.74, 0.80, 0.86)[fold % 3] if fold < 9 else 0.80
                    if (design, batch, arch) == ("baseline", 16, "googlenet") and fold in (2, 5):
                        auc = None
                    status = "failed" if (design, batch, arch) == ("baseline", 16, "alexnet") and fold < 3 else "ok"
                    results.append(result(design, batch, arch, fold, acc, auc, int(rng.integers(5, 300)),
                                          params[arch], status))
    return results


@pytest.fixture(scope="module")
def report(known, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("report-runs")
    with open(logdir / "results.jsonl", "w") as f:
        for r in known:
            f.write(json.dumps(r) + "\n")
    out = logdir / "report"
    proc = subprocess.run([sys.executable, "-m", "octtl.report", f"--logdir={logdir}", f"--out_dir={out}"],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_mean_and_std_matches_numpy(known, report):
    out, _ = report
    checked = 0
    for design in ("baseline", "limited"):
        rows = read_csv(out / f"table_{design}.csv")
        assert list(rows[0])[:9] == ["design", "batch", "arch", "accuracy_mean", "accuracy_std", "auc_mean",
                                     "auc_std", "iterations_to_best_mean", "n_folds"]
        assert len(rows) == 2 * 4  # one row per (batch, arch)
        for row in rows:
            group = [r for r in known if (r["design"], r["batch"], r["arch"]) == (design, int(row["batch"]),
                                                                                   row["arch"])]
            ok = [r for r in group if r["status"] == "ok"]
            acc = np.array([r["best_accuracy"] for r in ok])
            auc = np.array([r["best_auc"] for r in ok if r["best_auc"] is not None])
            its = np.array([r["iterations_to_best"] for r in ok])
            assert row["design"] == design and int(row["n_folds"]) == len(ok)
            assert int(row["n_failed"]) == len(group) - len(ok) and int(row["folds"]) == FOLDS
            assert abs(float(row["accuracy_mean"]) - acc.mean()) < 1e-9
            assert abs(float(row["auc_mean"]) - auc.mean()) < 1e-9
            assert abs(float(row["iterations_to_best_mean"]) - its.mean()) < 1e-9
            if len(ok) > 1:
                assert abs(float(row["accuracy_std"]) - acc.std(ddof=1)) < 1e-9
                assert abs(float(row["auc_std"]) - auc.std(ddof=1)) < 1e-9
                assert abs(float(row["iterations_to_best_std"]) - its.std(ddof=1)) < 1e-9
                # Nadeau-Bengio: mean +- t(k-1) s sqrt(1/k + n_val/n_train), clipped to [0, 1].
                ratio = np.mean([r["val_size"] for r in ok]) / np.mean([r["train_size"] for r in ok])
                assert float(row["test_train_ratio"]) == pytest.approx(ratio, rel=1e-12)
                for values, name in ((acc, "accuracy"), (auc, "auc")):
                    k = len(values)
                    half = scipy_stats.t.ppf(0.975, k - 1) * values.std(ddof=1) * math.sqrt(1 / k + ratio)
                    assert float(row[f"{name}_ci_low"]) == pytest.approx(max(values.mean() - half, 0), abs=1e-12)
                    assert float(row[f"{name}_ci_high"]) == pytest.approx(min(values.mean() + half, 1), abs=1e-12)
            else:
                assert row["accuracy_std"] == row["auc_std"] == ""  # undefined for one fold, not 0
                assert row["accuracy_ci_low"] == row["accuracy_ci_high"] == ""
            checked += 1
    assert checked == 16


def test_ranks_follow_mean_accuracy(report):
    out, _ = report
    rows = read_csv(out / "table_baseline.csv")
    for batch in ("8", "16"):
        mine = sorted((r for r in rows if r["batch"] == batch), key=lambda r: int(r["rank"]))
        assert [int(r["rank"]) for r in mine] == [1, 2, 3, 4]
        means = [float(r["accuracy_mean"]) for r in mine]
        assert means == sorted(means, reverse=True)


def test_markdown_has_table_ii_layout_and_marks(known, report):
    out, _ = report
    text = (out / "table_baseline.md").read_text()
    assert text.startswith("# Table II - mean (standard deviation) accuracy, AUC of top 3 performers across "
                           "10 folds of the baseline design (train set = 90%)")
    top_table = text.split("## All networks")[0]
    body = [line for line in top_table.splitlines() if line.startswith("| ") and "Architecture" not in line]
    assert len(body) == 2 * 3  # top 3 for each of two batch sizes
    assert [line.split("|")[1].strip() for line in body] == ["8", "", "", "16", "", ""]  # batch printed once
    # baseline/8/vgg16: 0.74/0.80/0.86 x3 and one 0.80.
    vgg = np.array([0.74, 0.80, 0.86] * 3 + [0.80])
    assert f"| vgg16 | {vgg.mean():.2f} ({vgg.std(ddof=1):.2f}) |" in text
    # Fewer folds than asked are marked; failed runs are listed, not averaged.
    assert "† fewer folds than asked: alexnet batch 16: 7 of 10" in text
    marked = [line for line in text.splitlines() if " †" in line and line.startswith("| ")]
    assert marked and all("| alexnet |" in line for line in marked)
    assert text.count("alexnet batch 16 fold") == 3 and "OOM when allocating" in text
    assert "googlenet batch 16: 8 of 10" in text  # AUC undefined in two folds
    limited = (out / "table_limited.md").read_text()
    assert limited.startswith("# Table III") and "densenet201 batch 8: 1 of 10" in limited
    assert " (n/a)" in limited  # one fold: no standard deviation


def test_page_lists_everything_and_says_where_results_came_from(report):
    out, proc = report
    page = (out / "index.html").read_text()
    assert "results.jsonl" in page and "3 failed" in page
    # Per design: top and full tables, the tests of each batch size, and a pairwise table per batch size.
    assert page.count("<table>") == 4 and page.count('<table class="omnibus">') == 2
    assert page.count('<table class="pairwise">') == 4
    # Figs 2-4 per design, accuracy by design, a critical-difference diagram per (design, batch); no ROC: the
    # results file's run folders are not there, and the page says so.
    assert page.count("data:image/png;base64,") == 7 + 4 and "roc_" not in page
    assert "ROC: no predictions.csv in the run folders for vgg16 batch 8 (10 of 10 folds)" in page
    assert "Failed runs (not averaged)" in page and 'class="incomplete"' in page
    assert "Nadeau and Bengio (2003)" in page and page.count("Folds grouped by volume: no.") == 2
    assert "report: 151 runs (3 failed)" in proc.stdout


def test_cells_are_formatted_like_the_paper():
    assert tables.cell(0.8, 0.06) == "0.80 (0.06)"
    assert tables.cell(0.915, float("nan")) == "0.92 (n/a)"
    assert tables.cell(float("nan"), float("nan")) == "-"
    assert tables.cell(123.4, 45.6, 0) == "123 (46)"


def test_curves_average_the_folds_evaluated_at_each_iteration():
    runs = [result("baseline", 8, "vgg16", 0, 0.9, 0.9, 2), result("baseline", 8, "vgg16", 1, 0.6, 0.9, 4)]
    curves = tables.accuracy_curves(runs)
    # Fold 0 is evaluated at 1, 2 (0.45, 0.9); fold 1 at 1..4 (0.15, 0.3, 0.45, 0.6).
    curve = curves[("baseline", 8, "vgg16")]
    assert [(i, n) for i, _, n in curve] == [(1, 2), (2, 2), (3, 1), (4, 1)]
    assert [acc for _, acc, _ in curve] == pytest.approx([0.3, 0.6, 0.45, 0.6])


def test_figures_draw_one_series_per_network(known):
    rows, _ = tables.aggregate(known)
    fig2 = figures.accuracy_vs_iterations(rows, "baseline")
    ax = fig2.axes[0]
    assert sorted(line.get_label() for line in ax.lines) == ["alexnet", "densenet201", "googlenet", "vgg16"]
    for line in ax.lines:
        row = {r.batch: r for r in rows if (r.design, r.arch) == ("baseline", line.get_label())}
        assert list(line.get_xdata()) == [row[8].iterations_to_best_mean, row[16].iterations_to_best_mean]
        assert list(line.get_ydata()) == [row[8].accuracy_mean, row[16].accuracy_mean]
    assert sorted(t.get_text() for t in ax.texts) == ["16"] * 4 + ["8"] * 4  # points labelled by batch size

    fig3 = figures.accuracy_curves(rows, tables.accuracy_curves(known), "baseline")
    assert [a.get_title() for a in fig3.axes] == ["batch size 8", "batch size 16"]
    assert len([line for line in fig3.axes[0].lines if line.get_label() == "vgg16"]) == 1

    fig4 = figures.bubbles(rows, "baseline")
    sizes = {t.get_text().split("\n")[0]: c.get_sizes()[0] for t, c in zip(fig4.axes[0].texts,
                                                                              fig4.axes[0].collections)}
    assert sizes["vgg16"] == pytest.approx(2500) and sizes["alexnet"] == pytest.approx(2500 * 61 / 138)
    assert "batch size 8" in fig4.axes[0].get_title()

    by_design = figures.accuracy_by_design(rows)
    assert len(by_design.axes) == 2  # one panel per batch size
    assert len(by_design.axes[0].containers) == 4  # error bars of each network


def run_report(*args):
    return subprocess.run([sys.executable, "-m", "octtl.report", *args], capture_output=True, text=True, env=ENV,
                          cwd=REPO, timeout=300)


def test_reads_run_folders_when_there_is_no_results_file(tmp_path):
    for fold in range(2):
        folder = tmp_path / "limited" / "vgg16" / "batch8" / f"fold{fold}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(result("limited", 8, "vgg16", fold, 0.7 + fold / 10, 0.8,
                                                              5, folds=2)))
    proc = run_report(f"--logdir={tmp_path}", f"--out_dir={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(tmp_path / "out" / "table_limited.csv")
    assert len(rows) == 1 and abs(float(rows[0]["accuracy_mean"]) - 0.75) < 1e-9
    assert not (tmp_path / "out" / "table_baseline.csv").exists()


@pytest.mark.parametrize("content, message", [
    (None, "no results in"),
    ("", "no results in"),
    ('{"design": "baseline"}\n', "results.jsonl:1: not a result line"),
])
def test_bad_input_is_one_error_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / "results.jsonl").write_text(content)
    proc = run_report(f"--logdir={tmp_path}", f"--out_dir={tmp_path / 'out'}")
    assert proc.returncode != 0
    error = proc.stderr.strip()
    assert error.startswith("report: error: ") and message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_paired_comparisons_use_the_folds_every_network_finished(known, report):
    out, _ = report
    lines = read_csv(out / "paired_baseline.csv")
    # baseline/16: alexnet failed folds 0-2, googlenet has no AUC in folds 2 and 5.
    batch16 = [r for r in lines if r["batch"] == "16"]
    assert {(r["metric"], r["n_folds"], r["n_networks"], r["test"]) for r in batch16} == {
        ("accuracy", "7", "4", "Friedman"), ("auc", "6", "4", "Friedman")}
    assert len(batch16) == 2 * 6  # every pair of 4 networks, for each metric
    folds = {"accuracy": [3, 4, 5, 6, 7, 8, 9], "auc": [3, 4, 6, 7, 8, 9]}
    for metric, field in comparisons.METRICS.items():
        archs = sorted({r["arch_a"] for r in batch16} | {r["arch_b"] for r in batch16})
        table = np.array([[next(r[field] for r in known if (r["design"], r["batch"], r["arch"], r["fold"])
                                == ("baseline", 16, a, f)) for a in archs] for f in folds[metric]])
        line = next(r for r in batch16 if r["metric"] == metric)
        assert float(line["friedman_p"]) == pytest.approx(scipy_stats.friedmanchisquare(*table.T).pvalue, rel=1e-9)
        assert float(line["critical_difference"]) == pytest.approx(
            stats.nemenyi_q(4) * math.sqrt(4 * 5 / (6 * len(folds[metric]))), rel=1e-9)
        for r in (r for r in batch16 if r["metric"] == metric):
            assert float(r["mean_a"]) == pytest.approx(table[:, archs.index(r["arch_a"])].mean(), abs=1e-12)
    # limited/8: densenet201 finished one fold; it is left out rather than leaving one common fold.
    limited = [r for r in read_csv(out / "paired_limited.csv") if r["batch"] == "8"]
    assert {r["n_networks"] for r in limited} == {"3"} and "densenet201" not in str(limited)
    page = (out / "index.html").read_text()
    assert "Batch size 8, left out of the comparison: densenet201: only 1 ok fold" in page


def paired(results):
    """(design, batch) -> Comparison."""
    return {(c.design, c.batch): c for c in comparisons.comparisons(results)}


def test_runs_whose_folds_are_different_splits_are_not_paired():
    runs = [dict(result("baseline", 8, arch, fold, 0.7 + fold / 100, 0.8, 5), seed=seed)
            for arch, seed in (("vgg16", 0), ("alexnet", 0), ("googlenet", 0), ("resnet18", 1))
            for fold in range(FOLDS)]
    runs += [dict(result("baseline", 8, "xception", fold, 0.7, 0.8, 5), group_by_volume=fold > 4)
             for fold in range(FOLDS)]
    c = paired(runs)[("baseline", 8)]
    assert sorted(c.archs) == ["alexnet", "googlenet", "vgg16"] and c.accuracy.test == "Friedman"
    assert c.left_out == ["xception: its own folds were split differently (group_by_volume True (the others: False))",
                          "resnet18: seed 1 (the others: 0)"]
    # The data identity of result.json, when there is one, decides over the folder's path.
    moved = [dict(r, data_dir="elsewhere", data={"manifest_sha256": "ab", "num_examples": 1176})
             if r["arch"] == "alexnet" else dict(r, data={"manifest_sha256": "ab", "num_examples": 1176})
             for r in runs if r["arch"] in ("vgg16", "alexnet")]
    assert sorted(paired(moved)[("baseline", 8)].archs) == ["alexnet", "vgg16"]


def test_two_networks_get_wilcoxon_and_the_page_says_five_folds_cannot_reach_5_percent(tmp_path):
    runs = [result("limited", 8, arch, fold, acc + fold / 100, 0.8 + fold / 100, 5, folds=5)
            for arch, acc in (("vgg16", 0.8), ("alexnet", 0.7)) for fold in range(5)]
    c = paired(runs)[("limited", 8)]
    assert c.accuracy.test == "Wilcoxon" and c.accuracy.archs == ["vgg16", "alexnet"]
    assert c.accuracy.pairwise[0, 1] == pytest.approx(0.0625)  # 5 of 5 folds in favour: 2 / 2^5
    assert c.auc.pairwise[0, 1] == 1.0  # the same AUC in every fold
    notes = comparisons.comparison_notes(c.accuracy)
    assert notes == ["accuracy: with 5 folds the smallest exact two-sided Wilcoxon p is 0.0625 > 0.05: no pair "
                     "can be significant at 0.05 whatever the scores."]
    fewer = paired([r for r in runs if r["fold"] < 4])[("limited", 8)]
    assert not fewer.accuracy.test and comparisons.comparison_notes(fewer.accuracy) == [
        "accuracy: no test (4 folds common to all networks; the paired tests need at least 5)."]


def auc_by_hand(labels, scores):
    """Share of (fluid, normal) pairs the scores order correctly, ties counting half (the Mann-Whitney AUC)."""
    fluid, normal = scores[labels == 1], scores[labels == 0]
    diff = fluid[:, None] - normal[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


MINI = {"vgg16": 1.6, "alexnet": 1.0, "squeezenet": 0.6}  # separation of the classes: vgg16 best


def write_run(root, design, arch, batch, fold, labels, p_fluid, folds=5, **extra):
    """A run folder as octtl.train leaves it: result.json agreeing with predictions.csv."""
    folder = root / design / arch / f"batch{batch}" / f"fold{fold}"
    folder.mkdir(parents=True)
    accuracy = float(((p_fluid > 0.5) == labels).mean())
    r = dict(result(design, batch, arch, fold, accuracy, auc_by_hand(labels, p_fluid), 6, folds=folds),
             val_size=len(labels), train_size=4 * len(labels), **extra)
    (folder / "result.json").write_text(json.dumps(r))
    with open(folder / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["volume_id", "slice", "label", "p_fluid"])
        for i, (label, p) in enumerate(zip(labels, p_fluid)):
            writer.writerow([f"TRAIN{25 + i // 8:03d}", i % 8, int(label), repr(float(p))])
    return r


MINI_VENDORS = ("cirrus", "spectralis", "topcon")


def write_vendor_runs(root, rng):
    """The vendor design's run folders as octtl.train leaves them: each network holds each vendor out (fold k:
    the k-th), with validation and test predictions and what training records of them (octtl.training.clinical).
    The left-out vendor's scores are overconfident (x 3 on the logit scale): another scanner, a worse calibration."""
    from octtl.training import clinical

    out = []
    for fold, vendor in enumerate(MINI_VENDORS):
        val_labels = rng.permutation(np.repeat([0, 1], 15))  # 30 validation B-scans of the other two vendors
        test_labels = np.repeat([0, 1], 12)[rng.permutation(24)]  # 3 volumes of 8 B-scans of the left-out one
        for arch, separation in MINI.items():
            val_p = 1 / (1 + np.exp(-(separation * (2 * val_labels - 1) + rng.normal(0, 1, 30))))
            test_p = 1 / (1 + np.exp(-3 * (0.7 * separation * (2 * test_labels - 1) + rng.normal(0, 1, 24))))
            folder = root / "vendor" / arch / "batch8" / f"fold{fold}"
            folder.mkdir(parents=True)
            record = clinical.record(val_p, val_labels, test_p, test_labels, 0.95, [vendor] * 24)
            r = dict(result("vendor", 8, arch, fold, float(np.mean((val_p > 0.5) == val_labels)),
                            auc_by_hand(val_labels, val_p), 6), folds=5, design_folds=3, val_size=30,
                     train_size=90, test_size=24, test_fold="auto", test_vendor=vendor,
                     train_vendors=sorted(set(MINI_VENDORS) - {vendor}), group_by_volume=True,
                     test_accuracy=float(np.mean((test_p > 0.5) == test_labels)),
                     test_auc=auc_by_hand(test_labels, test_p), **record)
            (folder / "result.json").write_text(json.dumps(r))
            for name, labels, p, first in (("predictions.csv", val_labels, val_p, 100),
                                           ("test_predictions.csv", test_labels, test_p, 200 + 10 * fold)):
                with open(folder / name, "w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(["volume_id", "slice", "label", "p_fluid", "source"])
                    for i, (label, score) in enumerate(zip(labels, p)):
                        writer.writerow([f"TRAIN{first + i // 8:03d}", i % 8, int(label), repr(float(score)), ""])
            out.append(r)
    return out


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """A mini sweep's run folders (3 networks x batch 8 x 5 folds, baseline design; the vendor design's 3 folds
    beside it) and its report."""
    root = tmp_path_factory.mktemp("mini-runs")
    rng = np.random.default_rng(3)
    results = []
    for fold in range(5):
        labels = rng.permutation(np.repeat([0, 1], 24))  # 48 validation B-scans per fold
        noise = rng.normal(0, 1, labels.size)
        for arch, separation in MINI.items():
            p_fluid = 1 / (1 + np.exp(-(separation * (2 * labels - 1) + noise + rng.normal(0, 0.3, labels.size))))
            results.append(write_run(root, "baseline", arch, 8, fold, labels, p_fluid, train_volume_count=16))
    write_curve_points(root, rng)  # the page's learning-curve section, for the browser
    write_vendor_runs(root, rng)  # the vendor design, operating points and calibration (issue #24)
    out = root / "report"
    proc = run_report(f"--logdir={root}", f"--out_dir={out}")
    assert proc.returncode == 0, proc.stderr
    return root, out, results


CURVE_LAW = {"vgg16": (0.97, 0.25, 0.8), "alexnet": (0.93, 0.3, 0.6), "squeezenet": (0.90, 0.3, 0.5)}  # a, b, c


def write_curve_points(root, rng, n_values=(1, 2, 4, 8)):
    """Learning-curve runs: every network at `n_values` volumes x 5 folds x 2 repeats, AUC drawn from a known law
    a - b N^-c with noise (accuracy 0.05 below it); returns their results."""
    out = []
    for arch, (a, b, c) in CURVE_LAW.items():
        for n in n_values:
            for repeat in range(2):
                for fold in range(5):
                    folder = root / "baseline" / arch / "batch8" / f"vol{n}-rep{repeat}" / f"fold{fold}"
                    folder.mkdir(parents=True)
                    auc = min(1.0, a - b * n ** -c + rng.normal(0, 0.01))
                    r = dict(result("baseline", 8, arch, fold, auc - 0.05, auc, 6, folds=5), train_volumes=n,
                             repeat=repeat, train_volume_count=n, val_size=48, train_size=8 * n)
                    (folder / "result.json").write_text(json.dumps(r))
                    out.append(r)
    return out


def test_mini_sweep_page_shows_the_statistics(mini):
    root, out, results = mini
    assert {p.name for p in out.glob("*.png")} >= {"cd_baseline_batch8.png", "roc_baseline.png"}
    page = (out / "index.html").read_text()
    table = np.array([[next(r["best_accuracy"] for r in results if (r["arch"], r["fold"]) == (a, f))
                       for a in MINI] for f in range(5)])
    friedman_p = scipy_stats.friedmanchisquare(*table.T).pvalue
    assert f"Friedman p = {stats.format_p(friedman_p)}" in page
    assert (f"batch size 8, accuracy: Friedman p = {stats.format_p(friedman_p)} over 5 folds of vgg16, alexnet, "
            "squeezenet") in (out / "table_baseline.md").read_text()
    pairwise = page.split('<table class="pairwise">')[1].split("</table>")[0]
    assert pairwise.count("<tr>") == 1 + 3  # header and the 3 pairs
    assert page.count('alt="cd_baseline_batch8.png"') == 1 and page.count('alt="roc_baseline.png"') == 1
    # An interval beside every mean: every row of both tables has its two interval cells.
    for html_table in re.findall(r"<table>.*?</table>", page, re.S):
        body = html_table.split("</tr>", 1)[1]
        assert body.count("<tr>") == len(re.findall(r"<td>\[\d\.\d\d, \d\.\d\d\]</td>", body)) / 2 > 0
    assert "Folds grouped by volume: no." in page and "Nadeau and Bengio (2003)" in page
    image = matplotlib.image.imread(out / "cd_baseline_batch8.png")
    assert image.shape[0] > 100 and image[..., :3].std() > 0.05


def test_roc_pools_the_folds_predictions(mini):
    root, _, results = mini
    rows, _ = tables.aggregate(results)
    top = tables.roc_rows(rows, "baseline", 2)
    assert [r.arch for r in top] == ["vgg16", "alexnet"]
    pooled = comparisons.pooled_predictions(results, root, top)
    for p in pooled:
        assert p.folds == [0, 1, 2, 3, 4] and p.missing == [] and len(p.labels) == 5 * 48
    fig = figures.roc(pooled, "ROC")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    for p, text in zip(pooled, legend):
        assert text == f"{p.row.arch}, batch 8: AUC {auc_by_hand(p.labels, p.p_fluid):.2f} (5 folds)"
    assert comparisons.pooled_predictions(results, root / "nowhere", top)[0].missing == [0, 1, 2, 3, 4]


def test_bad_predictions_file_is_one_error_line(tmp_path):
    labels = np.array([0, 1, 0, 1])
    for fold in range(2):
        write_run(tmp_path, "baseline", "vgg16", 8, fold, labels, np.array([0.2, 0.9, 0.4, 0.6]), folds=2)
    bad = tmp_path / "baseline" / "vgg16" / "batch8" / "fold1" / "predictions.csv"
    bad.write_text("volume_id,slice,label,p_fluid\nTRAIN025,0,1,high\n")
    proc = run_report(f"--logdir={tmp_path}", f"--out_dir={tmp_path / 'out'}")
    error = proc.stderr.strip()
    assert proc.returncode != 0 and len(error.splitlines()) == 1
    assert error == f"report: error: {bad}:2: bad label or p_fluid ('1', 'high')"
    assert not (tmp_path / "out").exists()


class _Verdict(html.parser.HTMLParser):
    """Reads the data-verdict attribute the test's script leaves on <body>."""

    verdict = None

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.verdict = dict(attrs).get("data-verdict")


# Appended to a copy of index.html: once the page has loaded, records every image's state and every table's
# row count on <body>, where --dump-dom shows it.
_CHECK = """<script>
window.addEventListener("load", () => {
  document.body.dataset.verdict = JSON.stringify({
    images: [...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0, i.naturalWidth]),
    tables: [...document.querySelectorAll("table")].map(t => t.rows.length)});
});
</script>"""


def test_page_in_a_real_browser(mini, tmp_path):
    chromium = browser.find()
    if chromium is None:
        pytest.skip(f"no Chromium on PATH (looked for {', '.join(browser.NAMES)}); "
                    "Debian: apt-get install chromium (.ci/run does)")
    _, out, _ = mini
    page = (out / "index.html").read_text()
    checked = tmp_path / "index.html"
    checked.write_text(page.replace("</body>", _CHECK + "</body>"))
    parser = _Verdict()
    parser.feed(browser.dump_dom(checked, chromium))
    assert parser.verdict, "the page's load event never fired"
    verdict = json.loads(parser.verdict)
    images = {alt: (loaded, width) for alt, loaded, width in verdict["images"]}
    # Baseline: Figs 2-4, CD, ROC; vendor design: Figs 2-4, ROC; accuracy by design; a reliability diagram per
    # design; 2 learning curves.
    assert len(images) == page.count("<img ") == 14
    assert {"reliability_baseline.png", "reliability_vendor.png", "roc_vendor.png"} <= set(images)
    assert all(loaded and width > 300 for loaded, width in images.values()), images
    # Baseline: top table (3 + header), all networks (3 + header), tests (1 + header), pairwise (3 + header); the
    # vendor design: top, all, tests (3 folds: no pairwise test); operating points (3 networks x 3 thresholds +
    # header) and calibration (3 + header) of each design; the vendors left out (3 networks x 3 vendors + header);
    # learning curves (3 networks x 2 metrics + header).
    assert verdict["tables"] == [4, 4, 2, 4, 4, 4, 2, 10, 4, 10, 4, 10, 7]
    shot = browser.screenshot(out / "index.html", tmp_path / "screenshot.png", 1200, 1600, chromium)
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (1600, 1200) and image[..., :3].std() > 0.05
    shutil.copy(shot, out.parent / "screenshot.png")  # beside the report, for a person to look at


def test_critical_difference_diagram_joins_exactly_the_pairs_nemenyi_cannot_separate(mini):
    _, _, results = mini
    c = comparisons.comparisons(results)[0].accuracy
    assert c.test == "Friedman" and c.archs == ["vgg16", "alexnet", "squeezenet"]
    ax = figures.critical_difference(c, "CD").axes[0]
    cd_bar = [line for line in ax.lines if list(line.get_ydata()) == [1.2, 1.2]]
    assert len(cd_bar) == 1 and list(cd_bar[0].get_xdata()) == pytest.approx([1, 1 + c.cd])
    assert any(t.get_text() == f"CD = {c.cd:.2f}" for t in ax.texts)
    texts = [t.get_text() for t in ax.texts]
    for arch, rank in zip(c.archs, c.ranks):  # each network labelled with its average rank
        assert f"{arch} ({rank:.2f})" in texts or f"({rank:.2f}) {arch}" in texts
    # Crossbars: horizontal lines below the axis through the ranks of networks not significantly different.
    joined = set()
    for line in ax.lines:
        y = set(line.get_ydata())
        if len(line.get_xdata()) >= 2 and len(y) == 1 and y.pop() < 0:
            ranks = sorted(line.get_xdata())
            members = [a for a, r in zip(c.archs, c.ranks) if ranks[0] <= r <= ranks[-1]]
            joined |= {(a, b) for a in members for b in members if a < b}
    apart = {(a, b) for i, a in enumerate(c.archs) for j, b in enumerate(c.archs)
             if a < b and c.pairwise[i, j] < stats.ALPHA}
    assert apart  # the data make vgg16 and squeezenet differ, so the diagram has something to show
    assert joined == {(a, b) for a in c.archs for b in c.archs if a < b} - apart


def test_variant_tables_against_the_default(tmp_path):
    """A learning-rate axis: its own table, paired with the default fold by fold, recomputed here with scipy."""
    from scipy import stats as scipy_stats

    default = [0.70, 0.74, 0.71, 0.80, 0.76]
    faster = [0.78, 0.79, 0.70, 0.86, 0.83]
    results = [result("baseline", 16, "vgg16", k, a, 0.8, 10, folds=5) for k, a in enumerate(default)]
    results += [{**result("baseline", 16, "vgg16", k, a, 0.85, 10, folds=5), "lr": 0.0003}
                for k, a in enumerate(faster)]
    logdir = tmp_path / "runs"
    logdir.mkdir()
    (logdir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "octtl.report", f"--logdir={logdir}", f"--out_dir={out}"],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(out / "variants_lr.csv")
    assert [(r["variant"], r["value"], int(r["n_folds"])) for r in rows] == [
        ("default", "0.0001", 5), ("lr0.0003", "0.0003", 5)]
    variant = rows[1]
    assert float(variant["accuracy_mean"]) == pytest.approx(np.mean(faster), abs=1e-12)
    assert float(variant["accuracy_diff"]) == pytest.approx(np.mean(np.subtract(faster, default)), abs=1e-12)
    assert float(variant["accuracy_p"]) == pytest.approx(scipy_stats.wilcoxon(faster, default).pvalue, abs=1e-12)
    assert int(variant["n_paired"]) == 5
    # Tables II-III keep the paper's settings: the variant's runs are not averaged into them.
    table = read_csv(out / "table_baseline.csv")
    assert [(r["arch"], float(r["accuracy_mean"])) for r in table] == [("vgg16", pytest.approx(np.mean(default)))]
    page = (out / "index.html").read_text()
    assert "Variants against the defaults" in page and "is optimistic" in page and "variants_lr.csv" in page


def test_the_report_names_what_it_leaves_out_and_replaces_no_folder_but_its_own(tmp_path):
    """Failed runs of a variant only, and a result.json that is not JSON: both named; --out_dir is replaced only
    where an earlier report wrote it, or with --overwrite."""
    from conftest import refusal, run_main
    from octtl import report

    logdir = tmp_path / "runs"
    for fold in range(2):
        folder = logdir / "baseline" / "vgg16" / "batch8" / "lr0.001" / f"fold{fold}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({**result("baseline", 8, "vgg16", fold, 0, 0, 0, status="failed",
                                                                 folds=2), "lr": 0.001}))
    broken = logdir / "baseline" / "vgg16" / "batch8" / "fold0" / "result.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"design": "baseline", "arch"')
    out = tmp_path / "report"
    for _ in range(2):  # README's repeated report command: the second replaces what the first wrote
        code, _, err = run_main(report, f"--logdir={logdir}", f"--out_dir={out}")
        assert code == 0, err
        assert f"report: note: {broken}: not valid JSON" in err
    page = (out / "index.html").read_text()
    assert "2 runs (0 ok, 2 failed)" in page
    assert page.count("vgg16 batch 8 lr0.001 fold") == 2 and "out of memory at batch 64" in page
    assert str(broken) in page

    (out / "notes.txt").write_text("mine")
    assert refusal(report, f"--logdir={logdir}", f"--out_dir={out}").startswith(
        f"--out_dir={out}: folder holds notes.txt, which octtl.report did not write there")
    assert (out / "notes.txt").read_text() == "mine" and (out / "index.html").is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "figure.png").write_text("someone's")
    assert refusal(report, f"--logdir={logdir}", f"--out_dir={other}").startswith(f"--out_dir={other}: folder holds "
                                                                                  "figure.png")
    assert (other / "figure.png").read_text() == "someone's" and not list(tmp_path.glob(".other.partial-*"))
    assert run_main(report, f"--logdir={logdir}", f"--out_dir={other}", "--overwrite")[0] == 0
    assert sorted(p.name for p in other.iterdir()) == sorted(p.name for p in out.iterdir() if p.name != "notes.txt")
