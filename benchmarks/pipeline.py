"""Input-pipeline throughput, measured side by side in one run.

  python benchmarks/pipeline.py [--records_dir=DIR] [--image_size=224] [--batch=32] [--epochs=3]

Compares, on the synthetic paper-sized dataset (24 Spectralis volumes, 1176 B-scans):
  * octtl: `pipeline.decode` (records -> decode -> centre crop, once per training session, checked against
    index.csv), then `pipeline.training_batches` epochs (in-memory uint8 crops, shuffled, batched; the model scales);
  * keras folders: PNG files in class folders read with keras.utils.image_dataset_from_directory, decoded and
    resized every epoch, the pipeline a Keras user would write instead.
"""

import os
import pathlib
import statistics
import sys
import tempfile
import time

from octtl import console  # noqa: E402  (TensorFlow's start-up lines off the table)

console.start_tensorflow()
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from octtl.data import pipeline

from octtl.data import converter, records

from octtl.synthetic import render  # noqa: E402

_RECORDS_DIR = flags.DEFINE_string("records_dir", None, "Converted records; default: generate synthetic data.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Crop side.")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size.")
_EPOCHS = flags.DEFINE_integer("epochs", 10, "Epochs timed per in-memory pipeline (median reported).")


def images_per_second(ds, count):
    start = time.perf_counter()
    seen = 0
    for images, _ in ds:
        seen += int(images.shape[0])
    elapsed = time.perf_counter() - start
    assert seen == count, (seen, count)
    return count / elapsed


def main(argv):
    del argv
    work = pathlib.Path(tempfile.mkdtemp(prefix="octtl-bench-"))
    if _RECORDS_DIR.value:
        records_dir = pathlib.Path(_RECORDS_DIR.value)
    else:
        print("generating 24 synthetic Spectralis volumes ...", file=sys.stderr)
        render.write_dataset(work / "volumes", vendor="spectralis", volumes=24, seed=0)
        records_dir = work / "records"
        converter.convert(work / "volumes", records_dir, progress=None)
    meta = records.read_metadata(records_dir)
    n, size, batch = len(meta), _IMAGE_SIZE.value, _BATCH.value
    indices = np.arange(n)
    rows = []

    # octtl: decoded once per training session, then every epoch from memory.
    start = time.perf_counter()
    decoded = pipeline.decode(records_dir, meta, size, "center")
    first = n / (time.perf_counter() - start)
    ds = pipeline.training_batches(decoded, indices, batch, seed=0)
    count = n // batch * batch  # the last partial batch is dropped, as the paper's MATLAB did
    images_per_second(ds, count)  # warm-up
    cached = statistics.median(images_per_second(ds, count) for _ in range(_EPOCHS.value))
    rows += [("octtl, decode once (PNG decode + crop + checks)", first), ("octtl, training epochs from memory", cached)]

    # The Keras-user path: PNG files in class folders, decoded and resized every epoch.
    folders = work / "png"
    for name in records.CLASSES:
        (folders / name).mkdir(parents=True)
    # Write the full B-scans (not crops) so each epoch pays the decode a user would pay.
    ds_full = tf.data.TFRecordDataset(records.shard_paths(records_dir)).map(records.parse)
    for i, example in enumerate(ds_full):
        name = records.CLASSES[int(example[records.LABEL])]
        (folders / name / f"{i:05d}.png").write_bytes(example[records.IMAGE].numpy())
    keras_ds = keras.utils.image_dataset_from_directory(
        folders, labels="inferred", class_names=list(records.CLASSES), color_mode="grayscale",
        image_size=(size, size), batch_size=batch, shuffle=True, seed=0, verbose=False)
    keras_ds = keras_ds.prefetch(tf.data.AUTOTUNE)
    keras_rate = statistics.median(images_per_second(keras_ds, n) for _ in range(3))
    rows.append(("keras image_dataset_from_directory (PNG folders)", keras_rate))

    print(f"\n{n} B-scans, crop {size}x{size}, batch {batch}, {os.cpu_count()} CPU cores, TF {tf.__version__}")
    print(f"| {'pipeline':<50} | {'images/s':>9} |")
    print(f"|{'-' * 52}|{'-' * 11}|")
    for name, rate in rows:
        print(f"| {name:<50} | {rate:>9.0f} |")
    print(f"\nocttl epochs / keras PNG folders: {cached / keras_rate:5.2f}x (target >= 3)")


if __name__ == "__main__":
    app.run(main)
