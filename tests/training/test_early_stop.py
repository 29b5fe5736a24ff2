"""Tests of octtl/training/early_stop.py on scripted validation results, driven by a real model.fit."""

import math

import keras
import numpy as np
import pytest
from sklearn import metrics

from octtl.training import early_stop

LABELS = np.array([0, 1, 1, 0, 1, 0])


def scripted(losses=None, accuracies=None):
    """A predict function whose k-th call yields the k-th scripted loss (or accuracy)."""
    calls = []

    def predict():
        k = len(calls)
        calls.append(k)
        if losses is not None:
            p_true = math.exp(-losses[min(k, len(losses) - 1)])  # every example: loss = -log p_true
            probs = np.where(np.eye(2)[LABELS] == 1, p_true, 1 - p_true)
        else:
            correct = round(accuracies[min(k, len(accuracies) - 1)] * len(LABELS))
            probs = np.eye(2)[LABELS] * 0.8 + 0.1
            probs[correct:] = probs[correct:, ::-1]
        return probs
    return predict, calls


def fit(callback, epochs, steps_per_epoch=4):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(2 * steps_per_epoch, 3)).astype(np.float32)
    y = np.arange(2 * steps_per_epoch) % 2
    model.fit(x, y, batch_size=2, epochs=epochs, shuffle=False, verbose=0, callbacks=[callback])
    return model


@pytest.mark.parametrize("steps, checks, expected", [
    (4, 2, [2, 4]), (49, 2, [24, 49]), (5, 2, [2, 5]), (1, 2, [1]), (10, 3, [3, 6, 10]), (7, 1, [7])])
def test_checks_are_spread_evenly_with_the_last_at_the_epoch_end(steps, checks, expected):
    assert early_stop.check_steps(steps, checks) == expected


@pytest.mark.parametrize("patience", [0, 2, 5])
def test_stops_after_patience_plus_one_non_improving_checks(patience):
    losses = [1.0, 0.9] + [0.95] * 20
    predict, calls = scripted(losses=losses)
    cb = early_stop.HalfEpochEarlyStop(predict, LABELS, steps_per_epoch=4, checks_per_epoch=2,
                                      patience=patience)
    fit(cb, epochs=20)
    assert cb.early_stopped
    assert len(cb.evaluations) == 2 + patience + 1
    assert cb.iteration == 2 * len(cb.evaluations)  # one check every 2 of 4 steps
    assert [e.iteration for e in cb.evaluations] == list(range(2, cb.iteration + 1, 2))
    assert [round(e.val_loss, 6) for e in cb.evaluations] == losses[:len(cb.evaluations)]


def test_improvement_resets_patience_and_max_epochs_bounds_training():
    losses = [1.0, 1.1, 1.1, 0.8, 0.9, 0.9, 0.7, 0.75, 0.75, 0.6, 0.65, 0.6]
    predict, _ = scripted(losses=losses)
    cb = early_stop.HalfEpochEarlyStop(predict, LABELS, steps_per_epoch=4, checks_per_epoch=2, patience=2)
    fit(cb, epochs=3)
    assert not cb.early_stopped
    assert cb.epochs_started == 3
    assert len(cb.evaluations) == 6 and cb.iteration == 12  # checks_per_epoch per epoch, no more


def test_best_accuracy_keeps_earlier_model_on_ties_and_restores_its_weights():
    accuracies = [0.5, 4 / 6, 4 / 6, 0.5, 4 / 6, 0.5]
    predict, _ = scripted(accuracies=accuracies)
    snapshots = []
    cb = early_stop.HalfEpochEarlyStop(predict, LABELS, steps_per_epoch=4, checks_per_epoch=2, patience=10,
                                      on_evaluation=lambda e, stop: snapshots.append(stop.model.get_weights()))
    model = fit(cb, epochs=3)
    assert [round(e.val_accuracy, 6) for e in cb.evaluations] == [round(a, 6) for a in accuracies]
    assert cb.best.iteration == 4  # the first 4/6, not the later ties
    cb.restore_best()
    for restored, saved in zip(model.get_weights(), snapshots[1]):
        np.testing.assert_array_equal(restored, saved)
    assert not np.array_equal(model.get_weights()[0], snapshots[-1][0])


def test_eval_every_adds_evaluations_that_do_not_count_as_checks():
    predict, _ = scripted(losses=[1.0] * 50)
    cb = early_stop.HalfEpochEarlyStop(predict, LABELS, steps_per_epoch=4, checks_per_epoch=2, patience=100,
                                      eval_every=3)
    fit(cb, epochs=3)
    got = [(e.iteration, e.check) for e in cb.evaluations]
    assert got == [(2, True), (3, False), (4, True), (6, True), (8, True), (9, False), (10, True),
                   (12, True)]
    assert cb.wait == 5  # only the 6 checks are counted by the early stop


def test_fixed_iterations_without_early_stop():
    predict, _ = scripted(losses=[1.0] + [2.0] * 50)
    cb = early_stop.HalfEpochEarlyStop(predict, LABELS, steps_per_epoch=4, checks_per_epoch=2, patience=0,
                                      early_stop=False, max_iterations=9)
    fit(cb, epochs=10)
    assert cb.iteration == 9 and not cb.early_stopped
    assert [e.iteration for e in cb.evaluations] == [2, 4, 6, 8, 9]


def test_evaluate_probabilities_against_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    p = rng.random(200)
    probs = np.stack([1 - p, p], axis=1)
    e = early_stop.evaluate_probabilities(probs, labels, iteration=7, check=True)
    assert e.val_loss == pytest.approx(metrics.log_loss(labels, p), rel=1e-9)
    assert e.val_accuracy == metrics.accuracy_score(labels, p > 0.5)
    assert e.val_auc == metrics.roc_auc_score(labels, p)
    one_class = early_stop.evaluate_probabilities(probs[:3], np.zeros(3, int), 1, True)
    assert math.isnan(one_class.val_auc)


def test_undefined_auc_is_null_in_records():
    e = early_stop.evaluate_probabilities(np.array([[0.3, 0.7], [0.6, 0.4]]), np.array([1, 1]), 3, True)
    assert math.isnan(e.val_auc)
    assert e.record() == {"iteration": 3, "val_loss": pytest.approx(-np.log([0.7, 0.4]).mean()),
                          "val_accuracy": 0.5, "val_auc": None, "check": True}


def test_the_console_counts_down_the_checks_left_from_patience_plus_one_at_a_new_lowest_loss():
    """What each check's line says is that check's state: the countdown restarts at a new lowest loss."""
    from octtl.training import fitting

    patience = 2
    losses = [1.0, 0.9, 0.95, 0.8, 0.85, 0.85, 0.85]
    predict, _ = scripted(losses=losses)
    lines = []
    cb = early_stop.HalfEpochEarlyStop(
        predict, LABELS, steps_per_epoch=4, checks_per_epoch=2, patience=patience,
        on_evaluation=lambda e, stop: lines.append(fitting.check_line(e, stop, 4, patience).split("; ")[-1]))
    fit(cb, epochs=10)
    assert lines == ["early stop after 3 more checks without a lower loss"] * 2 + [
        "early stop after 2 more checks without a lower loss", "early stop after 3 more checks without a lower loss",
        "early stop after 2 more checks without a lower loss", "early stop after 1 more check without a lower loss",
        "early stop: loss did not improve"]
