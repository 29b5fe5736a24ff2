"""Files that data names inside itself (a MetaImage header's data file, a manifest's shards): kept inside its folder.

Such a name must be a plain relative name: not absolute, no `..` component, no NUL. The check is on the text
alone (lexical), so data kept as links (git-annex, DVC) still works, while a header or a manifest cannot make
octtl read a file outside the folder that holds it.
"""

import pathlib
import re

from octtl.errors import InputError

_SEPARATORS = re.compile(r"[/\\]")


def inside(folder, name, named_in, key: str) -> pathlib.Path:
    """`folder / name`, where `name` is what `key` of the file `named_in` says.

    Raises:
        InputError: One line naming `named_in`, when `name` is empty, absolute or climbs out with `..`.
    """
    text = name if isinstance(name, str) else ""
    parts = _SEPARATORS.split(text)
    absolute = text.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", text) is not None
    if not text or "\x00" in text or absolute or ".." in parts:
        shown = repr(name) if not isinstance(name, str) or "\x00" in text else text
        shown = shown if len(shown) <= 300 else shown[:300] + "..."
        raise InputError(f"{named_in}: {key} = {shown}: a file named inside the data must be a plain relative name "
                         "(no absolute path, no '..'); octtl reads nothing outside the data's folder")
    return pathlib.Path(folder) / text
