"""Headless Chromium for the report page: a screenshot, or the page's DOM once it has loaded.

Used by the browser test of index.html and by tools/report_screenshot.py. Each call starts its own browser with
an empty profile in a temporary folder and no network services (no sync, updates or background fetches), so
it works as root in CI containers and leaves nothing behind.
"""

import pathlib
import shutil
import subprocess
import tempfile
from typing import List, Optional, Sequence

# Debian's package installs `chromium`; other systems name the same browser differently.
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--hide-scrollbars", "--mute-audio")
# Virtual time lets the page's load event (and the images it waits for) finish before the DOM is dumped.
_VIRTUAL_TIME_MS = 10000


def find(names: Sequence[str] = NAMES) -> Optional[str]:
    """Path of the first Chromium on PATH, or None."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(chromium: str, args: List[str], url: str, timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="octtl-chromium-") as profile:
        command = [chromium, *_FLAGS, f"--user-data-dir={profile}", *args, url]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{chromium} exited with status {proc.returncode}: {tail}")
    return proc


def screenshot(page, png, width: int = 1200, height: int = 1600, chromium: Optional[str] = None,
               timeout: float = 120) -> pathlib.Path:
    """Saves the top `width` x `height` pixels of an HTML file as a PNG; returns its path.

    Raises:
        RuntimeError: no Chromium, or it failed or wrote no file.
    """
    chromium = chromium or find()
    if chromium is None:
        raise RuntimeError(f"no Chromium on PATH (looked for {', '.join(NAMES)}; Debian: apt-get install chromium)")
    png = pathlib.Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _run(chromium, [f"--window-size={width},{height}", f"--virtual-time-budget={_VIRTUAL_TIME_MS}",
                    f"--screenshot={png}"], pathlib.Path(page).resolve().as_uri(), timeout)
    if not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(f"{chromium} wrote no screenshot to {png}")
    return png


def dump_dom(page, chromium: Optional[str] = None, timeout: float = 120) -> str:
    """The DOM of an HTML file serialised after its load event (scripts in the page have run)."""
    chromium = chromium or find()
    if chromium is None:
        raise RuntimeError(f"no Chromium on PATH (looked for {', '.join(NAMES)}; Debian: apt-get install chromium)")
    proc = _run(chromium, [f"--virtual-time-budget={_VIRTUAL_TIME_MS}", "--dump-dom"],
                pathlib.Path(page).resolve().as_uri(), timeout)
    return proc.stdout
