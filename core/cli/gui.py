"""``cryobuild gui``: start PyMOL with the cryobuild panel (and files, if given).

Runs ``python -m pymol`` of this interpreter with a short start-up script that loads the plugin
(whether or not ``install-plugin`` was run), opens the panel, loads MAP into PyMOL (shown as a
mesh, centred and zoomed) and puts the FASTA file into the panel. Waits for PyMOL to exit and
returns its exit status. Nothing here imports PyMOL or Qt.

First it checks that the system libraries PyMOL's Qt window needs are there (`missing_libraries`:
``ldd`` of Qt's X11 platform plugin and of PyMOL's own extension). On a fresh Linux machine
several are not (Qt then stops with "Could not load the Qt platform plugin "xcb""), and the
check names them and prints the one ``apt-get install`` line that adds them. Before that it
checks that there is a screen to open the window on (`check_display`).
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import CryobuildError, InputError

HELP = "start PyMOL with the cryobuild plugin loaded"

STARTUP_SCRIPT = """# cryobuild gui start-up (temporary file)
import cryobuild_pymol
cryobuild_pymol.__init_plugin__()
cryobuild_pymol.open_panel(map_path={map!r}, fasta_path={fasta!r}, model_path={model!r},
                           resolution={resolution!r})
"""

#: Qt bindings in the order PyMOL tries them (``pymol.Qt``), and the Qt folder each ships.
QT_BINDINGS = (("PyQt5", "Qt5"), ("PySide2", "Qt"), ("PyQt6", "Qt6"), ("PySide6", "Qt"))
#: Debian/Ubuntu packages of the system libraries PyMOL's Qt window uses (README, STACK_NOTES):
#: the line `missing_libraries` prints lists those of them that are missing.
SYSTEM_PACKAGES = {
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libOpenGL.so.0": "libopengl0",
    "libGLX.so.0": "libglx0",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxcb.so.1": "libxcb1",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
}
#: The README's set-up line for the GUI: every package above that a fresh Debian 12 / Ubuntu
#: 22.04 image may lack.
GUI_PACKAGES = ("libgl1", "libegl1", "libgl1-mesa-dri", "libxkbcommon-x11-0", "libxcb-icccm4",
                "libxcb-image0", "libxcb-keysyms1", "libxcb-randr0", "libxcb-render-util0",
                "libxcb-xinerama0", "libxcb-xinput0", "libxcb-xfixes0", "libxcb-shape0",
                "libxcb-cursor0", "libfontconfig1", "libdbus-1-3")
_NOT_FOUND = re.compile(r"^\s*(\S+)\s*=>\s*not found", re.MULTILINE)


def add_args(parser):
    parser.add_argument("map", nargs="?", help="map to load")
    parser.add_argument("fasta", nargs="?", help="FASTA to put in the panel")
    parser.add_argument("--model", default=None,
                        help="a model to go on with (e.g. OUT/model.cif of cryobuild build, whose "
                             "unassigned chains' places come with it), opened as the panel's Open "
                             "model… does")
    parser.add_argument("-r", "--resolution", type=float, default=None,
                        help="the map's resolution in Å, e.g. from its EMDB entry, set in the "
                             "panel (default: auto, estimated from the map)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the PyMOL command and start-up script instead of running them")


def _checked(path: str | None, what: str) -> str | None:
    if path is None:
        return None
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise InputError(f"{path}: no such {what} file")
    return str(resolved)


def package_for(soname: str) -> str:
    """The Debian package of a shared library (`SYSTEM_PACKAGES`, else Debian's naming rule:
    ``libfoo-bar.so.3`` -> ``libfoo-bar3``, a hyphen before the version after a digit)."""
    if soname in SYSTEM_PACKAGES:
        return SYSTEM_PACKAGES[soname]
    match = re.match(r"^lib(.+)\.so\.(\d+)", soname)
    if not match:
        return soname
    name, version = match.group(1).lower(), match.group(2)
    return f"lib{name}{'-' if name[-1].isdigit() else ''}{version}"


def _gui_binaries() -> tuple[list[Path], bool]:
    """Qt's X11 platform plugin (of the binding PyMOL will use) and PyMOL's extension, and
    whether that Qt is Qt 6 (which also needs libxcb-cursor)."""
    binaries, qt6 = [], False
    for binding, folder in QT_BINDINGS:
        spec = importlib.util.find_spec(binding)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        binaries += sorted(root.glob(f"{folder}/plugins/platforms/libqxcb.so"))
        binaries += sorted(root.glob("plugins/platforms/libqxcb.so"))
        qt6 = binding.endswith("6")
        break
    spec = importlib.util.find_spec("pymol")
    if spec is not None and spec.submodule_search_locations:
        binaries += sorted(Path(list(spec.submodule_search_locations)[0]).glob("_cmd*.so"))
    return binaries, qt6


def missing_libraries(ldd: str | None = None) -> list[str]:
    """Shared libraries PyMOL's Qt window needs that this machine lacks (sonames, sorted).

    Empty where it cannot tell (not Linux, no ``ldd``) and where Qt does not use X11
    (``QT_QPA_PLATFORM`` set to another platform, as the tests' ``offscreen``)."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    ldd = ldd or shutil.which("ldd")
    if not sys.platform.startswith("linux") or ldd is None or (platform and not platform.startswith("xcb")):
        return []
    binaries, qt6 = _gui_binaries()
    missing = set()
    for binary in binaries:
        done = subprocess.run([ldd, str(binary)], capture_output=True, text=True)
        missing |= set(_NOT_FOUND.findall(done.stdout))
    if qt6 and ctypes.util.find_library("xcb-cursor") is None:
        missing.add("libxcb-cursor.so.0")  # loaded by Qt >= 6.5 at run time, not linked
    return sorted(missing)


def install_line(sonames: list[str]) -> str:
    """The one ``apt-get install`` line that adds ``sonames``."""
    packages = sorted({package_for(soname) for soname in sonames})
    sudo = "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
    return f"{sudo}apt-get install -y {' '.join(packages)}"


def check_libraries() -> str | None:
    """A one-line problem when system libraries PyMOL's window needs are missing, else None."""
    missing = missing_libraries()
    if not missing:
        return None
    return (f"PyMOL's Qt window cannot start: this machine lacks {', '.join(missing)}; "
            f"install them with: {install_line(missing)}")


def check_display() -> str | None:
    """A one-line problem when PyMOL's window has no screen to open on, else None: on Linux,
    with Qt on X11 or Wayland (``QT_QPA_PLATFORM`` unset, ``xcb…`` or ``wayland…``) and neither
    ``DISPLAY`` nor ``WAYLAND_DISPLAY`` set (Qt would stop with "could not connect to display"
    or its "xcb" plugin message)."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if not sys.platform.startswith("linux") or (
            platform and not platform.startswith(("xcb", "wayland"))):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return ("PyMOL's window has no screen to open on (DISPLAY is not set): run cryobuild gui in "
            "a desktop session, over ssh -X, or on a virtual screen (xvfb-run -a cryobuild gui "
            "...); the command line (cryobuild build) needs none")


def main(args) -> int:
    from ..pipeline import BuildOptions

    map_path = _checked(args.map, "map")
    fasta_path = _checked(args.fasta, "FASTA")
    model_path = _checked(args.model, "model")
    BuildOptions(resolution=args.resolution)  # an InputError for one out of range, as a build's
    script = STARTUP_SCRIPT.format(map=map_path, fasta=fasta_path, model=model_path,
                                   resolution=args.resolution)
    if importlib.util.find_spec("pymol") is None:
        raise InputError("pymol-open-source is not installed in this environment")
    problem = check_display() or check_libraries()
    if problem and not args.dry_run:
        raise CryobuildError(problem)
    with tempfile.TemporaryDirectory(prefix="cryobuild-gui-") as folder:
        startup = Path(folder) / "cryobuild_startup.py"
        startup.write_text(script)
        command = [sys.executable, "-m", "pymol", str(startup)]
        if args.dry_run:
            if problem:
                print(f"cryobuild gui: {problem}", file=sys.stderr)
            print(shlex.join(command))
            print(script, end="")
            return 0
        return subprocess.call(command)
