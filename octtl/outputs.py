"""How octtl writes what it produces: checked first, staged under a temporary name, renamed into place at the end.

A reader (or a crash) then sees either no output or a complete one, never half of it. Staging folders are
siblings named `.<name>.partial-<pid>-<random>`, so a later run can tell which ones a dead process left behind.
Imports nothing heavy, so commands check their outputs before they import TensorFlow.
"""

import json
import os
import pathlib
import shutil
import tempfile
from typing import List

from octtl.errors import InputError


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
