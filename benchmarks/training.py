"""Overhead of octtl's training loop over a bare model.fit, measured side by side in one run.

  python benchmarks/training.py [--records_dir=DIR] [--arch=squeezenet] [--image_size=128] [--batch=16]

Both sides train the same network on the same fold for the same iterations and evaluate the
validation set at the same half-epoch checks:
  * octtl: session.train (decode, build, compile, half-epoch early stop with AUC, TensorBoard scalars,
    hparams, images, PR curve, predictions.csv, best.keras, result.json);
  * bare: pipeline.decode + models.build + model.fit over the same batches, with a minimal callback that
    calls model.evaluate at the same iterations, and nothing written.
Runs alternate (bare, octtl, bare, octtl, ...) so drift in machine load hits both alike.
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
import keras  # noqa: E402

from octtl.training import early_stop

from octtl.data import pipeline

from octtl.nets import models

from octtl.data import converter, records

from octtl.synthetic import render

from octtl.training import session  # noqa: E402
from octtl.training.config import Config

_RECORDS_DIR = flags.DEFINE_string("records_dir", None, "Converted records; default: generate synthetic data.")
_ARCH = flags.DEFINE_string("arch", "squeezenet", "Network.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Input side.")
_BATCH = flags.DEFINE_integer("batch", 16, "Batch size.")
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Epochs per run.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Runs of each side.")


class _EvaluateAt(keras.callbacks.Callback):
    """The least a user would write to evaluate at the paper's half-epoch checks."""

    def __init__(self, val, steps):
        super().__init__()
        self._val, self._steps = val, set(steps)

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 in self._steps:
            self.model.evaluate(*self._val, batch_size=64, verbose=0)


def bare(config, metadata, fold):
    """Decode, build, compile and fit with an evaluate at each check: the least a user would write."""
    start = time.perf_counter()
    train_idx, val_idx = session.splits(config, metadata, config.design, fold)
    keras.utils.set_random_seed(config.seed)
    decoded = pipeline.decode(config.data_dir, metadata, config.size, config.crop)
    train_ds = pipeline.training_batches(decoded, train_idx, config.batch, config.seed)
    val = (decoded.images[val_idx], decoded.labels[val_idx])
    model = models.build(config.arch, weights="none", image_size=config.size)
    model.compile(optimizer=keras.optimizers.SGD(config.lr, momentum=config.momentum),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    steps = early_stop.check_steps(len(train_idx) // config.batch, config.checks_per_epoch)
    model.fit(train_ds, epochs=config.max_epochs, verbose=0, callbacks=[_EvaluateAt(val, steps)])
    return time.perf_counter() - start


def octtl_run(config, fold):
    start = time.perf_counter()
    result = session.train(config, fold, say=lambda line: None, progress=False)
    assert result["status"] == "ok", result
    return time.perf_counter() - start


def main(argv):
    del argv
    work = pathlib.Path(tempfile.mkdtemp(prefix="octtl-bench-train-"))
    if _RECORDS_DIR.value:
        records_dir = _RECORDS_DIR.value
    else:
        print("generating 24 synthetic Spectralis volumes ...", file=sys.stderr)
        render.write_dataset(work / "volumes", volumes=24, seed=0)
        records_dir = work / "records"
        converter.convert(work / "volumes", records_dir, progress=None)
    metadata = records.read_metadata(records_dir)
    config = Config(data_dir=str(records_dir), logdir=str(work / "runs"), arch=_ARCH.value,
                             batch=_BATCH.value, weights="none", image_size=_IMAGE_SIZE.value,
                             max_epochs=_EPOCHS.value, patience=10**6, overwrite=True)
    bare_times, octtl_times = [], []
    for _ in range(_REPEATS.value):
        bare_times.append(bare(config, metadata, 0))
        octtl_times.append(octtl_run(config, 0))
        keras.backend.clear_session()
    train_size = len(session.splits(config, metadata, config.design, 0)[0])
    iterations = train_size // config.batch * config.max_epochs
    b, o = statistics.median(bare_times), statistics.median(octtl_times)
    print(f"\n{config.arch} at {config.size} px, batch {config.batch}, {iterations} iterations, "
          f"{config.checks_per_epoch * config.max_epochs} validation checks, {os.cpu_count()} CPU cores")
    print(f"| {'loop':<48} | {'wall s (median)':>15} | {'runs':>4} |")
    print(f"|{'-' * 50}|{'-' * 17}|{'-' * 6}|")
    print(f"| {'bare model.fit + model.evaluate at checks':<48} | {b:>15.1f} | {len(bare_times):>4} |")
    print(f"| {'octtl session.train (all outputs written)':<48} | {o:>15.1f} | {len(octtl_times):>4} |")
    print(f"\nocttl overhead: {100 * (o / b - 1):+.1f}% (target <= 10%)")


if __name__ == "__main__":
    app.run(main)
