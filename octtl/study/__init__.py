"""The study stage: the paper's grid of runs planned, shared between tasks, and executed in worker sessions.

Takes: the networks, batch sizes, designs, folds and variants of a study, and the records.
Gives: every run's folder and LOGDIR/results.jsonl. `runner` plans the runs, shards them over tasks and runs one
`worker` process per network x batch x variant group under per-run locks; `batch_probe` measures the largest
batch that fits (`python -m octtl.max_batch`).
"""
