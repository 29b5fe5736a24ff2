"""--trainable=all|head|two_phase: what trains in each phase, the cached features, the records, the sweep's axis.

The backbone's weights are compared byte for byte with the ones the session built; the cached features against
the frozen backbone run at every step, on the same batches.
"""

import json
import math

import keras
import numpy as np
import pytest
from scipy import stats as scipy_stats

from conftest import refusal, run_main, synthetic_records
from octtl import protocol, runs, sweep, train
from octtl.errors import InputError
from octtl.nets import models
from octtl.results import variants
from octtl.study import plan as planning
from octtl.training import fitting, session
from octtl.training.config import Config, planned

QUIET = dict(say=lambda line: None, progress=False)


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    """8 synthetic volumes of 6 B-scans, 72 x 80: 48 examples."""
    return synthetic_records(tmp_path_factory.mktemp("trainable-data"), volumes=8, bscans=6, height=72, width=80,
                             seed=2)


def config(records_dir, logdir, **changes) -> Config:
    values = dict(data_dir=str(records_dir), logdir=str(logdir), arch="squeezenet", batch=8, folds=4, image_size=48,
                  max_epochs=2, weights="imagenet")
    return Config(**{**values, **changes})


def split_weights(model):
    """(the head's weights, every other weight) of a network, in layer order."""
    head = [w for layer in model.layers if layer.name == models.HEAD for w in layer.get_weights()]
    rest = [w for layer in model.layers if layer.name != models.HEAD for w in layer.get_weights()]
    return head, rest


def test_head_trains_only_the_head_and_records_it(records_dir, tmp_path):
    code, out, err = run_main(train, f"--data_dir={records_dir}", f"--logdir={tmp_path}", "--arch=squeezenet",
                              "--batch=8", "--folds=4", "--image_size=48", "--max_epochs=2", "--trainable=head",
                              "--fold=0")
    assert code == 0, err
    folder = tmp_path / "baseline/squeezenet/batch8/train_head/fold0"
    result = json.loads((folder / runs.RESULT).read_text())
    assert "--trainable=head: the backbone frozen in inference mode" in out
    assert (result["trainable"], result["finetune_lr"], result["best_phase"]) == ("head", None, "head")
    assert result["head_lr"] == protocol.LR * 10  # --head_lr's default
    assert result["phase_iterations"] == {"head": result["iterations"]} and result["feature_cache"] is True
    trained = keras.saving.load_model(folder / runs.BEST_MODEL, compile=False)
    # Linear in the pooled features: squeezenet's ReLU between its classifier and the pooling is left out.
    assert [layer.name for layer in trained.layers[-3:]] == [models.HEAD, "pool10", models.HEAD_SOFTMAX]
    head, rest = split_weights(trained)
    assert result["trainable_params"] == sum(w.size for w in head) == 512 * 2 + 2  # fire9's 512 maps, 2 classes
    built = models.build("squeezenet", 2, weights="imagenet", image_size=48)
    built_head, built_rest = split_weights(built)
    assert len(rest) == len(built_rest) and all(np.array_equal(a, b) for a, b in zip(rest, built_rest))
    assert not np.array_equal(head[0], built_head[0])  # the head did train (from another init, but moved)
    flags_txt = (folder / runs.FLAGS_FILE).read_text()
    assert "--trainable=head\n" in flags_txt


def test_batch_norm_stays_in_inference_mode_while_the_backbone_runs_every_step(records_dir, tmp_path):
    # resnet18 from scratch trains its batch norm under `all`; frozen, not even the moving statistics may move,
    # with augmentation making the backbone run at every step.
    trainer = session.Session(config(records_dir, tmp_path, arch="resnet18", image_size=32, weights="none",
                                     trainable="head", augment="flip,intensity"), **QUIET)
    trainer.prepare()
    assert not trainer.frozen.cached
    before = [w.copy() for w in trainer.model.get_weights()]
    moving = [v.path for v in trainer.model.non_trainable_variables if "moving" in v.path]
    assert moving  # the network has batch-norm statistics to keep
    result = trainer.run("baseline", 0)
    assert result["status"] == "ok" and result["feature_cache"] is False
    after = trainer.model.get_weights()
    names = [v.path for v in trainer.model.variables]
    changed = {name for name, a, b in zip(names, before, after) if not np.array_equal(a, b)}
    assert changed == {f"{models.HEAD}/kernel", f"{models.HEAD}/bias"}


def test_two_phase_changes_the_backbone_only_in_its_second_phase(records_dir, tmp_path, monkeypatch):
    states = []
    original = fitting._phase

    def watched(*args, **kwargs):
        out = original(*args, **kwargs)
        states.append(split_weights(trainer.model))  # as the phase ended, before its best is put back
        return out

    monkeypatch.setattr(fitting, "_phase", watched)
    trainer = session.Session(config(records_dir, tmp_path, trainable="two_phase", lr=3e-3, head_lr=3e-3), **QUIET)
    trainer.prepare()
    initial_head, initial_rest = split_weights(trainer.model)
    result = trainer.run("baseline", 0)
    assert result["status"] == "ok" and len(states) == 2
    (head_1, rest_1), (head_2, rest_2) = states
    assert all(np.array_equal(a, b) for a, b in zip(rest_1, initial_rest))  # phase 1: the backbone as built
    assert not np.array_equal(head_1[0], initial_head[0])
    assert not all(np.array_equal(a, b) for a, b in zip(rest_2, rest_1))  # phase 2: fine-tuned
    assert result["finetune_lr"] == 3e-3 / 10
    phases = result["phase_iterations"]
    assert set(phases) == {"head", "finetune"} and phases["head"] + phases["finetune"] == result["iterations"]
    assert result["best_phase"] == ("head" if result["iterations_to_best"] <= phases["head"] else "finetune")
    iterations = [c["iteration"] for c in result["checks"]]
    assert iterations == sorted(set(iterations)) and iterations[-1] == result["iterations"]
    assert max(c["val_accuracy"] for c in result["checks"]) == result["best_accuracy"]


def test_the_head_on_cached_features_trains_as_through_the_frozen_backbone(records_dir, tmp_path):
    results, heads = [], []
    for cache in (True, False):
        trainer = session.Session(config(records_dir, tmp_path / str(cache), trainable="head", lr=1e-3),
                                  cache_features=cache, **QUIET)
        results.append(trainer.run("baseline", 1))
        heads.append(split_weights(trainer.model)[0])
    cached, through = results
    assert (cached["feature_cache"], through["feature_cache"]) == (True, False)
    assert (cached["iterations"], cached["iterations_to_best"]) == (through["iterations"],
                                                                     through["iterations_to_best"])
    np.testing.assert_allclose([c["val_loss"] for c in cached["checks"]],
                               [c["val_loss"] for c in through["checks"]], rtol=1e-4)
    for a, b in zip(*heads):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_settings_that_cannot_train_are_refused(records_dir, tmp_path):
    with pytest.raises(InputError, match="--trainable=frozen: choose from all, head, two_phase"):
        session.Session(config(records_dir, tmp_path, trainable="frozen"))
    for flag in ("head_lr", "finetune_lr"):
        message = refusal(train, f"--data_dir={records_dir}", f"--logdir={tmp_path}", "--arch=squeezenet",
                          "--batch=8", "--trainable=two_phase", f"--{flag}=0")
        assert message == f"--{flag}=0.0: must be a finite number > 0"
    assert not list(tmp_path.iterdir())


def test_the_phases_rates_are_part_of_a_frozen_runs_configuration_only(records_dir, tmp_path):
    identity = {"manifest_sha256": "abc", "num_examples": 48}
    base = config(records_dir, tmp_path)
    # A result written before --trainable existed reads as `all` without a fine-tuning rate: done, not stale.
    legacy = {k: v for k, v in planned(base, identity, {}).items()
              if k not in ("trainable", "head_lr", "finetune_lr")}
    assert runs.stale_reason(legacy, planned(base, identity, legacy)) is None
    assert runs.stale_reason(legacy, planned(config(records_dir, tmp_path, finetune_lr=1e-6), identity, legacy)) is None
    two = config(records_dir, tmp_path, trainable="two_phase")
    finished = planned(two, identity, {})
    assert (finished["head_lr"], finished["finetune_lr"]) == (protocol.LR * 10, protocol.LR / 10)
    slower = planned(config(records_dir, tmp_path, trainable="two_phase", finetune_lr=1e-6), identity, finished)
    assert runs.stale_reason(finished, slower) == f"finetune_lr {protocol.LR / 10:g} (plan: 1e-06)"
    assert runs.stale_reason(legacy, planned(two, identity, legacy)).startswith("trainable all (plan: two_phase)")


def test_the_sweep_plans_one_variant_per_setting(records_dir, tmp_path):
    base = config(records_dir, tmp_path)
    variants_ = planning.variants_from(base, None, None, None, trainables=["all", "head", "two_phase", "head"])
    assert {name: fields["trainable"] for name, fields in variants_.items()} == {
        "": "all", "train_head": "head", "train_two_phase": "two_phase"}
    common = [f"--data_dir={records_dir}", f"--logdir={tmp_path}", "--archs=squeezenet", "--batches=8",
              "--designs=baseline", "--folds=3", "--image_size=48", "--dry_run"]
    code, out, err = run_main(sweep, *common, "--trainables=all,head,two_phase")
    assert code == 0, err
    assert "plan: 9 runs: 0 done (0 failed), 0 stale, 9 to do" in out, out
    assert refusal(sweep, *common, "--trainables=all,frozen") == (
        "--trainables=all,frozen: frozen unknown; choose from all, head, two_phase")


def _result(fold, acc, auc, trainable="all", **extra):
    return {"design": "baseline", "arch": "squeezenet", "batch": 16, "fold": fold, "status": "ok",
            "lr": protocol.LR, "trainable": trainable, "best_accuracy": acc, "best_auc": auc, "folds": 5,
            "train_size": 400, "val_size": 100, "seed": 0, "group_by_volume": True,
            "data": {"manifest_sha256": "abc", "num_examples": 500}, **extra}


def test_the_report_pairs_each_setting_with_fine_tuning_every_layer():
    rng = np.random.default_rng(4)
    full, frozen = rng.uniform(0.8, 0.9, 5), rng.uniform(0.7, 0.95, 5)
    results = [_result(k, full[k], full[k]) for k in range(5)]
    results += [_result(k, frozen[k], frozen[k], "head") for k in range(5)]
    results += [_result(k, 0.99, 0.99, "head", lr=1e-3) for k in range(5)]  # another axis too: not in this table
    rows = variants.variant_table(results, "trainable")
    assert [(r.variant, r.value) for r in rows] == [("default", "all"), ("train_head", "head")]
    head = rows[1]
    assert head.n_paired == 5 and head.accuracy_diff == pytest.approx(np.mean(frozen - full))
    assert head.accuracy_p == pytest.approx(scipy_stats.wilcoxon(frozen, full, zero_method="zsplit").pvalue)
    assert not math.isnan(head.accuracy_ci_low)
