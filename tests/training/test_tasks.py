"""Beyond one binary label: K classes (a K-way softmax) and RETOUCH's three fluid types (sigmoids, per volume)."""

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as sk_metrics

from conftest import call_main, refusal, run_main, synthetic_records
from octtl import outputs, predict, runs, train
from octtl.data import converter, records
from octtl.errors import InputError
from octtl.results import fluid_types
from octtl.training import session
from octtl.training.config import Config

QUIET = dict(say=lambda line: None, progress=False)
CLASSES = ["NORMAL", "DME", "CNV", "DRUSEN"]


@pytest.fixture(scope="module")
def four_classes(tmp_path_factory):
    """Class folders of 12 images each, a bright band whose row tells the class; converted, 4 classes."""
    root = tmp_path_factory.mktemp("four")
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        (root / "images" / name).mkdir(parents=True)
        for i in range(12):
            image = rng.integers(0, 60, (40, 40)).astype(np.uint8)
            image[5 + 8 * k: 12 + 8 * k, 5:35] = 220
            Image.fromarray(image).save(root / "images" / name / f"{name}-{1000 + i}-1.png")
    manifest = converter.convert(root / "images", root / "records", input_format="image_folders", classes=CLASSES,
                                 progress=None)
    return root, manifest


@pytest.fixture(scope="module")
def four_class_run(four_classes):
    root, _ = four_classes
    config = Config(data_dir=str(root / "records"), logdir=str(root / "runs"), arch="tiny", batch=8, folds=4,
                    image_size=32, max_epochs=6, weights="none", lr=0.05)
    return session.train(config, 0, **QUIET)


def test_the_converter_counts_each_class(four_classes):
    _, manifest = four_classes
    assert manifest["classes"] == CLASSES and manifest["class_counts"] == {c: 12 for c in CLASSES}
    assert "num_fluid" not in manifest and "num_normal" not in manifest  # not the fluid task's two classes


def _read(path):
    return outputs.read_csv(path)[1]


def test_a_k_class_run_records_what_its_predictions_say(four_class_run):
    result = four_class_run
    folder = result["run_dir"]
    assert result["classes"] == CLASSES and result["task"] == "fluid"
    for prefix, name in (("", runs.PREDICTIONS), ("test_", runs.TEST_PREDICTIONS)):
        rows = _read(f"{folder}/{name}")
        assert list(rows[0]) == ["volume_id", "slice", "label", *(f"p_{c}" for c in CLASSES), "predicted", "source"]
        labels = np.array([int(r["label"]) for r in rows])
        p = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
        assert [r["predicted"] for r in rows] == [CLASSES[k] for k in p.argmax(axis=1)]
        accuracy = result["test_accuracy" if prefix else "best_accuracy"]
        assert accuracy == pytest.approx(np.mean(p.argmax(axis=1) == labels), abs=1e-12)
        aucs = {c: sk_metrics.roc_auc_score(labels == k, p[:, k]) for k, c in enumerate(CLASSES)}
        assert result[f"{prefix}class_auc"] == pytest.approx(aucs, abs=1e-12)
        auc = result["test_auc" if prefix else "best_auc"]
        assert auc == pytest.approx(np.mean(list(aucs.values())), abs=1e-12)  # the macro AUC
        assert result[f"{prefix}confusion"] == sk_metrics.confusion_matrix(labels, p.argmax(axis=1),
                                                                           labels=range(4)).tolist()


def test_predict_and_export_give_the_runs_k_probabilities(four_classes, four_class_run, tmp_path):
    root, _ = four_classes
    model = f"{four_class_run['run_dir']}/best.keras"
    code, out, err = run_main(predict, f"--model={model}", f"--input={root / 'records'}",
                              f"--output={tmp_path / 'p.csv'}")
    assert code == 0, err
    assert "macro AUC" in out and "confusion (rows true NORMAL, DME, CNV, DRUSEN)" in out
    mine = {(r["volume_id"], r["slice"]): r for r in _read(tmp_path / "p.csv")}
    for row in _read(f"{four_class_run['run_dir']}/{runs.PREDICTIONS}"):
        other = mine[(row["volume_id"], row["slice"])]
        for c in CLASSES:
            assert float(other[f"p_{c}"]) == pytest.approx(float(row[f"p_{c}"]), abs=1e-5)
    import tensorflow as tf

    from octtl.inference import savedmodel

    metadata = savedmodel.export(model, tmp_path / "export")
    assert metadata["output"].startswith("probabilities: float32 (batch, 4)")
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    meta = records.read_metadata(root / "records")
    first = [k for k, v in enumerate(meta.volume_ids) if (v, "0") in mine][:4]
    images = [np.asarray(Image.open(root / "images" / CLASSES[meta.labels[k]] / f"{meta.volume_ids[k]}.png"))
              for k in first]
    p = served(bscans=tf.constant(np.stack(images)))["probabilities"].numpy()
    expected = [[float(mine[(meta.volume_ids[k], "0")][f"p_{c}"]) for c in CLASSES] for k in first]
    np.testing.assert_allclose(p, expected, atol=1e-5)


def test_two_class_runs_keep_the_papers_outputs(tmp_path):
    records_dir = synthetic_records(tmp_path, volumes=6, bscans=6, height=40, width=40, seed=2)
    result = session.train(Config(data_dir=str(records_dir), logdir=str(tmp_path / "runs"), arch="tiny", batch=8,
                                  folds=3, image_size=32, max_epochs=1, weights="none"), 0, **QUIET)
    header = (tmp_path / "runs/baseline/tiny/batch8/fold0" / runs.PREDICTIONS).read_text().splitlines()[0]
    assert header == ",".join(runs.PREDICTION_COLUMNS) == "volume_id,slice,label,p_fluid,source"
    assert result["classes"] == ["normal", "fluid"] and "class_auc" not in result and "confusion" not in result


@pytest.fixture(scope="module")
def types_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("types")
    records_dir = synthetic_records(root, volumes=10, bscans=8, height=48, width=48, seed=4)
    config = Config(data_dir=str(records_dir), logdir=str(root / "runs"), arch="tiny", batch=8, folds=5,
                    image_size=32, max_epochs=2, weights="none", task="fluid_types")
    return records_dir, session.train(config, 0, **QUIET)


def test_fluid_types_learn_three_outputs_chosen_by_their_mean_auc(types_run):
    records_dir, result = types_run
    assert result["run_dir"].endswith("baseline/tiny/batch8/types/fold0") and result["classes"] == ["irf", "srf", "ped"]
    checks = [c for c in result["checks"] if c["val_auc"] is not None]
    best = max(checks, key=lambda c: (c["val_auc"], -c["iteration"]))
    assert result["iterations_to_best"] == best["iteration"]  # the best mean AUC, not the best accuracy
    rows = _read(f"{result['run_dir']}/{runs.TEST_PREDICTIONS}")
    meta = records.read_metadata(records_dir)
    manifest = records.read_manifest(records_dir)
    index = {(v, int(s)): i for i, (v, s) in enumerate(zip(meta.volume_ids, meta.slices))}
    for row in rows:
        i = index[(row["volume_id"], int(row["slice"]))]
        counts = {"irf": meta.irf[i], "srf": meta.srf[i], "ped": meta.ped[i]}
        assert {t: int(row[f"label_{t}"]) for t in counts} == {
            t: int(n >= manifest["min_fluid_voxels"]) for t, n in counts.items()}
    for t in ("irf", "srf", "ped"):
        y = [int(r[f"label_{t}"]) for r in rows]
        if len(set(y)) == 2:
            assert result["test_type_auc"][t] == pytest.approx(
                sk_metrics.roc_auc_score(y, [float(r[f"p_{t}"]) for r in rows]), abs=1e-12)


def test_per_volume_scores_pool_the_folds_once_per_volume_and_vendor(tmp_path):
    """A fixed fixture: 4 volumes in 2 folds, 2 vendors; the answers are written here."""
    rows = {  # volume: (vendor, [(p_irf, p_srf, p_ped, irf, srf, ped), ...])
        "A": ("cirrus", [(0.9, 0.1, 0.2, 1, 0, 0), (0.3, 0.2, 0.1, 0, 0, 0)]),
        "B": ("cirrus", [(0.2, 0.6, 0.1, 0, 1, 0), (0.4, 0.1, 0.3, 0, 0, 0)]),
        "C": ("cirrus", [(0.5, 0.3, 0.8, 1, 0, 1)]),
        "D": ("topcon", [(0.7, 0.2, 0.1, 1, 0, 0)]),
    }
    members = []
    for fold, volumes in enumerate((("A", "B"), ("C", "D"))):
        result = {"design": "baseline", "arch": "tiny", "batch": 8, "fold": fold, "status": "ok",
                  "task": "fluid_types", "test_type_auc": {"irf": 1.0}}
        folder = runs.run_of(result).folder(tmp_path)
        folder.mkdir(parents=True)
        lines = [{"volume_id": v, "slice": k, **{f"p_{t}": p[j] for j, t in enumerate(("irf", "srf", "ped"))},
                  **{f"label_{t}": p[3 + j] for j, t in enumerate(("irf", "srf", "ped"))}, "vendor": rows[v][0]}
                 for v in volumes for k, p in enumerate(rows[v][1])]
        outputs.write_csv(folder / runs.TEST_PREDICTIONS, list(lines[0]), lines)
        members.append(result)
    volumes, vendors, scores, answers = fluid_types.pooled_volumes(members, tmp_path, "test")
    assert list(volumes) == ["A", "B", "C", "D"] and list(vendors) == ["cirrus", "cirrus", "cirrus", "topcon"]
    np.testing.assert_allclose(scores, [[0.9, 0.2, 0.2], [0.4, 0.6, 0.3], [0.5, 0.3, 0.8], [0.7, 0.2, 0.1]])
    assert answers.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1], [1, 0, 0]]
    from octtl.training import metrics

    by_vendor = metrics.per_volume_auc(scores, answers, vendors)
    # cirrus IRF: A (0.9) and C (0.5) have it, B (0.4) not: both above B, AUC 1. SRF: only B has it, 0.6 highest.
    # PED: only C, 0.8 highest. topcon: one volume, one answer: undefined.
    assert by_vendor["cirrus"]["auc"] == {"irf": 1.0, "srf": 1.0, "ped": 1.0}
    assert by_vendor["topcon"]["auc"] == {"irf": None, "srf": None, "ped": None}


def test_what_cannot_be_learned_is_refused_in_one_line(four_classes, types_run, tmp_path):
    root, _ = four_classes
    with pytest.raises(InputError, match="--task=fluid_types: .* holds no voxel counts per fluid type"):
        session.train(Config(data_dir=str(root / "records"), logdir=str(tmp_path / "a"), arch="tiny", batch=8,
                             folds=4, image_size=32, task="fluid_types", weights="none"), 0, **QUIET)
    records_dir, result = types_run
    with pytest.raises(SystemExit) as exit_info:
        call_main(train, f"--data_dir={records_dir}", f"--logdir={tmp_path / 'b'}", "--arch=squeezenet", "--batch=8",
                  "--task=fluid_types", "--nogroup_by_volume")
    assert str(exit_info.value.code).startswith("train: error: --task=fluid_types: needs --group_by_volume")
    code, _, err = run_main(predict, f"--model={result['run_dir']}/best.keras", f"--input={records_dir}",
                            f"--output={tmp_path / 'p.csv'}", f"--gradcam_dir={tmp_path / 'cam'}")
    assert str(code).startswith("predict: error: --gradcam_dir: Grad-CAM explains a two-class model's p_fluid")
    assert not (tmp_path / "p.csv").exists()  # nothing written


def test_the_report_reads_k_class_runs(four_classes, four_class_run, tmp_path):
    from octtl import report

    root, _ = four_classes
    code, out, err = run_main(report, f"--logdir={root / 'runs'}", f"--out_dir={tmp_path / 'report'}")
    assert code == 0, (code, err[-2000:])
    page = (tmp_path / "report" / "index.html").read_text()
    assert "macro AUC" in page and all(name in page for name in CLASSES)


def test_predict_groups_class_folders_by_patient_and_refuses_a_threshold(four_classes, four_class_run, tmp_path):
    root, _ = four_classes
    model = f"{four_class_run['run_dir']}/best.keras"
    code, out, err = run_main(predict, f"--model={model}", f"--input={root / 'images'}",
                              f"--output={tmp_path / 'p.csv'}", r"--group_regex=^[A-Z]+-(\d+)-\d+$")
    assert code == 0, err
    rows = _read(tmp_path / "p.csv")
    assert len(rows) == 48 and {r["volume_id"] for r in rows} == {str(1000 + i) for i in range(12)}
    assert len(_read(tmp_path / "p_volumes.csv")) == 12  # one line per patient, the four classes' images pooled
    message = refusal(predict, f"--model={model}", f"--input={root / 'records'}", f"--output={tmp_path / 'q.csv'}",
                      "--threshold=0.3")
    assert message == ("--threshold=0.3: a model of 4 classes predicts its most probable class; a threshold applies "
                       "to two classes and to fluid types")


def test_k_class_predict_refuses_b_scans_smaller_than_the_crop(four_class_run, tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "in" / "small.png")
    message = refusal(predict, f"--model={four_class_run['run_dir']}/best.keras", f"--input={tmp_path / 'in'}",
                      f"--output={tmp_path / 'p.csv'}")
    assert "B-scans of 20x20 pixels are smaller than the 32x32 centre crop" in message
    assert not (tmp_path / "p.csv").exists()
