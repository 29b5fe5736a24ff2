"""Fine-tunes one Table I network on OCT B-scans with the paper's protocol.

  python -m octtl.train --data_dir=data/records --arch=xception --batch=16 --logdir=runs
  python -m octtl.train --flagfile=flags/demo.cfg

Results land in LOGDIR/{design}/{arch}/batch{batch}/[variant/]fold{fold}/ (result.json, predictions.csv,
flags.txt, best.keras, TensorBoard events; a variant folder only for a non-default --lr, --augment or --denoise);
`tensorboard --logdir=LOGDIR` shows them.
"""

import sys

from absl import app
from absl import flags

from octtl import cli
from octtl import protocol
from octtl.training.config import Config

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Records written by tools/to_tfrecord.py.")
_BATCH = flags.DEFINE_integer("batch", None, "Mini-batch size.", lower_bound=1)
_DESIGN = flags.DEFINE_enum("design", protocol.DESIGNS[0], list(protocol.DESIGNS),
                            "baseline: train 9 folds, validate 1 (90/10); limited: train 1, validate 9.")
_FOLDS = flags.DEFINE_integer("folds", protocol.FOLDS, "Cross-validation folds.", lower_bound=2)
_FOLD = flags.DEFINE_integer("fold", 0, "Fold to run; -1 runs every fold in turn.", lower_bound=-1)
_WEIGHTS = flags.DEFINE_string("weights", "imagenet", "imagenet, none (random init) or a weights file.")
_WEIGHTS_FALLBACK = flags.DEFINE_enum(
    "weights_fallback", None, ["none"],
    "With --weights=imagenet: if the ImageNet file cannot be had, say so and train from scratch. "
    "Unset (the default), missing weights are an error.")
_WEIGHTS_DIR = flags.DEFINE_string("weights_dir", None, "Folder searched first for ImageNet weights files.")
_LR = flags.DEFINE_float("lr", protocol.LR, "SGD learning rate.")
_MOMENTUM = flags.DEFINE_float("momentum", protocol.MOMENTUM, "SGD momentum.")
_MAX_EPOCHS = flags.DEFINE_integer("max_epochs", protocol.MAX_EPOCHS, "Epoch limit.", lower_bound=1)
_CHECKS_PER_EPOCH = flags.DEFINE_integer("checks_per_epoch", protocol.CHECKS_PER_EPOCH,
                                         "Validation-loss checks per epoch.", lower_bound=1)
_PATIENCE = flags.DEFINE_integer("patience", protocol.PATIENCE,
                                 "Stop after more than this many checks without improvement.", lower_bound=0)
_GROUP_BY_VOLUME = flags.DEFINE_bool("group_by_volume", False,
                                     "Keep each volume's (or patient's) B-scans in one fold (the paper did not).")
_PREPROCESS = flags.DEFINE_enum(
    "preprocess", "auto", ["auto", "paper", "backbone"],
    "auto: backbone for known ImageNet weights, paper otherwise; paper: [-1, 1] for every network (the paper); "
    "backbone: the scaling the network's ImageNet weights were trained with.")
_CROP = flags.DEFINE_enum("crop", "center", ["center", "resize"], "center: the paper's crop; resize: whole B-scan.")
_EVAL_BATCH = flags.DEFINE_integer("eval_batch", None,
                                   f"Validation batch size; default max(2*batch, {protocol.MIN_EVAL_BATCH}).",
                                   lower_bound=1)
_STRATEGY = flags.DEFINE_enum("strategy", "default", ["default", "mirrored"],
                              "mirrored: data-parallel over all local GPUs.")
_EARLY_STOP = flags.DEFINE_bool("early_stop", True, "Half-epoch early stop on validation loss.")
_MAX_ITERATIONS = flags.DEFINE_integer("max_iterations", None, "Stop after this many iterations.", lower_bound=1)
_EVAL_EVERY = flags.DEFINE_integer("eval_every", None,
                                   "Also evaluate accuracy/AUC every N iterations (default: at checks only).",
                                   lower_bound=1)
_SAVE_MODEL = flags.DEFINE_bool("save_model", True, "Save the best model as best.keras in the run folder.")
_AUGMENT = flags.DEFINE_string(
    "augment", "", "Training-batch augmentations, a comma list of flip, shift, scale, intensity, speckle (default "
    "none, as the paper); ranges in octtl/data/augment.py. Validation data never changes.")
_AUGMENT_STRENGTH = flags.DEFINE_float("augment_strength", 1.0, "Scales every augmentation's range (0 < s < 5).")
_DENOISE = flags.DEFINE_enum("denoise", "none", ["none", "median", "nlm", "bilateral"],
                             "Denoise every B-scan once when the records are decoded, before cropping (OpenCV).")
_DENOISE_STRENGTH = flags.DEFINE_float(
    "denoise_strength", None, "The method's main parameter: median window side (odd, default 3), nlm h in grey "
    "levels (default 10), bilateral sigma_color in grey levels (default 25).")

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("logdir")
flags.declare_key_flag("arch")
flags.declare_key_flag("image_size")
flags.declare_key_flag("mixed_precision")
flags.declare_key_flag("jit_compile")
flags.declare_key_flag("seed")
flags.declare_key_flag("overwrite")



def config_from_flags():
    """The run settings the flags give, as octtl.training.session's plain Config."""
    from octtl.training import session

    return Config(
        data_dir=_DATA_DIR.value, logdir=cli.LOGDIR.value, arch=cli.ARCH.value, batch=_BATCH.value,
        design=_DESIGN.value, folds=_FOLDS.value, fold=_FOLD.value, weights=_WEIGHTS.value,
        weights_fallback=_WEIGHTS_FALLBACK.value, weights_dir=_WEIGHTS_DIR.value, lr=_LR.value,
        momentum=_MOMENTUM.value, max_epochs=_MAX_EPOCHS.value, checks_per_epoch=_CHECKS_PER_EPOCH.value,
        patience=_PATIENCE.value, seed=cli.SEED.value, group_by_volume=_GROUP_BY_VOLUME.value,
        image_size=cli.IMAGE_SIZE.value, preprocess=_PREPROCESS.value, crop=_CROP.value, eval_batch=_EVAL_BATCH.value,
        mixed_precision=cli.MIXED_PRECISION.value, jit_compile=cli.JIT_COMPILE.value, strategy=_STRATEGY.value,
        early_stop=_EARLY_STOP.value, max_iterations=_MAX_ITERATIONS.value, eval_every=_EVAL_EVERY.value,
        save_model=_SAVE_MODEL.value, augment=_AUGMENT.value, augment_strength=_AUGMENT_STRENGTH.value,
        denoise=_DENOISE.value, denoise_strength=_DENOISE_STRENGTH.value, overwrite=cli.OVERWRITE.value)


def main(argv):
    """The train command: runs --fold (or every fold) of one network with the paper's protocol."""
    cli.no_arguments(argv)
    cli.require("train", "data_dir", "arch", "batch")
    if cli.ARCH.value == "all":
        sys.exit("train: error: --arch=all: octtl.train trains one network; octtl.sweep --archs=all trains them all")
    if _FOLD.value >= _FOLDS.value:
        sys.exit(f"train: error: --fold={_FOLD.value}: must be in 0..{_FOLDS.value - 1} or -1")
    from octtl import console

    gpus = console.start_tensorflow()
    from octtl import runs
    from octtl.training import session
    from octtl.errors import InputError, WeightsError

    session.configure_devices(cli.MIXED_PRECISION.value)
    if gpus:
        print(f"train: {len(gpus)} GPU(s)" + (", mixed precision" if cli.MIXED_PRECISION.value else ""), flush=True)
    say = lambda line: print(line, flush=True)  # noqa: E731
    config = config_from_flags()
    try:
        fold_list = list(range(config.folds)) if config.fold == -1 else [config.fold]
        # One session for every fold: the records are decoded and the network built and compiled once.
        session = session.Session(config, say=say, redo_stale=True)
        failed = 0
        for fold in fold_list:
            result = session.run(config.design, fold)
            say(runs.summary_line(result))
            failed += result["status"] != "ok"
    except (InputError, WeightsError) as e:
        sys.exit(f"train: error: {e}")
    if failed:
        sys.exit(1)


def run():
    """Console-script entry point: parses the flags and runs main."""
    app.run(main)


if __name__ == "__main__":
    run()
