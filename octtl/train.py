"""Fine-tunes one Table I network on OCT B-scans with the paper's protocol.

  python -m octtl.train --data_dir=data/records --arch=xception --batch=16 --logdir=runs
  python -m octtl.train --flagfile=flags/demo.cfg

Results land in LOGDIR/{design}/{arch}/batch{batch}/[variant/]fold{fold}/ (result.json, predictions.csv,
flags.txt, best.keras, TensorBoard events; a variant folder only for a non-default --lr, --augment, --denoise,
--trainable, --task or --train_volumes); `tensorboard --logdir=LOGDIR` shows them.
"""

import dataclasses
import sys

from absl import flags

from octtl import cli, console, protocol, runs
from octtl.data import denoise, pipeline
from octtl.errors import InputError
from octtl.nets import scaling
from octtl.training.config import STRATEGIES, TASKS, TEST_FOLDS, TRAINABLE, Config

# Flag defaults are Config's (whose protocol values come from octtl.protocol): one list of a run's settings.
_DEFAULT = {field.name: field.default for field in dataclasses.fields(Config)}

flags.DEFINE_string("data_dir", None, "Records written by tools/to_tfrecord.py.")
flags.DEFINE_integer("batch", None, "Mini-batch size.", lower_bound=1)
flags.DEFINE_enum("design", _DEFAULT["design"], list(protocol.DESIGNS),
                  "baseline: train 9 folds, validate 1 (90/10); limited: train 1, validate 9; vendor: each vendor "
                  "of the records in turn is the test set (--fold picks it, sorted names), the others train, a "
                  "grouped fold of their volumes validates.")
_FOLDS = flags.DEFINE_integer("folds", _DEFAULT["folds"], "Cross-validation folds.", lower_bound=2)
_FOLD = flags.DEFINE_integer("fold", _DEFAULT["fold"], "Fold to run; -1 runs every fold in turn.", lower_bound=-1)
flags.DEFINE_string("weights", _DEFAULT["weights"], "imagenet, none (random init) or a weights file.")
flags.DEFINE_enum("weights_fallback", _DEFAULT["weights_fallback"], ["none"],
                  "With --weights=imagenet: if the ImageNet file cannot be had, say so and train from scratch. "
                  "Unset (the default), missing weights are an error.")
flags.DEFINE_string("weights_dir", _DEFAULT["weights_dir"], "Folder searched first for ImageNet weights files.")
flags.DEFINE_float("lr", _DEFAULT["lr"], "SGD learning rate.")
flags.DEFINE_float("momentum", _DEFAULT["momentum"], "SGD momentum.")
flags.DEFINE_integer("max_epochs", _DEFAULT["max_epochs"], "Epoch limit.", lower_bound=1)
flags.DEFINE_integer("checks_per_epoch", _DEFAULT["checks_per_epoch"], "Validation-loss checks per epoch.",
                     lower_bound=1)
flags.DEFINE_integer("patience", _DEFAULT["patience"], "Stop after more than this many checks without improvement.",
                     lower_bound=0)
flags.DEFINE_bool("group_by_volume", _DEFAULT["group_by_volume"],
                  "Keep each volume's (or patient's) B-scans in one fold; --nogroup_by_volume: the paper's split.")
flags.DEFINE_enum("test_fold", _DEFAULT["test_fold"], list(TEST_FOLDS),
                  "auto: with 3 folds or more, hold one out as the test fold the checkpoint never saw (baseline: "
                  "fold i tests, i+1 validates; limited: i trains, i+1 validates, the rest test); none: the "
                  "paper's split, the checkpoint chosen and scored on the validation fold.")
flags.DEFINE_enum("preprocess", _DEFAULT["preprocess"], list(scaling.PREPROCESS_CHOICES),
                  "auto: backbone for known ImageNet weights, paper otherwise; paper: [-1, 1] for every network "
                  "(the paper); backbone: the scaling the network's ImageNet weights were trained with.")
flags.DEFINE_enum("crop", _DEFAULT["crop"], list(pipeline.CROPS), "center: the paper's crop; resize: whole B-scan.")
flags.DEFINE_integer("eval_batch", _DEFAULT["eval_batch"],
                     f"Validation batch size; default max(2*batch, {protocol.MIN_EVAL_BATCH}).", lower_bound=1)
flags.DEFINE_enum("strategy", _DEFAULT["strategy"], list(STRATEGIES), "mirrored: data-parallel over all local GPUs.")
flags.DEFINE_bool("early_stop", _DEFAULT["early_stop"], "Half-epoch early stop on validation loss.")
flags.DEFINE_integer("max_iterations", _DEFAULT["max_iterations"], "Stop after this many iterations.", lower_bound=1)
flags.DEFINE_integer("eval_every", _DEFAULT["eval_every"],
                     "Also evaluate accuracy/AUC every N iterations (default: at checks only).", lower_bound=1)
flags.DEFINE_bool("save_model", _DEFAULT["save_model"], "Save the best model as best.keras in the run folder.")
flags.DEFINE_string("augment", _DEFAULT["augment"],
                    "Training-batch augmentations, a comma list of flip, shift, scale, intensity, speckle (default "
                    "none, as the paper); ranges in octtl/data/augment.py. Validation data never changes.")
flags.DEFINE_float("augment_strength", _DEFAULT["augment_strength"], "Scales every augmentation's range (0 < s < 5).")
flags.DEFINE_enum("denoise", _DEFAULT["denoise"], list(denoise.METHODS),
                  "Denoise every B-scan once when the records are decoded, before cropping (OpenCV).")
flags.DEFINE_enum("task", _DEFAULT["task"], list(TASKS),
                  "fluid: the records' label (the paper's fluid/normal, or K classes of image folders, a K-way "
                  "softmax); fluid_types: RETOUCH's IRF, SRF and PED, three sigmoid outputs (grouped folds).")
flags.DEFINE_string("train_volumes", _DEFAULT["train_volumes"],
                    "A learning-curve point: train on this many whole volumes (patients) of the fold's training folds, "
                    "drawn with --seed and --repeat, nested over N, for as many iterations as the whole folds get "
                    "(baseline design, grouped folds); all: every one.")
flags.DEFINE_integer("repeat", _DEFAULT["repeat"], "Which draw of --train_volumes volumes.", lower_bound=0)
flags.DEFINE_float("target_sensitivity", _DEFAULT["target_sensitivity"],
                   "Record the threshold that reaches this sensitivity on the validation predictions (with 0.5 and "
                   "Youden's J there), each applied to the test predictions.")
flags.DEFINE_enum("trainable", _DEFAULT["trainable"], list(TRAINABLE),
                  "all: fine-tune every layer (the paper); head: the backbone frozen (inference mode), only the new "
                  "head trains; two_phase: head until its early stop, then every layer at --finetune_lr.")
flags.DEFINE_float("head_lr", _DEFAULT["head_lr"],
                   "The new head's SGD learning rate on a frozen backbone (head, two_phase's first phase); "
                   "default --lr x 10.")
flags.DEFINE_float("finetune_lr", _DEFAULT["finetune_lr"],
                   "two_phase's second phase: SGD learning rate for every layer (default --lr / 10).")
flags.DEFINE_float("denoise_strength", _DEFAULT["denoise_strength"],
                   "The method's main parameter: median window side (odd, default 3), nlm h in grey levels (default "
                   "10), bilateral sigma_color in grey levels (default 25).")

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("logdir")
flags.declare_key_flag("arch")
flags.declare_key_flag("image_size")
flags.declare_key_flag("mixed_precision")
flags.declare_key_flag("jit_compile")
flags.declare_key_flag("seed")
flags.declare_key_flag("overwrite")


def config_from_flags() -> Config:
    """The run settings the flags give: every field of Config is one of octtl.train's flags."""
    return Config(**{field.name: flags.FLAGS[field.name].value for field in dataclasses.fields(Config)})


def main(argv):
    """The train command: runs --fold (or every fold) of one network with the paper's protocol."""
    cli.no_arguments(argv)
    cli.require("data_dir", "arch", "batch")
    if cli.ARCH.value == "all":
        raise InputError("--arch=all: octtl.train trains one network; octtl.sweep --archs=all trains them all")
    if _FOLD.value >= _FOLDS.value and flags.FLAGS.design != protocol.VENDOR:  # vendor: one fold per vendor
        raise InputError(f"--fold={_FOLD.value}: must be in 0..{_FOLDS.value - 1} or -1")
    backend = console.start_backend()
    from octtl.nets import devices
    from octtl.training import session

    gpus = devices.configure(cli.MIXED_PRECISION.value)
    if gpus or backend != "tensorflow":
        print(f"train: {backend} backend" + (f", {len(gpus)} GPU(s)" if gpus else ", CPU")
              + (", mixed precision" if cli.MIXED_PRECISION.value else ""), flush=True)
    say = lambda line: print(line, flush=True)  # noqa: E731
    config = config_from_flags()
    # One session for every fold: the records are decoded and the network built and compiled once. A finished
    # run of another configuration is refused (--overwrite replaces it), every fold's before any trains.
    trainer = session.Session(config, say=say, redo_stale=False, refuse_stale=True)
    chosen = range(trainer.design_folds(config.design)) if config.fold == -1 else [config.fold]
    for fold in chosen:
        trainer.finished(config.design, fold)
    failed = 0
    try:
        for fold in chosen:
            result = trainer.run(config.design, fold)
            say(runs.summary_line(result))
            failed += result["status"] != "ok"
    except KeyboardInterrupt:
        sys.exit(f"train: interrupted; the finished runs are kept, and the run that was training (it has no "
                 f"{runs.RESULT}) starts again from its beginning when the same command is run again")
    if failed:
        sys.exit(1)


run = cli.command(main)

if __name__ == "__main__":
    run()
