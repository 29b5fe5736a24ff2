r"""How many annotated volumes (patients) each setting needs: learning curves on real and synthetic B-scans.

  python benchmarks/learning_curve.py [--real_dir=../shared/data/oct2017-dev] [--real_n=2,4,8,16,32]
      [--synthetic_n=1,2,4,8,16] [--repeats=2] [--image_size=128] [--train_folds=0,1,2,3,4]

Real: the dev set's NORMAL and DME images, patients as groups, squeezenet from its ImageNet weights and from
scratch, N patients of each fold's training folds (5 folds, held-out test fold, `--repeats` draws), each point
trained for the iterations the whole training folds get. Synthetic: 30 volumes of 16 B-scans (128 x 128),
squeezenet from ImageNet, N volumes. Every point is scored on its held-out test fold. Prints, per curve, the
mean test AUC and accuracy at each N, the fitted law, and the volumes needed to reach AUC 0.95 and accuracy
0.90 (octtl.results.learning_curve) or why there is no such figure. `--train_folds` trains only some of the 5
folds (a shorter run; the folds stay those of 5, and the bootstrap over folds has fewer to resample). Each curve's
rows are printed as soon as it is done.
"""

import pathlib
import sys
import tempfile
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
_REAL_DIR = flags.DEFINE_string("real_dir", str(REPO.parent / "shared" / "data" / "oct2017-dev"),
                                "Class folders NORMAL/ and DME/ of Kermany-named JPEGs.")
_REAL_N = flags.DEFINE_list("real_n", ["2", "4", "8", "16", "32"], "Training patients of the real curves.")
_SYNTHETIC_N = flags.DEFINE_list("synthetic_n", ["1", "2", "4", "8", "16"], "Training volumes of the synthetic curve.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Draws of each N.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Input side (whole B-scans resized).")
_TRAIN_FOLDS = flags.DEFINE_list("train_folds", ["0", "1", "2", "3", "4"], "Which of the 5 folds are trained.")
_PATIENT = r"^[A-Z]+-(\d+)-\d+$"


def curve(records_dir, logdir, weights, counts, repeats, say):
    """Every point of one curve (--train_folds of 5 x counts x repeats, and each fold's whole training folds)."""
    from octtl.training import session
    from octtl.training.config import Config

    config = Config(data_dir=str(records_dir), logdir=str(logdir), arch="squeezenet", batch=16, folds=5,
                    weights=weights, image_size=_IMAGE_SIZE.value, crop="resize")
    trainer = session.Session(config, say=lambda line: None, progress=False)
    results = []
    for fold in (int(f) for f in _TRAIN_FOLDS.value):
        for n in counts:
            for repeat in range(repeats):
                results.append(trainer.run("baseline", fold, train_volumes=n, repeat=repeat))
        results.append(trainer.run("baseline", fold))
        say(f"  fold {fold} done")
    return results


def main(argv):
    del argv
    from octtl import console

    console.start_tensorflow()
    from octtl.data import converter
    from octtl.results import annotation_budget, learning_curve
    from octtl.synthetic import render

    work = pathlib.Path(tempfile.mkdtemp(prefix="octtl-curve-"))
    converter.convert(_REAL_DIR.value, work / "real", input_format="image_folders", classes=["NORMAL", "DME"],
                      group_regex=_PATIENT, progress=None)
    render.write_dataset(work / "volumes", volumes=30, bscans=16, height=128, width=128, seed=0)
    converter.convert(work / "volumes", work / "synthetic", progress=None)
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    studies = (("real dev set", "imagenet", work / "real", _REAL_N.value),
               ("real dev set", "none", work / "real", _REAL_N.value),
               ("synthetic", "imagenet", work / "synthetic", _SYNTHETIC_N.value))
    lines = ["| data | weights | metric | mean test score at N (all: the whole training folds) | fit a, b, c | "
             "volumes to reach the target |", "|---|---|---|---|---|---|"]
    for name, weights, records_dir, counts in studies:
        started = time.time()
        say(f"{name}, weights {weights}, N = {','.join(counts)} x {_REPEATS.value} repeats x folds "
            f"{','.join(_TRAIN_FOLDS.value)} of 5")
        results = curve(records_dir, work / "runs" / f"{name[:4]}-{weights}", weights, counts, _REPEATS.value, say)
        for metric, target in annotation_budget.TARGETS.items():
            points, on = annotation_budget.points(results, metric)
            s = learning_curve.summarize(points, metric, target)
            means = ", ".join(f"{int(n)}: {m:.3f}" for n, m in zip(s.n, s.mean))
            fit = "-" if s.fit is None else "{:.3f}, {:.3f}, {:.2f}".format(*s.fit)
            lines.append(f"| {name} | {weights} | {metric} ({on}) | {means} | {fit} | {target:g}: {s.verdict} |")
            say(lines[-1])
        say(f"  {time.time() - started:.0f} s")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
