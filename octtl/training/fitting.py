"""One run of the protocol on a prepared session: its batches, one `model.fit` with the early stop, its outputs.

`fit` trains from the session's initial weights (restored by the caller), in one phase or two (--trainable), and
returns the early stop that holds the best check, with the training time. Its batches come from tf.data on
TensorFlow and from `HostBatches` (a keras.utils.PyDataset over numpy) on the other backends and for a frozen
backbone's head everywhere: the same examples, crops and augmentations, shuffled by another generator (tf.data's,
numpy's), so one seed orders the batches differently on TensorFlow and elsewhere. `write_outputs` puts the best
weights back and writes what the run folder holds besides result.json (predictions.csv, best.keras, the last
TensorBoard events) and returns the result's metrics. A run that diverges or runs out of memory raises
`RunFailed`, which the session records.
"""

import dataclasses
import functools
import math
import pathlib
import time
from typing import Callable, Optional

import keras
import numpy as np

from octtl import console, outputs, runs
from octtl.data import augment_numpy, pipeline
from octtl.nets import devices
from octtl.training import clinical, early_stop, events
from octtl.training.config import Config


class RunFailed(Exception):
    """Training diverged or ran out of memory; recorded as status 'failed' in result.json."""


@dataclasses.dataclass
class Fitted:
    """What one fit leaves: the (last phase's) early stop, its checks and best one, and the seconds spent training."""

    stop: early_stop.HalfEpochEarlyStop
    steps_per_epoch: int
    train_seconds: float
    batch: int
    epochs: int
    phases: Optional[dict] = None  # --trainable=head/two_phase: each phase's iterations ({"head": n, "finetune": m})
    best_phase: Optional[str] = None  # which phase reached the best check: "head" or "finetune"


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What one run trains on and for how long.

    Attributes:
        train_idx: The training examples.
        batch: The batch trained at: --batch, or a learning-curve point's images where they are fewer.
        steps_per_epoch: Iterations per epoch (MATLAB drops the last partial mini-batch).
        epochs: Epochs at most.
        cycle: Whether the training examples are cycled within an epoch: a learning-curve point trains for the
            iterations the whole training folds get, however few its images, so that a small N does not also
            mean a handful of updates.
        volume_ids: A learning-curve point's volumes (None for the whole training folds).
        full_train_size: The whole training folds' examples, whose iterations a point trains for.
    """

    train_idx: np.ndarray
    batch: int
    steps_per_epoch: int
    epochs: int
    cycle: bool = False
    volume_ids: Optional[list] = None
    full_train_size: Optional[int] = None

    @classmethod
    def whole(cls, config: Config, train_idx) -> "Schedule":
        """The fold's whole training data, the paper's epochs."""
        steps = len(train_idx) // config.batch
        return cls(np.asarray(train_idx), config.batch, steps, _epochs(config, steps))

    @classmethod
    def point(cls, config: Config, subset, full_train_size: int, volume_ids: list) -> "Schedule":
        """A learning-curve point: its volumes' examples for the iterations the whole training folds get."""
        steps = full_train_size // config.batch
        return cls(np.asarray(subset), min(config.batch, len(subset)), steps, _epochs(config, steps), True,
                   volume_ids, full_train_size)

    @property
    def budget(self) -> int:
        """The iterations the run may take (fewer if the early stop ends it)."""
        return self.steps_per_epoch * self.epochs

    def record(self) -> dict:
        """What result.json says of a learning-curve point's data and budget (nothing for the whole folds)."""
        if not self.cycle:
            return {}
        return {"train_size": int(len(self.train_idx)), "full_train_size": int(self.full_train_size),
                "train_volume_count": len(self.volume_ids),
                "train_volume_ids": self.volume_ids, "train_batch": int(self.batch),
                "iteration_budget": int(self.budget)}


def _epochs(config: Config, steps_per_epoch: int) -> int:
    # The paper's fixed-iteration experiment (--max_iterations without the early stop): as many epochs as the
    # iterations need.
    if config.max_iterations and not config.early_stop:
        return math.ceil(config.max_iterations / steps_per_epoch)
    return config.max_epochs


def batches(session, config: Config, schedule: Schedule):
    """The run's training batches, reshuffled every epoch with its seed; augmented views where asked for; a
    learning-curve point's cycled so that every epoch has the whole folds' iterations."""
    decoded = session.decoded
    if devices.backend() != "tensorflow":
        return HostBatches(decoded.images, session.targets, schedule, config.seed, config.size, session.margin,
                           session.augmentations, config.augment_strength)
    from octtl.data import augment  # tf.data's: TensorFlow's backend only

    if session.augmentations:
        ds = augment.training_batches(decoded.images, session.targets, schedule.train_idx, schedule.batch,
                                      config.seed, config.size, session.margin, session.augmentations,
                                      config.augment_strength)
    else:
        ds = pipeline.training_batches(decoded, schedule.train_idx, schedule.batch, config.seed, session.targets)
    return ds.repeat() if schedule.cycle else ds


class StepLogger(keras.callbacks.Callback):
    """events.StepLog as a Keras callback: logs every iteration, stops training on a non-finite or exploding loss.

    Args:
        writer: The run's Writer.
        iteration: Returns the number of iterations finished before the current one.
        first_loss: An earlier phase's first loss (events.StepLog).
    """

    def __init__(self, writer: events.Writer, iteration: Callable[[], int], first_loss: Optional[float] = None):
        super().__init__()
        self._log = events.StepLog(writer, iteration, first_loss)

    @property
    def first_loss(self) -> Optional[float]:
        """The run's first training loss, what divergence is measured against."""
        return self._log.first_loss

    @property
    def diverged(self):
        """(iteration, loss, why) once the loss diverged, else None."""
        return self._log.diverged

    def on_train_batch_end(self, batch, logs=None):
        """Logs the iteration's loss and accuracy; stops training where they diverged."""
        if self._log.update(logs):
            self.model.stop_training = True


class HostBatches(keras.utils.PyDataset):
    """The run's training batches made on the host in numpy, for the backends other than TensorFlow.

    Batch k of Keras epoch e is step g = e * steps_per_epoch + k of one stream through the data: data epoch
    g // (examples // batch) in octtl.data.augment_numpy's order for that epoch, augmented from (seed, data epoch,
    step), so whole-fold runs reshuffle every epoch (the last partial batch dropped) and a learning-curve point
    cycles its few examples through the whole folds' iterations. Any batch is computed from its number alone, so
    the batches are the same whatever threads make them.
    """

    def __init__(self, views: np.ndarray, targets: np.ndarray, schedule: Schedule, seed: int, size: int,
                 margin: int, augmentations, strength: float):
        super().__init__(workers=2 if augmentations else 1)
        self._views, self._targets, self._schedule, self._seed = views, targets, schedule, seed
        self._augment = (augment_numpy.make_augment(size, margin, augmentations, strength)
                         if augmentations or margin else None)
        self._per_data_epoch = len(np.unique(schedule.train_idx)) // schedule.batch
        self._orders = {}
        self.epoch = 0

    def __len__(self):
        return self._schedule.steps_per_epoch

    def __getitem__(self, k):
        step = self.epoch * self._schedule.steps_per_epoch + int(k)
        data_epoch, within = divmod(step, self._per_data_epoch)
        order = self._orders.get(data_epoch)
        if order is None:
            order = self._orders[data_epoch] = augment_numpy.epoch_order(self._schedule.train_idx, self._seed,
                                                                         data_epoch)
            self._orders.pop(data_epoch - 2, None)  # a batch of the epoch before may still be in flight
        batch = self._schedule.batch
        chosen = order[within * batch:(within + 1) * batch]
        views, targets = self._views[chosen], self._targets[chosen]
        if self._augment is None:
            return views, targets
        return self._augment(views, targets, (self._seed, data_epoch, within))

    def on_epoch_end(self):
        self.epoch += 1


def fit(session, config: Config, schedule: Schedule, val_idx, writer, say: Callable[[str], None],
        progress: bool) -> Fitted:
    """Trains one run: `model.fit` over the epochs, the half-epoch early stop checking the validation loss.

    --trainable=all fits the session's network; head fits its frozen-backbone trainer (octtl.training.frozen);
    two_phase fits that trainer to its early stop, puts its best check back and fits the whole network at
    --finetune_lr under a second early stop, whose best replaces the head's only by beating it.

    Args:
        session: The prepared training session (its model, decoded B-scans and `predict`).
        config: The run's settings.
        schedule: What the run trains on and for how long.
        val_idx: The run's validation indices.
        writer: The run's TensorBoard writer.
        say: Where the console lines go.
        progress: Keras' progress bar during training.

    Raises:
        RunFailed: A non-finite or exploding loss, out of memory, or no check at all.
    """
    # Validation never sees an augmentation: the views' central windows are the plain crops.
    val_images, val_labels = session.decoded.crops[val_idx], session.targets[val_idx]
    checks = early_stop.check_steps(schedule.steps_per_epoch, config.checks_per_epoch)
    point = (f" B-scans of {console.count(len(schedule.volume_ids), 'volume')} (a learning-curve point, repeat "
             f"{config.repeat}), batch {schedule.batch}, for the iterations of the whole training folds"
             if schedule.cycle else "")
    say(f"train: {len(schedule.train_idx)} training{point}, {len(val_idx)} validation B-scans (majority class "
        f"{session.task.majority(val_labels):.4f}); {schedule.steps_per_epoch} iterations per epoch, up to "
        f"{schedule.epochs} epochs{' per phase' if config.trainable == 'two_phase' else ''}; validation checks at "
        f"iterations {', '.join(map(str, checks))} of each epoch")
    hparams = {**dataclasses.asdict(config), "image_size": config.size}
    events.log_start(writer, hparams, f"{config.design}/{config.arch}/batch{config.batch}/fold{config.fold}",
                     val_images)
    whole = lambda: session.predict(val_images)  # noqa: E731
    phase = functools.partial(_phase, session, config, schedule, val_labels, writer, say, progress)
    if config.trainable == "all":
        stop, seconds, _ = phase(session.model, batches(session, config, schedule), whole)
        return Fitted(stop, schedule.steps_per_epoch, seconds, schedule.batch, stop.epochs_started)
    frozen = session.frozen
    data = HostBatches(frozen.views(session.decoded.images), session.targets, schedule, config.seed, config.size,
                       session.margin, session.augmentations, config.augment_strength)
    with frozen.head_only():
        head, seconds, first_loss = phase(frozen.trainer, data,
                                          (lambda: frozen.predict(val_idx)) if frozen.cached else whole)
    phases = {"head": head.iteration}
    if config.trainable == "head":
        return Fitted(head, schedule.steps_per_epoch, seconds, schedule.batch, head.epochs_started, phases, "head")
    head.restore_best()
    say(f"train: the head's early stop at iteration {head.iteration}; fine-tuning every layer at lr "
        f"{config.second_lr:g} from its best check (iteration {head.best.iteration})")
    stop, more, _ = phase(session.model, batches(session, config, schedule), whole, continue_from=head,
                          first_loss=first_loss)
    phases["finetune"] = stop.iteration - head.iteration
    best_phase = "head" if stop.best is head.best else "finetune"
    return Fitted(stop, schedule.steps_per_epoch, seconds + more, schedule.batch,
                  head.epochs_started + stop.epochs_started, phases, best_phase)


def _phase(session, config: Config, schedule: Schedule, val_labels, writer, say: Callable[[str], None],
           progress: bool, model, data, predict: Callable[[], np.ndarray],
           continue_from: Optional[early_stop.HalfEpochEarlyStop] = None,
           first_loss: Optional[float] = None) -> tuple:
    """One `model.fit` of `model` on `data` under its own early stop (continuing `continue_from`'s checks, its
    divergence measured against the run's `first_loss`); returns the stop, the training seconds and the run's first
    loss."""
    patience = config.patience if config.early_stop else None
    stop_start = continue_from.iteration if continue_from is not None else 0

    def on_evaluation(e: early_stop.Evaluation, stop: early_stop.HalfEpochEarlyStop):
        if not np.isfinite(e.val_loss):
            raise RunFailed(f"validation loss is {e.val_loss} at iteration {e.iteration}")
        events.log_check(writer, e)
        # On a terminal the progress bar owns the line: clear it, print, and let the bar redraw below.
        say(("\r\x1b[2K" if progress else "") + check_line(e, stop, schedule.steps_per_epoch, patience,
                                                                session.task.auc_words, stop_start))

    timer = _EvalTimer(predict)
    stop = early_stop.HalfEpochEarlyStop(
        timer, val_labels, schedule.steps_per_epoch, config.checks_per_epoch, config.patience,
        early_stop=config.early_stop, max_iterations=config.max_iterations, eval_every=config.eval_every,
        on_evaluation=on_evaluation, evaluate=session.task.evaluate, continue_from=continue_from)
    step_logger = StepLogger(writer, lambda: stop.iteration, first_loss)
    started = time.perf_counter()
    try:
        model.fit(data, epochs=schedule.epochs, verbose=1 if progress else 0, shuffle=False,
                  steps_per_epoch=schedule.steps_per_epoch if schedule.cycle else None,
                  callbacks=[step_logger, stop])
    except Exception as e:  # noqa: BLE001  (only running out of memory is a failed run; the rest re-raise)
        if not devices.is_out_of_memory(e):
            raise
        raise RunFailed(f"out of memory at batch {config.batch}: {devices.first_line(e)}") from None
    if step_logger.diverged:
        iteration, loss, why = step_logger.diverged
        raise RunFailed(f"training loss is {loss} at iteration {iteration}{why}")
    if stop.best is None:
        raise RunFailed("no validation check ran (fewer iterations than one check interval)")
    return stop, time.perf_counter() - started - timer.seconds, step_logger.first_loss


def write_outputs(session, config: Config, fitted: Fitted, split, out: pathlib.Path, writer) -> dict:
    """The best check's model back in place, its predictions, best.keras and the last events; the metrics.

    With a held-out test fold, the chosen checkpoint (chosen on validation alone) is scored once on it:
    test_predictions.csv and the `test_*` metrics.
    """
    stop, model, task = fitted.stop, session.model, session.task
    stop.restore_best()
    best = stop.best
    write_predictions(out / runs.PREDICTIONS, session, split.validation, best.probabilities)
    tested = test(session, split.test, best.iteration)
    judged = {}
    if best.p_fluid is not None:  # operating points and calibration of a two-class network (octtl.training.clinical)
        labels = session.targets
        judged = clinical.record(best.p_fluid, labels[split.validation], None if tested is None else tested.p_fluid,
                                 labels[split.test], config.target_sensitivity, session.metadata.vendors[split.test])
    if tested is not None:
        write_predictions(out / runs.TEST_PREDICTIONS, session, split.test, tested.probabilities)
    if config.save_model:
        _save_model(model, out / runs.BEST_MODEL)
    events.log_end(writer, best, session.targets[split.validation], tested)
    return {
        **({} if tested is None else {
            "test_accuracy": tested.val_accuracy, "test_auc": None if math.isnan(tested.val_auc) else tested.val_auc,
            "test_loss": tested.val_loss, "test_majority_rate": task.majority(session.targets[split.test]),
            **task.record(tested, "test_")}),
        **task.record(best),
        "best_accuracy": best.val_accuracy,
        "best_auc": None if math.isnan(best.val_auc) else best.val_auc,
        "iterations_to_best": best.iteration,
        "iterations": stop.iteration,
        "epochs": fitted.epochs,
        "steps_per_epoch": fitted.steps_per_epoch,
        "early_stopped": stop.early_stopped,
        "checks": [e.record() for e in stop.evaluations],
        "train_images_per_second": stop.iteration * fitted.batch / max(fitted.train_seconds, 1e-9),
        "params": int(model.count_params()),
        **({"phase_iterations": fitted.phases, "best_phase": fitted.best_phase} if fitted.phases else {}),
        **judged,  # operating points, calibration and temperature (octtl.training.clinical)
    }


def test(session, test_idx, iteration: int) -> Optional[early_stop.Evaluation]:
    """The current model scored on the test fold (None without one): loss, accuracy, AUC, probabilities."""
    if len(test_idx) == 0:
        return None
    probabilities = session.predict(session.decoded.crops[test_idx])
    return session.task.evaluate(probabilities, session.targets[test_idx], iteration, False)


def check_line(e: early_stop.Evaluation, stop: early_stop.HalfEpochEarlyStop, steps_per_epoch: int,
               patience: Optional[int], auc_words: str = "AUC", start: int = 0) -> str:
    """One validation check (or --eval_every point) on the console: metrics, best so far, early-stop countdown.

    The best is by accuracy (the paper's), or by mean AUC where the checkpoint is chosen by it (fluid types).
    """
    auc = "n/a" if math.isnan(e.val_auc) else f"{e.val_auc:.4f}"
    kind = "check" if e.check else "eval"
    epoch = (e.iteration - start - 1) // steps_per_epoch + 1  # of the phase (two_phase's second starts at `start`)
    best = (f"best accuracy {stop.best.val_accuracy:.4f}" if stop.best.score is None
            else f"best {auc_words} {stop.best.val_auc:.4f}")
    line = (f"{kind} at iteration {e.iteration} (epoch {epoch}): val loss {e.val_loss:.4f}, accuracy "
            f"{e.val_accuracy:.4f}, {auc_words} {auc}; {best} at iteration {stop.best.iteration}")
    if e.check and patience is not None:
        left = patience + 1 - stop.wait
        line += (f"; early stop after {left} more check{'s' * (left != 1)} without a lower loss"
                 if not stop.early_stopped else "; early stop: loss did not improve")
    return line


def write_predictions(path, session, indices, probabilities):
    """predictions.csv (or test_predictions.csv): one row per B-scan, in the task's columns (the paper's for two
    classes), written under a temporary name, then renamed."""
    task = session.task
    outputs.write_csv(path, task.prediction_columns(),
                      task.prediction_rows(session.metadata, session.targets, indices, probabilities))


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
    try:
        model.save(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or Ctrl-C leaves no half-written checkpoint
        raise
