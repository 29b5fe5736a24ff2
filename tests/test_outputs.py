"""Tests of octtl/outputs.py's CSV cells: names a spreadsheet would run as formulas are neutralised in every CSV octtl
writes, read back as they were, and kept as they are in the records."""

import csv
import types

import numpy as np
import pytest
from PIL import Image

from conftest import fake_run, run_main
from octtl import outputs, predict, to_tfrecord
from octtl.data import records

FORMULAS = ('=HYPERLINK("x")', "-1abc", "@SUM(1)", "+1+2", "\tTAB")


@pytest.mark.parametrize("value, cell", [
    *[(text, "'" + text) for text in FORMULAS],
    ("-1", "-1"), ("-0.25", "-0.25"), ("1e-05", "1e-05"), ("+3", "+3"), ("plain", "plain"), ("a=b", "a=b"),
    ("'=x", "''=x"), ("'abc", "'abc"), ("", ""), (-1, -1),
])
def test_a_cell_is_neutralised_only_where_a_spreadsheet_would_run_it_and_reads_back_as_it_was(value, cell):
    assert outputs.csv_cell(value) == cell
    assert outputs.csv_text(str(cell)) == str(value)


def _raw_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_formula_names_are_neutralised_in_every_csv_and_kept_in_the_records(tmp_path):
    from octtl.results import comparisons
    from octtl.training import fitting, tasks

    rng = np.random.default_rng(0)
    stems = {"normal": ["n1", FORMULAS[0], FORMULAS[1]], "fluid": ["f1", FORMULAS[2]]}
    for label, names in stems.items():
        (tmp_path / "images" / label).mkdir(parents=True)
        for stem in names:
            Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(tmp_path / "images" / label /
                                                                                 f"{stem}.png")
    data = tmp_path / "records"
    code, _, err = run_main(to_tfrecord, "--input_format=image_folders", "--classes=normal,fluid",
                            f"--input_dir={tmp_path / 'images'}", f"--output_dir={data}")
    assert code == 0, err
    formulas = set(FORMULAS[:3])

    # The records keep the names; index.csv holds them neutralised, counts of -1 as numbers; octtl reads them back.
    assert formulas <= set(records.scan_metadata(data).sources)
    index = _raw_rows(data / records.INDEX)
    assert {"'" + name for name in formulas} <= {row["volume_id"] for row in index} & {row["source"] for row in index}
    assert {row["irf"] for row in index} == {"-1"}
    metadata = records.read_metadata(data)
    assert formulas <= set(metadata.volume_ids) and formulas <= set(metadata.sources)
    assert set(metadata.irf) == {-1}

    # A training run's predictions.csv, and the report's reading of it.
    p_fluid = np.linspace(0, 1, len(metadata))
    run = types.SimpleNamespace(task=tasks.Task("fluid", ("normal", "fluid")), metadata=metadata,
                                targets=metadata.labels)
    fitting.write_predictions(tmp_path / "predictions.csv", run, np.arange(len(metadata)),
                              np.stack([1 - p_fluid, p_fluid], axis=1))
    assert {"'" + name for name in formulas} <= {row["source"] for row in _raw_rows(tmp_path / "predictions.csv")}
    assert formulas <= {row["source"] for row in outputs.read_csv(tmp_path / "predictions.csv")[1]}
    assert comparisons.read_predictions(tmp_path / "predictions.csv")[0] == list(metadata.labels)

    # predict's CSVs (its predictions and per-volume summary).
    model = fake_run(tmp_path / "run", arch="tiny", image_size=32)
    code, _, err = run_main(predict, f"--model={model}", f"--input={data}", f"--output={tmp_path / 'p.csv'}")
    assert code == 0, err
    for path in (tmp_path / "p.csv", tmp_path / "p_volumes.csv"):
        raw = {row["volume_id"] for row in _raw_rows(path)}
        assert {"'" + name for name in formulas} <= raw and not formulas & raw, path
        assert formulas <= {row["volume_id"] for row in outputs.read_csv(path)[1]}
