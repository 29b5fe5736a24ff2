"""The paper's half-epoch early stop and best-accuracy tracking, as one Keras callback.

Keras' EarlyStopping looks at the validation loss only at epoch ends; the paper checks
it twice per epoch and stops when it has failed to improve for more than `patience`
consecutive checks, and it keeps the model of highest validation accuracy, recording
the iteration at which that model was reached. Nothing in Keras does either, so this is
written here.
"""

import dataclasses
import math
from typing import Callable, List, Optional

import keras
import numpy as np
from sklearn import metrics


def check_steps(steps_per_epoch: int, checks_per_epoch: int) -> List[int]:
    """1-based steps within an epoch at which the loss is checked: evenly spread, the last at the end."""
    checks = min(checks_per_epoch, steps_per_epoch)
    return sorted({(k + 1) * steps_per_epoch // checks for k in range(checks)})


@dataclasses.dataclass
class Evaluation:
    """Validation metrics at one iteration, and the probabilities they came from.

    Attributes:
        probabilities: The network's outputs, (n, outputs).
        details: Per-class or per-type figures beyond the headline ones (octtl.training.tasks).
        score: What the best checkpoint maximises; None: the accuracy (the paper's).
    """

    iteration: int
    val_loss: float
    val_accuracy: float
    val_auc: float
    check: bool  # counted by the early stop (a half-epoch check) or an extra --eval_every point
    probabilities: Optional[np.ndarray] = None
    details: dict = dataclasses.field(default_factory=dict)
    score: Optional[float] = None

    @property
    def p_fluid(self) -> Optional[np.ndarray]:
        """The probability of class 1 (fluid) of a two-class network; None for others."""
        if self.probabilities is None or np.ndim(self.probabilities) != 2 or self.probabilities.shape[1] != 2:
            return None
        return self.probabilities[:, 1]

    @property
    def chosen_by(self) -> float:
        """The value the best checkpoint is chosen by (NaN counts as worst)."""
        value = self.val_accuracy if self.score is None else self.score
        return -math.inf if value is None or math.isnan(value) else value

    def record(self) -> dict:
        """The evaluation as an entry of result.json's `checks`: JSON-safe, an undefined AUC as null."""
        # JSON has no NaN: an undefined AUC (one class in the validation set) is null.
        auc = None if math.isnan(self.val_auc) else self.val_auc
        return {"iteration": self.iteration, "val_loss": self.val_loss,
                "val_accuracy": self.val_accuracy, "val_auc": auc, "check": self.check}


def evaluate_probabilities(probabilities: np.ndarray, labels: np.ndarray, iteration: int,
                           check: bool) -> Evaluation:
    """Cross-entropy, accuracy and exact ROC AUC of two-class softmax outputs against 0/1 labels."""
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels, np.int64)
    # Keras' categorical cross-entropy clips to [eps, 1 - eps] too; same numbers as model.evaluate.
    eps = keras.backend.epsilon()
    picked = np.clip(probabilities[np.arange(len(labels)), labels], eps, 1.0 - eps)
    loss = float(-np.mean(np.log(picked)))
    p_fluid = probabilities[:, 1]
    # Fluid when p_fluid > 0.5: argmax for two classes, but stated on the one column predictions.csv keeps,
    # so accuracy recomputed from that file is exactly this one.
    accuracy = float(np.mean((p_fluid > 0.5) == labels))
    # AUC is undefined with one class present; NaN says so instead of a made-up 0.5.
    auc = float(metrics.roc_auc_score(labels, p_fluid)) if len(np.unique(labels)) == 2 else math.nan
    return Evaluation(iteration, loss, accuracy, auc, check, probabilities)


class HalfEpochEarlyStop(keras.callbacks.Callback):
    """Checks validation loss `checks_per_epoch` times per epoch; keeps the best-accuracy (or best-score) weights.

    Args:
      predict: returns the softmax probabilities (n, classes) of the validation set for the
        current weights.
      labels: validation labels, aligned with `predict`'s rows.
      steps_per_epoch: training iterations per epoch.
      checks_per_epoch: loss checks per epoch (the paper: 2).
      patience: stop when the loss has not improved for more than this many checks.
      early_stop: False trains on to `max_iterations` (or the epoch limit) regardless.
      max_iterations: stop after this many iterations in total; None for no limit.
      eval_every: also evaluate accuracy/AUC every this many iterations (not counted as checks).
      on_evaluation: called with each Evaluation and this callback (logging, TensorBoard, NaN checks).
      evaluate: scores the predictions against the labels (octtl.training.tasks.Task.evaluate); default
        `evaluate_probabilities`, the paper's two classes.
      continue_from: an earlier phase's early stop (two_phase's head phase): its iterations, checks and best
        check carry on, so iterations count on and a later check replaces its best only by beating it; the model
        must hold that best's weights when this phase starts. Patience, the epochs and --max_iterations start
        afresh.
    """

    def __init__(self, predict: Callable[[], np.ndarray], labels: np.ndarray, steps_per_epoch: int,
                 checks_per_epoch: int = 2, patience: int = 5, early_stop: bool = True,
                 max_iterations: Optional[int] = None, eval_every: Optional[int] = None,
                 on_evaluation: Optional[Callable[[Evaluation, "HalfEpochEarlyStop"], None]] = None,
                 evaluate: Callable[..., Evaluation] = None, continue_from: Optional["HalfEpochEarlyStop"] = None):
        super().__init__()
        if steps_per_epoch < 1 or checks_per_epoch < 1 or patience < 0:
            raise ValueError("steps_per_epoch and checks_per_epoch must be >= 1, patience >= 0")
        self._predict = predict
        self._labels = np.asarray(labels)
        self._check_steps = set(check_steps(steps_per_epoch, checks_per_epoch))
        self._patience = patience
        self._early_stop = early_stop
        self._max_iterations = max_iterations
        self._eval_every = eval_every
        self._on_evaluation = on_evaluation
        self._score = evaluate or evaluate_probabilities
        self.iteration = 0
        self.evaluations: List[Evaluation] = []
        self.best: Optional[Evaluation] = None
        self.best_weights = None
        self.best_loss = math.inf
        self.wait = 0
        self.early_stopped = False
        self.epochs_started = 0
        self._start = 0
        if continue_from is not None:
            self.iteration = self._start = continue_from.iteration
            self.evaluations = list(continue_from.evaluations)
            self.best = continue_from.best

    def on_train_begin(self, logs=None):
        """A continued phase's best weights: the model's as the phase starts (the earlier phase's best)."""
        if self.best is not None and self.best_weights is None:
            self.best_weights = [w.copy() for w in self.model.get_weights()]

    def on_epoch_begin(self, epoch, logs=None):
        """Counts the epochs started."""
        self.epochs_started = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        """Counts the iteration; evaluates at checks, --eval_every points and --max_iterations (which stops)."""
        self.iteration += 1
        is_check = (batch + 1) in self._check_steps
        extra = bool(self._eval_every) and self.iteration % self._eval_every == 0
        at_limit = self._max_iterations is not None and self.iteration - self._start >= self._max_iterations
        if is_check or extra or at_limit:
            self._evaluate(is_check)
        if at_limit:
            self.model.stop_training = True

    def _evaluate(self, is_check):
        # Reading Callback.model puts JAX's training state back into the variables the predictor reads (mid-epoch
        # Keras keeps it apart); on the other backends it is the model itself.
        self.model  # noqa: B018
        result = self._score(self._predict(), self._labels, self.iteration, is_check)
        self.evaluations.append(result)
        # Strictly greater: on ties the earlier model stays, as it was reached in fewer iterations.
        if self.best is None or result.chosen_by > self.best.chosen_by:
            self.best = result
            self.best_weights = [w.copy() for w in self.model.get_weights()]
        if is_check:
            # Counted before on_evaluation, so what it reports (the countdown) is this check's.
            if result.val_loss < self.best_loss:
                self.best_loss, self.wait = result.val_loss, 0
            else:
                self.wait += 1
                if self._early_stop and self.wait > self._patience:
                    self.early_stopped = True
                    self.model.stop_training = True
        if self._on_evaluation:
            self._on_evaluation(result, self)

    def restore_best(self):
        """Puts the best-accuracy weights back into the model."""
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
