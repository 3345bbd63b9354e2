"""Screenshots of the real PyMOL GUI with the cryobuild panel, on a virtual X screen (Xvfb).

    python -m cryobuild_pymol.screenshot [--map MAP --fasta FASTA] [--out docs/screenshot.png]

Starts Xvfb, runs ``python -m pymol`` on it with a driver script that opens the panel as
``cryobuild gui MAP FASTA`` does (the map shown as a mesh, centred, the window sized for the
3D view), clicks Auto-build, and when the build has ended orients the view on the
confidence-coloured model (the Cα candidates are hidden by then). It saves the whole screen
(``import -window root``, ImageMagick) to ``--out`` (shrunk to a 256-colour PNG if it is over
``--max-kb``), and with ``--model-png`` a ray-traced image of the viewer. Without a map it uses
the development map ``../shared/data/real/emd2566_3j6b9`` when present, else a 3 Å map
simulated from PyMOL's il2.

`virtual_screen` and `run_pymol` also run the GUI test (``tests/test_gui.py``). When Xvfb
(Debian: ``apt-get install -y xvfb imagemagick`` and the libraries of README's set-up) is
missing, the script says so and exits with status 0 without doing anything.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryobuild.pipeline import BuildOptions

#: Virtual screen size.
SCREEN = "1400x900x24"
#: Seconds to wait for the X server to come up.
X_START_TIMEOUT = 10.0
#: The development map: folders, map and FASTA, and its stated resolution in Å (case.json).
DEV_CASE = ("real", "emd2566_3j6b9", "2566_3J6B_9.mrc", "seq.fasta", 3.2)
#: Å: the resolution the il2 map is simulated at when the development map is not there.
IL2_RESOLUTION = 3.0

DRIVER = r'''
import json, subprocess
from pymol import cmd
from pymol.Qt import QtCore
import cryobuild_pymol

SETTINGS = json.loads({settings!r})
cryobuild_pymol.__init_plugin__()
panel = cryobuild_pymol.open_panel(map_path=SETTINGS["map"], fasta_path=SETTINGS["fasta"])
panel.rounds_spin.setValue(SETTINGS["rounds"])
panel.resolution_spin.setValue(SETTINGS["resolution"] or 0.0)
cmd.bg_color("white")


def status(text):
    with open(SETTINGS["status"], "a") as handle:
        handle.write(text + "\n")


def shoot():
    # the screen first: after a ray-traced png the viewport shows that image, not the view a
    # user has (whose labels PyMOL draws otherwise)
    cmd.refresh()
    subprocess.run(["import", "-window", "root", SETTINGS["screen_png"]], check=False)
    cmd.png(SETTINGS["model_png"], width=SETTINGS["viewport"][0], height=SETTINGS["viewport"][1],
            ray=1, quiet=1)
    status("shot")
    cmd.quit()


def scene():
    names = cmd.get_names("objects")
    model = next((n for n in ("cryobuild_model", "cryobuild_model_raw") if n in names), None)
    if model:
        cmd.show("sticks", f"{{model}} and name N+CA+C")
        cmd.set("stick_radius", 0.3, model)
        cmd.orient(model)
        # orient's zoom sizes the view from an estimate of the extent that can leave the ends
        # of a long model outside it; complete=1 measures every atom
        cmd.zoom(model, complete=1)
    QtCore.QTimer.singleShot(2000, shoot)


def ended(job_id, outcome):
    status(f"ended {{outcome}}")
    QtCore.QTimer.singleShot(500, scene)


def start():
    if not panel.ready:
        QtCore.QTimer.singleShot(500, start)
        return
    panel.jobEnded.connect(ended)
    panel.build_button.click()
    status("started")


QtCore.QTimer.singleShot(1000, start)
'''


def _default_inputs(work: Path) -> tuple[str, str, float]:
    """The development map, its sequence and resolution (Å), or a simulated il2 map's."""
    try:
        from cryobuild.data import data_root

        case = Path(data_root()) / DEV_CASE[0] / DEV_CASE[1]
        if (case / DEV_CASE[2]).is_file():
            return str(case / DEV_CASE[2]), str(case / DEV_CASE[3]), DEV_CASE[4]
    except Exception:  # no shared data: simulate
        pass
    return (*simulated_il2(work), IL2_RESOLUTION)


def simulated_il2(work: Path) -> tuple[str, str]:
    """A map simulated from PyMOL's il2 at `IL2_RESOLUTION` and its sequence, written into
    ``work``."""
    import numpy as np

    from cryobuild.data import read_structure
    from cryobuild.demo_data import demo_structure_path
    from cryobuild.maps import write_map
    from cryobuild.models import read_model
    from cryobuild.residues import one_letter
    from cryobuild.simulate import SimulationOptions, simulate_map

    path = demo_structure_path()
    density = simulate_map(read_structure(path), SimulationOptions(resolution=IL2_RESOLUTION),
                           np.random.default_rng(0))
    write_map(density, work / "il2.mrc")
    sequence = "".join(one_letter(int(a)) for a in read_model(path).aatype)
    (work / "il2.fasta").write_text(f">il2\n{sequence}\n")
    return str(work / "il2.mrc"), str(work / "il2.fasta")


def missing_tools(*tools: str) -> list[str]:
    """Which of ``tools`` (Xvfb, import, ...) are not on PATH."""
    return [tool for tool in tools if shutil.which(tool) is None]


def _free_display() -> int:
    for number in range(90, 200):
        if not Path(f"/tmp/.X{number}-lock").exists() and not Path(f"/tmp/.X11-unix/X{number}").exists():
            return number
    raise RuntimeError("no free X display number in :90-:199")


@contextlib.contextmanager
def virtual_screen(screen: str = SCREEN):
    """Run an Xvfb server for the block; yields the environment for programs to show on it
    (software OpenGL, Qt's X11 platform). Raises `RuntimeError` when it does not start."""
    display = _free_display()
    xvfb = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", screen, "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + X_START_TIMEOUT
        while not Path(f"/tmp/.X11-unix/X{display}").exists():
            if xvfb.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Xvfb did not start on :{display}")
            time.sleep(0.1)
        env = dict(os.environ, DISPLAY=f":{display}", LIBGL_ALWAYS_SOFTWARE="1")
        env.pop("QT_QPA_PLATFORM", None)
        yield env
    finally:
        xvfb.terminate()
        xvfb.wait(10)


def run_pymol(driver: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run PyMOL's GUI with the script ``driver`` (raises `subprocess.TimeoutExpired`)."""
    return subprocess.run([sys.executable, "-m", "pymol", "-q", str(driver)], env=env,
                          timeout=timeout, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    import json

    parser = argparse.ArgumentParser(prog="python -m cryobuild_pymol.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("--map", help="map file (default: the development map, or simulated il2)")
    parser.add_argument("--fasta", help="FASTA file (needed with --map)")
    parser.add_argument("--out", default="docs/screenshot.png", help="screen shot PNG (default docs/screenshot.png)")
    parser.add_argument("--model-png", default=None,
                        help="also keep the ray-traced image of the viewer here (PNG)")
    parser.add_argument("--rounds", type=int, default=BuildOptions.rounds,
                        help=f"build rounds (default {BuildOptions.rounds}, as the build's)")
    parser.add_argument("--resolution", type=float, default=None,
                        help="the map's resolution in Å for the panel (default: the development "
                             "map's stated one; with --map, auto)")
    parser.add_argument("--max-kb", type=int, default=300, help="shrink the screen shot above this size")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before giving up")
    args = parser.parse_args(argv)

    missing = missing_tools("Xvfb", "import")
    if missing:
        print(f"screenshot: skipped: {', '.join(missing)} not found (Debian: apt-get install -y xvfb "
              "imagemagick, and the libraries of README's set-up)")
        return 0
    if bool(args.map) != bool(args.fasta):
        parser.error("--map and --fasta go together")
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cryobuild-shot-") as folder:
        work = Path(folder)
        map_path, fasta_path, resolution = ((args.map, args.fasta, args.resolution) if args.map
                                            else _default_inputs(work))
        status = work / "status.txt"
        settings = {"map": str(Path(map_path).resolve()), "fasta": str(Path(fasta_path).resolve()),
                    "rounds": args.rounds, "viewport": [900, 700],
                    "resolution": args.resolution or resolution,
                    "status": str(status), "screen_png": str(out),
                    "model_png": str(Path(args.model_png).resolve() if args.model_png else work / "model.png")}
        driver = work / "driver.py"
        driver.write_text(DRIVER.format(settings=json.dumps(settings)))
        try:
            with virtual_screen() as env:
                print(f"screenshot: PyMOL on {env['DISPLAY']}, building {settings['map']} ...")
                done = run_pymol(driver, env, args.timeout)
        except subprocess.TimeoutExpired:
            print(f"screenshot: PyMOL did not finish within {args.timeout:.0f} s", file=sys.stderr)
            return 1
        except RuntimeError as err:
            print(f"screenshot: {err}", file=sys.stderr)
            return 1
        steps = status.read_text().split() if status.exists() else []
        if "shot" not in steps or not out.exists():
            print(f"screenshot: no screen shot taken (driver: {' '.join(steps) or 'no progress'}); "
                  f"PyMOL said:\n{done.stdout[-2000:]}{done.stderr[-2000:]}", file=sys.stderr)
            return 1
    if out.stat().st_size > args.max_kb * 1024:
        subprocess.run(["convert", str(out), "-colors", "256", f"PNG8:{out}"], check=False)
    kept = f" and {args.model_png}" if args.model_png else ""
    print(f"screenshot: {out} ({out.stat().st_size // 1024} kB){kept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
