"""What real cryo-EM maps have and `cryobuild.simulate` alone does not, as random training
augmentations shared by the detector's and the graph network's training.

Before simulation, on the atoms (`perturb_atoms`):

* B-factors that grow from the core to the surface and from backbone to side-chain tips (real
  maps' local resolution falls off towards the surface and along side chains);
* weaker carboxylates of Asp and Glu (radiation damage and their negative charge: Hryc et al.
  2017, PNAS 114:3103);
* a patch of lower local resolution (a flexible domain, as the spike NTD of the dev maps).

After simulation, on the map (`degrade_map`):

* anisotropic blur (preferred orientation);
* noise whose strength varies across the box;
* density that no model explains: blobs near the surface (ligands, glycans, detergent, a
  neighbour's edge);
* zoning or a soft mask around the atoms, as maps are deposited, and zero padding;
* thresholding: every voxel below a contour level set to 0, as some deposited maps and
  segments are (the spike NTD dev segment: 59 of its 198 Cα on erased density);
* any intensity scale and offset.

Every range is a field of `Realism`; `features.standardise` must undo what it can (scale,
offset, sharpening, padding; the step a threshold leaves, since the fourteenth stop: the
networks bundled then were trained on thresholded maps without that filling), and the networks
must learn to ignore the rest.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..maps import DensityMap, frequency_radius

__all__ = ["Realism", "coloured_noise", "degrade_map", "perturb_atoms"]

#: Carboxylate oxygens by residue name (PDB atom names).
CARBOXYLATE_OXYGENS = {"ASP": ("OD1", "OD2"), "GLU": ("OE1", "OE2")}
BACKBONE_ATOMS = ("N", "CA", "C", "O", "CB")


@dataclasses.dataclass(frozen=True)
class Realism:
    """Ranges of the random choices (Å² for B, Å for lengths; fractions are probabilities)."""

    surface_b: tuple[float, float] = (0.0, 80.0)
    sidechain_b: tuple[float, float] = (0.0, 40.0)
    carboxylate_occupancy: tuple[float, float] = (0.2, 1.0)
    local_blur_fraction: float = 0.3
    local_blur: tuple[float, float] = (30.0, 150.0)
    local_blur_width: tuple[float, float] = (8.0, 20.0)
    anisotropic_fraction: float = 0.3
    anisotropic_b: tuple[float, float] = (0.0, 80.0)
    uneven_noise_fraction: float = 0.5
    uneven_noise: tuple[float, float] = (0.3, 1.5)
    blob_fraction: float = 0.4
    blobs: tuple[int, int] = (1, 6)
    blob_radius: tuple[float, float] = (2.0, 6.0)
    zone_fraction: float = 0.5
    zone_radius: tuple[float, float] = (2.0, 6.0)
    pad_fraction: float = 0.2
    pad: tuple[float, float] = (5.0, 30.0)
    #: the contour level is this quantile of the density at the atoms' voxels
    threshold_fraction: float = 0.15
    threshold_quantile: tuple[float, float] = (0.05, 0.4)
    #: maps whose N, O and S atoms weigh more or less against C than electron form factors
    #: say (`ELEMENT_WEIGHTS`)
    element_weight_fraction: float = 0.0


#: Range of the factor (log-uniform) on the occupancy of each element's atoms, one draw per
#: element and map, in `Realism.element_weight_fraction` of the maps. The simulator's electron
#: form factors weigh C, N and O about 1 : 0.9 : 0.85 at low resolution; atomic numbers (as
#: ChimeraX's molmap, the second recipe of `bench.build`) 1 : 1.17 : 1.33, S 2.7; charge and
#: radiation damage move real maps further. The range covers both.
ELEMENT_WEIGHTS = {"N": (0.8, 1.5), "O": (0.8, 1.7), "S": (0.8, 3.0)}


def perturb_atoms(structure, realism: Realism, rng) -> None:
    """Change B-factors and occupancies of a `gemmi.Structure` (first model) in place."""
    atoms = [(residue.name, atom) for chain in structure[0] for residue in chain for atom in residue]
    if not atoms:
        return
    xyz = np.array([atom.pos.tolist() for _, atom in atoms])
    centre = xyz.mean(0)
    radial = np.linalg.norm(xyz - centre, axis=1)
    radial = radial / max(float(np.percentile(radial, 95)), 1.0)
    surface = float(rng.uniform(*realism.surface_b))
    sidechain = float(rng.uniform(*realism.sidechain_b))
    extra = surface * np.clip(radial, 0, 1.5) ** 2
    if rng.random() < realism.local_blur_fraction:
        patch = xyz[int(rng.integers(len(xyz)))]
        width = float(rng.uniform(*realism.local_blur_width))
        extra += float(rng.uniform(*realism.local_blur)) * np.exp(
            -np.sum((xyz - patch) ** 2, axis=1) / (2 * width**2))
    carboxylate = float(rng.uniform(*realism.carboxylate_occupancy))
    weights = {}
    if rng.random() < realism.element_weight_fraction:
        weights = {element: float(np.exp(rng.uniform(*np.log(bounds))))
                   for element, bounds in ELEMENT_WEIGHTS.items()}
    for (name, atom), b in zip(atoms, extra):
        atom.b_iso = float(atom.b_iso + b + (0 if atom.name in BACKBONE_ATOMS else sidechain))
        if atom.name in CARBOXYLATE_OXYGENS.get(name, ()):
            atom.occ *= carboxylate
        atom.occ *= weights.get(atom.element.name, 1.0)


def _smooth_field(shape, voxel_zyx, length: float, rng) -> np.ndarray:
    """A random smooth field ``shape`` (mean 0, sd 1) with correlation length ``length`` Å."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), length / np.asarray(voxel_zyx))
    return (field - field.mean()) / max(float(field.std()), 1e-12)


def degrade_map(density: DensityMap, atoms_xyz: np.ndarray, realism: Realism, rng) -> DensityMap:
    """``density`` with the map-level blemishes of the module docstring; ``atoms_xyz``
    ``[N, 3]`` (Å) are the modelled atoms (blobs go near, not on them; zones follow them)."""
    from scipy.spatial import cKDTree

    grid = density.grid.astype(np.float64)
    voxel_zyx = density.voxel_size[::-1]
    signal_sd = float(grid.std()) or 1.0
    if rng.random() < realism.anisotropic_fraction:
        spectrum = np.fft.rfftn(grid)
        axes = [np.fft.fftfreq(n, d=d) for n, d in zip(grid.shape[:-1], voxel_zyx[:-1])]
        axes.append(np.fft.rfftfreq(grid.shape[-1], d=voxel_zyx[-1]))
        kz, ky, kx = np.meshgrid(*axes, indexing="ij")
        b = rng.uniform(*realism.anisotropic_b, size=3)
        factor = np.exp(-(b[0] * kz**2 + b[1] * ky**2 + b[2] * kx**2) / 4)
        grid = np.fft.irfftn(spectrum * factor, s=grid.shape, axes=(0, 1, 2))
    tree = cKDTree(atoms_xyz) if len(atoms_xyz) else None
    if rng.random() < realism.blob_fraction and tree is not None:
        centres_ijk = np.stack(np.meshgrid(*[np.arange(n) for n in density.shape_xyz], indexing="ij"), -1)
        for _ in range(int(rng.integers(realism.blobs[0], realism.blobs[1] + 1))):
            anchor = atoms_xyz[int(rng.integers(len(atoms_xyz)))]
            direction = rng.normal(size=3)
            radius = float(rng.uniform(*realism.blob_radius))
            centre = anchor + direction / np.linalg.norm(direction) * (radius + 3.0)
            if tree.query(centre)[0] < radius:
                continue
            xyz = density.voxel_to_xyz(centres_ijk)  # [X, Y, Z, 3]
            d2 = np.sum((xyz - centre) ** 2, axis=-1).transpose(2, 1, 0)
            grid = grid + float(rng.uniform(0.3, 1.0)) * grid.max() * np.exp(-d2 / (2 * radius**2))
    if rng.random() < realism.uneven_noise_fraction:
        noise = coloured_noise(grid.shape, voxel_zyx, rng)
        strength = np.exp(0.5 * _smooth_field(grid.shape, voxel_zyx, 15.0, rng))
        grid = grid + float(rng.uniform(*realism.uneven_noise)) * signal_sd * noise * strength
    if rng.random() < realism.zone_fraction and tree is not None:
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in density.shape_xyz], indexing="ij"), -1)
        distance, _ = tree.query(density.voxel_to_xyz(ijk.reshape(-1, 3)))
        distance = distance.reshape(ijk.shape[:3]).transpose(2, 1, 0)
        radius = float(rng.uniform(*realism.zone_radius))
        if rng.random() < 0.5:
            grid = np.where(distance <= radius, grid, 0.0)
        else:
            grid = grid * np.clip(1 - (distance - radius) / 3.0, 0, 1)
    if rng.random() < realism.threshold_fraction and len(atoms_xyz):
        grid = _thresholded(grid, density, atoms_xyz, float(rng.uniform(*realism.threshold_quantile)))
    grid = grid * float(np.exp(rng.uniform(-4, 4))) + float(rng.normal(0, 2)) * (rng.random() < 0.5)
    out = density.with_grid(grid.astype(np.float32))
    if rng.random() < realism.pad_fraction:
        from ..maps import pad_to_shape

        extra = np.round(rng.uniform(*realism.pad, size=3) / density.voxel_size).astype(int)
        out = pad_to_shape(out, out.shape_xyz + 2 * extra)
    return out


def _thresholded(grid: np.ndarray, density: DensityMap, atoms_xyz: np.ndarray, quantile: float) -> np.ndarray:
    """``grid`` (z, y, x) with every voxel below the ``quantile`` of its values at the atoms'
    nearest voxels set to 0; unchanged if that level is not positive (a deposited threshold
    is a positive contour level)."""
    ijk = np.round(density.xyz_to_voxel(atoms_xyz)).astype(int)
    inside = np.all((ijk >= 0) & (ijk < density.shape_xyz), axis=1)
    if not inside.any():
        return grid
    level = float(np.quantile(grid[tuple(ijk[inside][:, ::-1].T)], quantile))
    return np.where(grid >= level, grid, 0.0) if level > 0 else grid


def coloured_noise(shape, voxel_zyx, rng) -> np.ndarray:
    """Unit-sd noise low-passed at about 2 Å (voxel-to-voxel correlated, as a map's noise)."""
    spectrum = np.fft.rfftn(rng.standard_normal(shape))
    s = frequency_radius(shape, voxel_zyx)
    noise = np.fft.irfftn(spectrum * np.exp(-(s * 2.0) ** 2), s=shape, axes=(0, 1, 2))
    return noise / max(float(noise.std()), 1e-12)
