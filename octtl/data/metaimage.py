"""Reads MetaImage (.mhd) files after checking their header and data bytes ourselves.

SimpleITK reports a short, overlong or corrupt data file only on stderr, with a generic exception or garbage
voxels, and allocates whatever a header promises. So every header is parsed here first, its size checked against
--max_volume_bytes, and its data file's length (or, for compressed data, what it inflates to) checked against the
header before SimpleITK reads a voxel. Every problem is an InputError of one line naming the file.
"""

import math
import pathlib
import zlib

import SimpleITK as sitk

from octtl.data import names
from octtl.errors import InputError

# MetaImage ElementType -> bytes per element, to check a .raw's size ourselves:
# SimpleITK reports a short file only on stderr, with a generic exception.
_ELEMENT_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
    "MET_UINT": 4, "MET_LONG": 8, "MET_ULONG": 8, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4, "MET_DOUBLE": 8,
}
# Default of --max_volume_bytes: far above any RETOUCH volume (Cirrus, the largest, is 64 MiB), far below what a
# lying header could make SimpleITK allocate.
MAX_VOLUME_BYTES = 8 * 1024 ** 3
_CHUNK = 1 << 20  # Bytes read (and at most 16x this inflated) per step when checking a compressed stream.


class TooLarge(InputError):
    """A header that promises more data bytes than the reader's limit; the message names --max_volume_bytes."""

    def __init__(self, path, promised: int, what: str, limit: int):
        self.path, self.promised, self.what, self.limit = path, promised, what, limit
        super().__init__(f"{path}: header promises {promised} bytes ({what}), more than --max_volume_bytes={limit}")


def _parse_header(path):
    """A MetaImage header as a dict of its `Key = Value` lines, and the byte offset where the header ends."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(65536)
    except OSError as e:
        raise InputError(f"{path}: unreadable MetaImage header ({e.strerror or e})") from None
    header, end = {}, 0
    for line in raw.splitlines(keepends=True):
        end += len(line)
        try:
            text = line.decode("ascii").strip()
        except UnicodeDecodeError:
            raise InputError(f"{path}: unreadable MetaImage header (not ASCII text)") from None
        if not text:
            continue
        key, sep, value = text.partition("=")
        if not sep:
            raise InputError(f"{path}: unreadable MetaImage header (line {text[:40]!r} is not 'Key = Value')")
        header[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break  # Local data may follow the header; it is not text.
    for key in ("NDims", "DimSize", "ElementType", "ElementDataFile"):
        if key not in header:
            raise InputError(f"{path}: unreadable MetaImage header (no {key})")
    return header, end


def read_header(path) -> dict:
    """Parses a MetaImage header into a dict of its `Key = Value` lines."""
    return _parse_header(path)[0]


def _integer(path, header, key, default=None) -> int:
    value = header.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}: {key} = {str(value)[:40]} is not an integer") from None


def header_geometry(path, header, max_volume_bytes: int = MAX_VOLUME_BYTES):
    """The (B-scan, row, column) shape and data bytes a 3-D volume's header promises, checked before any read.

    Raises:
        InputError: naming `path` when NDims is not 3, DimSize is not NDims integers > 0, the element is of
            an unknown type or has several channels, or the data would exceed `max_volume_bytes`.
    """
    ndims = _integer(path, header, "NDims")
    if ndims != 3:
        raise InputError(f"{path}: expected a 3-D volume, got {ndims}-D (NDims = {ndims})")
    text = header["DimSize"]
    try:
        dims = [int(v) for v in text.split()]
    except ValueError:
        dims = []
    if len(dims) != ndims or min(dims) < 1:
        raise InputError(f"{path}: DimSize = {text[:60]} must be {ndims} integers > 0")
    element = header["ElementType"]
    if element not in _ELEMENT_BYTES:
        raise InputError(f"{path}: unsupported ElementType {element[:40]}")
    channels = _integer(path, header, "ElementNumberOfChannels", "1")
    if channels != 1:
        raise InputError(f"{path}: expected one value per voxel, got ElementNumberOfChannels = {channels}")
    promised = math.prod(dims) * _ELEMENT_BYTES[element]
    if promised > max_volume_bytes:
        raise TooLarge(path, promised, f"DimSize {' '.join(map(str, dims))} {element}", max_volume_bytes)
    return tuple(reversed(dims)), promised


def _check_data(path, header, header_end, promised):
    """Fails naming the data file unless it holds exactly the `promised` bytes (inflated, for .zraw)."""
    data_file = header["ElementDataFile"]
    if data_file.upper().startswith("LIST") or "%" in data_file:
        raise InputError(f"{path}: ElementDataFile = {data_file[:40]}: data split over several files is "
                         "not supported (write the volume as one .raw or .zraw)")
    if header.get("BinaryData", "True").lower() != "true":
        raise InputError(f"{path}: BinaryData = {header['BinaryData'][:20]}: text voxel data is not supported")
    local = data_file.upper() == "LOCAL"
    data = pathlib.Path(path) if local else names.inside(pathlib.Path(path).parent, data_file, path, "ElementDataFile")
    if not data.is_file():
        raise InputError(f"{path}: data file {data.name} is missing")
    header_size = _integer(path, header, "HeaderSize", "0")
    if header_size < -1:
        raise InputError(f"{path}: HeaderSize = {header_size} must be -1, 0 or more")
    size = data.stat().st_size
    # MetaIO skips HeaderSize bytes from the file's start (for LOCAL data, else from the header's end);
    # -1 means the data is the end of the file.
    start = header_end if local else 0
    offset = header_size if header_size > 0 else start
    what = f"DimSize {' '.join(header['DimSize'].split())} {header['ElementType']}"
    if header.get("CompressedData", "False").lower() == "true":
        claimed = _integer(path, header, "CompressedDataSize") if "CompressedDataSize" in header else None
        if header_size == -1:
            if claimed is None:
                raise InputError(f"{path}: HeaderSize = -1 with compressed data needs a CompressedDataSize")
            offset = size - claimed
        stored = max(size - offset, 0)
        if claimed is not None and (claimed != stored or offset < start):
            raise InputError(f"{data}: holds {max(size - start, 0)} bytes of compressed data, "
                             f"but CompressedDataSize = {claimed}")
        _check_inflates(data, offset, stored, promised, f"{pathlib.Path(path).name} promises ({what})")
        return
    if header_size == -1:
        if size - start < promised:
            raise InputError(f"{data}: truncated, expected at least {promised} bytes for {what}, found {size - start}")
        return
    expected = offset + promised
    if size < expected:
        raise InputError(f"{data}: truncated, expected {expected} bytes for {what}, found {size}")
    if size > expected:
        raise InputError(f"{data}: longer than its header says, expected {expected} bytes for {what}, found {size}")


def _check_inflates(data, offset, stored, promised, claim):
    """Inflates `stored` bytes of `data` from `offset`, keeping none: it must end cleanly at exactly `promised` bytes.

    `claim` names the header and its DimSize and ElementType, for the messages.

    Output is bounded per step, so a corrupt or hostile stream costs at most a few MB of memory, never what it
    would inflate to; SimpleITK, by contrast, reports a bad stream only on stderr and returns garbage voxels.
    """
    inflater = zlib.decompressobj(32 + 15)  # zlib or gzip wrapper, as MetaIO's inflateInit2(47) accepts.
    produced = 0
    try:
        with open(data, "rb") as f:
            f.seek(offset)
            left = stored
            while left > 0 and not inflater.eof:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                while chunk and not inflater.eof:
                    # At most one byte past the promise: enough to know the stream is too long.
                    produced += len(inflater.decompress(chunk, min(16 * _CHUNK, promised + 1 - produced)))
                    if produced > promised:
                        raise InputError(f"{data}: compressed data inflates to more than the {promised} bytes "
                                         f"{claim}")
                    chunk = inflater.unconsumed_tail
    except zlib.error as e:
        raise InputError(f"{data}: corrupt compressed data ({e})") from None
    except OSError as e:
        raise InputError(f"{data}: cannot be read ({e.strerror or e})") from None
    if not inflater.eof:
        raise InputError(f"{data}: compressed data ends early, after {produced} of the {promised} bytes {claim}")
    if produced != promised:
        raise InputError(f"{data}: compressed data inflates to {produced} of the {promised} bytes {claim}")
    if inflater.unused_data or left > 0:
        raise InputError(f"{data}: {len(inflater.unused_data) + left} bytes follow the end of the compressed data")


def inspect_image(path, max_volume_bytes: int = MAX_VOLUME_BYTES):
    """Checks a 3-D MetaImage's header and data bytes without reading voxels; returns its (B-scan, row, column) shape.

    Raises:
        InputError: one line naming the header or data file and what is wrong with it.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file is missing")
    header, header_end = _parse_header(path)
    shape, promised = header_geometry(path, header, max_volume_bytes)
    _check_data(path, header, header_end, promised)
    return shape


def read_inspected(path, shape) -> sitk.Image:
    """SimpleITK's read of a file `inspect_image` has passed, which must have the `shape` it returned."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown error"
        raise InputError(f"{path}: SimpleITK could not read it ({first[:200]})") from None
    if image.GetDimension() != 3 or tuple(reversed(image.GetSize())) != tuple(shape):
        raise InputError(f"{path}: SimpleITK read size {image.GetSize()}, the header says {tuple(reversed(shape))}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: expected one value per voxel, got {image.GetNumberOfComponentsPerPixel()}")
    return image


def read_image(path, max_volume_bytes: int = MAX_VOLUME_BYTES) -> sitk.Image:
    """Reads a 3-D MetaImage after checking its header and data bytes ourselves (`inspect_image`)."""
    return read_inspected(path, inspect_image(path, max_volume_bytes))
