"""Screenshots of the real PyMOL GUI with the cryobuild panel, on a virtual X screen (Xvfb).

    python -m cryobuild_pymol.screenshot [--map MAP --fasta FASTA] [--out docs/screenshot.png]

Starts Xvfb, runs ``python -m pymol`` on it with a driver script that opens the panel, loads the
map and the FASTA, clicks Auto-build, and when the build has ended shows the confidence-coloured
model over a mesh of its map. It saves the whole screen (``import -window root``, ImageMagick)
to ``--out`` (shrunk to a 256-colour PNG if it is over ``--max-kb``), and with ``--model-png`` a
ray-traced image of the viewer. Without a map it uses the development map
``../shared/data/real/emd2566_3j6b9`` when present, else a 3 Å map simulated from PyMOL's il2.

When Xvfb (Debian: ``apt-get install xvfb imagemagick libgl1 ...``, see STACK_NOTES) is
missing, it says so and exits with status 0 without doing anything.
"""

from __future__ import annotations

import argparse
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
DEV_CASE = ("real", "emd2566_3j6b9", "2566_3J6B_9.mrc", "seq.fasta")

DRIVER = r'''
import json, os, subprocess
from pymol import cmd
from pymol.Qt import QtCore
import cryobuild_pymol

SETTINGS = json.loads({settings!r})
cryobuild_pymol.__init_plugin__()
panel = cryobuild_pymol.open_panel(map_path=SETTINGS["map"], fasta_path=SETTINGS["fasta"])
panel.rounds_spin.setValue(SETTINGS["rounds"])
map_name = panel.map_combo.currentText()
cmd.bg_color("white")
from pymol import gui
window = gui.get_qtwindow()
if window is not None:  # no window manager on Xvfb: place the window by hand
    window.setGeometry(0, 0, *SETTINGS["screen"])


def status(text):
    with open(SETTINGS["status"], "a") as handle:
        handle.write(text + "\n")


def shoot():
    cmd.png(SETTINGS["model_png"], width=SETTINGS["viewport"][0], height=SETTINGS["viewport"][1],
            ray=1, quiet=1)
    cmd.refresh()
    subprocess.run(["import", "-window", "root", SETTINGS["screen_png"]], check=False)
    status("shot")
    cmd.quit()


def scene():
    names = cmd.get_names("objects")
    model = next((n for n in ("cryobuild_model", "cryobuild_model_raw") if n in names), None)
    cmd.disable("cryobuild_ca")
    cmd.disable(map_name)
    cmd.set("mesh_radius", 0.012)
    if model:
        cmd.isomesh("map_mesh", map_name, SETTINGS["level"], model, carve=2.0)
        cmd.show("sticks", f"{{model}} and name N+CA+C")
        cmd.set("stick_radius", 0.35, model)
        cmd.orient(model)
    else:
        cmd.isomesh("map_mesh", map_name, SETTINGS["level"])
    cmd.color("grey70", "map_mesh")
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


def _default_inputs(work: Path) -> tuple[str, str]:
    """The development map and sequence, or a simulated il2 map and its sequence."""
    try:
        from cryobuild.data import data_root

        case = Path(data_root()) / DEV_CASE[0] / DEV_CASE[1]
        if (case / DEV_CASE[2]).is_file():
            return str(case / DEV_CASE[2]), str(case / DEV_CASE[3])
    except Exception:  # no shared data: simulate
        pass
    import numpy as np

    from cryobuild.data import read_structure
    from cryobuild.demo_data import demo_structure_path
    from cryobuild.maps import write_map
    from cryobuild.models import read_model
    from cryobuild.residues import one_letter
    from cryobuild.simulate import SimulationOptions, simulate_map

    path = demo_structure_path()
    density = simulate_map(read_structure(path), SimulationOptions(resolution=3.0), np.random.default_rng(0))
    write_map(density, work / "il2.mrc")
    sequence = "".join(one_letter(int(a)) for a in read_model(path).aatype)
    (work / "il2.fasta").write_text(f">il2\n{sequence}\n")
    return str(work / "il2.mrc"), str(work / "il2.fasta")


def _free_display() -> int:
    for number in range(90, 200):
        if not Path(f"/tmp/.X{number}-lock").exists() and not Path(f"/tmp/.X11-unix/X{number}").exists():
            return number
    raise RuntimeError("no free X display number in :90-:199")


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
    parser.add_argument("--level", type=float, default=2.0, help="mesh contour level, map SD (default 2)")
    parser.add_argument("--max-kb", type=int, default=300, help="shrink the screen shot above this size")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before giving up")
    args = parser.parse_args(argv)

    missing = [tool for tool in ("Xvfb", "import") if shutil.which(tool) is None]
    if missing:
        print(f"screenshot: skipped: {', '.join(missing)} not found (Debian: apt-get install xvfb "
              "imagemagick libgl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-* ..., see STACK_NOTES)")
        return 0
    if bool(args.map) != bool(args.fasta):
        parser.error("--map and --fasta go together")
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cryobuild-shot-") as folder:
        work = Path(folder)
        map_path, fasta_path = (args.map, args.fasta) if args.map else _default_inputs(work)
        status = work / "status.txt"
        settings = {"map": str(Path(map_path).resolve()), "fasta": str(Path(fasta_path).resolve()),
                    "rounds": args.rounds, "level": args.level, "viewport": [900, 700],
                    "screen": [int(v) for v in SCREEN.split("x")[:2]],
                    "status": str(status), "screen_png": str(out),
                    "model_png": str(Path(args.model_png).resolve() if args.model_png else work / "model.png")}
        driver = work / "driver.py"
        driver.write_text(DRIVER.format(settings=json.dumps(settings)))
        display = _free_display()
        xvfb = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", SCREEN, "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + X_START_TIMEOUT
            while not Path(f"/tmp/.X11-unix/X{display}").exists():
                if xvfb.poll() is not None or time.monotonic() > deadline:
                    print(f"screenshot: Xvfb did not start on :{display}", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            env = dict(os.environ, DISPLAY=f":{display}", LIBGL_ALWAYS_SOFTWARE="1")
            env.pop("QT_QPA_PLATFORM", None)
            print(f"screenshot: PyMOL on :{display}, building {settings['map']} ...")
            try:
                done = subprocess.run([sys.executable, "-m", "pymol", "-q", str(driver)], env=env,
                                      timeout=args.timeout, capture_output=True, text=True)
            except subprocess.TimeoutExpired:
                print(f"screenshot: PyMOL did not finish within {args.timeout:.0f} s", file=sys.stderr)
                return 1
            steps = status.read_text().split() if status.exists() else []
            if "shot" not in steps or not out.exists():
                print(f"screenshot: no screen shot taken (driver: {' '.join(steps) or 'no progress'}); "
                      f"PyMOL said:\n{done.stdout[-2000:]}{done.stderr[-2000:]}", file=sys.stderr)
                return 1
        finally:
            xvfb.terminate()
            xvfb.wait(10)
    if out.stat().st_size > args.max_kb * 1024:
        subprocess.run(["convert", str(out), "-colors", "256", f"PNG8:{out}"], check=False)
    kept = f" and {args.model_png}" if args.model_png else ""
    print(f"screenshot: {out} ({out.stat().st_size // 1024} kB){kept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
