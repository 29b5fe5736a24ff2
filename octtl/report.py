"""Regenerates the paper's Tables II-III and Figs 2-4 from a sweep's results.

  python -m octtl.report --logdir=runs --out_dir=report

Reads LOGDIR/results.jsonl (or, when there is none, every LOGDIR/*/*/batch*/fold*/result.json) and writes
report/table_{design}.md|csv (mean, std and 95% interval), paired_{design}.csv (Friedman, Nemenyi and Wilcoxon
tests across folds), fig2/3/4_{design}.png, accuracy_by_design.png, cd_{design}_batch{B}.png (critical-difference
diagrams), roc_{design}.png (from the run folders' predictions.csv) and index.html (self-contained: figures
embedded, opens offline).
"""

import os
import pathlib
import sys

os.environ.setdefault("MPLBACKEND", "Agg")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from octtl import cli  # noqa: E402
from octtl import runs  # noqa: E402
from octtl import console  # noqa: E402

_OUT_DIR = flags.DEFINE_string("out_dir", "report", "Folder the tables, figures and index.html are written to.")
_RESULTS = flags.DEFINE_string("results", None,
                               f"Results file; default LOGDIR/{runs.RESULTS}, else the run folders.")
_TOP = flags.DEFINE_integer("top", 3, "Networks per batch size in the top table (Table II shows 3).", lower_bound=1)

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("logdir")



def load(logdir, results_path=None):
    """The results and a phrase saying where they came from.

    Raises:
        ValueError: no results at all, or a malformed results file.
    """
    path = pathlib.Path(results_path) if results_path else pathlib.Path(logdir) / runs.RESULTS
    if path.is_file():
        results = runs.read_results(path)
        source = str(path)
    elif results_path:
        raise ValueError(f"--results={results_path}: no such file")
    else:
        results = runs.collect(logdir)
        source = f"{logdir}/*/*/batch*/fold*/{runs.RESULT}"
    if not results:
        raise ValueError(f"no results in {source} (run python -m octtl.sweep first)")
    return results, source


def main(argv):
    """The report command: writes the tables, figures and index.html of LOGDIR's results into --out_dir."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        results, source = load(cli.LOGDIR.value, _RESULTS.value)
    except (ValueError, OSError) as e:
        sys.exit(f"report: error: {e}")
    if source.endswith(runs.RESULTS) and pathlib.Path(cli.LOGDIR.value).is_dir():
        listed = {runs.run_of(r) for r in results}
        missing = [r for r in runs.collect(cli.LOGDIR.value) if runs.run_of(r) not in listed]
        if missing:
            print(f"report: note: {console.count(len(missing), 'finished run')} in {cli.LOGDIR.value} are not in {source}; "
                  f"python -m octtl.sweep --logdir={cli.LOGDIR.value} --collect adds them", file=sys.stderr)
    from octtl.results import page  # matplotlib, scipy: after --help, which answers without them

    try:
        written = page.write_report(results, _OUT_DIR.value, source, _TOP.value, cli.LOGDIR.value)
    except ValueError as e:
        sys.exit(f"report: error: {e}")
    failed = sum(r.get("status") != "ok" for r in results)
    print(f"report: {console.count(len(results), 'run')} ({failed} failed) from {source} -> {len(written)} files in "
          f"{_OUT_DIR.value}; open {pathlib.Path(_OUT_DIR.value) / 'index.html'}")


def run():
    """Console-script entry point: parses the flags and runs main."""
    app.run(main)


if __name__ == "__main__":
    run()
