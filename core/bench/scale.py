"""Scaling benchmark: ``python -m cryobuild.bench.scale [--quick] [--rounds N] [--device D]``.

Simulated maps (`cryobuild.simulate.simulate_map`, noise-free unless ``--snr``) of one or more
structures of the data set (`cryobuild.data.default_split`, any split: timing does not depend on
what the networks were trained on) placed side by side in a box, at ``--resolution``:

* **residues**: 200 to 3,000 residues in a fixed 300³ box at 1.1 Å;
* **box**: a ~300-residue structure in boxes of 100³ to 400³ voxels at 1.0 Å;
* **large**: about 2,000 residues in a 400³ box at 0.83 Å;
* **il2**: PyMOL's demo il2 (126 residues) in its own box, and in a corner of a 300³ box whose
  other voxels are 0.

Each build runs in a fresh process (`run_build`, the networks loaded first and not counted)
with its map read from an MRC file, the map's resolution estimated, as ``cryobuild build`` does by
default. Per stage it measures the seconds and the peak resident memory: standardise (cutting the
map to its density, `cryobuild.extent.working_map`, then `features.standardise`), detect, gnn
(every graph-network pass), thread, relax. The peak is the process's resident high-water mark
(Linux ``VmHWM``, reset at the start of each stage through ``/proc/self/clear_refs``), which
counts NumPy and torch memory as tracemalloc does not; ``peak`` is the build's, the loaded
networks and the map included.

Prints one JSON line per case, a Markdown table, and the slopes: the exponent of a power law
(log-log fit) and the linear slope of the total time against residues (residues series) and
against box volume (box series), and the il2 comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

__all__ = ["ScaleCase", "CASES", "QUICK_CASES", "main", "make_case_map", "run_build"]

#: Stages in the order they run (`_StageMeter`): the interval before the pipeline's first
#: progress report is the standardisation.
STAGES = ("standardise", "detect", "gnn", "thread", "relax")
#: Å between placed structures and between them and the box's faces (the simulation's default
#: margin, `simulate.DEFAULT_MARGIN`).
PLACEMENT_GAP = 8.0
#: A structure is added to a case while the residues still missing exceed this fraction of the
#: target.
RESIDUE_TOLERANCE = 0.1


@dataclasses.dataclass(frozen=True)
class ScaleCase:
    """One map of the benchmark: ``residues`` to aim for (0: il2), the box's edge in voxels
    (None: the structure's own box) and the voxel size in Å; ``series`` names the comparison it
    belongs to (residues, box, large, il2)."""

    name: str
    series: str
    residues: int
    box: int | None
    voxel: float


CASES = (
    ScaleCase("il2 own box", "il2", 0, None, 1.0),
    ScaleCase("il2 in 300³ of zeros", "il2", 0, 300, 1.0),
    *(ScaleCase(f"{n} residues, 300³ at 1.1 Å", "residues", n, 300, 1.1)
      for n in (200, 500, 1000, 2000, 3000)),
    *(ScaleCase(f"300 residues, {n}³ at 1.0 Å", "box", 300, n, 1.0)
      for n in (100, 200, 300, 400)),
    ScaleCase("2,000 residues, 400³ at 0.83 Å", "large", 2000, 400, 0.83),
)
#: ``--quick``: small sizes, for development.
QUICK_CASES = (
    ScaleCase("il2 own box", "il2", 0, None, 1.0),
    ScaleCase("il2 in 160³ of zeros", "il2", 0, 160, 1.0),
    *(ScaleCase(f"{n} residues, 150³ at 1.1 Å", "residues", n, 150, 1.1) for n in (100, 300)),
    *(ScaleCase(f"100 residues, {n}³ at 1.0 Å", "box", 100, n, 1.0) for n in (100, 150)),
)


def _atoms(structure) -> np.ndarray:
    return np.array([atom.pos.tolist() for chain in structure[0] for residue in chain
                     for atom in residue])


def _records_for(target: int, room: float):
    """Structures of the data set adding up to about ``target`` residues, each fitting in a
    cube of ``room`` Å: the one closest to what is still missing, each used once."""
    from ..data import default_split, read_structure

    records = sorted({r.path: r for split in default_split().values() for r in split}.values(),
                     key=lambda r: r.num_residues)
    chosen, missing = [], target
    while missing > RESIDUE_TOLERANCE * target:
        candidates = [r for r in records if r not in chosen]
        for record in sorted(candidates, key=lambda r: abs(r.num_residues - missing)):
            atoms = _atoms(read_structure(record.path))
            if np.all(np.ptp(atoms, axis=0) <= room):
                chosen.append(record)
                missing -= record.num_residues
                break
        else:
            raise ValueError(f"no structure of about {missing} residues fits in {room:.0f} Å")
    return chosen


def _place(extents: list[np.ndarray], edge: float) -> list[np.ndarray]:
    """Offsets (Å, x, y, z) of boxes of ``extents`` ``[3]`` packed in rows, rows in layers, into
    a cube of ``edge`` Å with `PLACEMENT_GAP` around each."""
    offsets, corner, row, layer = [], np.full(3, PLACEMENT_GAP), 0.0, 0.0
    for extent in extents:
        if corner[0] + extent[0] + PLACEMENT_GAP > edge:
            corner = np.array([PLACEMENT_GAP, corner[1] + row + PLACEMENT_GAP, corner[2]])
            row = 0.0
        if corner[1] + extent[1] + PLACEMENT_GAP > edge:
            corner = np.array([PLACEMENT_GAP, PLACEMENT_GAP, corner[2] + layer + PLACEMENT_GAP])
            layer = 0.0
        if np.any(corner + extent + PLACEMENT_GAP > edge):
            raise ValueError(f"the structures do not fit in a {edge:.0f} Å box")
        offsets.append(corner.copy())
        corner[0] += extent[0] + PLACEMENT_GAP
        row, layer = max(row, extent[1]), max(layer, extent[2])
    return offsets


def make_case_map(case: ScaleCase, resolution: float, snr: float | None):
    """The simulated map of ``case`` and its sequences (`Sequence` list)."""
    import gemmi

    from ..data import read_structure
    from ..demo_data import demo_structure_path
    from ..maps import DensityMap
    from ..models import read_model
    from ..residues import one_letter
    from ..sequences import Sequence
    from ..simulate import SimulationOptions, simulate_map

    rng = np.random.default_rng(0)
    if case.residues == 0:
        path = demo_structure_path()
        density = simulate_map(read_structure(path), SimulationOptions(
            resolution=resolution, voxel_size=case.voxel, snr=snr), rng)
        sequences = [Sequence("il2", "".join(one_letter(int(a)) for a in read_model(path).aatype))]
        if case.box is not None:  # il2 in the corner, zeros elsewhere
            grid = np.zeros((case.box,) * 3, np.float32)
            z, y, x = density.grid.shape
            grid[:z, :y, :x] = density.grid
            density = DensityMap(grid, density.voxel_size, density.origin)
        return density, sequences

    edge = case.box * case.voxel
    records = _records_for(case.residues, edge - 2 * PLACEMENT_GAP)
    structures = [read_structure(record.path) for record in records]
    lows = [_atoms(st).min(0) for st in structures]
    extents = [_atoms(st).max(0) - low for st, low in zip(structures, lows)]
    merged = gemmi.Structure()
    merged.add_model(gemmi.Model("1"))
    sequences = []
    for index, (record, st, low, offset) in enumerate(
            zip(records, structures, lows, _place(extents, edge))):
        st[0].transform_pos_and_adp(gemmi.Transform(gemmi.Mat33(), gemmi.Vec3(*(offset - low))))
        for chain in st[0]:
            merged[0].add_chain(chain)
        sequences += [Sequence(f"{record.path.name.split('.')[0]}_{index}_{chain}", sequence)
                      for chain, sequence in zip(record.chains, record.sequences)]
    density = simulate_map(merged, SimulationOptions(
        resolution=resolution, voxel_size=case.voxel, snr=snr, origin=(0.0, 0.0, 0.0),
        shape_xyz=(case.box,) * 3), rng)
    return density, sequences


def _peak_mb() -> float:
    """The process's resident high-water mark (MB) since the last `_reset_peak`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (the benchmark measures memory on Linux)")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


class _StageMeter:
    """A progress callback that adds up wall time and the memory peak per stage."""

    def __init__(self):
        self.seconds, self.peak = defaultdict(float), defaultdict(float)
        self.stage, self.started = STAGES[0], time.perf_counter()
        self.windows = ""
        _reset_peak()

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if stage == "detect" and " windows" in message:
            self.windows = message.replace(" windows", "")
        if stage != self.stage:
            self.close()
            self.stage = stage

    def close(self) -> None:
        now = time.perf_counter()
        self.seconds[self.stage] += now - self.started
        self.peak[self.stage] = max(self.peak[self.stage], _peak_mb())
        self.started = now
        _reset_peak()


def run_build(map_path: str, sequences: list[tuple[str, str]], rounds: int, device: str) -> dict:
    """One build of the map in ``map_path`` (run in a fresh process): seconds and peak MB per
    stage, the loaded networks' and map's MB, the peak, windows run, and residues built."""
    from ..maps import read_map
    from ..pipeline import BuildOptions, Networks, build
    from ..sequences import Sequence

    networks = Networks.load(device)
    density = read_map(map_path)
    before = _peak_mb()
    meter = _StageMeter()
    result = build(density, [Sequence(name, residues) for name, residues in sequences], networks,
                   BuildOptions(rounds=rounds), progress=meter)
    meter.close()
    return {
        "seconds": {stage: round(meter.seconds[stage], 1) for stage in STAGES},
        "total_s": round(sum(meter.seconds.values()), 1),
        "peak_mb": {stage: round(meter.peak[stage]) for stage in STAGES},
        "loaded_mb": round(before), "peak": round(max(before, *meter.peak.values())),
        "windows": meter.windows, "points": len(result.points),
        "raw_residues": result.raw.num_residues, "final_residues": result.final.num_residues,
    }


def _slope(x, y) -> tuple[float, float]:
    """Exponent of a power law ``y ∝ x^k`` (log-log least squares) and linear slope dy/dx."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(np.polyfit(np.log(x), np.log(y), 1)[0]), float(np.polyfit(x, y, 1)[0])


def _table(rows: list[dict]) -> str:
    head = ("| map | voxels | residues | windows | " + " | ".join(STAGES)
            + " | total s | peak MB (" + " / ".join(STAGES) + ") | peak GB | raw / final |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['box']} | {row['residues']:,} | {row['windows']} | "
            + " | ".join(f"{row['seconds'][s]:.1f}" for s in STAGES)
            + f" | {row['total_s']:.0f} | " + " / ".join(str(row['peak_mb'][s]) for s in STAGES)
            + f" | {row['peak'] / 1024:.2f} | {row['raw_residues']} / {row['final_residues']} |")
    return "\n".join(lines)


def _summary(rows: list[dict]) -> list[str]:
    lines = []
    by_series = defaultdict(list)
    for row in rows:
        by_series[row["series"]].append(row)
    residues = by_series.get("residues", [])
    if len(residues) >= 2:
        k, linear = _slope([r["residues"] for r in residues], [r["total_s"] for r in residues])
        lines.append(f"time against residues ({residues[0]['box']}): exponent {k:.2f}, "
                     f"{1000 * linear:.1f} s per 1,000 residues")
    boxes = by_series.get("box", [])
    if len(boxes) >= 2:
        k, linear = _slope([r["voxel_count"] for r in boxes], [r["total_s"] for r in boxes])
        lines.append(f"time against box volume ({boxes[0]['residues']} residues): exponent "
                     f"{k:.2f}, {1e6 * linear:.2f} s per 10⁶ voxels")
    il2 = by_series.get("il2", [])
    if len(il2) == 2:
        own, zeros = il2
        lines.append(f"il2 in zeros against its own box: {zeros['total_s'] / own['total_s']:.2f}× "
                     f"the time ({zeros['total_s']:.0f} s against {own['total_s']:.0f} s), raw "
                     f"residues {zeros['raw_residues']} against {own['raw_residues']}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (development)")
    parser.add_argument("--series", nargs="+", choices=["il2", "residues", "box", "large"],
                        help="run only these series (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="graph network rounds")
    parser.add_argument("--resolution", type=float, default=3.0, help="Å of the simulated maps")
    parser.add_argument("--snr", type=float, default=None,
                        help="coloured noise at this signal-to-noise ratio (default: none)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    args = parser.parse_args(argv)

    from ..maps import write_map

    cases = [c for c in (QUICK_CASES if args.quick else CASES)
             if args.series is None or c.series in args.series]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cryobuild-scale-") as tmp:
        for case in cases:
            density, sequences = make_case_map(case, args.resolution, args.snr)
            map_path = write_map(density, Path(tmp) / "map.mrc")
            shape = density.shape_xyz
            row = {"case": case.name, "series": case.series, "box": "×".join(map(str, shape)),
                   "voxel_count": int(np.prod(shape)), "voxel": case.voxel,
                   "residues": sum(len(s) for s in sequences)}
            del density
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                named = [(s.name, s.residues) for s in sequences]
                row.update(pool.submit(run_build, str(map_path), named, args.rounds,
                                       args.device).result())
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(_table(rows))
    for line in _summary(rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
