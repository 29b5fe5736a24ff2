"""Input that used to end in a traceback where a command promises one line: each case is refused with
`<command>: error: <message>`, exit status 1, and nothing written (convert, train and predict alike)."""

import json
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import SQUEEZENET_H5, fake_run, refusal, small_dataset
from octtl import predict, to_tfrecord, train
from octtl.data import pipeline, records


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Small volumes, their records and a tiny model to predict with."""
    root = tmp_path_factory.mktemp("bad-input")
    volumes, records_dir = small_dataset(root)
    return volumes, records_dir, fake_run(root / "run", arch="tiny", image_size=32)


def _train(records_dir, out, *extra):
    return train, [f"--data_dir={records_dir}", f"--logdir={out}", "--arch=squeezenet", "--batch=4",
                   "--image_size=32", "--folds=2", "--weights=none", *extra]


def _predict(data, source, out):
    return predict, [f"--model={data[2]}", f"--input={source}", f"--output={out / 'p.csv'}"]


def _convert(source, out, *extra):
    return to_tfrecord, [f"--input_dir={source}", f"--output_dir={out}", *extra]


def _truncated_weights(data, tmp_path, out):
    weights = tmp_path / "squeezenet.h5"
    weights.write_bytes(SQUEEZENET_H5.read_bytes()[:1 << 20])
    return (*_train(data[1], out, f"--weights={weights}"),
            f"--weights={weights}: {weights} cannot be read: truncated or damaged?")


def _index_cell(column, value):
    def damage(data, tmp_path, out):
        folder = shutil.copytree(data[1], tmp_path / "records")
        lines = (folder / records.INDEX).read_text().splitlines()
        header = lines[0].split(",")
        cells = lines[2].split(",")
        cells[header.index(column)] = value
        lines[2] = ",".join(cells)
        (folder / records.INDEX).write_text("\n".join(lines) + "\n")
        return (*_train(folder, out), f"{folder / records.INDEX}: row 3: {column} = {value!r} is not an integer")
    return damage


def _foreign_shard(folder):
    """A shard of Examples of another schema (an image and a label under other keys), as other tools write them."""
    shard = folder / records.shard_name(0, 1)
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for label in (0, 1, 0, 1):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"png"])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))})).SerializeToString())
    return shard


def _foreign_with_index(data, tmp_path, out):
    folder = shutil.copytree(data[1], tmp_path / "records")
    for shard in records.shard_paths(folder):
        os.remove(shard)
    shard = _foreign_shard(folder)
    manifest = json.loads((folder / records.MANIFEST).read_text())
    manifest["shards"] = [{"file": shard.name, "num_examples": 4}]
    (folder / records.MANIFEST).write_text(json.dumps(manifest))
    return (*_train(folder, out), f"{shard}: not octtl records (no ")


def _foreign_alone(command):
    def damage(data, tmp_path, out):
        folder = tmp_path / "records"
        folder.mkdir()
        shard = _foreign_shard(folder)
        if command == "train":
            return (*_train(folder, out), f"{shard}: not octtl records (no ")
        return (*_predict(data, folder, out), f"{folder / records.MANIFEST}: missing")
    return damage


def _png_promising(path, width, height):
    """A PNG whose header promises width x height pixels (its one row of data is all there is)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1))) + chunk(b"IEND", b""))
    return path


def _image_bomb(command):
    def damage(data, tmp_path, out):
        for label in ("normal", "fluid"):
            (tmp_path / "images" / label).mkdir(parents=True)
            Image.fromarray(np.zeros((40, 48), np.uint8)).save(tmp_path / "images" / label / f"{label}1.png")
        bomb = _png_promising(tmp_path / "images" / "fluid" / "bomb.png", 30000, 30000)
        message = f"{bomb}: image too large to read"
        if command == "to_tfrecord":
            return (*_convert(tmp_path / "images", out, "--input_format=image_folders", "--classes=normal,fluid"),
                    message)
        return (*_predict(data, bomb, out), message)
    return damage


def _link_loop(command):
    def damage(data, tmp_path, out):
        volumes = shutil.copytree(data[0], tmp_path / "volumes")
        loop = volumes / "V1" / "scans"
        os.symlink(loop.name, loop)  # a link to itself: ELOOP wherever it is followed
        message = f"{loop}: link loop"
        return (*(_convert(volumes, out) if command == "to_tfrecord" else _predict(data, volumes, out)), message)
    return damage


def _out_of_memory(data, tmp_path, out):
    side = 4096
    return (*_train(data[1], out, f"--image_size={side}"),
            f"--image_size={side}: decoding 24 B-scans of {side} x {side} pixels needs {24 * side * side} bytes of "
            f"memory ({1 << 28} bytes available); use a smaller --image_size")


CASES = {
    "truncated .h5 as --weights": _truncated_weights,
    "index.csv: a non-integer index": _index_cell("index", "one"),
    "index.csv: a non-integer label": _index_cell("label", "fluid"),
    "foreign Examples as --data_dir": _foreign_with_index,
    "foreign Examples named like a shard, alone (train)": _foreign_alone("train"),
    "foreign Examples named like a shard, alone (predict)": _foreign_alone("predict"),
    "PNG promising 30000 x 30000 (convert)": _image_bomb("to_tfrecord"),
    "PNG promising 30000 x 30000 (predict)": _image_bomb("predict"),
    "link loop in the volume tree (convert)": _link_loop("to_tfrecord"),
    "link loop in the volume tree (predict)": _link_loop("predict"),
    "out of memory at --image_size=4096": _out_of_memory,
}


@pytest.mark.parametrize("case", CASES)
def test_a_traceback_case_is_one_line_exit_1_and_nothing_written(data, tmp_path, monkeypatch, case):
    monkeypatch.setattr(pipeline, "host_available_bytes", lambda: 1 << 28)
    out = tmp_path / "out"
    module, args, message = CASES[case](data, tmp_path, out)
    text = refusal(module, *args)
    assert text.startswith(message), text
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
