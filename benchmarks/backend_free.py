"""The backend-free data steps (issue #26) against TensorFlow's, side by side in one run: agreement and speed.

  python benchmarks/backend_free.py [--bscans=1000] [--crc_megabytes=100] [--real_dir=../shared/data/oct2017-dev]

Prints three tables:
  * CRC-32C of --crc_megabytes random bytes: octtl.data.tfrecord's numpy code and google-crc32c's C code;
  * decoding and resizing --bscans synthetic 496 x 512 B-scans (PNG as octtl.data.converter writes them):
    octtl.data.images (Pillow + numpy) and TensorFlow (tf.io.decode_png + octtl.data.pipeline.crop), eager;
  * agreement of octtl.data.images.resize with tf.image.resize(antialias=True) at 96, 128, 224, 227 and 299 px on
    synthetic B-scans and on the real JPEGs of --real_dir: the largest float difference before rounding and the
    share of uint8 pixels that differ after it.
"""

import os
import pathlib
import sys
import time

from octtl import console  # noqa: E402  (TensorFlow's start-up lines off the table)

console.start_tensorflow()
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from octtl.data import images, pipeline, tfrecord, volumes  # noqa: E402
from octtl.synthetic import render  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
_BSCANS = flags.DEFINE_integer("bscans", 1000, "Synthetic 496 x 512 B-scans decoded and resized.")
_CRC_MEGABYTES = flags.DEFINE_integer("crc_megabytes", 100, "Megabytes whose CRC-32C is timed.")
_REAL_DIR = flags.DEFINE_string("real_dir", str(REPO.parent / "shared" / "data" / "oct2017-dev"),
                                "Real B-scans (JPEG) for the agreement table; skipped where absent.")
SIZES = (96, 128, 224, 227, 299)


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def crc_table(megabytes: int):
    data = np.random.default_rng(0).integers(0, 256, megabytes << 20, dtype=np.uint8).tobytes()
    rows = [("numpy (octtl.data.tfrecord)", *timed(lambda: tfrecord._crc32c_numpy(data)))]
    try:
        import google_crc32c

        rows.append((f"google-crc32c ({google_crc32c.implementation})", *timed(lambda: google_crc32c.value(data))))
    except ImportError:
        pass
    assert len({crc for _, crc, _ in rows}) == 1, "the implementations disagree"
    print(f"\nCRC-32C of {megabytes} MB, one core")
    print("| implementation | seconds | MB/s |\n|---|---:|---:|")
    for name, _, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {megabytes / seconds:.0f} |")


def speed_table(count: int):
    print(f"generating {count} synthetic 496 x 512 B-scans ...", file=sys.stderr)
    bscans, _ = render.make_volume(np.random.default_rng(0), min(count, 49), 496, 512, np.uint8)
    pngs = [volumes.encode_png(bscans[k % len(bscans)]) for k in range(count)]
    print(f"\n{count} B-scans of 496 x 512 (PNG {np.mean([len(p) for p in pngs]) / 1e3:.0f} KB), "
          f"{os.cpu_count()} CPU cores, TF {tf.__version__}")
    print("| step | octtl.data.images s | TensorFlow s |\n|---|---:|---:|")
    ours, ours_s = timed(lambda: [images.decode_png(p) for p in pngs])
    theirs, theirs_s = timed(lambda: [tf.io.decode_png(p, channels=1).numpy() for p in pngs])
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    print(f"| decode | {ours_s:.2f} | {theirs_s:.2f} |")
    for size in (96, 224, 299):
        _, ours_s = timed(lambda: [images.crop(b, size, "resize") for b in ours])
        _, theirs_s = timed(lambda: [pipeline.crop(b, size, "resize").numpy() for b in ours])
        print(f"| resize to {size} | {ours_s:.2f} | {theirs_s:.2f} |")


def agreement_table(real_dir):
    sources = {"synthetic 496 x 512": [b[..., None] for b in render.make_volume(
        np.random.default_rng(1), 8, 496, 512, np.uint8)[0]]}
    paths = sorted(pathlib.Path(real_dir).glob("*/*.jpeg"))[::6] if real_dir else []
    if paths:
        from PIL import Image

        sources[f"real JPEG ({len(paths)})"] = [np.asarray(Image.open(p).convert("L"))[..., None] for p in paths]
    print("\nresize against tf.image.resize(antialias=True)")
    print("| B-scans | size | max float difference | uint8 pixels differing |\n|---|---:|---:|---:|")
    for name, group in sources.items():
        for size in SIZES:
            worst, differing, total = 0.0, 0, 0
            for bscan in group:
                expected = tf.image.resize(bscan, (size, size), antialias=True).numpy()
                got = images.resize(bscan, size)
                worst = max(worst, float(np.abs(got - expected).max()))
                rounded = tf.cast(tf.clip_by_value(tf.round(expected), 0, 255), tf.uint8).numpy()
                differing += int((images.to_uint8(got) != rounded).sum())
                total += rounded.size
            print(f"| {name} | {size} | {worst:g} | {differing} of {total} |")


def main(argv):
    del argv
    crc_table(_CRC_MEGABYTES.value)
    speed_table(_BSCANS.value)
    agreement_table(_REAL_DIR.value if pathlib.Path(_REAL_DIR.value).is_dir() else None)


if __name__ == "__main__":
    app.run(main)
