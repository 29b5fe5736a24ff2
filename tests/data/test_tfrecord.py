"""octtl.data.tfrecord: TFRecord files without TensorFlow, checked against tf.io.TFRecordWriter and tf.data."""

import zlib

import numpy as np
import pytest

from octtl.data import tfrecord
from octtl.errors import InputError

# RFC 3720 (iSCSI) B.4's CRC-32C test vectors.
RFC3720 = [(bytes(32), 0x8A9136AA), (b"\xff" * 32, 0x62A8AB43), (bytes(range(32)), 0x46DD794E),
           (bytes(range(31, -1, -1)), 0x113FDB5C), (b"123456789", 0xE3069283)]


def _payloads(seed=0):
    """Records of awkward sizes: empty, one byte, around the numpy CRC's lane size, and a PNG-sized one."""
    rng = np.random.default_rng(seed)
    sizes = [0, 1, 7, 8, 63, 64, 65, 255, 256, 257, 1000, 4096, 150_001]
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]


@pytest.mark.parametrize("data, expected", RFC3720)
def test_crc32c_matches_the_published_vectors(data, expected):
    assert tfrecord.crc32c(data) == expected
    assert tfrecord._crc32c_numpy(data) == expected
    assert tfrecord._crc32c_bytewise(data) == expected


def test_the_numpy_crc_agrees_with_the_bytewise_definition_at_every_length_around_its_lanes():
    rng = np.random.default_rng(1)
    for n in list(range(0, 600)) + [4095, 4096, 4097, 65536 + 3]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert tfrecord._crc32c_numpy(data) == tfrecord._crc32c_bytewise(data), n


def test_the_numpy_crc_agrees_with_google_crc32c_where_it_is_installed():
    google_crc32c = pytest.importorskip("google_crc32c")
    rng = np.random.default_rng(2)
    for n in (10, 1000, 123_457, 3_000_001):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert tfrecord._crc32c_numpy(data) == google_crc32c.value(data)


def test_without_google_crc32c_the_numpy_crc_serves(monkeypatch, tmp_path):
    monkeypatch.setattr(tfrecord, "_FAST", None)
    payloads = _payloads(3)
    tfrecord.write(tmp_path / "a.tfrecord", payloads)
    assert list(tfrecord.read(tmp_path / "a.tfrecord")) == payloads


def test_the_mask_is_tensorflows():
    # Its definition, on a few CRCs: rotate right by 15 bits, add 0xa282ead8 mod 2^32.
    for data in (b"", b"a", bytes(100)):
        crc = tfrecord.crc32c(data)
        rotated = ((crc >> 15) | (crc << 17)) % 2**32
        assert tfrecord.masked_crc32c(data) == (rotated + 0xA282EAD8) % 2**32


def test_files_written_by_tensorflow_read_back_identically(tmp_path):
    tf = pytest.importorskip("tensorflow")
    payloads = _payloads(4)
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)
    assert list(tfrecord.read(path)) == payloads
    assert tfrecord.count(path) == len(payloads)


def test_files_written_here_are_byte_identical_to_tensorflows_and_read_by_tf_data(tmp_path):
    tf = pytest.importorskip("tensorflow")
    payloads = _payloads(5)
    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "theirs.tfrecord"
    assert tfrecord.write(ours, payloads) == len(payloads)
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for payload in payloads:
            writer.write(payload)
    assert ours.read_bytes() == theirs.read_bytes()
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == payloads


def _record_offsets(payloads):
    offsets, offset = [], 0
    for payload in payloads:
        offsets.append(offset)
        offset += 16 + len(payload)
    return offsets


@pytest.mark.parametrize("where, what", [(0, "length's checksum"), (8, "length's checksum"),
                                         (12, "payload's checksum"), (-1, "payload's checksum")])
def test_a_flipped_byte_names_the_file_and_the_record(tmp_path, where, what):
    payloads = [b"first" * 10, b"second" * 30, b"third"]
    path = tmp_path / "bscans-00000-of-00001.tfrecord"
    tfrecord.write(path, payloads)
    data = bytearray(path.read_bytes())
    start = _record_offsets(payloads)[1]
    end = start + 16 + len(payloads[1])
    data[start + where if where >= 0 else end + where] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(tfrecord.DamagedRecordError) as error:
        list(tfrecord.read(path))
    message = str(error.value)
    assert str(path) in message and "record 1 " in message and what in message
    assert message.endswith("convert the data again with tools/to_tfrecord.py")
    assert isinstance(error.value, InputError) and isinstance(error.value, ValueError)


@pytest.mark.parametrize("keep, what", [(3, "header (3 of 12 bytes)"), (12, "inside the record (0 of"),
                                        (20, "inside the record (8 of")])
def test_a_truncated_file_names_the_file_and_the_last_record(tmp_path, keep, what):
    payloads = [b"x" * 40, b"y" * 50]
    path = tmp_path / "cut.tfrecord"
    tfrecord.write(path, payloads)
    start = _record_offsets(payloads)[1]
    path.write_bytes(path.read_bytes()[:start + keep])
    records = tfrecord.read(path)
    assert next(records) == payloads[0]  # the records before the cut are served
    with pytest.raises(tfrecord.DamagedRecordError) as error:
        next(records)
    assert str(error.value).startswith(f"{path}: damaged or truncated TFRecord shard (record 1 at byte {start}: ")
    assert what in str(error.value)


def test_a_damaged_payload_is_served_when_checksums_are_not_checked(tmp_path):
    path = tmp_path / "a.tfrecord"
    tfrecord.write(path, [b"abc"])
    data = bytearray(path.read_bytes())
    data[12] ^= 1
    path.write_bytes(bytes(data))
    assert list(tfrecord.read(path, check_crc=False)) == [b"`bc"]


def test_an_empty_file_holds_no_records(tmp_path):
    path = tmp_path / "empty.tfrecord"
    tfrecord.write(path, [])
    assert path.read_bytes() == b"" and list(tfrecord.read(path)) == []


def test_the_numpy_crc_is_not_zlibs():
    # A guard against the wrong polynomial: CRC-32 (zlib) and CRC-32C differ on any non-empty data.
    assert tfrecord._crc32c_numpy(b"123456789") != zlib.crc32(b"123456789")
