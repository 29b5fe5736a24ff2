"""Tests of octtl/data/names.py: a file that data names inside itself (a MetaImage header's data file, a manifest's
shard) is read only from inside the data's folder, by every command that reads it; data kept as links still works."""

import json
import os
import pathlib
import shutil

import pytest

from conftest import fake_run, refusal, run_main, small_dataset
from octtl import predict, to_tfrecord, train
from octtl.data import records


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four small labelled volumes, their records and a tiny model to predict with."""
    root = tmp_path_factory.mktemp("names")
    small_dataset(root)
    return root, fake_run(root / "run", arch="tiny", image_size=32)


def _escape(kind: str, relative: str, target: pathlib.Path) -> str:
    return relative if kind == "relative" else str(target)


def _header_escaping(data, tmp_path, kind):
    """Volumes whose first header names, as its data file, a file of the right size outside the volumes' folder."""
    root, _ = data
    volumes = shutil.copytree(root / "volumes", tmp_path / "in")
    secret = tmp_path / "secret" / "secret.bin"
    secret.parent.mkdir()
    shutil.copy(volumes / "V0" / "oct.raw", secret)  # the size the header promises: only the path can refuse it
    header = volumes / "V0" / "oct.mhd"
    name = _escape(kind, "../../secret/secret.bin", secret)
    header.write_text(header.read_text().replace("ElementDataFile = oct.raw", f"ElementDataFile = {name}"))
    return volumes, f"{header}: ElementDataFile = {name}: a file named inside the data must be a plain relative name"


def _manifest_escaping(data, tmp_path, kind):
    """Records whose manifest lists, as its shard, a file outside the records' folder (a copy of the shard)."""
    root, _ = data
    folder = shutil.copytree(root / "records", tmp_path / "records")
    manifest = json.loads((folder / records.MANIFEST).read_text())
    shard = folder / manifest["shards"][0]["file"]
    outside = tmp_path / "outside.tfrecord"
    shutil.copy(shard, outside)
    name = _escape(kind, "../outside.tfrecord", outside)
    manifest["shards"][0]["file"] = name
    (folder / records.MANIFEST).write_text(json.dumps(manifest))
    return folder, f"{folder / records.MANIFEST}: shards[].file = {name}: a file named inside the data must be"


@pytest.mark.parametrize("kind", ["relative", "absolute"])
@pytest.mark.parametrize("named_in, command", [("header", "to_tfrecord"), ("header", "predict"),
                                               ("manifest", "train"), ("manifest", "predict")])
def test_a_file_named_outside_the_data_is_refused_in_one_line_and_nothing_is_written(data, tmp_path, kind, named_in,
                                                                                    command):
    _, model = data
    source, message = (_header_escaping if named_in == "header" else _manifest_escaping)(data, tmp_path, kind)
    out = tmp_path / "out"
    if command == "to_tfrecord":
        text = refusal(to_tfrecord, f"--input_dir={source}", f"--output_dir={out}")
    elif command == "predict":
        text = refusal(predict, f"--model={model}", f"--input={source}", f"--output={out / 'p.csv'}")
    else:
        text = refusal(train, f"--data_dir={source}", f"--logdir={out}", "--arch=squeezenet", "--batch=4",
                       "--image_size=32", "--folds=2", "--weights=none")
    assert text.startswith(message), text
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_data_kept_as_links_with_plain_names_is_read(data, tmp_path):
    """git-annex and DVC keep a file as a link to a store elsewhere: a header's data file and a shard alike."""
    root, model = data
    store = tmp_path / "annex" / "objects"
    store.mkdir(parents=True)
    volumes = shutil.copytree(root / "volumes", tmp_path / "in")
    for raw in sorted(volumes.glob("*/*.raw")):
        stored = store / f"{raw.parent.name}-{raw.name}"
        raw.rename(stored)
        os.symlink(stored, raw)
    code, out, err = run_main(to_tfrecord, f"--input_dir={volumes}", f"--output_dir={tmp_path / 'records'}")
    assert code == 0, (code, err)
    for shard in records.shard_paths(tmp_path / "records"):
        stored = store / pathlib.Path(shard).name
        pathlib.Path(shard).rename(stored)
        os.symlink(stored, shard)
    code, out, err = run_main(predict, f"--model={model}", f"--input={tmp_path / 'records'}",
                              f"--output={tmp_path / 'p.csv'}")
    assert code == 0, (code, err)
    assert out.startswith("24 B-scans of 4 volumes (records)")
