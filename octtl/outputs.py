"""How octtl writes what it produces: checked first, staged under a temporary name, renamed into place at the end.

A reader (or a crash) then sees either no output or a complete one, never half of it. Staging folders are
siblings named `.<name>.partial-<pid>-<random>`, so a later run can tell which ones a dead process left behind.
A folder a command writes whole keeps a record of it (`RECORD`), so a later run of that command knows the folder
is its own to replace and any other non-empty folder is refused (`check_folder`).

Every CSV octtl writes goes through `write_csv` and every one it reads back through `read_csv`: a text cell that a
spreadsheet would run as a formula (it begins with =, +, -, @, a tab or a carriage return) is written with a
leading single quote (OWASP's advice on CSV injection) and read back without it; numbers stay numbers.
Imports nothing heavy, so commands check their outputs before they import TensorFlow.
"""

import contextlib
import csv
import fcntl
import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Iterable, List, Mapping, Sequence, Tuple, Union

from octtl.errors import InputError

RECORD = ".octtl-output.json"  # in a folder a command wrote whole: the command and the files it wrote
# A cell that is already a number to a spreadsheet (-1, -0.25, 1e-05) is not a formula and stays as it is.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# Text a spreadsheet would run (after any quotes this module added): escaped with one more quote.
_NEEDS_QUOTE = re.compile(r"'*[=+\-@\t\r]")


def csv_cell(value):
    """A value as octtl writes it into a CSV cell: text that would start a formula gets a leading quote.

    Numbers, and text that reads as a number, are left alone; text already beginning with quotes before such a
    character gets one more, so that `csv_text` undoes exactly what this did.
    """
    if not isinstance(value, str) or _NUMBER.fullmatch(value) or not _NEEDS_QUOTE.match(value):
        return value
    return "'" + value


def csv_text(cell: str) -> str:
    """The text octtl wrote as `cell` (`csv_cell`'s inverse)."""
    return cell[1:] if cell.startswith("'") and _NEEDS_QUOTE.match(cell[1:]) else cell


def write_csv(path, columns: Sequence[str], rows: Iterable[Union[Mapping, Sequence]]):
    """A CSV file of `columns` and `rows` (dicts keyed by column, missing keys empty, or sequences of cells), every
    cell through `csv_cell`; written under a temporary name, then renamed into place."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([csv_cell(c) for c in columns])
            for row in rows:
                cells = [row.get(c, "") for c in columns] if isinstance(row, Mapping) else row
                writer.writerow([csv_cell(c) for c in cells])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_csv(path) -> Tuple[List[str], List[dict]]:
    """(columns, rows as dicts) of a CSV octtl wrote, every cell back to its text (`csv_text`).

    Raises:
        OSError, UnicodeDecodeError, csv.Error: for the caller to name the file.
    """
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [csv_text(c) for c in next(reader, [])]
        rows = [dict(zip(header, (csv_text(c) for c in line))) for line in reader if line]
    return header, rows


def is_occupied(path) -> bool:
    """Whether `path` exists as a file, or as a folder with something in it."""
    path = pathlib.Path(path)
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def check_target(path, what: str, overwrite: bool = False, folder: bool = False):
    """Refuses an output path that is taken (unless `overwrite`), of the wrong kind, or that cannot be created.

    Args:
        path: The file or folder a command will write.
        what: The flag or role that names it, e.g. '--output'.
        overwrite: Whether an existing output may be replaced.
        folder: Whether the output is a folder (else a file).

    Raises:
        InputError: One line naming `what` and the path.
    """
    path = pathlib.Path(path)
    if path.is_dir() and not folder:
        raise InputError(f"{what}={path}: is a folder; expected a file name")
    if path.exists() and folder and not path.is_dir():
        raise InputError(f"{what}={path}: is a file; expected a folder")
    if is_occupied(path) and not overwrite:
        kind = "folder exists and is not empty" if folder else "file exists"
        raise InputError(f"{what}={path}: {kind} (pass --overwrite to replace it)")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what}={path}: cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what}={path}: cannot be created: {parent} is not writable")


def check_folder(path, what: str, command: str, overwrite: bool = False) -> bool:
    """Refuses a non-empty output folder unless an earlier run of `command` wrote it or `overwrite` is given.

    A folder is the command's own when its `RECORD` names the command and lists every file in the folder: a file
    someone put there since makes it theirs again. Checked like `check_target` otherwise.

    Returns:
        Whether `path` holds something the command's output will replace.

    Raises:
        InputError: One line naming `what`, the path and, for a folder that is not the command's, one of its files.
    """
    path = pathlib.Path(path)
    if not path.is_dir() or overwrite:
        check_target(path, what, overwrite=overwrite, folder=True)
        return is_occupied(path)
    present = sorted(p.name for p in path.iterdir())
    if not present:
        check_target(path, what, folder=True)
        return False
    written = _recorded_files(path, command)
    foreign = [name for name in present if name != RECORD and name not in (written or ())]
    if written is None or foreign:
        shown = foreign[0] if foreign else present[0]
        raise InputError(f"{what}={path}: folder holds {shown}, which {command} did not write there (pass "
                         "--overwrite to replace the whole folder)")
    check_target(path, what, overwrite=True, folder=True)
    return True


def write_record(folder, command: str, files: Iterable):
    """`RECORD` in `folder`: that `command` wrote it, and which files (names within the folder) it holds."""
    names = sorted({pathlib.Path(f).name for f in files})
    write_json(pathlib.Path(folder) / RECORD, {"command": command, "files": names})


def _recorded_files(folder: pathlib.Path, command: str):
    """The files `RECORD` lists when `command` wrote `folder`, else None."""
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("command") != command or not isinstance(record.get("files"), list):
        return None
    return {str(name) for name in record["files"]}


def make_parent(path, what: str):
    """Creates the folder that will hold `path`; one line naming `what` when it cannot be."""
    try:
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{what}={path}: cannot be created ({e.strerror or e})") from None


def staging_dir(target, what: str) -> pathlib.Path:
    """An empty temporary sibling of `target` to build it in, with the permissions a plain mkdir gives."""
    target = pathlib.Path(target)
    make_parent(target, what)
    try:
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=target.parent))
    except OSError as e:
        raise InputError(f"{what}={target}: cannot be created ({e.strerror or e})") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would make the published folder private.
    return staging


@contextlib.contextmanager
def staged(target, what: str):
    """`staging_dir(target)` for the block, removed after it, with any folder above `target` that it created and that
    is still empty (a command that fails leaves nothing behind, not even the folder it would have written into)."""
    target = pathlib.Path(target)
    created, parent = [], target.parent
    while not parent.exists() and parent != parent.parent:
        created.append(parent)
        parent = parent.parent
    staging = staging_dir(target, what)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break  # Holds the output now (or something else): kept, and so is every folder above it.


def stale_staging(target) -> List[pathlib.Path]:
    """Staging folders of `target` whose process is gone (a run killed before it could clean up)."""
    target = pathlib.Path(target)
    stale = []
    for path in target.parent.glob(f".{target.name}.partial-*"):
        pid = path.name[len(f".{target.name}.partial-"):].split("-", 1)[0]
        if path.is_dir() and (not pid.isdigit() or not _alive(int(pid))):
            stale.append(path)
    return sorted(stale)


def remove_stale_staging(target) -> List[pathlib.Path]:
    """Removes `stale_staging(target)`; returns what it removed."""
    removed = stale_staging(target)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def publish(staging, target, overwrite: bool = False):
    """Renames a finished staging folder (or file) to `target`; with `overwrite`, what was there goes after."""
    staging, target = pathlib.Path(staging), pathlib.Path(target)
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()  # Empty, hence free to take; rename cannot replace a folder.
    old = None
    if target.exists():
        if not overwrite:
            raise InputError(f"{target}: appeared while this command ran; nothing was replaced")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


@contextlib.contextmanager
def exclusive(path):
    """Yields whether this process got the exclusive lock on `path` (created), without waiting; held until the
    block ends. The kernel drops it when its holder dies, even by SIGKILL."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def write_text(path, text: str):
    """Writes a text file under a temporary name, then renames it into place."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, value):
    """`write_text` of `value` as indented JSON; NaN and infinities are refused (JSON has none)."""
    write_text(path, json.dumps(value, indent=2, allow_nan=False) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Someone else's process: alive.
    return True
