"""Exports a trained octtl model as a TensorFlow SavedModel that takes raw uint8 B-scans of any size.

The denoising (--denoise=median; nlm and bilateral have no TensorFlow form, and export refuses those models with
one line) and the crop of the model's training run are traced into the graph (its scaling is inside the model already, or, for
paper-mode models saved before it moved there, traced in too), so `tf.saved_model.load` or TF Serving can use
it with TensorFlow alone, without octtl. Signature `serving_default`: input `bscans`, uint8 (batch, rows,
columns), one size per call; output `p_fluid`, float32 (batch,), for the paper's two-class models;
`probabilities`, float32 (batch, K), for K classes (their names in octtl_export.json); `p_irf`, `p_srf` and
`p_ped`, float32 (batch,) each, for fluid-types models. With a centre crop, B-scans smaller than the
crop fail (as predict refuses them). `octtl_export.json` beside `saved_model.pb` records the run config. For TF
Serving, pass a version folder (`.../octtl/1`).
"""

import dataclasses
import json
import pathlib
import shutil

import numpy as np

from octtl import outputs

from octtl.inference import predictor
from octtl.errors import InputError

EXPORT_METADATA = "octtl_export.json"
SERVING_INPUT = "bscans"
SERVING_OUTPUT = "p_fluid"
PROBABILITIES = "probabilities"  # a K-class model's output


def _described(config) -> str:
    """The serving signature's outputs in words, for octtl_export.json."""
    if config.task == "fluid_types":
        return ", ".join(f"p_{name}: float32 (batch,), the sigmoid probability of {name}" for name in config.classes)
    if len(config.classes) == 2:
        return f"{SERVING_OUTPUT}: float32 (batch,), the softmax probability of fluid"
    return f"{PROBABILITIES}: float32 (batch, {len(config.classes)}), the softmax over {', '.join(config.classes)}"


def check_output(output_dir, overwrite: bool = False):
    """Refuses a taken or impossible output folder before anything is loaded (needs no TensorFlow)."""
    outputs.check_target(output_dir, "--output", overwrite, folder=True)


def export(model_path, output_dir, overwrite: bool = False, temperature=None) -> dict:
    """Writes the SavedModel of `model_path` into `output_dir` (absent or empty, unless `overwrite`).

    With `temperature` (--calibrated: the run's, octtl.inference.external.temperature) the graph returns
    softmax(log p / T)'s fluid column, as predict --calibrated does (octtl.training.calibration.apply_temperature).

    One piece: the serving function closes over the model, its crop and its scaling, which must be traced
    together into the one signature the SavedModel serves.

    Returns:
      The metadata written to octtl_export.json.

    Raises:
      predictor.ModelError: the model file. InputError: the output folder.
    """
    import keras
    import tensorflow as tf

    from octtl.data import pipeline

    from octtl.data import denoise

    output_dir = pathlib.Path(output_dir)
    check_output(output_dir, overwrite)
    model, config = predictor.load_model(model_path)
    size = config.image_size
    rescale = predictor.rescale_mode(model, config)
    if config.denoise not in denoise.IN_TENSORFLOW:
        # Refused before anything is written: the graph would feed the model other inputs than training did.
        try:
            denoise.tf_denoise(tf.zeros([1, 8, 8], tf.uint8), config.denoise, config.denoise_strength)
        except InputError as e:
            raise InputError(f"--model={model_path}: its run used {e}") from None

    def serve(bscans):
        if config.crop == "center":
            shape = tf.shape(bscans)
            tf.debugging.assert_greater_equal(
                tf.minimum(shape[1], shape[2]), size,
                message=f"B-scans must be at least {size}x{size} pixels for the centre crop of this model")
        bscans = denoise.tf_denoise(bscans, config.denoise, config.denoise_strength)  # as training decoded them
        cropped = pipeline.crop(bscans[..., None], size, config.crop)
        inputs = tf.cast(pipeline.rescale(cropped, rescale), tf.float32)
        probabilities = tf.cast(model(inputs, training=False), tf.float32)
        if config.task == "fluid_types":
            return {f"p_{name}": probabilities[:, k] for k, name in enumerate(config.classes)}
        if temperature is not None:  # log p floored at the smallest float32, as calibration._logits does
            floor = float(np.nextafter(np.float32(0), np.float32(1)))
            probabilities = tf.nn.softmax(tf.math.log(tf.maximum(probabilities, floor)) / float(temperature))
        if len(config.classes) == 2:
            return {SERVING_OUTPUT: probabilities[:, 1]}
        return {PROBABILITIES: probabilities}

    archive = keras.export.ExportArchive()
    archive.track(model)
    # The first endpoint is also saved as serving_default, the signature TF Serving calls.
    archive.add_endpoint("serve", serve,
                         input_signature=[tf.TensorSpec([None, None, None], tf.uint8, name=SERVING_INPUT)])
    metadata = {**dataclasses.asdict(config), "fluid_codes": list(config.fluid_codes), "model": str(model_path),
                "signature": "serving_default", "temperature": temperature,
                "input": f"{SERVING_INPUT}: uint8 (batch, rows, columns)",
                "output": _described(config)}
    staging = outputs.staging_dir(output_dir, "--output")
    try:
        try:
            archive.write_out(str(staging / "saved_model"), verbose=False)
        except OSError as e:
            raise predictor.InputError(f"--output={output_dir}: cannot write ({e.strerror or e})") from None
        (staging / "saved_model" / EXPORT_METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
        outputs.publish(staging / "saved_model", output_dir, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metadata
