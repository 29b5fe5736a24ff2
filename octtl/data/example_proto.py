"""tf.train.Example without TensorFlow: its protobuf messages, and encode/parse of one feature dict.

The messages are those of tensorflow/core/example/feature.proto and example.proto (Example, Features, Feature,
BytesList, FloatList, Int64List; same package, names, field numbers and packing), built from a
FileDescriptorProto in a descriptor pool of this module's own. The wire format is therefore TensorFlow's,
while nothing is registered in protobuf's default pool, where TensorFlow registers its own
`tensorflow.Example` when both are imported into one process.
"""

import numbers
from typing import Dict, List, Union

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FILE = "octtl/tensorflow_example.proto"  # the pool's file name; the messages keep TensorFlow's full names
_PACKAGE = "tensorflow"

Value = Union[bytes, str, int, float, np.number]
Values = Union[Value, List[Value], np.ndarray]


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """feature.proto and example.proto (proto3; numeric lists packed) as one FileDescriptorProto."""
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name=_FILE, package=_PACKAGE, syntax="proto3")

    def message(name, *fields):
        m = file.message_type.add(name=name)
        for field in fields:
            m.field.add().CopyFrom(field)
        return m

    def field(name, number, kind, label=f.LABEL_OPTIONAL, type_name=None, oneof=None):
        out = f(name=name, number=number, type=kind, label=label, json_name=name)
        if type_name:
            out.type_name = f".{_PACKAGE}.{type_name}"
        if oneof is not None:
            out.oneof_index = oneof
        return out

    repeated = f.LABEL_REPEATED
    message("BytesList", field("value", 1, f.TYPE_BYTES, repeated))
    message("FloatList", field("value", 1, f.TYPE_FLOAT, repeated))  # proto3: packed
    message("Int64List", field("value", 1, f.TYPE_INT64, repeated))
    feature = message("Feature", field("bytes_list", 1, f.TYPE_MESSAGE, type_name="BytesList", oneof=0),
                      field("float_list", 2, f.TYPE_MESSAGE, type_name="FloatList", oneof=0),
                      field("int64_list", 3, f.TYPE_MESSAGE, type_name="Int64List", oneof=0))
    feature.oneof_decl.add(name="kind")
    features = message("Features", field("feature", 1, f.TYPE_MESSAGE, repeated, type_name="Features.FeatureEntry"))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add().CopyFrom(field("key", 1, f.TYPE_STRING))
    entry.field.add().CopyFrom(field("value", 2, f.TYPE_MESSAGE, type_name="Feature"))
    entry.options.map_entry = True
    message("Example", field("features", 1, f.TYPE_MESSAGE, type_name="Features"))
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
_CLASSES = {name: message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name in ("Example", "Features", "Feature", "BytesList", "FloatList", "Int64List")}
Example = _CLASSES["Example"]
Features = _CLASSES["Features"]
Feature = _CLASSES["Feature"]
BytesList = _CLASSES["BytesList"]
FloatList = _CLASSES["FloatList"]
Int64List = _CLASSES["Int64List"]


def _as_list(values: Values) -> list:
    if isinstance(values, np.ndarray):
        return values.ravel().tolist() if values.dtype.kind != "S" else list(values.ravel())
    if isinstance(values, (list, tuple)):
        return list(values)
    return [values]


def feature(values: Values):
    """One Feature from a value or a list of values: bytes or str (UTF-8) -> bytes_list; bool or integer ->
    int64_list; other real numbers -> float_list (float32 on the wire, as TensorFlow stores them).

    Raises:
        TypeError: Mixed kinds, or a value of none of them.
    """
    items = _as_list(values)
    kinds = {_kind(v) for v in items}
    if len(kinds) > 1:
        raise TypeError(f"a feature holds values of one kind; got {sorted(kinds)} in {items[:4]}")
    kind = kinds.pop() if kinds else "int64_list"  # an empty list: TensorFlow's default Feature is empty too
    if kind == "bytes_list":
        return Feature(bytes_list=BytesList(value=[v.encode() if isinstance(v, str) else bytes(v) for v in items]))
    if kind == "int64_list":
        return Feature(int64_list=Int64List(value=[int(v) for v in items]))
    return Feature(float_list=FloatList(value=[float(v) for v in items]))


def _kind(value) -> str:
    if isinstance(value, (bytes, bytearray, str, np.bytes_, np.str_)):
        return "bytes_list"
    if isinstance(value, (bool, np.bool_, numbers.Integral)):
        return "int64_list"
    if isinstance(value, numbers.Real):
        return "float_list"
    raise TypeError(f"a feature value must be bytes, str, an integer or a real number; got {type(value).__name__}")


def encode(features: Dict[str, Values]) -> bytes:
    """A serialized tf.train.Example holding `features` (name -> value or list of values; see `feature`).

    Keys are serialized in sorted order (deterministic), so equal dicts give equal bytes.
    """
    example = Example()
    for key in sorted(features):
        example.features.feature[key].CopyFrom(feature(features[key]))
    return example.SerializeToString(deterministic=True)


def parse(payload: bytes) -> Dict[str, list]:
    """A serialized tf.train.Example as name -> list of values (bytes, int or float; float32's value as a float).

    A feature with no kind set (an empty Feature) parses as an empty list.

    Raises:
        ValueError: Bytes that are not an Example.
    """
    example = Example()
    try:
        example.ParseFromString(payload)
    except Exception as e:  # protobuf's DecodeError; its type differs between protobuf backends
        raise ValueError(f"not a serialized tf.train.Example ({e})") from None
    out = {}
    for key, value in sorted(example.features.feature.items()):
        kind = value.WhichOneof("kind")
        out[key] = list(getattr(value, kind).value) if kind else []
    return out


def scalars(parsed: Dict[str, list], keys, defaults: Dict[str, Value] = None) -> Dict[str, Value]:
    """One value per key, as tf.io.FixedLenFeature([]) reads it: a missing feature takes its default.

    Raises:
        ValueError: A feature without exactly one value, or a missing one without a default.
    """
    defaults = defaults or {}
    out = {}
    for key in keys:
        if key not in parsed:
            if key not in defaults:
                raise ValueError(f"feature {key!r} is missing")
            out[key] = defaults[key]
            continue
        if len(parsed[key]) != 1:
            raise ValueError(f"feature {key!r} holds {len(parsed[key])} values; expected one")
        out[key] = parsed[key][0]
    return out
