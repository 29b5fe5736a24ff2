"""The paper's protocol (section II-A) as plain values and small rules: the one place they are written.

Flag defaults (octtl.train, the sweep, the largest-batch probe) and `octtl.training.config.Config`'s defaults come from here,
so changing a value of the protocol means changing one line. Imports nothing heavy: `--help` stays instant.
"""

from typing import Optional

# The paper's designs: train on 9 folds and validate on 1 (90/10), or the reverse (10/90); and beyond it (issue
# #24) the vendor design: each vendor of the records in turn is the test set, the other vendors train and validate.
VENDOR = "vendor"
DESIGNS = ("baseline", "limited", VENDOR)
FOLDS = 10
LR = 1e-4
MOMENTUM = 0.9
MAX_EPOCHS = 10
CHECKS_PER_EPOCH = 2  # validation-loss checks per epoch
PATIENCE = 5  # stop after more than this many checks without a lower validation loss
SMALLEST_BATCH = 8  # the paper varied the batch from 8 up to the largest that fitted
SEED = 0
MIN_EVAL_BATCH = 64


def eval_batch(batch: int, eval_batch: Optional[int] = None) -> int:
    """The validation batch: `eval_batch` when given, else twice the training batch, at least 64.

    Evaluation keeps no gradients or optimizer state, so a larger batch than training's fits.
    """
    return int(eval_batch) if eval_batch else max(2 * int(batch), MIN_EVAL_BATCH)
