"""Regenerates docs/report_example.png: a small CPU sweep, its report, and a Chromium screenshot of index.html.

  python tools/report_screenshot.py [--workdir=/tmp/octtl-shot] [--output=docs/report_example.png]

Synthetic volumes -> TFRecords -> `python -m octtl.sweep` (3 networks from scratch, batch 8, 5 folds, both
designs, tiny images, 1 epoch) -> `python -m octtl.report` -> headless Chromium. The sweep resumes, so a second
call with the same --workdir only redoes the report and the screenshot. About 10 minutes on 2 CPU cores.
"""

import os
import pathlib
import subprocess
import sys

from absl import app
from absl import flags

import browser  # tools/browser.py: conftest puts tools/ on the path

from octtl.data import converter

from octtl.synthetic import render

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/octtl-report-screenshot",
                               "Folder for the data, the runs and the report (kept, so a rerun resumes).")
_OUTPUT = flags.DEFINE_string("output", "docs/report_example.png", "Screenshot to write.")
_ARCHS = flags.DEFINE_list("archs", ["squeezenet", "alexnet", "mobilenetv2"], "Networks of the sweep.")
_FOLDS = flags.DEFINE_integer("folds", 5, "Folds (5: the fewest the paired tests accept).", lower_bound=2)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Input size of every network.", lower_bound=32)
_MAX_EPOCHS = flags.DEFINE_integer("max_epochs", 1, "Epochs per run.", lower_bound=1)
_VOLUMES = flags.DEFINE_integer("volumes", 10, "Synthetic volumes.", lower_bound=2)
_BSCANS = flags.DEFINE_integer("bscans", 12, "B-scans per volume.", lower_bound=2)
_WIDTH = flags.DEFINE_integer("width", 1200, "Screenshot width in pixels.", lower_bound=320)
_HEIGHT = flags.DEFINE_integer("height", 2200, "Screenshot height in pixels (the top of the page).", lower_bound=320)


def _python(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, *args], check=True, env=env)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    chromium = browser.find()
    if chromium is None:
        sys.exit("report_screenshot: error: no Chromium on PATH (Debian: apt-get install chromium)")
    work = pathlib.Path(_WORKDIR.value)
    volumes, records_dir, logdir, report = work / "volumes", work / "records", work / "runs", work / "report"
    if not (records_dir / "index.csv").is_file():
        render.write_dataset(volumes, volumes=_VOLUMES.value, bscans=_BSCANS.value, height=96, width=96,
                                seed=3)
        converter.convert(volumes, records_dir, progress=None)
    _python("-m", "octtl.sweep", f"--data_dir={records_dir}", f"--logdir={logdir}",
            f"--archs={','.join(_ARCHS.value)}", "--batches=8", "--designs=baseline,limited",
            f"--folds={_FOLDS.value}", f"--image_size={_IMAGE_SIZE.value}", f"--max_epochs={_MAX_EPOCHS.value}",
            "--weights=none")
    _python("-m", "octtl.report", f"--logdir={logdir}", f"--out_dir={report}")
    png = browser.screenshot(report / "index.html", _OUTPUT.value, _WIDTH.value, _HEIGHT.value, chromium)
    print(f"report_screenshot: {png} ({png.stat().st_size // 1024} KiB) from {report / 'index.html'}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
