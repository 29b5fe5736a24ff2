"""Regenerates the paper's Tables II-III and Figs 2-4 from a sweep's results.

  python -m octtl.report --logdir=runs --out_dir=report

Reads LOGDIR/results.jsonl (or, when there is none, every LOGDIR/*/*/batch*/fold*/result.json) and writes
report/table_{design}.md|csv (mean, std and 95% interval), paired_{design}.csv (Friedman, Nemenyi and Wilcoxon
tests across folds), fig2/3/4_{design}.png, accuracy_by_design.png, cd_{design}_batch{B}.png (critical-difference
diagrams), roc_{design}.png (from the run folders' predictions.csv), operating_points_{design}.csv (with
operating_points_folds_{design}.csv per run), calibration_{design}.csv, reliability_{design}.png, vendors.csv (the
vendor design's left-out vendors against within-vendor folds) and index.html (self-contained: figures embedded,
opens offline).

--out_dir is replaced whole, built aside and renamed into place: a folder an earlier report wrote (its record,
.octtl-output.json, lists every file in it) is replaced as it is; any other non-empty folder is refused unless
--overwrite. A run folder's result.json that cannot be read is named on stderr and on the page, and left out.
"""

import os
import pathlib
import sys

os.environ.setdefault("MPLBACKEND", "Agg")

from absl import flags  # noqa: E402

from octtl import cli, console, outputs, runs  # noqa: E402
from octtl.errors import InputError  # noqa: E402

_OUT_DIR = flags.DEFINE_string("out_dir", "report", "Folder the tables, figures and index.html are written to.")
_RESULTS = flags.DEFINE_string("results", None,
                               f"Results file; default LOGDIR/{runs.RESULTS}, else the run folders.")
_TOP = flags.DEFINE_integer("top", 3, "Networks per batch size in the top table (Table II shows 3).", lower_bound=1)
_TARGET_AUC = flags.DEFINE_float("target_auc", 0.95, "Learning curves: the AUC whose volumes needed are estimated.")
_TARGET_ACCURACY = flags.DEFINE_float("target_accuracy", 0.90,
                                      "Learning curves: the accuracy whose volumes needed are estimated.")

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("logdir")
flags.declare_key_flag("overwrite")



def load(logdir, results_path=None, unreadable=None):
    """The results and a phrase saying where they came from.

    Args:
        unreadable: Where given, gets a line for each run folder's result.json that could not be read.

    Raises:
        InputError: no results at all, or a malformed or unreadable results file.
    """
    path = pathlib.Path(results_path) if results_path else pathlib.Path(logdir) / runs.RESULTS
    if path.is_file():
        try:
            results = runs.read_results(path)
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
        source = str(path)
    elif results_path:
        raise InputError(f"--results={results_path}: no such file")
    else:
        results = runs.collect(logdir, unreadable)
        source = f"{logdir}/*/*/batch*/fold*/{runs.RESULT}"
    if not results:
        named = f"; {unreadable[0]}" if unreadable else ""
        raise InputError(f"no results in {source} (run python -m octtl.sweep first){named}")
    return results, source


def main(argv):
    """The report command: writes the tables, figures and index.html of LOGDIR's results into --out_dir."""
    cli.no_arguments(argv)
    from octtl.results import page  # matplotlib, scipy: after --help, which answers without them

    outputs.check_folder(_OUT_DIR.value, "--out_dir", page.COMMAND, cli.OVERWRITE.value)  # before any reading
    unreadable = []
    results, source = load(cli.LOGDIR.value, _RESULTS.value, unreadable)
    if source.endswith(runs.RESULTS) and pathlib.Path(cli.LOGDIR.value).is_dir():
        listed = {runs.run_of(r) for r in results}
        missing = [r for r in runs.collect(cli.LOGDIR.value, unreadable) if runs.run_of(r) not in listed]
        if missing:
            print(f"report: note: {console.count(len(missing), 'finished run')} in {cli.LOGDIR.value} are not in {source}; "
                  f"python -m octtl.sweep --logdir={cli.LOGDIR.value} --collect adds them", file=sys.stderr)
    from octtl.results import annotation_budget, page  # matplotlib, scipy: after --help, which answers without them

    targets = {"auc": _TARGET_AUC.value, "accuracy": _TARGET_ACCURACY.value}
    annotation_budget.check_targets(targets)
    for line in unreadable:
        print(f"report: note: {line}; left out", file=sys.stderr)
    written = page.write_report(results, _OUT_DIR.value, source, _TOP.value, cli.LOGDIR.value,
                                overwrite=cli.OVERWRITE.value, left_out=unreadable, targets=targets)
    failed = sum(r.get("status") != "ok" for r in results)
    print(f"report: {console.count(len(results), 'run')} ({failed} failed) from {source} -> {len(written)} files in "
          f"{_OUT_DIR.value}; open {pathlib.Path(_OUT_DIR.value) / 'index.html'}")


run = cli.command(main)

if __name__ == "__main__":
    run()
