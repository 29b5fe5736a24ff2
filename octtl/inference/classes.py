"""Prediction with models beyond the paper's two classes: K classes (OCT2017's four), or RETOUCH's fluid types.

predict's own path (octtl.inference.predictor) is the paper's: one p_fluid per B-scan. Here a K-class model
gives one `p_<class>` column per class and the most probable class; a fluid-types model gives `p_irf`, `p_srf`
and `p_ped` per B-scan, the types above the threshold, and per volume the highest probability of each type
(how RETOUCH scored detection). Where labels are known (records of the model's classes; reference volumes for
the types) the console gives accuracy and AUC: macro over the classes, or per type per B-scan and per volume.
"""

import dataclasses
import pathlib
from typing import List, Optional

import numpy as np

from octtl import outputs
from octtl.training import metrics

TYPES = tuple(metrics.FLUID_TYPES)


@dataclasses.dataclass(frozen=True)
class Report:
    """What a K-class or fluid-types prediction produced; `lines` renders it for the console."""

    kind: str
    classes: tuple
    types: bool
    threshold: float
    rows: list
    summaries: list
    scores: Optional[dict]
    output: pathlib.Path
    summary_path: pathlib.Path
    input_notes: tuple = ()

    def lines(self) -> List[str]:
        """The console report: counts per class (or type), one line per volume, scores where labels exist."""
        out = [f"{len(self.rows)} B-scan{'s' * (len(self.rows) != 1)} of {len(self.summaries)} volume"
               f"{'s' * (len(self.summaries) != 1)} ({self.kind})"]
        out += [f"note: {note}" for note in self.input_notes]
        if self.types:
            counts = {t: sum(t in r["predicted"].split("+") for r in self.rows) for t in self.classes}
            out.append("predicted present (p > {:g}): ".format(self.threshold)
                       + ", ".join(f"{t} {n}" for t, n in counts.items()))
            for s in self.summaries:
                out.append(f"{s['volume_id']}: " + ", ".join(f"max p_{t} {float(s[f'max_p_{t}']):.4f}"
                                                             for t in self.classes))
        else:
            counts = {c: sum(r["predicted"] == c for r in self.rows) for c in self.classes}
            out.append("predicted: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
            for s in self.summaries:
                out.append(f"{s['volume_id']}: " + ", ".join(f"{c} {s[f'n_{c}']}" for c in self.classes))
        if self.scores:
            out += self.scores["lines"]
        out.append(f"wrote {self.output} and {self.summary_path}")
        return out


def columns(classes, types: bool, labelled: bool) -> tuple:
    """The predictions CSV's columns."""
    probabilities = tuple(f"p_{c}" for c in classes)
    labels = (tuple(f"label_{t}" for t in classes) if types else ("label",)) if labelled else ()
    return ("volume_id", "slice", *probabilities, "predicted", *labels, "source")


def predict(model, config, predictor, volumes, output, kind: str, threshold: float, overwrite: bool,
            input_notes=(), summary_path=None) -> Report:
    """Predicts every B-scan of `volumes` (the input's, read and checked by octtl.inference.predictor.volumes_of)
    with a K-class or fluid-types model and writes the two CSVs."""
    types = config.task == "fluid_types"
    classes = tuple(config.classes)
    rows, summaries = [], []
    labels, scores_all, volume_of = [], [], []
    for scans in volumes:
        p = predictor.probabilities(predictor.inputs(scans.images))
        known = _labels(scans, types, config.min_fluid_voxels)
        for k in range(len(p)):
            row = {"volume_id": scans.volume_id, "slice": int(scans.slices[k]), "source": scans.sources[k],
                   **{f"p_{c}": repr(float(p[k, j])) for j, c in enumerate(classes)},
                   "predicted": ("+".join(t for j, t in enumerate(classes) if p[k, j] > threshold) if types
                                 else classes[int(np.argmax(p[k]))])}
            if known is not None:
                row.update({f"label_{t}": int(known[k, j]) for j, t in enumerate(classes)} if types
                           else {"label": int(known[k])})
            rows.append(row)
        summaries.append(_summary(scans.volume_id, p, classes, types, threshold))
        if known is not None:
            labels.append(known)
            scores_all.append(p)
            volume_of += [scans.volume_id] * len(p)
    scores = _scores(classes, types, labels, scores_all, volume_of) if labels else None
    summary = summary_path or pathlib.Path(output).with_name(f"{pathlib.Path(output).stem}_volumes.csv")
    summary_columns = ["volume_id", "n_bscans", *([f"max_p_{t}" for t in classes] + [f"n_{t}" for t in classes])]
    with outputs.staged(output, "--output") as staging:
        outputs.write_csv(staging / "predictions.csv", columns(classes, types, bool(labels)), rows)
        outputs.write_csv(staging / "summary.csv", summary_columns, summaries)
        outputs.publish(staging / "summary.csv", summary, overwrite)
        outputs.publish(staging / "predictions.csv", output, overwrite)
    return Report(kind, classes, types, threshold, rows, summaries, scores, pathlib.Path(output), summary,
                  tuple(input_notes))


def _labels(scans, types: bool, min_voxels: int) -> Optional[np.ndarray]:
    """The B-scans' known answers: the class per B-scan, or 0/1 per type (from the reference's voxel counts)."""
    if types:
        counts = scans.type_counts
        if counts is None or (np.asarray(counts) < 0).any():  # image folders: no voxel counts per type
            return None
        return (np.asarray(counts) >= max(1, min_voxels)).astype(np.int64)
    return None if scans.labels is None else np.asarray(scans.labels, np.int64)


def _summary(volume_id, p, classes, types, threshold) -> dict:
    """One volume: its B-scans, the highest probability of each class or type, and how many B-scans each has."""
    chosen = (p > threshold) if types else (np.arange(len(classes)) == np.argmax(p, axis=1)[:, None])
    return {"volume_id": volume_id, "n_bscans": len(p),
            **{f"max_p_{c}": repr(float(p[:, j].max())) for j, c in enumerate(classes)},
            **{f"n_{c}": int(chosen[:, j].sum()) for j, c in enumerate(classes)}}


def _scores(classes, types, labels, probabilities, volume_of) -> dict:
    """Accuracy and AUC where labels exist: macro over classes, or per type per B-scan and per volume."""
    y, p = np.concatenate(labels), np.concatenate(probabilities)
    if not types:
        s = metrics.multiclass_scores(p, y, classes)
        macro = "n/a" if s["macro_auc"] is None else f"{s['macro_auc']:.4f}"
        return {**s, "lines": [f"accuracy {s['accuracy']:.4f}, macro AUC {macro} on {s['n']} labelled B-scans; "
                               f"confusion (rows true {', '.join(classes)}): {s['confusion']}"]}
    per_bscan = metrics.type_auc(p, y)
    ids, volume_p = metrics.volume_scores(p, np.asarray(volume_of))
    _, volume_y = metrics.volume_labels(y, np.asarray(volume_of))
    per_volume = metrics.type_auc(volume_p, volume_y)

    def show(value):
        return "n/a" if value is None else f"{value:.4f}"

    lines = [f"{t}: AUC {show(per_bscan[t])} per B-scan ({len(y)}), {show(per_volume[t])} per volume "
             f"({len(ids)}, the volume's highest p_{t})" for t in classes]
    return {"type_auc": per_bscan, "volume_type_auc": per_volume, "lines": lines}
