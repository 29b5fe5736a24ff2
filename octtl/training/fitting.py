"""One run of the protocol on a prepared session: its batches, one `model.fit` with the early stop, its outputs.

`fit` trains from the session's initial weights (restored by the caller) and returns the early stop that holds
the best check, with the training time; `write_outputs` puts the best weights back and writes what the run
folder holds besides result.json (predictions.csv, best.keras, the last TensorBoard events) and returns the
result's metrics. A run that diverges or runs out of memory raises `RunFailed`, which the session records.
"""

import dataclasses
import math
import pathlib
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from octtl import outputs, runs
from octtl.data import augment, pipeline
from octtl.training import early_stop, tensorboard
from octtl.training.config import Config


class RunFailed(Exception):
    """Training diverged or ran out of memory; recorded as status 'failed' in result.json."""


@dataclasses.dataclass
class Fitted:
    """What one fit leaves: the early stop (its checks and the best one) and the seconds spent training."""

    stop: early_stop.HalfEpochEarlyStop
    steps_per_epoch: int
    train_seconds: float


def schedule(config: Config, train_size: int) -> tuple:
    """(iterations per epoch, epochs): MATLAB drops the last partial mini-batch; a fixed-iteration run
    (--max_iterations without the early stop, the paper's extra experiment) takes as many epochs as it needs."""
    steps_per_epoch = train_size // config.batch
    epochs = config.max_epochs
    if config.max_iterations and not config.early_stop:
        epochs = math.ceil(config.max_iterations / steps_per_epoch)
    return steps_per_epoch, epochs


def batches(session, config: Config, train_idx):
    """The run's training batches, reshuffled every epoch with its seed; augmented views where asked for."""
    decoded = session.decoded
    if session.augmentations:
        return augment.training_batches(decoded.images, decoded.labels, train_idx, config.batch, config.seed,
                                        config.size, session.margin, session.augmentations,
                                        config.augment_strength)
    return pipeline.training_batches(decoded, train_idx, config.batch, config.seed)


def fit(session, config: Config, train_idx, val_idx, writer, say: Callable[[str], None],
        progress: bool) -> Fitted:
    """Trains one run: `model.fit` over the epochs, the half-epoch early stop checking the validation loss.

    Args:
        session: The prepared training session (its model, decoded B-scans and `predict`).
        config: The run's settings.
        train_idx, val_idx: The run's training and validation indices.
        writer: The run's TensorBoard writer.
        say: Where the console lines go.
        progress: Keras' progress bar during training.

    Raises:
        RunFailed: A non-finite or exploding loss, out of memory, or no check at all.
    """
    model = session.model
    # Validation never sees an augmentation: the views' central windows are the plain crops.
    val_images, val_labels = session.decoded.crops[val_idx], session.metadata.labels[val_idx]
    steps_per_epoch, epochs = schedule(config, len(train_idx))
    checks = early_stop.check_steps(steps_per_epoch, config.checks_per_epoch)
    say(f"train: {len(train_idx)} training, {len(val_idx)} validation B-scans (majority class "
        f"{majority(val_labels):.4f}); {steps_per_epoch} iterations per epoch, up to {epochs} epochs; "
        f"validation checks at iterations {', '.join(map(str, checks))} of each epoch")
    timer = _EvalTimer(lambda: session.predict(val_images))
    patience = config.patience if config.early_stop else None

    def on_evaluation(e: early_stop.Evaluation, stop: early_stop.HalfEpochEarlyStop):
        if not np.isfinite(e.val_loss):
            raise RunFailed(f"validation loss is {e.val_loss} at iteration {e.iteration}")
        tensorboard.log_check(writer, e)
        # On a terminal the progress bar owns the line: clear it, print, and let the bar redraw below.
        say(("\r\x1b[2K" if progress else "") + check_line(e, stop, steps_per_epoch, patience))

    stop = early_stop.HalfEpochEarlyStop(
        timer, val_labels, steps_per_epoch, config.checks_per_epoch, config.patience,
        early_stop=config.early_stop, max_iterations=config.max_iterations, eval_every=config.eval_every,
        on_evaluation=on_evaluation)
    step_logger = tensorboard.StepLogger(writer, lambda: stop.iteration)
    hparams = {**dataclasses.asdict(config), "image_size": config.size}
    tensorboard.log_start(writer, hparams, f"{config.design}/{config.arch}/batch{config.batch}/fold{config.fold}",
                          val_images)
    started = time.perf_counter()
    try:
        model.fit(batches(session, config, train_idx), epochs=epochs, verbose=1 if progress else 0, shuffle=False,
                  callbacks=[step_logger, stop])
    except tf.errors.ResourceExhaustedError as e:
        raise RunFailed(f"out of memory at batch {config.batch}: {e.message.splitlines()[0]}") from None
    if step_logger.diverged:
        iteration, loss, why = step_logger.diverged
        raise RunFailed(f"training loss is {loss} at iteration {iteration}{why}")
    if stop.best is None:
        raise RunFailed("no validation check ran (fewer iterations than one check interval)")
    return Fitted(stop, steps_per_epoch, time.perf_counter() - started - timer.seconds)


def write_outputs(session, config: Config, fitted: Fitted, val_idx, out: pathlib.Path, writer) -> dict:
    """The best check's model back in place, predictions.csv, best.keras and the last events; the metrics."""
    stop, model = fitted.stop, session.model
    stop.restore_best()
    best = stop.best
    write_predictions(out / runs.PREDICTIONS, session.metadata, val_idx, best.p_fluid)
    if config.save_model:
        _save_model(model, out / runs.BEST_MODEL)
    tensorboard.log_end(writer, best, session.metadata.labels[val_idx])
    return {
        "best_accuracy": best.val_accuracy,
        "best_auc": None if math.isnan(best.val_auc) else best.val_auc,
        "iterations_to_best": best.iteration,
        "iterations": stop.iteration,
        "epochs": stop.epochs_started,
        "steps_per_epoch": fitted.steps_per_epoch,
        "early_stopped": stop.early_stopped,
        "checks": [e.record() for e in stop.evaluations],
        "train_images_per_second": stop.iteration * config.batch / max(fitted.train_seconds, 1e-9),
        "params": int(model.count_params()),
    }


def check_line(e: early_stop.Evaluation, stop: early_stop.HalfEpochEarlyStop, steps_per_epoch: int,
               patience: Optional[int]) -> str:
    """One validation check (or --eval_every point) on the console: metrics, best so far, early-stop countdown."""
    auc = "n/a" if math.isnan(e.val_auc) else f"{e.val_auc:.4f}"
    kind = "check" if e.check else "eval"
    epoch = (e.iteration - 1) // steps_per_epoch + 1
    line = (f"{kind} at iteration {e.iteration} (epoch {epoch}): val loss {e.val_loss:.4f}, accuracy "
            f"{e.val_accuracy:.4f}, AUC {auc}; best accuracy {stop.best.val_accuracy:.4f} at iteration "
            f"{stop.best.iteration}")
    if e.check and patience is not None:
        left = patience + 1 - stop.wait
        line += (f"; early stop after {left} more check{'s' * (left != 1)} without a lower loss"
                 if not stop.early_stopped else "; early stop: loss did not improve")
    return line


def majority(labels) -> float:
    """The share of the most frequent class: what always answering it would score."""
    share = float(np.mean(np.asarray(labels) != 0))
    return max(share, 1.0 - share)


def write_predictions(path, metadata, val_idx, p_fluid):
    """predictions.csv: one row per validation B-scan, written under a temporary name, then renamed."""
    outputs.write_csv(path, runs.PREDICTION_COLUMNS, (
        [metadata.volume_ids[i], int(metadata.slices[i]), int(metadata.labels[i]), repr(float(p)),
         metadata.sources[i]] for i, p in zip(val_idx, p_fluid)))


class _EvalTimer:
    """The validation predictions, timed: evaluation is not training, so its seconds leave the images/s."""

    def __init__(self, predict: Callable[[], np.ndarray]):
        self._predict, self.seconds = predict, 0.0

    def __call__(self) -> np.ndarray:
        start = time.perf_counter()
        probabilities = self._predict()
        self.seconds += time.perf_counter() - start
        return probabilities


def _save_model(model, path):
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    tmp.replace(path)
