r"""What `jax.jit` is worth on JAX: one run with octtl's forced jit and one with Keras' steps un-jitted, side by side.

  KERAS_BACKEND=jax python benchmarks/jax_jit.py [--volumes=12] [--image_size=96] [--max_epochs=2]

octtl compiles the training and prediction steps with `jax.jit` whatever --jit_compile says
(octtl.nets.devices.jit_compile); before, --jit_compile=false (the default) reached Keras' JAX trainer, which
then ran every step op by op. Both runs train squeezenet from its ImageNet weights on the same synthetic records
(fold 0, batch 16), each in its own session with a cold compilation cache; printed: wall seconds of the session,
training images/s (result.json's, evaluation excluded), and their ratios.
"""

import os
import pathlib
import tempfile
import time

from absl import app, flags

_VOLUMES = flags.DEFINE_integer("volumes", 12, "Synthetic volumes of 49 B-scans.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 96, "Input side.")
_MAX_EPOCHS = flags.DEFINE_integer("max_epochs", 2, "Epochs at most.")


def main(argv):
    del argv
    work = pathlib.Path(tempfile.mkdtemp(prefix="octtl-jit-"))
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(work / "no-cache")  # each session compiles (a cold cache)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "1000000"  # ... and keeps nothing for the other
    from octtl import console

    if console.start_backend() != "jax":
        raise SystemExit("jax_jit: run with KERAS_BACKEND=jax")
    from octtl.data import converter
    from octtl.nets import devices
    from octtl.synthetic import render
    from octtl.training import session
    from octtl.training.config import Config

    render.write_dataset(work / "volumes", volumes=_VOLUMES.value, seed=0)
    converter.convert(work / "volumes", work / "records", progress=None)
    forced = devices.jit_compile
    rows = []
    for name, jit in (("jax.jit (octtl)", forced), ("op by op (Keras, jit_compile=False)", bool)):
        devices.jit_compile = jit
        config = Config(data_dir=str(work / "records"), logdir=str(work / name[:6]), arch="squeezenet", batch=16,
                        image_size=_IMAGE_SIZE.value, max_epochs=_MAX_EPOCHS.value)
        started = time.time()
        result = session.Session(config, say=lambda line: None, progress=False).run("baseline", 0)
        rows.append((name, time.time() - started, result["train_images_per_second"], result["best_accuracy"]))
    devices.jit_compile = forced
    print("| steps | session wall s | x jit | train images/s | x jit | best validation accuracy |")
    print("|---|---|---|---|---|---|")
    for name, wall, speed, accuracy in rows:
        print(f"| {name} | {wall:.0f} | {wall / rows[0][1]:.2f} | {speed:.0f} | {speed / rows[0][2]:.2f} | "
              f"{accuracy:.3f} |")


if __name__ == "__main__":
    app.run(main)
