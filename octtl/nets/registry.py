"""The ten ImageNet networks of the paper's Table I: facts, how to build each, where its weights come from.

`ARCHITECTURES` is a plain table keyed by the paper's network names; `octtl.nets.models.build` turns an entry into a
Keras model. Parameter counts are Table I's except where noted (googlenet).
"""

import dataclasses
from typing import Callable, Optional

import importlib

_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """One downloadable (or convertible) ImageNet weights file.

    Attributes:
        file_name: Name the file is looked up under in the weights directory and the Keras cache.
        url: Where to download it; None when no ready-made Keras file exists and it has to be converted.
        file_hash: md5 (32 hex digits, as Keras publishes them) or sha256 (64), None when unpublished.
        has_classifier: Whether the file holds the 1000-class ImageNet classifier (the "top").
        convert_from: For files that must be made by converting a checkpoint, that checkpoint's public URL
            (torchvision names carry the first 8 hex digits of their sha256); tools/import_torchvision_weights.py
            converts it.
        preprocess: Input scaling these weights expect where it is not the network's `Architecture.preprocess`
            (a network with ImageNet weights from two sources); None where it is.
        file_size: Bytes, where known: a file of another size is not this one, without hashing it.
    """

    file_name: str
    url: Optional[str]
    file_hash: Optional[str]
    has_classifier: bool
    convert_from: Optional[str] = None
    preprocess: Optional[str] = None
    file_size: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A Table I network.

    Attributes:
        name: The paper's name.
        params_millions: Parameters of the 1000-class network in millions, as built here (pinned by tests).
        depth: Table I depth.
        input_size: Native square input size in pixels.
        largest_batch: Largest batch size of Table I (fits an 11 GB GPU).
        builder: Maps a (batch, size, size, 3) Keras tensor to the 1000-class softmax output tensor.
        classifier: Name of the last learnable layer, the one the paper's head swap replaces.
        min_input_size: Smallest input the network accepts.
        preprocess: Input scaling the (preferred) ImageNet weights expect: 'tf' ([-1, 1]), 'torch' ([0, 1] then
            ImageNet mean/std) or 'caffe' (0..255 BGR minus the ImageNet mean pixel).
        imagenet: ImageNet weights files, preferred first.
        source: Where the definition comes from.
        notes: Deviations from the paper's (MATLAB) network.
        table_params_millions: Table I's figure where it differs from `params_millions`.
    """

    name: str
    params_millions: float
    depth: int
    input_size: int
    largest_batch: int
    builder: Callable
    classifier: str
    min_input_size: int
    preprocess: str
    imagenet: tuple
    source: str
    notes: str = ""
    table_params_millions: Optional[float] = None


def _application(name, top):
    """A builder: keras.applications' `name` without its top, then `top` rebuilt with Keras' layer names.

    Rebuilding the top ourselves (rather than include_top=True) lets the network take other input sizes. Keras
    is imported when a network is built, not with the registry, so listing the networks stays instant.
    """

    def build(x):
        import keras

        backbone = getattr(keras.applications, name)(include_top=False, weights=None, input_tensor=x)
        return top(backbone.output)

    return build


def _net(module):
    """A builder: `octtl.nets.<module>.build`, imported when a network is built."""
    return lambda x: importlib.import_module(f"octtl.nets.{module}").build(x)


def _fc_top(x):
    from keras import layers

    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096, activation="relu", name="fc1")(x)
    # keras.applications' VGG16 is inference-only and omits the original's dropout after fc6/fc7 (MATLAB's
    # drop6/drop7); fine-tuning as in the paper needs it. No weights, so the ImageNet files still load.
    x = layers.Dropout(0.5, name="fc1_dropout")(x)
    x = layers.Dense(4096, activation="relu", name="fc2")(x)
    x = layers.Dropout(0.5, name="fc2_dropout")(x)
    return layers.Dense(1000, activation="softmax", name="predictions")(x)


def _pooled_top(x):
    from keras import layers

    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return layers.Dense(1000, activation="softmax", name="predictions")(x)


def _keras_files(stem, top_hash, notop_hash, folder, notop_suffix="_notop.h5"):
    """Keras' ImageNet files for one application: no-top first (enough for the head swap), then top."""
    notop = f"{stem}{notop_suffix}"
    top = f"{stem}.h5"
    return (
        WeightsFile(notop, f"{_KERAS_WEIGHTS}{folder}{notop}", notop_hash, has_classifier=False),
        WeightsFile(top, f"{_KERAS_WEIGHTS}{folder}{top}", top_hash, has_classifier=True),
    )


def _converted(name, torchvision_url, preprocess=None):
    """The no-top and top Keras files tools/import_torchvision_weights.py makes from a torchvision checkpoint.

    No public Keras file exists, so there is nothing to fetch; the conversion is exact, but the checkpoint's
    bytes are not hashed into the output, so there is no checksum either.
    """
    return tuple(
        WeightsFile(
            f"{name}_imagenet{suffix}.weights.h5",
            None,
            None,
            has_classifier=has_classifier,
            convert_from=torchvision_url,
            preprocess=preprocess,
        )
        for suffix, has_classifier in (("_notop", False), ("", True))
    )


_ENTRIES = (
    Architecture(
        name="vgg16",
        params_millions=138,
        depth=16,
        input_size=224,
        largest_batch=32,
        builder=_application("VGG16", _fc_top),
        classifier="predictions",
        min_input_size=32,
        preprocess="caffe",
        # The head swap keeps fc6/fc7 (fc1/fc2 here), which only the top file has.
        imagenet=(
            WeightsFile(
                "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                f"{_KERAS_WEIGHTS}vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                "64373286793e3c8b2b4e3219cbf3544b",
                has_classifier=True,
            ),
        ),
        source="keras.applications.VGG16",
        notes="fc1/fc2 are the paper's fc6/fc7; their dropout is added back. fc1's shape depends on the "
        "input size, so ImageNet weights need 224 px.",
    ),
    Architecture(
        name="alexnet",
        params_millions=61,
        depth=8,
        input_size=227,
        largest_batch=64,
        builder=_net("alexnet"),
        classifier="fc8",
        min_input_size=63,
        preprocess="torch",
        imagenet=_converted("alexnet", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
        source="octtl.nets.alexnet (torchvision alexnet)",
        notes="torchvision's one-GPU variant: no LRN, 64/192 filters in conv1/conv2 (Caffe: 96/256).",
    ),
    Architecture(
        name="inceptionresnetv2",
        params_millions=55.9,
        depth=164,
        input_size=299,
        largest_batch=16,
        builder=_application("InceptionResNetV2", _pooled_top),
        classifier="predictions",
        min_input_size=75,
        preprocess="tf",
        imagenet=_keras_files(
            "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels",
            "e693bd0210a403b3192acc6073ad2e96",
            "d19885ff4a710c122648d3b5c3b684e4",
            folder="inception_resnet_v2/",
        ),
        source="keras.applications.InceptionResNetV2",
    ),
    Architecture(
        name="inceptionv3",
        params_millions=23.9,
        depth=48,
        input_size=299,
        largest_batch=64,
        builder=_application("InceptionV3", _pooled_top),
        classifier="predictions",
        min_input_size=75,
        preprocess="tf",
        imagenet=_keras_files(
            "inception_v3_weights_tf_dim_ordering_tf_kernels",
            "9a0d58056eeedaa3f26cb7ebd46da564",
            "bcbd6486424b2319ff4ef7d526e38f63",
            folder="inception_v3/",
        ),
        source="keras.applications.InceptionV3",
    ),
    Architecture(
        name="xception",
        params_millions=22.9,
        depth=71,
        input_size=299,
        largest_batch=16,
        builder=_application("Xception", _pooled_top),
        classifier="predictions",
        min_input_size=71,
        preprocess="tf",
        imagenet=_keras_files(
            "xception_weights_tf_dim_ordering_tf_kernels",
            "0a58e3b7378bc2990ea3b43d5981f1f6",
            "b0042744bf5b25fce3cb969f33bebb97",
            folder="xception/",
        ),
        source="keras.applications.Xception",
    ),
    Architecture(
        name="densenet201",
        params_millions=20,
        depth=201,
        input_size=224,
        largest_batch=16,
        builder=_application("DenseNet201", _pooled_top),
        classifier="predictions",
        min_input_size=32,
        # Keras' DenseNet weights came from the torch (fb.resnet.torch) models: [0, 1] then mean/std.
        preprocess="torch",
        imagenet=_keras_files(
            "densenet201_weights_tf_dim_ordering_tf_kernels",
            "1ceb130c1ea1b78c3bf6114dbdfd8807",
            "c13680b51ded0fb44dff2d8f86ac8bb1",
            folder="densenet/",
        ),
        source="keras.applications.DenseNet201",
    ),
    Architecture(
        name="resnet18",
        params_millions=11.7,
        depth=18,
        input_size=224,
        largest_batch=64,
        builder=_net("resnet18"),
        classifier="fc",
        min_input_size=32,
        preprocess="torch",
        imagenet=_converted("resnet18", "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
        source="octtl.nets.resnet18 (torchvision resnet18)",
    ),
    Architecture(
        name="googlenet",
        params_millions=6.6,
        table_params_millions=7.0,
        depth=22,
        input_size=224,
        largest_batch=64,
        builder=_net("googlenet"),
        classifier="fc",
        min_input_size=32,
        # The torchvision weights were ported from TensorFlow; its transform_input maps inputs to [-1, 1].
        preprocess="tf",
        imagenet=_converted("googlenet", "https://download.pytorch.org/models/googlenet-1378be20.pth"),
        source="octtl.nets.googlenet (torchvision googlenet)",
        notes="6.6 M, not Table I's 7.0 M: torchvision's GoogLeNet (the one with obtainable ImageNet weights) "
        "adds batch norm and uses 3x3 kernels in the '5x5' branches; the auxiliary classifiers are dropped.",
    ),
    Architecture(
        name="mobilenetv2",
        params_millions=3.5,
        depth=53,
        input_size=224,
        largest_batch=64,
        builder=_application("MobileNetV2", _pooled_top),
        classifier="predictions",
        min_input_size=32,
        preprocess="tf",
        # Keras publishes no hashes for these files.
        imagenet=_keras_files(
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224",
            None,
            None,
            notop_suffix="_no_top.h5",
            folder="mobilenet_v2/",
        ),
        source="keras.applications.MobileNetV2 (alpha 1.0)",
    ),
    Architecture(
        name="squeezenet",
        params_millions=1.24,
        depth=18,
        input_size=227,
        largest_batch=64,
        builder=_net("squeezenet"),
        classifier="conv10",
        min_input_size=32,
        # The Keras release converted DeepScale's Caffe model; gray inputs make the BGR order moot.
        preprocess="caffe",
        imagenet=(
            WeightsFile(
                "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "https://github.com/rcmalli/keras-squeezenet/releases/download/v1.0/"
                "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "17154246284f555591549ac2c83e127abfbf4307dc4b0060fdaa2931d0fa38da",
                has_classifier=False,
                file_size=3002560,
            ),
            # torchvision's squeezenet1_1 is the same network trained in PyTorch; its file also holds conv10.
            *_converted(
                "squeezenet",
                "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
                preprocess="torch",
            ),
        ),
        source="octtl.nets.squeezenet (torchvision squeezenet1_1)",
        notes="ImageNet weights: the Keras SqueezeNet v1.1 release (MIT), whose no-top file lacks only conv10; "
        "or torchvision's squeezenet1_1 checkpoint, converted, which expects 'torch' inputs.",
    ),
)

ARCHITECTURES = {entry.name: entry for entry in _ENTRIES}

# Not Table I: networks for tests, where the protocol is the point and a real network would only cost time.
TESTING = {
    "tiny": Architecture(
        name="tiny", params_millions=0.019, depth=3, input_size=32, largest_batch=256, builder=_net("tiny"),
        classifier="predictions", min_input_size=8, preprocess="tf", imagenet=(), source="octtl.nets.tiny",
        notes="For tests only; no ImageNet weights."),
}


def get(name):
    """Returns the registry entry for `name` (or a test-only network), or raises ValueError listing the names."""
    entry = ARCHITECTURES.get(name) or TESTING.get(name)
    if entry is None:
        raise ValueError(f"Unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return entry


def input_size(name: str, image_size: Optional[int] = None) -> int:
    """The input side a run of network `name` uses: `image_size` when given, else the network's own (Table I)."""
    return int(image_size) if image_size else get(name).input_size
