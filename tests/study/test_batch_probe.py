"""Tests of the largest-batch probe (octtl/max_batch.py, octtl/study/batch_probe.py) and the sweep's use of its table."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import REPO
from conftest import run_main
from octtl import max_batch, runs
from octtl.study import batch_probe, plan

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def fits_up_to(limit, calls=None):
    def fits(batch):
        if calls is not None:
            calls.append(batch)
        return (True, batch_probe.FITS) if batch <= limit else (False, batch_probe.OUT_OF_MEMORY)
    return fits


@pytest.mark.parametrize("limit, cap, largest, tried", [
    (48, 256, 32, [8, 16, 32, 64]),       # doubles until out of memory, keeps the last that fitted
    (10**6, 256, 256, [8, 16, 32, 64, 128, 256]),  # stops at the cap
    (8, 256, 8, [8, 16]),
    (5, 256, 4, [8, 4]),                  # 8 does not fit: backs off below it
    (1, 256, 1, [8, 4, 2, 1]),
    (0, 256, 0, [8, 4, 2, 1]),            # nothing fits
])
def test_search_doubles_until_memory_runs_out_and_keeps_the_last_fit(limit, cap, largest, tried):
    calls = []
    found, outcomes = batch_probe.search(fits_up_to(limit, calls), cap=cap)
    assert found == largest and calls == tried
    assert all((outcomes[b] == batch_probe.FITS) == (b <= limit) for b in tried)


class FakeStep(batch_probe.Trial):
    """A trial whose step raises TensorFlow's out-of-memory error above a batch, as a GPU would."""

    def __init__(self, limit, error=tf.errors.ResourceExhaustedError):
        super().__init__("squeezenet", 32, gpu=True)
        self.limit, self.error = limit, error

    def _step(self, batch):
        if batch > self.limit:
            raise self.error(None, None, "OOM when allocating tensor with shape[64,64,111,111]")
        return batch * 1000


def test_out_of_memory_is_caught_and_the_search_backs_off():
    trial = FakeStep(16)
    assert batch_probe.search(trial, cap=256)[0] == 16
    assert trial.peaks == {8: 8000, 16: 16000}
    # Allocation failures reported as internal errors count too; any other error is a bug and is raised.
    assert batch_probe.search(FakeStep(8, tf.errors.InternalError), cap=256)[0] == 8
    with pytest.raises(tf.errors.InvalidArgumentError):
        batch_probe.search(FakeStep(8, tf.errors.InvalidArgumentError), cap=256)


def test_host_memory_guard_refuses_a_batch_predicted_not_to_fit(monkeypatch):
    trial = FakeStep(10**6)
    trial.gpu = False
    trial._base = 1 << 30
    monkeypatch.setattr(batch_probe, "peak_host_bytes", lambda: 2 << 30)  # batch 8 peaked 1 GiB above base
    monkeypatch.setattr(batch_probe, "host_available_bytes", lambda: 6 << 30)
    trial._step = lambda batch: 2 << 30 if batch == 8 else (1 << 30) + (batch // 8 << 30)
    largest, tried = batch_probe.search(trial, cap=256)
    # Predicted peaks: 16 -> 3 GiB, 32 -> 5 GiB, 64 -> 9 GiB; 0.75 x 6 GiB = 4.5 GiB may be added to 2 GiB.
    assert largest == 32 and tried[64] == batch_probe.PREDICTED_OUT_OF_MEMORY
    assert batch_probe.predicted_peak(100, 8, 300, 32) == 900


def test_probe_on_cpu_writes_the_table_the_sweep_reads(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "octtl.max_batch", "--arch=squeezenet", "--image_size=32",
                           "--max_batch=16", f"--logdir={tmp_path}"], capture_output=True, text=True, env=ENV,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no GPU: measuring host memory" in proc.stdout
    table = json.loads((tmp_path / runs.MAX_BATCH).read_text())
    entry = table["archs"]["squeezenet"]
    assert entry["largest_batch"] == 16 and entry["capped"] and entry["image_size"] == 32
    assert entry["tried"] == {"8": "fits", "16": "fits"} and entry["device"] == "CPU (host memory)"
    assert entry["peak_bytes"]["16"] >= entry["peak_bytes"]["8"] > 0

    # Another network measured later joins the table; the first stays.
    batch_probe.write_table(tmp_path / runs.MAX_BATCH, {"vgg16": dict(entry, largest_batch=8)}, "GPU x")
    table = batch_probe.read_table(tmp_path / runs.MAX_BATCH)
    assert set(table["archs"]) == {"squeezenet", "vgg16"} and table["archs"]["vgg16"]["device"] == "GPU x"

    # --batches=auto: the probe's value where it measured the size the sweep trains at, else Table I.
    batches, note = plan.batches_from(["auto"], ["squeezenet", "alexnet"], tmp_path / runs.MAX_BATCH, 32)
    assert batches == {"squeezenet": [8, 16], "alexnet": [8, 16, 32, 64]}
    assert note == "largest batch: squeezenet 16 (probe), alexnet 64 (Table I)"
    batches, note = plan.batches_from(["auto"], ["squeezenet"], tmp_path / runs.MAX_BATCH, None)  # 227 px: not measured
    assert batches == {"squeezenet": [8, 16, 32, 64]} and "(Table I)" in note
    elsewhere = tmp_path / "elsewhere.json"
    (tmp_path / runs.MAX_BATCH).rename(elsewhere)
    assert plan.batches_from(["auto"], ["squeezenet"], str(elsewhere), 32)[0] == {"squeezenet": [8, 16]}


def test_too_small_an_image_is_one_error_line(tmp_path):
    code, _, _ = run_main(max_batch, "--arch=alexnet", "--image_size=32", f"--logdir={tmp_path}")
    assert code == "max_batch: error: --image_size=32: alexnet needs at least 63"
    assert not list(tmp_path.iterdir())
