"""The training stage: the paper's protocol on decoded B-scans, one run or a session of many.

Takes: a run's settings (`octtl.runs.Config`), records (`octtl.data`) and a network (`octtl.nets`).
Gives: run folders as `octtl.runs` defines them (result.json, predictions.csv, flags.txt, best.keras, TensorBoard
events). `session` trains (decode once, build once, reset per run); `early_stop` is the half-epoch early stop
with best-accuracy tracking; `tensorboard` writes the events (loss per iteration, checks, hparams, PR curve);
`clinical` records each run's operating points, calibration and temperature.
"""
