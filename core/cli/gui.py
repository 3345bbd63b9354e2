"""``cryobuild gui``: start PyMOL with the cryobuild panel (and files, if given).

Runs ``python -m pymol`` of this interpreter with a short start-up script that loads the plugin
(whether or not ``install-plugin`` was run), opens the panel, loads MAP into PyMOL and puts the
FASTA file into the panel. Waits for PyMOL to exit and returns its exit status. Nothing here
imports PyMOL.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import InputError

HELP = "start PyMOL with the cryobuild plugin loaded"

STARTUP_SCRIPT = """# cryobuild gui start-up (temporary file)
import cryobuild_pymol
cryobuild_pymol.__init_plugin__()
cryobuild_pymol.open_panel(map_path={map!r}, fasta_path={fasta!r})
"""


def add_args(parser):
    parser.add_argument("map", nargs="?", help="map to load")
    parser.add_argument("fasta", nargs="?", help="FASTA to put in the panel")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the PyMOL command and start-up script instead of running them")


def _checked(path: str | None, what: str) -> str | None:
    if path is None:
        return None
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise InputError(f"{path}: no such {what} file")
    return str(resolved)


def main(args) -> int:
    import importlib.util

    map_path = _checked(args.map, "map")
    fasta_path = _checked(args.fasta, "FASTA")
    script = STARTUP_SCRIPT.format(map=map_path, fasta=fasta_path)
    if importlib.util.find_spec("pymol") is None:
        raise InputError("pymol-open-source is not installed in this environment")
    with tempfile.TemporaryDirectory(prefix="cryobuild-gui-") as folder:
        startup = Path(folder) / "cryobuild_startup.py"
        startup.write_text(script)
        command = [sys.executable, "-m", "pymol", str(startup)]
        if args.dry_run:
            print(shlex.join(command))
            print(script, end="")
            return 0
        return subprocess.call(command)
