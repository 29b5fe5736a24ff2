"""Writes a synthetic RETOUCH-like training set (oct.mhd/raw + reference.mhd/raw per volume) for tests and demos.

Example:
  python tools/make_synthetic.py --output_dir=data/synthetic --vendor=spectralis --volumes=24

--vendor is repeatable (default spectralis); --seed gives byte-identical files for the same value.
"""

import pathlib
import sys

from absl import flags

from octtl import cli
from octtl.errors import InputError
from octtl import outputs
from octtl.synthetic import render
from octtl import console

FLAGS = flags.FLAGS
flags.DEFINE_integer("volumes", 24, "Volumes per vendor; numbering continues past the vendor's RETOUCH ids.")
flags.DEFINE_integer("bscans", None, "B-scans per volume (default: the vendor's).")
flags.DEFINE_integer("height", None, "Rows per B-scan (default: the vendor's).")
flags.DEFINE_integer("width", None, "Columns per B-scan (default: the vendor's).")
flags.DEFINE_float("fluid_fraction", 0.6, "Target share of B-scans with fluid.")
flags.DEFINE_string("render_example", None, "If set, save a B-scan with its coloured reference to this PNG.")

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("output_dir")
flags.declare_key_flag("vendor")
flags.declare_key_flag("seed")



def _progress(vendor: str, counts: list):
    """Per-volume counter on stderr; also collects (fluid B-scans, B-scans) per volume for the summary."""
    def report(done: int, total: int, summary: render.VolumeSummary) -> None:
        counts.append((summary.fluid_bscans, summary.bscans))
        # Rewrite one line on a terminal; keep one line per volume in logs.
        start, end = ("\r", "\n" if done == total else "") if sys.stderr.isatty() else ("", "\n")
        print(f"{start}{vendor}: {done}/{total} volumes", end=end, file=sys.stderr, flush=True)
    return report


def _render(folders: list[pathlib.Path], path: str) -> None:
    """Renders the most telling B-scan of the written volumes, read back as the converter will read them."""
    import SimpleITK as sitk

    best = None
    for folder in folders:
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "reference.mhd")))
        index = render.example_index(reference)
        score = render.example_score(reference[index])
        if best is None or score > best[0]:
            best = (score, folder, index, reference)
    _, folder, index, reference = best
    oct_volume = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "oct.mhd")))
    render.render_example(oct_volume, reference, index, path)
    print(f"example: {folder.name} B-scan {index} -> {path}")


def main(argv):
    """The make_synthetic command: writes each --vendor's synthetic training set under --output_dir."""
    cli.no_arguments(argv)
    cli.require("output_dir")
    vendors = list(dict.fromkeys(FLAGS.vendor or ["spectralis"]))
    if "all" in vendors:
        vendors = list(render.VENDORS)
    output_dir = pathlib.Path(FLAGS.output_dir)
    # Check every vendor before writing any, so a bad flag never leaves half of a multi-vendor request.
    for vendor in vendors:
        folder = output_dir / render.VENDORS[vendor].folder
        if outputs.is_occupied(folder):
            raise InputError(f"{folder} already exists and is not empty")
    written = []
    for vendor in vendors:
        fluid = []
        folders = render.write_dataset(
            output_dir, vendor=vendor, volumes=FLAGS.volumes, seed=FLAGS.seed, bscans=FLAGS.bscans,
            height=FLAGS.height, width=FLAGS.width, fluid_fraction=FLAGS.fluid_fraction,
            on_volume=_progress(vendor, fluid))
        bscans = sum(total for _, total in fluid)
        share = sum(wet for wet, _ in fluid) / bscans
        print(f"{vendor}: {console.count(len(folders), 'volume')} ({folders[0].name}-{folders[-1].name}), {bscans} B-scans, "
              f"{share:.1%} with fluid -> {folders[0].parent}")
        written += folders
    if FLAGS.render_example:
        _render(written, FLAGS.render_example)


run = cli.command(main)

if __name__ == "__main__":
    run()
