"""What a run learns from each B-scan, and how it is scored: the records' classes, or RETOUCH's three fluid types.

`--task=fluid` (the default) learns the records' label: the paper's two classes (normal, fluid), or the K
classes of image folders such as Kermany's OCT2017 (NORMAL, DME, CNV, DRUSEN) with a K-way softmax head.
Two-class runs are the paper's: accuracy with p_fluid > 0.5, the AUC of p_fluid, predictions.csv's `p_fluid`.
With K > 2: accuracy of the most probable class, the one-vs-rest AUC of each class and their macro mean (the
run's `best_auc`, shown as "macro AUC"), the confusion matrix, one `p_<class>` column per class.

`--task=fluid_types` learns RETOUCH's detection task (Bogunovic et al. 2019): three sigmoid outputs, IRF, SRF
and PED, each present in a B-scan when its voxel count of that code reaches the records' `min_fluid_voxels`;
binary cross-entropy on each; the best checkpoint is the one of highest mean AUC over the three (accuracy would
follow the rare types' prevalence). Folds are grouped by volume and stratified on each volume's combination of
types. The per-volume scores RETOUCH used are the report's (octtl.results.fluid_types), from the predictions.
"""

import dataclasses
import math

import numpy as np

from octtl import runs
from octtl.data import records
from octtl.errors import InputError
from octtl.training import metrics
from octtl.training.config import TASKS
from octtl.training.early_stop import Evaluation

FLUID_CLASSES = tuple(records.CLASSES)  # the paper's two: normal, fluid


@dataclasses.dataclass(frozen=True)
class Task:
    """One run's learning problem.

    Attributes:
        name: 'fluid' (the records' classes) or 'fluid_types'.
        classes: The records' class names (label k is classes[k]); for fluid types, metrics.FLUID_TYPES.
    """

    name: str
    classes: tuple

    @property
    def types(self) -> bool:
        """Whether the run learns the three fluid types (sigmoid outputs) rather than one class per B-scan."""
        return self.name == "fluid_types"

    @property
    def binary(self) -> bool:
        """Whether the run is the paper's two-class one (p_fluid, accuracy at 0.5)."""
        return not self.types and len(self.classes) == 2

    @property
    def outputs(self) -> int:
        """The head's width."""
        return len(self.classes)

    @property
    def activation(self) -> str:
        """The head's activation: a softmax over the classes, or a sigmoid per type."""
        return "sigmoid" if self.types else "softmax"

    @property
    def auc_words(self) -> str:
        """What the run's `best_auc` is, as the console and the report name it."""
        return "mean type AUC" if self.types else "AUC" if self.binary else "macro AUC"

    def targets(self, metadata: records.Metadata, manifest: dict) -> np.ndarray:
        """What the network learns per example: the label (n,), or 0/1 per type (n, 3)."""
        if not self.types:
            return metadata.labels.astype(np.int32)
        return metrics.type_labels(metadata.irf, metadata.srf, metadata.ped,
                                   int(manifest.get("min_fluid_voxels") or 1)).astype(np.float32)

    def strata(self, metadata: records.Metadata, targets: np.ndarray) -> np.ndarray:
        """The labels the folds are stratified on: the class, or each volume's combination of types."""
        if not self.types:
            return metadata.labels
        combination = targets.astype(np.int64) @ np.array([1, 2, 4])
        per_volume = {}
        for volume, code in zip(metadata.volume_ids, combination):
            per_volume[volume] = per_volume.get(volume, 0) | int(code)
        return np.array([per_volume[v] for v in metadata.volume_ids], np.int64)

    def evaluate(self, probabilities: np.ndarray, targets: np.ndarray, iteration: int, check: bool) -> Evaluation:
        """The network's outputs scored against the targets: loss, accuracy, AUC and what the checkpoint is
        chosen by (accuracy; the mean AUC for fluid types)."""
        from octtl.training import early_stop

        if self.binary:
            return early_stop.evaluate_probabilities(probabilities, targets, iteration, check)
        probabilities = np.asarray(probabilities, np.float64)
        if self.types:
            eps = metrics.EPSILON
            p = np.clip(probabilities, eps, 1 - eps)
            y = np.asarray(targets, np.float64)
            loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
            aucs = metrics.type_auc(probabilities, targets)
            accuracy = metrics.type_accuracy(probabilities, targets)
            defined = [a for a in aucs.values() if a is not None]
            auc = float(np.mean(defined)) if defined else math.nan
            return Evaluation(iteration, loss, float(np.mean(list(accuracy.values()))), auc, check, probabilities,
                              {"type_auc": aucs, "type_accuracy": accuracy},
                              score=auc if defined else -math.inf)
        scores = metrics.multiclass_scores(probabilities, targets, self.classes)
        auc = math.nan if scores["macro_auc"] is None else scores["macro_auc"]
        return Evaluation(iteration, scores["cross_entropy"], scores["accuracy"], auc, check, probabilities,
                          {"class_auc": scores["auc"], "confusion": scores["confusion"]})

    def record(self, evaluation: Evaluation, prefix: str = "") -> dict:
        """result.json's per-class or per-type figures of an evaluation (`prefix` 'test_' for the test fold's)."""
        return {f"{prefix}{key}": value for key, value in evaluation.details.items()}

    def prediction_columns(self) -> tuple:
        """predictions.csv's columns (the two-class runs' are the paper's, unchanged)."""
        if self.binary:
            return runs.PREDICTION_COLUMNS
        if self.types:
            return ("volume_id", "slice", *(f"label_{t}" for t in metrics.FLUID_TYPES),
                    *(f"p_{t}" for t in metrics.FLUID_TYPES), "vendor", "source")
        return ("volume_id", "slice", "label", *(f"p_{c}" for c in self.classes), "predicted", "source")

    def prediction_rows(self, metadata: records.Metadata, targets: np.ndarray, indices,
                        probabilities: np.ndarray) -> list:
        """predictions.csv's rows: one per B-scan, probabilities at full precision (repr round-trips them)."""
        rows = []
        for i, p in zip(indices, np.asarray(probabilities, np.float64)):
            head = [metadata.volume_ids[i], int(metadata.slices[i])]
            if self.binary:
                rows.append([*head, int(metadata.labels[i]), repr(float(p[1])), metadata.sources[i]])
            elif self.types:
                rows.append([*head, *(int(t) for t in targets[i]), *(repr(float(x)) for x in p),
                             metadata.vendors[i], metadata.sources[i]])
            else:
                rows.append([*head, int(metadata.labels[i]), *(repr(float(x)) for x in p),
                             self.classes[int(np.argmax(p))], metadata.sources[i]])
        return rows

    def majority(self, targets: np.ndarray) -> float:
        """What always answering the most frequent class scores (per type, averaged, for fluid types)."""
        targets = np.asarray(targets)
        if self.types:
            share = targets.mean(axis=0)
            return float(np.mean(np.maximum(share, 1 - share)))
        counts = np.bincount(targets.astype(np.int64), minlength=self.outputs)
        return float(counts.max() / max(1, counts.sum()))


def resolve(name: str, manifest: dict, metadata: records.Metadata, data_dir) -> Task:
    """The run's task on these records, refused in one line where the records cannot give it.

    Raises:
        InputError: an unknown --task, fluid types from records without per-type counts (image folders).
    """
    if name not in TASKS:
        raise InputError(f"--task={name}: choose from {', '.join(TASKS)}")
    if name == "fluid_types":
        if len(metadata) and (np.asarray(metadata.irf) < 0).any():
            raise InputError(f"--task=fluid_types: {data_dir} holds no voxel counts per fluid type (records "
                             "converted from image folders); convert RETOUCH volumes with their reference.mhd")
        return Task(name, tuple(metrics.FLUID_TYPES))
    classes = tuple(str(c) for c in manifest.get("classes") or FLUID_CLASSES)
    return Task(name, classes)

