"""Tests of the report (octtl/report.py, octtl/tables.py, octtl/figures.py, octtl/report_page.py).

Results with known values go through `python -m octtl.report`; every mean and std in the CSVs is recomputed
here with numpy. The end-to-end report of a real sweep is in test_sweep.py.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from octtl import figures, tables

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
FOLDS = 10


def result(design, batch, arch, fold, accuracy, auc, iterations, params=1_000_000, status="ok", folds=FOLDS):
    r = {"design": design, "batch": batch, "arch": arch, "fold": fold, "folds": folds, "status": status,
         "weights": "imagenet", "image_size": 224, "wall_seconds": 10.0 + fold}
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
            else:
                assert row["accuracy_std"] == row["auc_std"] == ""  # undefined for one fold, not 0
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
    assert page.count("<table>") == 4 and page.count("data:image/png;base64,") == 7
    assert "Failed runs (not averaged)" in page and 'class="incomplete"' in page
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
