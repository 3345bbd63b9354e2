"""Rigid frames, internal coordinates and all-atom construction (torch).

Every position is in Å, every angle in radians, and every torsion is a ``(sin, cos)`` pair.
Residue frames follow AlphaFold2 (Jumper et al. 2021, supplementary Alg. 21): the origin is at
CA, the x-axis points from CA to C, and N lies in the xy-plane with positive y. All-atom
construction places atoms one after another from three placed atoms (NeRF: Parsons et al. 2005,
J. Comput. Chem. 26:1063) using the table in `cryobuild.residues`.

This module holds the only implementation of the geometric primitives (`dihedral`,
`bond_angle`, `place_atom`); NumPy callers convert with ``torch.from_numpy``.
"""

from __future__ import annotations

import torch

from .residues import (
    ATOM14_MASK,
    CHI_ATOM_SLOTS,
    CHI_MASK,
    MAX_ATOMS,
    NUM_TORSIONS,
    build_tables,
)

__all__ = [
    "Rigid",
    "random_rotations",
    "rotation_from_quaternion",
    "dihedral",
    "bond_angle",
    "place_atom",
    "ideal_backbone",
    "torsions_to_atom14",
    "atom14_to_torsions",
]

#: Guards divisions by vector norms (Å) against zero.
_EPS = 1e-8
_O_SLOT = 3


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


class Rigid:
    """A batch of rigid transformations ``x -> R x + t``.

    Rotations are kept in at least float32 precision: half and bfloat16 inputs are promoted (as
    openfold does under mixed precision), float64 stays float64. Translations share the dtype.

    Parameters
    ----------
    rotations : Tensor ``[*, 3, 3]``
        Rotation matrices (columns are the frame's axes in global coordinates).
    translations : Tensor ``[*, 3]``
        Translations in Å (the frame's origin in global coordinates).

    Raises
    ------
    ValueError
        If the shapes do not match ``[*, 3, 3]`` and ``[*, 3]`` with the same ``*``.
    """

    def __init__(self, rotations: torch.Tensor, translations: torch.Tensor):
        if rotations.shape[-2:] != (3, 3) or translations.shape[-1:] != (3,):
            raise ValueError(
                f"need rotations [*, 3, 3] and translations [*, 3], got "
                f"{tuple(rotations.shape)} and {tuple(translations.shape)}"
            )
        if rotations.shape[:-2] != translations.shape[:-1]:
            raise ValueError(
                f"batch shapes differ: rotations {tuple(rotations.shape[:-2])}, "
                f"translations {tuple(translations.shape[:-1])}"
            )
        dtype = _at_least_float32(torch.promote_types(rotations.dtype, translations.dtype))
        self.rotations = rotations.to(dtype)
        self.translations = translations.to(dtype)

    @property
    def shape(self) -> torch.Size:
        """The batch shape ``*``."""
        return self.translations.shape[:-1]

    @property
    def device(self) -> torch.device:
        return self.translations.device

    @property
    def dtype(self) -> torch.dtype:
        return self.translations.dtype

    @classmethod
    def from_3_points(cls, n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor) -> "Rigid":
        """Residue frames from backbone atoms by Gram-Schmidt (AlphaFold2 Alg. 21).

        Parameters
        ----------
        n, ca, c : Tensor ``[*, 3]``
            Positions of N, CA and C in Å.

        Returns
        -------
        Rigid ``[*]``
            Origin at CA; x along C - CA; y in the plane of N, CA, C towards N; z = x × y.
        """
        x_axis = c - ca
        x_axis = x_axis / torch.linalg.vector_norm(x_axis, dim=-1, keepdim=True).clamp_min(_EPS)
        to_n = n - ca
        y_axis = to_n - (to_n * x_axis).sum(-1, keepdim=True) * x_axis
        y_axis = y_axis / torch.linalg.vector_norm(y_axis, dim=-1, keepdim=True).clamp_min(_EPS)
        z_axis = torch.cross(x_axis, y_axis, dim=-1)
        # [*, 3] x 3 => [*, 3, 3] with the axes as columns
        return cls(torch.stack([x_axis, y_axis, z_axis], dim=-1), ca)

    def compose(self, other: "Rigid") -> "Rigid":
        """The transformation ``self ∘ other`` (apply ``other`` first)."""
        rotations = self.rotations @ other.rotations
        return Rigid(rotations, self.apply(other.translations))

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """Map local points ``[*, 3]`` (Å) to global ones; ``*`` broadcasts with the batch."""
        return torch.einsum("...ij,...j->...i", self.rotations, points) + self.translations

    def invert_apply(self, points: torch.Tensor) -> torch.Tensor:
        """Map global points ``[*, 3]`` (Å) into the local frames."""
        shifted = points - self.translations
        return torch.einsum("...ji,...j->...i", self.rotations, shifted)

    def __getitem__(self, index) -> "Rigid":
        """Index the batch dimensions (like a tensor of shape ``*``)."""
        index = index if isinstance(index, tuple) else (index,)
        full = slice(None)
        return Rigid(self.rotations[index + (full, full)], self.translations[index + (full,)])

    def unsqueeze(self, dim: int) -> "Rigid":
        """Insert a batch dimension of size 1 at ``dim`` (counted over the batch dimensions)."""
        if dim < 0:
            dim += len(self.shape) + 1
        if not 0 <= dim <= len(self.shape):
            raise ValueError(f"dim {dim} is out of range for batch shape {tuple(self.shape)}")
        return Rigid(self.rotations.unsqueeze(dim), self.translations.unsqueeze(dim))

    def __repr__(self) -> str:
        return f"Rigid(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device})"


def rotation_from_quaternion(quaternion: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[*, 3, 3]`` from quaternions ``[*, 4]`` ``(w, x, y, z)``.

    The quaternions need not be normalised: each is divided by its norm first.
    """
    unit = quaternion / torch.linalg.vector_norm(quaternion, dim=-1, keepdim=True).clamp_min(_EPS)
    w, x, y, z = unit.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    # 3 x 3 x [*] => [*, 3, 3]
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def random_rotations(
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Rotation matrices ``[*shape, 3, 3]`` drawn uniformly from SO(3).

    A normalised 4-D Gaussian vector is a uniformly distributed unit quaternion, whose rotation
    matrix is uniform over SO(3). Pass a seeded ``generator`` for reproducible draws.
    """
    return rotation_from_quaternion(
        torch.randn(*shape, 4, generator=generator, dtype=dtype, device=device)
    )


# ----------------------------------------------------------------------------- internal coordinates


def dihedral(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Dihedral angle ``a-b-c-d`` in radians, in ``(-pi, pi]`` (IUPAC sign convention).

    Parameters
    ----------
    a, b, c, d : Tensor ``[*, 3]``
        Positions (Å).

    Returns
    -------
    Tensor ``[*]``
        Positive when, looking along b -> c, the bond b-a turns clockwise onto c-d.
    """
    ab = b - a
    bc = c - b
    cd = d - c
    normal_abc = torch.cross(ab, bc, dim=-1)
    normal_bcd = torch.cross(bc, cd, dim=-1)
    y = torch.linalg.vector_norm(bc, dim=-1) * (ab * normal_bcd).sum(-1)
    x = (normal_abc * normal_bcd).sum(-1)
    return torch.atan2(y, x)


def bond_angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Angle ``a-b-c`` at ``b`` in radians, ``[*]`` for positions ``[*, 3]`` (Å)."""
    ba = a - b
    bc = c - b
    cross = torch.linalg.vector_norm(torch.cross(ba, bc, dim=-1), dim=-1)
    return torch.atan2(cross, (ba * bc).sum(-1))


def place_atom(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    bond: torch.Tensor,
    angle: torch.Tensor,
    sin_dihedral: torch.Tensor,
    cos_dihedral: torch.Tensor,
) -> torch.Tensor:
    """Position of ``d`` from ``a, b, c`` and its internal coordinates (NeRF).

    Parameters
    ----------
    a, b, c : Tensor ``[*, 3]``
        Positions (Å) of the reference atoms; ``d`` is bonded to ``c``.
    bond : Tensor ``[*]``
        ``|c-d|`` in Å.
    angle : Tensor ``[*]``
        Bond angle ``b-c-d`` in radians.
    sin_dihedral, cos_dihedral : Tensor ``[*]``
        Sine and cosine of the dihedral ``a-b-c-d``.

    Returns
    -------
    Tensor ``[*, 3]``
        Position of ``d`` in Å.
    """
    bc = c - b
    bc = bc / torch.linalg.vector_norm(bc, dim=-1, keepdim=True).clamp_min(_EPS)
    normal = torch.cross(b - a, bc, dim=-1)
    normal = normal / torch.linalg.vector_norm(normal, dim=-1, keepdim=True).clamp_min(_EPS)
    in_plane = torch.cross(normal, bc, dim=-1)
    along = -bond * torch.cos(angle)
    across = bond * torch.sin(angle)
    return (
        c
        + along[..., None] * bc
        + (across * cos_dihedral)[..., None] * in_plane
        + (across * sin_dihedral)[..., None] * normal
    )


# ----------------------------------------------------------------------------- all-atom


def _table(values, like: torch.Tensor) -> torch.Tensor:
    """A `residues` table as a tensor on ``like``'s device (floats take ``like``'s dtype)."""
    tensor = torch.as_tensor(values, device=like.device)
    return tensor.to(like.dtype) if tensor.is_floating_point() else tensor


def _check_aatype(aatype: torch.Tensor) -> None:
    if aatype.is_floating_point() or aatype.is_complex():
        raise ValueError(f"aatype must be an integer tensor, got {aatype.dtype}")
    if aatype.numel() and (int(aatype.min()) < 0 or int(aatype.max()) >= ATOM14_MASK.shape[0]):
        raise ValueError(f"aatype values must be in 0..{ATOM14_MASK.shape[0] - 1}")


def ideal_backbone(rigid: Rigid) -> torch.Tensor:
    """Ideal N, CA, C positions of residues with frames ``rigid`` ``[*]``.

    Returns
    -------
    Tensor ``[*, 3, 3]``
        Positions in Å of N, CA, C (in that order) from the measured ideal local coordinates
        (`residues.load_residue_geometry`).
    """
    local = _table(build_tables().backbone_local, rigid.translations)
    # [3, 3] local points against [*, 1] frames => [*, 3, 3]
    return rigid.unsqueeze(-1).apply(local)


def torsions_to_atom14(
    rigid: Rigid, aatype: torch.Tensor, torsions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """All heavy atoms of residues from their frames, types and torsions.

    N, CA, C come from `ideal_backbone`; every later atom is placed by `place_atom` from the
    build table, one atom slot at a time for all residues at once. Differentiable with respect
    to the frames and the torsions.

    Parameters
    ----------
    rigid : Rigid ``[*]``
        Residue frames.
    aatype : int Tensor ``[*]``
        Residue types (index into ``AA_ORDER``; 20 = unknown, backbone only).
    torsions : Tensor ``[*, 5, 2]``
        ``(sin, cos)`` of psi, chi1..chi4 (`residues.TORSION_NAMES`); each pair is normalised
        here, so unnormalised network outputs are accepted. Torsions a residue type does not
        have are ignored.

    Returns
    -------
    positions : Tensor ``[*, 14, 3]``
        Atom positions in Å in atom14 layout; 0 in unused slots.
    mask : bool Tensor ``[*, 14]``
        Which slots hold an atom.
    """
    _check_aatype(aatype)
    if torsions.shape[-2:] != (NUM_TORSIONS, 2) or torsions.shape[:-2] != rigid.shape:
        raise ValueError(
            f"torsions must be [*, {NUM_TORSIONS}, 2] with * = {tuple(rigid.shape)}, "
            f"got {tuple(torsions.shape)}"
        )
    if aatype.shape != rigid.shape:
        raise ValueError(f"aatype shape {tuple(aatype.shape)} differs from {tuple(rigid.shape)}")
    tables = build_tables()
    like = rigid.translations
    torsions = torsions.to(like.dtype)
    unit = torsions / torch.linalg.vector_norm(torsions, dim=-1, keepdim=True).clamp_min(_EPS)
    fixed = torch.zeros_like(unit[..., :1, :])
    fixed[..., 1] = 1.0
    # [*, 5, 2] => [*, 6, 2]: slot NUM_TORSIONS is the zero angle used by fixed dihedrals
    unit = torch.cat([unit, fixed], dim=-2)

    parents = _table(tables.parents, like)[aatype]  # [*, 14, 3]
    bond = _table(tables.bond, like)[aatype]  # [*, 14]
    angle = _table(tables.angle, like)[aatype]  # [*, 14]
    offset = _table(tables.dihedral_offset, like)[aatype]  # [*, 14]
    torsion_index = _table(tables.torsion, like)[aatype]  # [*, 14]
    # [*, 6, 2] gathered by [*, 14] => [*, 14, 2]
    drive = torch.gather(unit, -2, torsion_index[..., None].expand(*torsion_index.shape, 2))
    sin_t, cos_t = drive.unbind(-1)
    sin_o, cos_o = torch.sin(offset), torch.cos(offset)
    sin_dihedral = sin_t * cos_o + cos_t * sin_o
    cos_dihedral = cos_t * cos_o - sin_t * sin_o

    placed = list(ideal_backbone(rigid).unbind(-2))
    for slot in range(_O_SLOT, MAX_ATOMS):
        so_far = torch.stack(placed, dim=-2)  # [*, slot, 3]
        index = parents[..., slot, :, None].expand(*parents.shape[:-2], 3, 3)
        a, b, c = torch.gather(so_far, -2, index).unbind(-2)  # 3 x [*, 3]
        placed.append(
            place_atom(
                a, b, c, bond[..., slot], angle[..., slot],
                sin_dihedral[..., slot], cos_dihedral[..., slot],
            )
        )
    mask = _table(ATOM14_MASK, like)[aatype]
    positions = torch.stack(placed, dim=-2) * mask[..., None].to(like.dtype)
    return positions, mask


def atom14_to_torsions(
    positions: torch.Tensor, mask: torch.Tensor, aatype: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Psi and chi1..chi4 of residues in atom14 layout (the inverse of `torsions_to_atom14`).

    Psi is measured as the dihedral N-CA-C-O minus the measured offset of O, so it equals the
    usual N-CA-C-N(next) up to the spread of that offset, needs no neighbouring residue, and
    rebuilding with `torsions_to_atom14` puts O back where it was.

    Parameters
    ----------
    positions : Tensor ``[*, 14, 3]``
        Atom positions in Å.
    mask : bool Tensor ``[*, 14]``
        Which atoms are present.
    aatype : int Tensor ``[*]``
        Residue types (0..20).

    Returns
    -------
    torsions : Tensor ``[*, 5, 2]``
        ``(sin, cos)`` of psi, chi1..chi4; ``(0, 1)`` where undefined.
    torsion_mask : bool Tensor ``[*, 5]``
        True where the residue type has the torsion and all of its atoms are present.
    """
    _check_aatype(aatype)
    if positions.shape[-2:] != (MAX_ATOMS, 3) or mask.shape != positions.shape[:-1]:
        raise ValueError(
            f"need positions [*, {MAX_ATOMS}, 3] and mask [*, {MAX_ATOMS}], got "
            f"{tuple(positions.shape)} and {tuple(mask.shape)}"
        )
    if aatype.shape != positions.shape[:-2]:
        raise ValueError(
            f"aatype shape {tuple(aatype.shape)} differs from {tuple(positions.shape[:-2])}"
        )
    tables = build_tables()
    mask = mask.bool()
    psi_slots = torch.arange(4, device=positions.device).expand(*aatype.shape, 1, 4)
    chi_slots = _table(CHI_ATOM_SLOTS, positions)[aatype]  # [*, 4, 4]
    slots = torch.cat([psi_slots, chi_slots], dim=-2)  # [*, 5, 4]
    has_torsion = torch.cat(
        [torch.ones_like(aatype, dtype=torch.bool)[..., None], _table(CHI_MASK, positions)[aatype]],
        dim=-1,
    )  # [*, 5]
    flat = slots.flatten(-2)  # [*, 20]
    # [*, 14, 3] gathered by [*, 20] => [*, 5, 4, 3]
    quads = torch.gather(positions, -2, flat[..., None].expand(*flat.shape, 3))
    quads = quads.unflatten(-2, (NUM_TORSIONS, 4))
    present = torch.gather(mask, -1, flat).unflatten(-1, (NUM_TORSIONS, 4)).all(-1)
    torsion_mask = has_torsion & present
    # Undefined torsions are computed on a harmless reference quadruple (no NaN gradients).
    reference = torch.eye(4, 3, dtype=positions.dtype, device=positions.device)
    reference[3, 0] = 1.0
    quads = torch.where(torsion_mask[..., None, None], quads, reference)
    angles = dihedral(*quads.unbind(-2))  # [*, 5]
    psi_offset = _table(tables.dihedral_offset, positions)[aatype][..., _O_SLOT]
    angles = torch.cat([angles[..., :1] - psi_offset[..., None], angles[..., 1:]], dim=-1)
    torsions = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1)
    identity = torch.tensor([0.0, 1.0], dtype=positions.dtype, device=positions.device)
    return torch.where(torsion_mask[..., None], torsions, identity), torsion_mask
