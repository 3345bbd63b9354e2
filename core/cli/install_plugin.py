"""``cryobuild install-plugin``: register the plugin with the PyMOL of this environment.

PyMOL loads plugins from the folders on its *startup path*, which it keeps in
``~/.pymolpluginsrc.py``. This verb writes a one-line loader, ``cryobuild.py`` (``from
cryobuild_pymol import __init_plugin__``), into a folder of its own (``~/.cryobuild/pymol_startup``)
and adds that folder to the startup path with PyMOL's own API (`pymol.plugins.set_startup_path`,
which saves the file). Running it again changes nothing; ``--uninstall`` takes both away:
the folder on the startup path (and ``~/.cryobuild`` when nothing else is left in it), the
plugin's autoload entry, and ``~/.pymolpluginsrc.py`` itself when the install made it and it
holds nothing else (the install notes that in ``install.json`` in its folder).

PyMOL is driven in a child process of the same interpreter, so nothing under ``core/`` imports
PyMOL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ..errors import CryobuildError

HELP = "register the cryobuild plugin with PyMOL"

#: Name of the loader module PyMOL finds (also the plugin's name in PyMOL's plugin manager).
LOADER_NAME = "cryobuild.py"
#: What the install did that the uninstall must undo (in the plugin folder).
RECORD_NAME = "install.json"
LOADER_TEXT = '''"""cryobuild PyMOL plugin loader (written by `cryobuild install-plugin`; removed by
`cryobuild install-plugin --uninstall`)."""

from cryobuild_pymol import __init_plugin__  # noqa: F401 - PyMOL calls it
'''

# Runs in a child interpreter: edits PyMOL's startup path through PyMOL's API.
_EDIT_STARTUP_PATH = r'''
import json, os, sys
import pymol.plugins as plugins
folder, add = sys.argv[1], sys.argv[2] == "add"
existed = os.path.exists(plugins.PYMOLPLUGINSRC)
plugins.initialize(-2)              # reads ~/.pymolpluginsrc.py, loads no plugin
paths = list(plugins.get_startup_path(True))
changed = False
if add and folder not in paths:
    paths.append(folder)
    changed = True
elif not add and folder in paths:
    paths = [p for p in paths if p != folder]
    changed = True
if changed:
    plugins.set_startup_path(paths)   # autosaves ~/.pymolpluginsrc.py
if not add and plugins.autoload.pop("cryobuild", None) is not None:
    plugins.pref_save(quiet=1)
empty = not paths and not plugins.autoload
print(json.dumps({"changed": changed, "paths": paths, "rc": plugins.PYMOLPLUGINSRC,
                  "existed": existed, "empty": empty}))
'''


def add_args(parser):
    parser.add_argument("--uninstall", action="store_true", help="remove the registration")
    parser.add_argument("--folder", default=None,
                        help="folder for the plugin loader (default ~/.cryobuild/pymol_startup)")


def plugin_folder(folder: str | None = None) -> Path:
    return Path(folder).expanduser() if folder else Path.home() / ".cryobuild" / "pymol_startup"


def _edit_startup_path(folder: Path, add: bool) -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    done = subprocess.run([sys.executable, "-c", _EDIT_STARTUP_PATH, str(folder), "add" if add else "remove"],
                          capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CryobuildError(f"could not edit PyMOL's plugin settings: {detail} (is pymol-open-source installed "
                             "in this environment?)")
    return json.loads(lines[-1])


def _remove_files(folder: Path) -> None:
    """Remove what the install wrote in ``folder`` (the loader, its compiled copies, the
    record), then the folder and ``~/.cryobuild`` if nothing else is left in them."""
    (folder / LOADER_NAME).unlink(missing_ok=True)
    (folder / RECORD_NAME).unlink(missing_ok=True)
    cache = folder / "__pycache__"
    for leftover in cache.glob("cryobuild.*"):
        leftover.unlink(missing_ok=True)
    for empty in (cache, folder, *([folder.parent] if folder == plugin_folder() else [])):
        try:
            empty.rmdir()  # only when empty: never a folder holding someone else's files
        except OSError:
            pass


def main(args) -> int:
    import importlib.util

    folder = plugin_folder(args.folder)
    loader = folder / LOADER_NAME
    record_path = folder / RECORD_NAME
    if args.uninstall:
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record = {}
        report = _edit_startup_path(folder, add=False)
        _remove_files(folder)
        removed = ""
        if record.get("created_rc") and report["empty"]:
            Path(report["rc"]).unlink(missing_ok=True)  # made by the install, holds nothing else
            removed = "; removed it (the install had made it)"
        state = "removed from" if report["changed"] else "was not on"
        print(f"cryobuild plugin: {folder} {state} PyMOL's plugin path ({report['rc']}{removed}); "
              "its files are gone")
        return 0
    if importlib.util.find_spec("cryobuild_pymol") is None:
        raise CryobuildError("the package cryobuild_pymol is not installed: run `pip install -e .` first")
    folder.mkdir(parents=True, exist_ok=True)
    if not loader.exists() or loader.read_text() != LOADER_TEXT:
        loader.write_text(LOADER_TEXT)
    report = _edit_startup_path(folder, add=True)
    if not record_path.exists():
        record_path.write_text(json.dumps({"created_rc": not report["existed"]}) + "\n")
    state = "registered in" if report["changed"] else "already in"
    print(f"cryobuild plugin: {folder} {state} PyMOL's plugin path ({report['rc']}); "
          "in PyMOL: Plugin -> cryobuild")
    return 0
