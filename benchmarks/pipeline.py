"""Input-pipeline throughput, measured side by side in one run.

  python benchmarks/pipeline.py [--records_dir=DIR] [--image_size=224] [--batch=32] [--epochs=3]

Compares, on the synthetic paper-sized dataset (24 Spectralis volumes, 1176 B-scans):
  * octtl: records -> decode -> centre crop -> cache -> shuffle -> batch -> [-1, 1]
    (first epoch, then cached epochs);
  * numpy: the same crops held in a numpy array, through from_tensor_slices;
  * keras folders: PNG files in class folders read with keras.utils.image_dataset_from_directory,
    the pipeline a Keras user would write instead.
"""

import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from octtl import data, records, synthetic  # noqa: E402

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
        synthetic.write_dataset(work / "volumes", vendor="spectralis", volumes=24, seed=0)
        records_dir = work / "records"
        records.convert(work / "volumes", records_dir, progress=None)
    meta = data.read_metadata(records_dir)
    n, size, batch = len(meta), _IMAGE_SIZE.value, _BATCH.value
    indices = np.arange(n)
    rows = []

    # octtl: the first epoch decodes PNGs, later ones read the in-memory cache.
    ds = data.dataset(records_dir, indices, size, batch, training=True)
    first = images_per_second(ds, n)

    # numpy: the crops already in memory, the fastest a from_tensor_slices pipeline can be.
    crops = np.concatenate([x.numpy() for x, _ in data.dataset(
        records_dir, indices, size, 256, training=False, rescale_mode="none")])
    numpy_ds = (tf.data.Dataset.from_tensor_slices((crops, meta.labels.astype(np.int32)))
                .shuffle(n, seed=0, reshuffle_each_iteration=True).batch(batch)
                .map(lambda x, y: (data.rescale(x), y), num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))
    images_per_second(numpy_ds, n)  # warm-up, as octtl's first epoch was
    # Alternate the two so drift in machine load hits both alike.
    cached_rates, numpy_rates = [], []
    for _ in range(_EPOCHS.value):
        cached_rates.append(images_per_second(ds, n))
        numpy_rates.append(images_per_second(numpy_ds, n))
    cached, numpy_rate = statistics.median(cached_rates), statistics.median(numpy_rates)
    rows += [("octtl, first epoch (decode + crop)", first), ("octtl, cached epochs", cached),
             ("numpy array, from_tensor_slices", numpy_rate)]

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
    keras_ds = keras_ds.map(lambda x, y: (x / 127.5 - 1.0, y)).prefetch(tf.data.AUTOTUNE)
    keras_rate = statistics.median(images_per_second(keras_ds, n) for _ in range(3))
    rows.append(("keras image_dataset_from_directory (PNG folders)", keras_rate))

    print(f"\n{n} B-scans, crop {size}x{size}, batch {batch}, {os.cpu_count()} CPU cores, TF {tf.__version__}")
    print(f"| {'pipeline':<50} | {'images/s':>9} |")
    print(f"|{'-' * 52}|{'-' * 11}|")
    for name, rate in rows:
        print(f"| {name:<50} | {rate:>9.0f} |")
    print(f"\ncached octtl / numpy path:        {cached / numpy_rate:5.2f}x (target >= 1)")
    print(f"cached octtl / keras PNG folders: {cached / keras_rate:5.2f}x (target >= 3)")


if __name__ == "__main__":
    app.run(main)
