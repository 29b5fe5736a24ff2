"""octtl.data.example_proto: tf.train.Example without TensorFlow, checked against TensorFlow's own in one process."""

import numpy as np
import pytest

from octtl.data import example_proto

tf = pytest.importorskip("tensorflow")


def _record_fields(k=0):
    """The fields of one octtl record (octtl.data.records.encode's arguments)."""
    return dict(png=bytes(range(256)) * 3 + bytes([k]), height=496, width=512, label=k % 2,
                volume_id=f"TRAIN{25 + k:03d}", slice_index=k, vendor="Spectralis", irf=3 * k, srf=0, ped=7,
                source=f"TRAIN{25 + k:03d}:{k}")


def _as_features(fields):
    """The same record as the feature dict example_proto.encode takes (keys and types of records.SCHEMA)."""
    from octtl.data import records

    return {records.IMAGE: fields["png"], records.HEIGHT: fields["height"], records.WIDTH: fields["width"],
            records.LABEL: fields["label"], records.VOLUME_ID: fields["volume_id"],
            records.SLICE: fields["slice_index"], records.VENDOR: fields["vendor"].lower(),
            records.IRF: fields["irf"], records.SRF: fields["srf"], records.PED: fields["ped"],
            records.SOURCE: fields["source"]}


def _tf_values(parsed: dict) -> dict:
    values = {key: value.numpy() for key, value in parsed.items()}
    return {key: value if isinstance(value, bytes) else value.item() for key, value in values.items()}


def _tf_parse(payload: bytes) -> dict:
    """An octtl record parsed by TensorFlow: every key of records.SCHEMA as a FixedLenFeature, text as str."""
    from octtl.data import records

    features = {key: tf.io.FixedLenFeature([], tf.string if kind is bytes else tf.int64,
                                           default_value=records.DEFAULTS.get(key))
                for key, kind in records.SCHEMA.items()}
    values = _tf_values(tf.io.parse_single_example(tf.constant(payload), features))
    return {key: value.decode() if key in records.TEXT else value for key, value in values.items()}


@pytest.mark.parametrize("k", [0, 1, 5])
def test_octtls_records_parse_to_the_values_tensorflow_parses(k):
    from octtl.data import records

    payload = records.encode(**_record_fields(k))
    assert records.parse(payload) == _tf_parse(payload)


def test_records_without_image_source_read_it_empty_as_tensorflow_does():
    from octtl.data import records

    fields = _as_features(_record_fields(2))
    del fields[records.SOURCE]
    payload = example_proto.encode(fields)
    assert records.parse(payload)[records.SOURCE] == "" == _tf_parse(payload)[records.SOURCE]


@pytest.mark.parametrize("k", [0, 1, 5])
def test_encoded_records_are_tensorflows_examples_and_parse_alike(k):
    from octtl.data import records

    fields = _record_fields(k)
    ours = example_proto.encode(_as_features(fields))
    theirs = records.encode(**fields)
    assert tf.train.Example.FromString(ours) == tf.train.Example.FromString(theirs)
    assert _tf_parse(ours) == _tf_parse(theirs) == records.parse(ours)
    # Deterministic serialization: TensorFlow's message written deterministically is the same bytes.
    assert ours == tf.train.Example.FromString(theirs).SerializeToString(deterministic=True)


def test_lists_of_every_kind_and_edge_values_round_trip_through_tensorflow():
    features = {"bytes": [b"", b"\x00\xff", "grüße"], "ints": [0, -1, 2**63 - 1, -(2**63), True],
                "floats": [0.1, -2.5, 1e30, float("inf")], "array": np.arange(5, dtype=np.int16),
                "float_array": np.linspace(0, 1, 3, dtype=np.float32), "empty": []}
    payload = example_proto.encode(features)
    parsed = example_proto.parse(payload)
    expected = {"bytes": [b"", b"\x00\xff", "grüße".encode()], "ints": [0, -1, 2**63 - 1, -(2**63), 1],
                "floats": np.float32([0.1, -2.5, 1e30, np.inf]).tolist(), "array": [0, 1, 2, 3, 4],
                "float_array": [0.0, 0.5, 1.0], "empty": []}
    assert parsed == expected
    example = tf.train.Example.FromString(payload)
    assert {key: list(getattr(value, value.WhichOneof("kind")).value)
            for key, value in example.features.feature.items()} == expected
    back = example_proto.parse(example.SerializeToString())
    assert back == expected
    spec = {"bytes": tf.io.FixedLenFeature([3], tf.string), "ints": tf.io.FixedLenFeature([5], tf.int64),
            "floats": tf.io.FixedLenFeature([4], tf.float32)}
    values = tf.io.parse_single_example(payload, spec)
    assert {key: value.numpy().tolist() for key, value in values.items()} == {
        key: expected[key] for key in spec}


def test_the_messages_live_in_a_pool_of_their_own_beside_tensorflows():
    from google.protobuf import descriptor_pool

    assert example_proto.Example.DESCRIPTOR.full_name == tf.train.Example.DESCRIPTOR.full_name
    assert example_proto.Example is not tf.train.Example
    assert example_proto.Example.DESCRIPTOR.file.pool is not descriptor_pool.Default()
    # Both work in one process, in either direction.
    ours = example_proto.Example()
    ours.ParseFromString(tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(int64_list=tf.train.Int64List(value=[3]))})).SerializeToString())
    assert ours.features.feature["x"].int64_list.value == [3]


def test_mixed_or_unknown_values_are_refused_and_garbage_is_not_an_example():
    with pytest.raises(TypeError, match="one kind"):
        example_proto.encode({"x": [1, b"a"]})
    with pytest.raises(TypeError, match="must be bytes"):
        example_proto.encode({"x": [None]})
    with pytest.raises(ValueError, match="not a serialized tf.train.Example"):
        example_proto.parse(b"\xff\xff\xff")


def test_scalars_take_defaults_for_missing_features_and_refuse_lists():
    parsed = example_proto.parse(example_proto.encode({"a": 1, "b": [1, 2]}))
    assert example_proto.scalars(parsed, ["a", "c"], {"c": b""}) == {"a": 1, "c": b""}
    with pytest.raises(ValueError, match="'b' holds 2 values"):
        example_proto.scalars(parsed, ["b"])
    with pytest.raises(ValueError, match="'d' is missing"):
        example_proto.scalars(parsed, ["d"])
