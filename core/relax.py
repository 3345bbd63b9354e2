"""Real-space relaxation of atomic models: L-BFGS on geometry restraints, clashes and density fit.

`relax` moves every present heavy atom of the residues that are not fixed so as to minimise

``E = E_bond + E_angle + E_dihedral + E_omega + E_ramachandran + E_clash + E_position + E_density``

where the geometry terms (`cryobuild.validation.geometry_restraints`) are squared deviations in
units of their standard deviations (`BOND_SIGMA`, `ANGLE_SIGMA`, `DIHEDRAL_SIGMA`,
`OMEGA_SIGMA`; dihedral terms use ``2 (1 - cos(x - x0)) / sigma^2``, equal to ``(x - x0)^2 /
sigma^2`` for small deviations and periodic), ``E_ramachandran`` is ``(d / RAMACHANDRAN_SIGMA)^2``
per residue with phi and psi defined, ``d`` being how far (degrees) its (phi, psi) lies outside
the allowed region of its class (`RamachandranTable.outside_distance`, bilinear between bin
centres, periodic), ``E_clash`` penalises each non-bonded pair closer
than its clash distance (`cryobuild.validation.NonbondedTopology`: van der Waals sum minus 0.4 Å)
by ``((limit - d) / CLASH_SIGMA)^2``, ``E_position`` is ``|x - x_start|^2 / POSITION_SIGMA^2``
per atom (a weak tether against drift) and ``E_density`` is ``-density_weight`` times the sum of
the z-scored map, trilinearly interpolated, at the atoms. Fixed residues do not move, but their
atoms take part in the bonds, angles and clashes with the residues that do.

The clash neighbour list is rebuilt with a k-d tree every `NEIGHBOUR_INTERVAL` iterations with a
skin of `NEIGHBOUR_SKIN`; each rebuild starts a fresh `torch.optim.LBFGS` (strong Wolfe line
search). Energies are computed in float32 on the chosen device; on the CPU, torch runs on one
thread while minimising (see `_CPU_THREADS`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING

import numpy as np

from .device import resolve_device
from .maps import crop_box
from .progress import CancelToken, ProgressCallback, check_cancel, report
from .validation import (
    GeometryReport,
    geometry_restraints,
    load_ramachandran,
    nonbonded_topology,
    peptide_links,
    ramachandran_restraints,
    validate_geometry,
)

if TYPE_CHECKING:
    from .maps import DensityMap
    from .models import BuiltModel

__all__ = [
    "ANGLE_SIGMA",
    "BOND_SIGMA",
    "CLASH_MARGIN",
    "CLASH_SIGMA",
    "DEFAULT_DENSITY_WEIGHT",
    "DEFAULT_STEPS",
    "DIHEDRAL_SIGMA",
    "MAX_LINK_CA_DISTANCE",
    "MAX_LINK_DISTANCE",
    "NEIGHBOUR_INTERVAL",
    "NEIGHBOUR_SKIN",
    "OMEGA_SIGMA",
    "POSITION_SIGMA",
    "RAMACHANDRAN_SIGMA",
    "RelaxEnergies",
    "RelaxReport",
    "relax",
]

#: Standard deviations of the restraints: bond lengths in Å and angles in radians (about the
#: spread Engh & Huber 1991 give for protein bonds, 0.01-0.02 Å, and bond angles, 1.5-2.5°).
BOND_SIGMA = 0.02
ANGLE_SIGMA = np.deg2rad(2.0)
#: Fixed and branch dihedrals (ring planarity, chirality), in radians.
DIHEDRAL_SIGMA = np.deg2rad(5.0)
#: Peptide omega, in radians (observed spread about 6°: MacArthur & Thornton 1996, JMB 264:1180).
OMEGA_SIGMA = np.deg2rad(6.0)
#: Degrees outside the allowed Ramachandran region that cost as much as a bond one sigma off.
#: Measured with ``python -m cryobuild.bench.build --cases 4 --resolutions 3.0 4.0 --no-dev``
#: (committed gnn.pt, step 35,949) with this constant at 1e6 (no term) / 10 / 5: Ramachandran
#: outliers 3.7 / 2.5 / 1.1% at 3 Å and 12.5 / 8.6 / 2.7% at 4 Å; clashscore 5.3 / 4.7 / 6.3 and
#: 12.1 / 12.6 / 15.1; backbone RMSD 0.56 / 0.55 / 0.55 Å and 0.93 / 0.92 / 0.91 Å; Cα and
#: sequence recall unchanged. With closure's residues in the models (stop 13, clash sigma
#: 0.05 Å, ``bench.build --cases 4``), 5 / 3.5 / 2.5: outliers 3.0 / 0.7 / 0.4% at 3 Å, 6.9 /
#: 3.3 / 2.8% at 4 Å, 2.6 / 1.9 / 1.3% on apoferritin, 5.8 / 1.8 / 2.3% on EMD-2566; clashscore
#: at most 4.8 throughout; recall and backbone RMSD within 0.01 Å. On the distorted il2 of
#: ``tests/test_relax.py`` (23 outliers before) 5 / 3.5 / 2.5 leave 0 / 2 / 9: a stiffer term
#: stalls the minimiser there, so 3.5 and not 2.5.
RAMACHANDRAN_SIGMA = 3.5
#: Scale of the clash penalty in Å: a pair this far inside its clash distance costs as much as
#: a bond one sigma off. 0.1 left clashscore 29 at 4 Å and 48 on EMD-2566 once closure put
#: residues into crowded stretches; 0.05 took them to 0.7 and 4.8 at the same recall and
#: Ramachandran outliers (``bench.build --cases 4``, Ramachandran sigma then 5°).
CLASH_SIGMA = 0.05
#: The clash repulsion starts this much (Å) before the clash distance of the validation, so
#: that pairs pushed apart settle just outside it rather than on it.
CLASH_MARGIN = 0.1
#: Scale of the tether to the starting positions, in Å.
POSITION_SIGMA = 1.0
#: Weight of the density term per atom and unit of standardised density, in restraint units
#: (tuned when the map was z-scored over the whole box, which gives the molecule's voxels
#: values of the same order).
DEFAULT_DENSITY_WEIGHT = 10.0
#: L-BFGS iterations.
DEFAULT_STEPS = 200
#: L-BFGS iterations between rebuilds of the clash neighbour list, and its skin in Å (atoms
#: move far less than this between rebuilds).
NEIGHBOUR_INTERVAL = 25
NEIGHBOUR_SKIN = 1.0
#: A C(i)-N(i+1) gap longer than this (Å) in the input is a chain break, not a bond to restore,
#: even when the residue numbers are consecutive.
MAX_LINK_DISTANCE = 4.0
#: ... unless their Cα are at most this far apart (Å; consecutive Cα are 3.8 Å apart): then the
#: residues are neighbours whose frames point the wrong way (a residue added by closure or
#: bridging before its one graph-network pass), and the bond is restored. Closure's paths take
#: steps of up to 4.8 Å (`thread.closure.STEP`, `residues.reach`), which the last graph-network
#: pass may lengthen a little. At 4.6 Å, a step of 4.8 Å between
#: consecutively numbered residues on EMD-2566 (seed 0) and one on MAVS (seed 2) were left
#: unbonded, and the density pulled them 6-7 Å apart (bond rmsd 0.13 and 0.09 Å); at 5.0 Å
#: neither, and `bench.real --seeds 0 1 2` gave every figure the same to the digit but
#: EMD-2566's final types (1.47 -> 1.46 nats; thirty-third stop).
MAX_LINK_CA_DISTANCE = 5.0
#: Torch CPU threads while minimising. The tensors (tens of thousands of rows) are too small to
#: gain from threads: for 2,000 residues on a busy 2-core machine one energy evaluation took
#: 12-16 ms on one thread and 280-550 ms on two.
_CPU_THREADS = 1
#: L-BFGS history length.
_HISTORY = 10
#: Margin (Å) of map kept around the model when the map is cropped.
_MAP_MARGIN = 5.0
_N_SLOT, _C_SLOT = 0, 2


@dataclasses.dataclass(frozen=True)
class RelaxEnergies:
    """The terms of the relaxation energy (dimensionless restraint units; see the module)."""

    bond: float
    angle: float
    dihedral: float  # fixed and branch dihedrals
    omega: float
    ramachandran: float
    clash: float
    position: float
    density: float  # -density_weight * sum of z-scored density at the atoms
    total: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RelaxReport:
    """What `relax` did.

    Attributes
    ----------
    energy_before, energy_after : RelaxEnergies
        Energy terms of the input and of the result.
    geometry_before, geometry_after : GeometryReport
        `cryobuild.validation.validate_geometry` of the input and of the result.
    rmsd_moved : float
        Root-mean-square displacement of all present atoms, in Å.
    max_moved : float
        Largest displacement of an atom, in Å.
    num_free_atoms : int
        Atoms that were allowed to move.
    iterations : int
        L-BFGS iterations run.
    seconds : float
        Wall-clock time of the whole call (including both geometry reports).
    device : str
        The torch device used.
    """

    energy_before: RelaxEnergies
    energy_after: RelaxEnergies
    geometry_before: GeometryReport
    geometry_after: GeometryReport
    rmsd_moved: float
    max_moved: float
    num_free_atoms: int
    iterations: int
    seconds: float
    device: str

    def to_dict(self) -> dict:
        """Nested ``{name: value}`` dict of Python scalars (JSON-ready)."""
        return dataclasses.asdict(self)


def _periodic_bilinear(table, classes, phi, psi, bin_degrees: float):
    """Bilinear interpolation between the bin centres of a periodic ``[C, B, B]`` table (torch)
    at angles ``phi``, ``psi`` ``[M]`` (degrees) in the rows ``classes`` ``[M]``."""
    import torch

    bins = table.shape[-1]
    u = (phi + 180.0) / bin_degrees - 0.5
    v = (psi + 180.0) / bin_degrees - 0.5
    u0, v0 = torch.floor(u), torch.floor(v)
    fu, fv = u - u0, v - v0
    i0, j0 = u0.long() % bins, v0.long() % bins
    i1, j1 = (i0 + 1) % bins, (j0 + 1) % bins
    return ((1 - fu) * (1 - fv) * table[classes, i0, j0] + fu * (1 - fv) * table[classes, i1, j0]
            + (1 - fu) * fv * table[classes, i0, j1] + fu * fv * table[classes, i1, j1])


class _Energy:
    """The relaxation energy of one model as a function of its free atom positions (torch).

    Atoms are the model's present atoms in row-major order of ``atom_mask`` (``A`` of them),
    ``F`` of which belong to residues that are not ``fixed``. Restraints whose atoms are all
    fixed are constant and left out.
    """

    def __init__(
        self,
        model: BuiltModel,
        density: DensityMap | None,
        links: np.ndarray,
        fixed: np.ndarray,
        density_weight: float,
        device,
    ):
        import torch

        self.device = device
        self.dtype = torch.float32
        start = model.atom_positions[model.atom_mask].astype(np.float64)  # [A, 3]
        residue = np.nonzero(model.atom_mask)[0]
        free = ~fixed[residue]  # [A]
        self.free_index = torch.as_tensor(np.flatnonzero(free), device=device)
        self.start = self._tensor(start)
        self.start_free = self.start[self.free_index]

        restraints = geometry_restraints(model, links)
        self.topology = nonbonded_topology(model, links)

        def moving(*atom_groups):
            """Rows with at least one free atom (others are constant) ``[N]``."""
            return np.any([free[atoms].any(-1) for atoms in atom_groups], axis=0)

        keep = moving(restraints.bond_atoms)
        self.bond_atoms = self._index(restraints.bond_atoms[keep])
        self.bond_ideal = self._tensor(restraints.bond_ideal[keep])
        keep = moving(restraints.angle_atoms)
        self.angle_atoms = self._index(restraints.angle_atoms[keep])
        self.angle_ideal = self._tensor(restraints.angle_ideal[keep])
        # All dihedrals in one batch: fixed, branch, the chi each branch follows, omega.
        fixed_keep = moving(restraints.dihedral_atoms)
        branch_keep = moving(restraints.branch_atoms, restraints.branch_reference)
        omega_keep = moving(restraints.omega_atoms)
        quads = [
            restraints.dihedral_atoms[fixed_keep],
            restraints.branch_atoms[branch_keep],
            restraints.branch_reference[branch_keep],
            restraints.omega_atoms[omega_keep],
        ]
        self.quad_atoms = self._index(np.concatenate(quads))  # [Q, 4]
        self.quad_split = [len(q) for q in quads]
        self.dihedral_ideal = self._tensor(
            np.concatenate(
                [restraints.dihedral_ideal[fixed_keep], restraints.branch_offset[branch_keep]]
            )
        )
        self.omega_ideal = self._tensor(restraints.omega_ideal[omega_keep])
        phi_atoms, psi_atoms, classes = ramachandran_restraints(model, links)
        keep = moving(phi_atoms, psi_atoms)
        self.rama_atoms = self._index(np.concatenate([phi_atoms[keep], psi_atoms[keep]]))  # [2M, 4]
        self.rama_class = self._index(classes[keep])
        table = load_ramachandran()
        self.rama_bin = table.bin_degrees
        # [C, B, B] degrees (a writable float32 copy of the table's shared read-only field)
        self.rama_outside = self._tensor(table.outside_distance.astype(np.float32))
        self.free = free
        self.set_contacts(start)

        self.density_weight = float(density_weight) if density is not None else 0.0
        self.grid = None
        if density is not None and self.density_weight > 0:
            lo, hi = start.min(0) - _MAP_MARGIN, start.max(0) + _MAP_MARGIN
            cropped = crop_box(density, lo, hi)
            scale, offset = cropped.voxel_affine()
            size = cropped.shape_xyz - 1
            # voxel (x, y, z) -> grid_sample coordinate in [-1, 1] (align_corners=True)
            self.grid_scale = self._tensor(2 * scale / np.maximum(size, 1))
            self.grid_offset = self._tensor(2 * offset / np.maximum(size, 1) - 1)
            self.grid = self._tensor(cropped.grid)[None, None]  # [1, 1, Z, Y, X]

    def _tensor(self, array: np.ndarray):
        import torch

        return torch.as_tensor(np.asarray(array), dtype=self.dtype, device=self.device)

    def _index(self, array: np.ndarray):
        import torch

        return torch.as_tensor(np.asarray(array, dtype=np.int64), device=self.device)

    def set_contacts(self, positions: np.ndarray) -> None:
        """Rebuild the clash neighbour list at ``positions`` ``[A, 3]`` (Å)."""
        first, second, limit = self.topology.contacts(positions, margin=NEIGHBOUR_SKIN)
        moving = self.free[first] | self.free[second]
        self.contact_atoms = self._index(np.stack([first[moving], second[moving]], -1))  # [P, 2]
        self.contact_limit = self._tensor(limit[moving] + CLASH_MARGIN)

    def positions(self, free_positions):
        """All atom positions ``[A, 3]`` with the free ones replaced by ``free_positions``."""
        return self.start.index_copy(0, self.free_index, free_positions)

    def terms(self, free_positions) -> dict:
        """Energy terms (0-d tensors) at ``free_positions`` ``[F, 3]`` (Å)."""
        import torch
        import torch.nn.functional as F

        from .geometry import bond_angle, dihedral

        x = self.positions(free_positions)
        pairs = x[self.bond_atoms]  # [B, 2, 3]
        bond = torch.linalg.vector_norm(pairs[:, 0] - pairs[:, 1], dim=-1)
        angle = bond_angle(*x[self.angle_atoms].unbind(-2))
        fixed, branch, chi, omega = dihedral(*x[self.quad_atoms].unbind(-2)).split(self.quad_split)
        dihedral_error = torch.cat([fixed, branch - chi]) - self.dihedral_ideal
        omega = omega - self.omega_ideal
        count = len(self.rama_class)
        phi, psi = torch.rad2deg(dihedral(*x[self.rama_atoms].unbind(-2))).split([count, count])
        outside = _periodic_bilinear(self.rama_outside, self.rama_class, phi, psi, self.rama_bin)
        contacts = x[self.contact_atoms]  # [P, 2, 3]
        distance = torch.linalg.vector_norm(contacts[:, 0] - contacts[:, 1], dim=-1)
        overlap = torch.relu(self.contact_limit - distance)
        terms = {
            "bond": (((bond - self.bond_ideal) / BOND_SIGMA) ** 2).sum(),
            "angle": (((angle - self.angle_ideal) / ANGLE_SIGMA) ** 2).sum(),
            "dihedral": (2 * (1 - torch.cos(dihedral_error)) / DIHEDRAL_SIGMA**2).sum(),
            "omega": (2 * (1 - torch.cos(omega)) / OMEGA_SIGMA**2).sum(),
            "ramachandran": ((outside / RAMACHANDRAN_SIGMA) ** 2).sum(),
            "clash": ((overlap / CLASH_SIGMA) ** 2).sum(),
            "position": (((free_positions - self.start_free) / POSITION_SIGMA) ** 2).sum(),
            "density": torch.zeros((), dtype=self.dtype, device=self.device),
        }
        if self.grid is not None:
            coordinates = free_positions * self.grid_scale + self.grid_offset  # [F, 3] (x, y, z)
            # [F, 3] => [1, F, 1, 1, 3] sample points => [1, 1, F, 1, 1] densities
            values = F.grid_sample(
                self.grid, coordinates[None, :, None, None], align_corners=True
            ).reshape(-1)
            terms["density"] = -self.density_weight * values.sum()
        return terms

    def energies(self, free_positions) -> RelaxEnergies:
        """The terms at ``free_positions`` as Python floats."""
        import torch

        with torch.no_grad():
            terms = {name: float(value) for name, value in self.terms(free_positions).items()}
        return RelaxEnergies(**terms, total=sum(terms.values()))


def _minimise(energy: _Energy, params, iterations: int) -> None:
    """Run ``iterations`` L-BFGS iterations on ``params`` (the free positions ``[F, 3]``)."""
    import torch

    optimizer = torch.optim.LBFGS(
        [params], lr=1, max_iter=iterations, history_size=_HISTORY, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        total = sum(energy.terms(params).values())
        total.backward()
        return total

    optimizer.step(closure)


@contextlib.contextmanager
def _cpu_threads(device, threads: int):
    """Run torch's CPU operators on ``threads`` threads inside the block (on CPU devices),
    restoring the previous setting afterwards."""
    import torch

    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_fixed(fixed: np.ndarray | None, num: int) -> np.ndarray:
    if fixed is None:
        return np.zeros(num, dtype=bool)
    fixed = np.asarray(fixed)
    if fixed.dtype != bool or fixed.shape != (num,):
        raise ValueError(f"fixed must be bool [{num}], got {fixed.dtype} {fixed.shape}")
    return fixed


def relax(
    model: BuiltModel,
    density: DensityMap | None,
    *,
    fixed: np.ndarray | None = None,
    steps: int = DEFAULT_STEPS,
    density_weight: float = DEFAULT_DENSITY_WEIGHT,
    device: str | None = None,
    cancel: CancelToken | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[BuiltModel, RelaxReport]:
    """Relax the geometry of ``model`` in ``density`` (see the module docstring for the energy).

    Parameters
    ----------
    model : BuiltModel
        The model; residues are peptide-bonded to the next one when `peptide_links` says so and
        the input C(i)-N(i+1) distance is below `MAX_LINK_DISTANCE`.
    density : DensityMap or None
        The map to fit, standardised (`cryobuild.features.standardise`: the networks' view,
        z-scored over the molecule); None relaxes the geometry only.
    fixed : bool ``[R]``, optional
        Residues that must not move (e.g. accepted by the user); their coordinates in the
        result are bit-identical to the input.
    steps : int
        L-BFGS iterations (0 only scores the model).
    density_weight : float
        Weight of the density term per atom and unit of z-scored density (>= 0).
    device : str, optional
        Torch device (`cryobuild.device.resolve_device`: None or "auto" means CUDA when
        available).
    cancel : CancelToken, optional
        Checked between neighbour-list rebuilds; raises `cryobuild.errors.Cancelled`.
    progress : callable, optional
        ``progress("relax", fraction, message)`` after each rebuild interval.

    Returns
    -------
    BuiltModel
        The model with new atom positions (everything else unchanged).
    RelaxReport
        Energies and geometry before and after, displacement and timing.

    Raises
    ------
    ValueError
        For a ``fixed`` mask of the wrong shape or type, negative ``steps`` or
        ``density_weight``.
    """
    import torch

    began = time.perf_counter()
    fixed = _check_fixed(fixed, model.num_residues)
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")
    if not density_weight >= 0:
        raise ValueError(f"density_weight must be >= 0, got {density_weight}")
    torch_device = resolve_device(device)

    links = peptide_links(model)
    gap = np.linalg.norm(
        model.atom_positions[:-1, _C_SLOT] - model.atom_positions[1:, _N_SLOT], axis=-1
    )
    spacing = np.linalg.norm(model.ca[:-1] - model.ca[1:], axis=-1)
    links[:-1] &= (gap < MAX_LINK_DISTANCE) | (spacing < MAX_LINK_CA_DISTANCE)
    geometry_before = validate_geometry(model)
    energy = _Energy(model, density, links, fixed, density_weight, torch_device)
    params = energy.start_free.clone().requires_grad_(True)
    energy_before = energy.energies(params)

    done = 0
    with _cpu_threads(torch_device, _CPU_THREADS):
        while done < steps and len(params):
            check_cancel(cancel)
            chunk = min(NEIGHBOUR_INTERVAL, steps - done)
            _minimise(energy, params, chunk)
            done += chunk
            with torch.no_grad():
                energy.set_contacts(energy.positions(params).double().cpu().numpy())
            report(progress, "relax", done / steps, f"{done}/{steps} L-BFGS iterations")

    energy_after = energy.energies(params)
    with torch.no_grad():
        moved = energy.positions(params).cpu().numpy()
    positions = model.atom_positions.copy()
    free_atoms = model.atom_mask & ~fixed[:, None]
    positions[free_atoms] = moved[energy.free]
    result = dataclasses.replace(model, atom_positions=positions)
    displacement = np.linalg.norm(
        positions[model.atom_mask].astype(np.float64) - model.atom_positions[model.atom_mask],
        axis=-1,
    )
    return result, RelaxReport(
        energy_before=energy_before,
        energy_after=energy_after,
        geometry_before=geometry_before,
        geometry_after=validate_geometry(result),
        rmsd_moved=float(np.sqrt(np.mean(displacement**2))) if len(displacement) else 0.0,
        max_moved=float(displacement.max(initial=0.0)),
        num_free_atoms=int(free_atoms.sum()),
        iterations=done,
        seconds=time.perf_counter() - began,
        device=str(torch_device),
    )
