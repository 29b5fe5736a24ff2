"""The frozen backbone of `--trainable=head` and of two_phase's first phase: only the new head trains.

The backbone is every layer before the new head (octtl.nets.models.HEAD). Frozen, it runs in inference mode
(batch norm on its ImageNet statistics, dropout off), as the keras-io transfer-learning guide runs its base model
(`base_model(x, training=False)`), so a B-scan's backbone output never changes while the head trains. Without
augmentation that output is computed once per session and the head trains on it (`Frozen.features`): the same
numbers as running the frozen backbone at every step, for the cost of the head alone. With augmentation (a
B-scan's view changes every epoch), or where the outputs would not fit in memory, the head trains through the
backbone, which then runs at every step, still in inference mode.

Either way the trainer's only trainable variables are the head's, shared with the session's network, so the
checkpoint is the whole network with its new head, and its backbone's weights are byte for byte the ones it
was built with. Both take their batches from octtl.training.fitting.HostBatches (numpy's order on every
backend), so cached and uncached training see the same batches.
"""

import contextlib
import time
from typing import Callable, Optional

import keras
import numpy as np

from octtl.data import pipeline
from octtl.nets import devices, models

# The cached outputs may take at most this share of the memory the host has available when the session starts.
_CACHE_SHARE = 0.5


class _Inference(keras.layers.Layer):
    """A network run in inference mode with no trainable weights: the frozen backbone inside the head's trainer.

    `training=False` is passed on the inner call, where the caller's training flag cannot reach it (a functional
    model passes its own flag to every layer that takes one; this layer's `call` takes none). Which variables
    train is `Frozen.head_only`'s business: Keras collects a nested network's variables by their own flags.
    """

    def __init__(self, network: keras.Model, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.network = network

    def call(self, inputs):
        return self.network(inputs, training=False)

    def compute_output_spec(self, inputs):
        return self.network.compute_output_spec(inputs)


def cache_bytes(model: keras.Model, count: int) -> int:
    """Bytes the backbone's outputs for `count` B-scans take (float32)."""
    shape = model.get_layer(models.HEAD).input.shape[1:]
    return int(count * np.prod(shape) * 4)


def fits_in_memory(needed: int, available: Optional[int]) -> bool:
    """Whether `needed` bytes of cached outputs leave the host enough (None available: unknown, assume so)."""
    return available is None or needed <= _CACHE_SHARE * available


class Frozen:
    """The head-only trainer of one session (built and compiled once) and, where cached, the backbone's outputs.

    Args:
        model: The session's network, head swapped (its head layer is models.HEAD).
        compile_model: Compiles a trainer with the session's loss, metrics and SGD at --lr.
        batch: The batch the cached outputs are computed and predicted in (the evaluation batch).
        crops: Every B-scan's crop (uint8, n x size x size x 1) when the outputs are cached; None trains the head
            through the backbone.
    """

    def __init__(self, model: keras.Model, compile_model: Callable[[keras.Model], None], batch: int,
                 crops: Optional[np.ndarray]):
        head = model.get_layer(models.HEAD)
        self.backbone = keras.Model(model.input, head.input, name=f"{model.name}_backbone")
        self.head = keras.Model(head.input, model.output, name=f"{model.name}_head")
        self._batch = batch
        self.features, self.seconds = None, 0.0
        if crops is not None:
            started = time.perf_counter()
            forward = devices.forward(self.backbone, batch, crops.shape[1:], str(crops.dtype))
            self.features = np.concatenate([np.asarray(forward(images))[:count]
                                            for images, count in pipeline.padded_batches(crops, batch)])
            self.seconds = time.perf_counter() - started
            self.trainer = self.head
            self._head_forward = devices.forward(self.head, batch, self.features.shape[1:], str(self.features.dtype))
        else:
            image = keras.Input(model.input.shape[1:], dtype=model.input.dtype, name="image")
            self.trainer = keras.Model(image, self.head(_Inference(self.backbone, name="frozen_backbone")(image)),
                                       name=f"{model.name}_frozen")
        with self.head_only():
            compile_model(self.trainer)  # its optimizer is built on the head's variables alone

    @contextlib.contextmanager
    def head_only(self):
        """The backbone's layers frozen while the trainer is compiled or trains, as they were afterwards.

        The session's network shares those layers and, in two_phase's second phase, trains them: their flags are
        set only while the head trains, so each of the two networks keeps the trainable variables it was
        compiled and traced with.
        """
        saved = [(layer, layer.trainable) for layer in self.backbone.layers]
        for layer, _ in saved:
            layer.trainable = False
        try:
            yield
        finally:
            for layer, trainable in saved:
                layer.trainable = trainable

    @property
    def cached(self) -> bool:
        """Whether the head trains on the backbone's outputs computed once."""
        return self.features is not None

    def views(self, images: np.ndarray) -> np.ndarray:
        """What the trainer's batches are cut from: the cached outputs, else the session's B-scan views."""
        return self.features if self.cached else images

    def predict(self, indices) -> np.ndarray:
        """The network's probabilities for B-scans `indices` from their cached outputs (the head alone)."""
        out = [np.asarray(self._head_forward(features))[:count]
               for features, count in pipeline.padded_batches(self.features[indices], self._batch)]
        return np.concatenate(out).astype(np.float64)


def for_session(session, compile_model) -> Frozen:
    """A training session's frozen backbone (--trainable=head, two_phase), its outputs cached where they can be
    (octtl.training.session.Session's `cache_features`), said in one line.

    Args:
        session: The session, its network built and its B-scans decoded.
        compile_model: octtl.training.session.compile_model (the session's loss, metrics and SGD).
    """
    config, say = session.config, session.say
    needed = cache_bytes(session.model, len(session.metadata))
    available = pipeline.host_available_bytes()
    cache = session.cache_features
    if cache is None:
        cache = not session.augmentations and fits_in_memory(needed, available)
    if session.augmentations:
        why = "the backbone runs at every step (augmentation changes each B-scan's view every epoch)"
    elif not cache and session.cache_features is None:
        why = (f"the backbone runs at every step (its outputs would take {needed / 2**20:.0f} MB of the "
               f"{available / 2**20:.0f} MB available)")
    else:
        why = "the backbone runs at every step"
    built = Frozen(session.model, lambda model: compile_model(model, config, session.task, config.head_rate),
                   config.validation_batch, session.decoded.crops if cache else None)
    if built.cached:
        why = (f"its outputs for the {len(session.metadata)} B-scans computed once ({needed / 2**20:.0f} MB, "
               f"{built.seconds:.1f} s): the head trains on them")
    second = (f"; then every layer at lr {config.second_lr:g} (two_phase)" if config.trainable == "two_phase"
              else "")
    say(f"train: --trainable={config.trainable}: the backbone frozen in inference mode, the head trains at lr "
        f"{config.head_rate:g}{second}; {why}")
    if session.weights.path is None:
        say("train: note: the frozen backbone has random weights (--weights=none): only the head learns")
    return built
