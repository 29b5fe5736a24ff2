"""The largest batch each network trains at on this machine, and the table the sweep reads it from.

The paper "estimated the largest batch size for each architecture" (Table I, on an 11 GB GPU). Here a batch
"fits" when a training step (SGD with momentum, as octtl.train compiles it) and a validation forward pass at the
run's evaluation batch both complete. Batches double from 8 until one runs out of memory, then the last that
fitted is kept; if 8 does not fit, halves down to 1.

On a GPU the out-of-memory error is caught and the search backs off. On the CPU running out of host memory
means the kernel's OOM killer, not an exception, so the next batch is tried only when its extrapolated peak
memory (from the previous batch's peak resident size) leaves a margin of the host's available memory.
"""

import datetime
import gc
import json
import pathlib
import resource
from typing import Callable, Dict, Tuple

from octtl import outputs, protocol
from octtl.data.pipeline import host_available_bytes  # noqa: F401  (the probe's guard; owned by the pipeline)


FITS = "fits"
OUT_OF_MEMORY = "out of memory"
PREDICTED_OUT_OF_MEMORY = "predicted out of host memory"
HOST_MARGIN = 0.75  # share of MemAvailable the next CPU attempt may be predicted to use


def search(fits: Callable[[int], Tuple[bool, str]], start: int = 8, cap: int = 256) -> Tuple[int, Dict[int, str]]:
    """The largest power-of-two batch that fits, doubling from `start` to `cap` and halving below `start`.

    Args:
        fits: Tries a batch; returns (fits, outcome word for the table).
        start: First batch tried (the paper's smallest, 8).
        cap: Largest batch tried.

    Returns:
        (largest fitting batch, 0 if not even 1 fits; {batch: outcome} of every attempt).
    """
    tried: Dict[int, str] = {}
    batch, largest = start, 0
    while batch <= cap:
        ok, outcome = fits(batch)
        tried[batch] = outcome
        if not ok:
            break
        largest = batch
        batch *= 2
    if largest == 0:
        batch = start // 2
        while batch >= 1:
            ok, outcome = fits(batch)
            tried[batch] = outcome
            if ok:
                largest = batch
                break
            batch //= 2
    return largest, tried


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an exception from a training step means the batch did not fit in memory (on any Keras backend)."""
    from octtl.nets import devices

    return devices.is_out_of_memory(error)


def peak_host_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def predicted_peak(base: int, previous_batch: int, previous_peak: int, batch: int) -> int:
    """Peak memory at `batch` extrapolated linearly from the peak at `previous_batch` above a base."""
    return base + (previous_peak - base) * batch // previous_batch


class Trial:
    """Tries batches of one network at one input size, one after the other, in this process.

    Args:
        arch: Network name.
        image_size: Input size.
        gpu: Measure GPU memory (True) or host memory (False).
        mixed_precision, jit_compile: As octtl.train's flags (they change the memory a step takes).
    """

    def __init__(self, arch: str, image_size: int, gpu: bool, mixed_precision: bool = False,
                 jit_compile: bool = False):
        self.arch, self.image_size, self.gpu = arch, image_size, gpu
        self.mixed_precision, self.jit_compile = mixed_precision, jit_compile
        self.peaks: Dict[int, int] = {}
        self._base = peak_host_bytes()

    def __call__(self, batch: int) -> Tuple[bool, str]:
        if not self.gpu and self.peaks:
            previous = max(self.peaks)
            available = host_available_bytes()
            need = predicted_peak(self._base, previous, self.peaks[previous], batch)
            if available is not None and need - peak_host_bytes() > HOST_MARGIN * available:
                return False, PREDICTED_OUT_OF_MEMORY
        try:
            self.peaks[batch] = self._step(batch)
            return True, FITS
        except Exception as e:  # noqa: BLE001  (only memory errors are an answer; the rest re-raise)
            if not is_out_of_memory(e):
                raise
            return False, OUT_OF_MEMORY
        finally:
            import keras

            keras.backend.clear_session()
            gc.collect()

    def _step(self, batch: int) -> int:
        """One training step and one validation pass at `batch`; returns the peak bytes they used."""
        import keras
        import numpy as np

        from octtl.nets import devices, models

        if self.gpu:
            devices.reset_peak_memory()
        model = models.build(self.arch, num_classes=2, weights="none", image_size=self.image_size)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=protocol.LR, momentum=protocol.MOMENTUM),
                      loss=keras.losses.SparseCategoricalCrossentropy(),
                      jit_compile=devices.jit_compile(self.jit_compile))
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (batch, self.image_size, self.image_size, 1)).astype(np.float32)  # gray, as the records
        y = rng.integers(0, 2, batch)
        # Twice: the first call also creates the optimizer's momentum slots, which count against memory.
        for _ in range(2):
            loss = model.train_on_batch(x, y)
        eval_batch = protocol.eval_batch(batch)  # what a run validates with
        model.predict_on_batch(np.resize(x, (eval_batch,) + x.shape[1:]))
        if not np.isfinite(np.asarray(loss)).all():
            raise RuntimeError(f"{self.arch}: non-finite loss at batch {batch}")
        if self.gpu:
            return devices.peak_memory()
        return peak_host_bytes()


def probe(arch: str, image_size: int, gpu: bool, cap: int = 256, mixed_precision: bool = False,
          jit_compile: bool = False) -> dict:
    """One network's table entry: largest batch, every attempt's outcome and peak memory."""
    trial = Trial(arch, image_size, gpu, mixed_precision, jit_compile)
    largest, tried = search(trial, cap=cap)
    return {
        "largest_batch": largest,
        "image_size": image_size,
        "capped": largest >= cap,
        "tried": {str(b): outcome for b, outcome in sorted(tried.items())},
        "peak_bytes": {str(b): peak for b, peak in sorted(trial.peaks.items())},
        "memory": "GPU" if gpu else "host",
        "mixed_precision": mixed_precision,
        "jit_compile": jit_compile,
        "measured": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def read_table(path) -> dict:
    """The probe table at `path` ({} when the probe has not been run).

    Raises:
        ValueError: the file is not JSON.
    """
    try:
        return json.loads(pathlib.Path(path).read_text())
    except FileNotFoundError:
        return {}


def write_table(path, entries: Dict[str, dict], device: str) -> dict:
    """Merges `entries`, measured on `device`, into the table at `path` (other networks' entries stay).

    The table is {"archs": {arch: entry}}; it is written to a temporary file and renamed into place.
    """
    path = pathlib.Path(path)
    table = read_table(path) or {}
    table.setdefault("archs", {}).update({arch: {**entry, "device": device} for arch, entry in entries.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs.write_json(path, table)
    return table
