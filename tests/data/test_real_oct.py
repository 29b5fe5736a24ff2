"""Real Spectralis B-scans (../shared/data/oct2017-dev: 60 each of NORMAL, DME, CNV and DRUSEN, CC BY 4.0; these tests
convert NORMAL and DME): patients as groups, and
ImageNet transfer that works on them with the defaults.

The data lives beside a checkout, never in it; these tests skip, saying so, only where it is absent.
"""

import collections
import re

import pytest

from conftest import REPO
from octtl.data import folds
from octtl.data import converter, records
from octtl.training import session
from octtl.training.config import Config

DEV = REPO.parent / "shared" / "data" / "oct2017-dev"
PATIENT = r"^[A-Z]+-(\d+)-\d+$"
pytestmark = pytest.mark.skipif(not DEV.is_dir(), reason=f"{DEV} absent (real B-scans live beside the checkout)")


@pytest.fixture(scope="module")
def dev_records(tmp_path_factory):
    out = tmp_path_factory.mktemp("oct2017-dev") / "records"
    converter.convert(DEV, out, input_format="image_folders", classes=list(CLASSES), group_regex=PATIENT,
                    progress=None)
    return out


CLASSES = ("NORMAL", "DME")


def test_patients_become_groups(dev_records):
    # Only the converted classes' folders: the dev set holds CNV and DRUSEN too.
    stems = sorted(p.stem for c in CLASSES for p in (DEV / c).glob("*.jpeg"))
    patients = collections.Counter(re.match(PATIENT, s).group(1) for s in stems)
    meta = records.read_metadata(dev_records)
    assert sorted(meta.sources) == stems and len(meta) == 120
    assert collections.Counter(meta.volume_ids) == patients
    for patient in patients:
        mine = sorted(s for s in stems if re.match(PATIENT, s).group(1) == patient)
        rows = sorted((int(k), src) for v, k, src in zip(meta.volume_ids, meta.slices, meta.sources) if v == patient)
        assert rows == list(enumerate(mine))  # numbered in stem order
    # One patient has DME and NORMAL images: grouping keeps it whole, on one side of every split.
    both = [p for p in patients if len(set(meta.labels[meta.volume_ids == p])) == 2]
    assert both == ["4680138"]
    for fold in range(5):
        train, val = folds.split(meta.labels, "baseline", fold, 5, 0, meta.volume_ids)
        assert not set(meta.volume_ids[train]) & set(meta.volume_ids[val])


def test_imagenet_transfer_with_the_defaults_beats_scratch(dev_records, tmp_path):
    """The check that would have caught [-1, 1] inputs on caffe weights: at 96 px, 10 epochs, about 30 s."""
    results = {}
    for weights in ("imagenet", "none"):
        config = Config(data_dir=str(dev_records), logdir=str(tmp_path / weights), arch="squeezenet",
                                 batch=16, folds=5, group_by_volume=True, image_size=96, crop="resize",
                                 weights=weights)
        results[weights] = session.train(config, 0, say=lambda line: None, progress=False)
    transfer, scratch = results["imagenet"], results["none"]
    assert (transfer["preprocess"], transfer["weights_scaling"]) == ("backbone", "caffe")
    assert (scratch["preprocess"], scratch["weights_scaling"]) == ("paper", None)
    assert transfer["best_auc"] >= scratch["best_auc"] + 0.10, (transfer["best_auc"], scratch["best_auc"])
    assert transfer["best_accuracy"] > transfer["majority_rate"]
