"""The results stage: finished runs as the paper's tables and figures, with intervals and paired tests.

Takes: result.json and predictions.csv of finished runs (`octtl.runs.collect`, LOGDIR/results.jsonl).
Gives: Tables II-III with intervals (`tables`), paired comparisons and pooled ROC predictions (`comparisons`),
Friedman/Nemenyi/Wilcoxon and Nadeau-Bengio statistics (`stats`), Figs 2-4, CD diagrams and ROC curves
(`figures`), variant tables (`variants`), operating points, calibration and reliability diagrams (`clinical`), the
vendors left out against within-vendor folds (`vendors`) and the report folder with its index.html (`page`).
"""
