"""The devices of the Keras backend that runs the networks: TensorFlow, JAX or PyTorch (issue #26).

Each backend names its GPUs, shares a card, reports running out of memory and counts peak memory its own way;
this module is the one place that knows how, so training, the sweep's workers and the largest-batch probe ask
it rather than TensorFlow. `octtl.console.start_backend` imports the backend (quietly) before any of these run.

Sharing a card between several `--workers`: TensorFlow grows its memory as needed (memory growth); JAX would
preallocate most of the card in the first process, so `console.start_backend` sets
XLA_PYTHON_CLIENT_PREALLOCATE=false before JAX starts; PyTorch's caching allocator takes what it uses.
"""

from typing import List

from octtl.errors import InputError

# Allocation failures that surface as other errors (XLA's XlaRuntimeError, TensorFlow's internal errors,
# cuDNN's status codes) say so in their message.
_OOM_WORDS = ("out of memory", "resource_exhausted", "resource exhausted", "failed to allocate", "oom when",
              "cudnn_status_alloc_failed", "cublas_status_alloc_failed")


def backend() -> str:
    """The running Keras backend: 'tensorflow', 'jax' or 'torch'."""
    import keras  # here, not above: the commands' flags import this module before the backend starts

    return keras.backend.backend()


def gpus() -> List[str]:
    """The backend's GPUs, by name (empty on a CPU-only machine)."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        return [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
    if name == "jax":
        import jax

        return [str(device) for device in jax.devices() if device.platform == "gpu"]
    if name == "torch":
        import torch

        return [torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())]
    return []


def gpu_name() -> str:
    """The first GPU's model name, as the driver gives it."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        first = tf.config.list_physical_devices("GPU")[0]
        return tf.config.experimental.get_device_details(first).get("device_name", first.name)
    if name == "jax":
        import jax

        return next(d for d in jax.devices() if d.platform == "gpu").device_kind
    import torch

    return torch.cuda.get_device_name(0)


def configure(mixed_precision: bool) -> List[str]:
    """Memory growth on TensorFlow's GPUs (runs and workers share the card) and Keras' precision policy; returns
    the GPUs."""
    found = gpus()
    if backend() == "tensorflow":
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass  # Already initialised by an earlier session in this process: growth was set then.
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    return found


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an exception from a training step means the batch did not fit in memory, on any backend."""
    if isinstance(error, MemoryError):
        return True
    kind = type(error).__name__
    if kind in ("ResourceExhaustedError", "OutOfMemoryError"):  # TensorFlow's; torch.cuda's
        return True
    return kind in ("InternalError", "UnknownError", "XlaRuntimeError", "RuntimeError", "JaxRuntimeError") and any(
        word in str(error).lower() for word in _OOM_WORDS)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (TensorFlow's errors carry theirs in .message)."""
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def reset_peak_memory() -> None:
    """Starts counting the first GPU's peak memory afresh (JAX cannot: its peak is the process's)."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.reset_memory_stats("GPU:0")
    elif name == "torch":
        import torch

        torch.cuda.reset_peak_memory_stats(0)


def peak_memory() -> int:
    """Peak bytes in use on the first GPU since `reset_peak_memory` (JAX: since the process started)."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    if name == "jax":
        import jax

        device = next(d for d in jax.devices() if d.platform == "gpu")
        return int((device.memory_stats() or {}).get("peak_bytes_in_use", 0))
    import torch

    return int(torch.cuda.max_memory_allocated(0))


def strategy(name: str):
    """The distribution strategy's scope for building a model: --strategy=mirrored is TensorFlow's alone.

    Raises:
        InputError: mirrored on another backend (one line naming --strategy).
    """
    if name == "mirrored":
        if backend() != "tensorflow":
            raise InputError(f"--strategy=mirrored: TensorFlow's MirroredStrategy; the {backend()} backend has no "
                             "such strategy (use --strategy=default, or KERAS_BACKEND=tensorflow)")
        import tensorflow as tf

        return tf.distribute.MirroredStrategy()
    if backend() == "tensorflow":
        import tensorflow as tf

        return tf.distribute.get_strategy()
    import contextlib

    return _NoStrategy(contextlib.nullcontext())


class _NoStrategy:
    """What `strategy('default')` is off TensorFlow: a scope that changes nothing."""

    def __init__(self, context):
        self._context = context

    def scope(self):
        return self._context


def forward(model, batch: int, shape: tuple, dtype: str = "uint8"):
    """`model`'s inference (training=False) on one fixed-size batch of `shape` (without the batch axis), as numpy:
    traced once by TensorFlow (tf.function), compiled once by the other backends' predict_on_batch."""
    if backend() == "tensorflow":
        import tensorflow as tf

        traced = tf.function(lambda x: model(x, training=False),
                             input_signature=[tf.TensorSpec((batch, *shape), dtype)])
        return lambda inputs: traced(inputs).numpy()
    return model.predict_on_batch


def jit_compile(requested: bool) -> bool:
    """What `model.compile(jit_compile=...)` gets for --jit_compile: the flag on TensorFlow and PyTorch (XLA, and
    torch.compile, are options there), always True on JAX, whose trainer otherwise runs each step op by op."""
    return True if backend() == "jax" else bool(requested)
