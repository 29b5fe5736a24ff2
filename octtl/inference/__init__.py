"""The inference stage: a trained model applied to new scans, explained, and exported.

Takes: a run's best.keras with its result.json, and new scans (volumes, records, image folders or images).
Gives: per-B-scan probabilities and per-volume summaries (`predictor`, reading scans with `inputs`), Grad-CAM
heatmaps and the pointing game (`gradcam`), a SavedModel with the crop inside (`savedmodel`), and the run's
thresholds, temperature and intervals over volumes on labelled external sets (`external`).
"""
