"""Density maps: the `DensityMap` type, MRC/CCP4 reading and writing, resampling and cropping.

Conventions (the only place in the project that handles axis order):

* ``DensityMap.grid`` is float32 indexed ``[z, y, x]`` (C order, x fastest, as MRC files with the
  standard axis order store it);
* ``voxel_size`` and ``origin`` are ``[3]`` arrays in Å in ``(x, y, z)`` order;
* voxel ``(i, j, k)`` (x, y, z indices) has its centre at ``origin + (i, j, k) * voxel_size``.

Every conversion between Å and voxel indices goes through `DensityMap.xyz_to_voxel` and
`DensityMap.voxel_to_xyz`.

Placement of a file's grid in space follows PyMOL and ChimeraX so that models built here line up
with the map as the user sees it: when the header's ORIGIN field is non-zero it is the position
of the first stored voxel and NXSTART/NYSTART/NZSTART are ignored; otherwise the first voxel sits
at ``NSTART * voxel_size`` (NSTART given per column/row/section axis and mapped through
MAPC/MAPR/MAPS like the data).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError, InputWarning

__all__ = [
    "DensityMap",
    "read_map",
    "read_map_bytes",
    "read_mask",
    "write_map",
    "map_to_bytes",
    "resample",
    "resample_onto",
    "frequency_radius",
    "fourier_filter",
    "pad_to_shape",
    "crop_box",
    "mask_around",
    "THRESHOLDED_MIN_ZERO_FRACTION",
    "THRESHOLDED_MIN_FLOOR_RATIO",
    "erased_below",
]

_GZIP_MAGIC = b"\x1f\x8b"
_MRC_HEADER_BYTES = 1024
#: Header fields read before the data (MRC2014, https://www.ccpem.ac.uk/mrc_format/mrc2014.php):
#: byte offsets of NX, NY, NZ, MODE and NSYMBT (bytes of extended header after the 1024) as
#: 4-byte integers, and of the ``MAP `` tag.
_NX_OFFSET, _NSYMBT_OFFSET, _MAP_TAG_OFFSET = 0, 92, 208
#: Bytes per voxel of each MRC data mode: 0 int8, 1 int16, 2 float32, 3 complex int16,
#: 4 complex float32, 6 uint16, 12 float16, 101 4-bit integers (two voxels a byte, each row
#: starting on a new byte).
_MODE_BYTES = {0: 1, 1: 2, 2: 4, 3: 4, 4: 8, 6: 2, 12: 2, 101: 0.5}


@dataclasses.dataclass(frozen=True)
class DensityMap:
    """A density map on a regular orthogonal grid.

    Attributes
    ----------
    grid : float32 ``[Z, Y, X]``
        Density values (arbitrary units).
    voxel_size : float64 ``[3]``
        Voxel spacing in Å, ``(x, y, z)``.
    origin : float64 ``[3]``
        Position in Å of the centre of voxel ``(0, 0, 0)``, ``(x, y, z)``.
    """

    grid: np.ndarray
    voxel_size: np.ndarray
    origin: np.ndarray

    def __post_init__(self):
        grid = np.ascontiguousarray(self.grid, dtype=np.float32)
        voxel = np.asarray(self.voxel_size, dtype=np.float64).reshape(-1)
        origin = np.asarray(self.origin, dtype=np.float64).reshape(-1)
        if grid.ndim != 3:
            raise ValueError(f"grid must be 3-D [Z, Y, X], got shape {grid.shape}")
        if voxel.size == 1:
            voxel = np.repeat(voxel, 3)
        if origin.size == 1:
            origin = np.repeat(origin, 3)
        if voxel.shape != (3,) or not np.all(voxel > 0):
            raise ValueError(f"voxel_size must be 3 positive values in Å, got {self.voxel_size}")
        if origin.shape != (3,):
            raise ValueError(f"origin must be 3 values in Å, got {self.origin}")
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "voxel_size", voxel)
        object.__setattr__(self, "origin", origin)

    @property
    def shape_xyz(self) -> np.ndarray:
        """Number of voxels along x, y, z: int ``[3]``."""
        return np.array(self.grid.shape[::-1], dtype=np.int64)

    @property
    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """Centres of the first and last voxel in Å: two ``[3]`` arrays ``(x, y, z)``."""
        return self.origin.copy(), self.voxel_to_xyz(self.shape_xyz - 1)

    def xyz_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Å coordinates ``[..., 3]`` (x, y, z) to continuous voxel indices ``[..., 3]`` (i, j, k)."""
        return (np.asarray(xyz, dtype=np.float64) - self.origin) / self.voxel_size

    def voxel_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scale, offset)``, float64 ``[3]`` each (x, y, z), with ``voxel = xyz * scale + offset``:
        the conversion of `xyz_to_voxel` as numbers, for code that applies it to tensors."""
        scale = 1.0 / self.voxel_size
        return scale, -self.origin * scale

    def voxel_to_xyz(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel indices ``[..., 3]`` (i, j, k; may be fractional) to Å coordinates ``[..., 3]``."""
        return np.asarray(ijk, dtype=np.float64) * self.voxel_size + self.origin

    def interpolate(self, xyz: np.ndarray, order: int = 1) -> np.ndarray:
        """Density at Å positions ``[N, 3]`` (trilinear for ``order=1``); 0 outside the box. ``[N]``."""
        from scipy.ndimage import map_coordinates

        ijk = self.xyz_to_voxel(np.asarray(xyz, dtype=np.float64).reshape(-1, 3))
        return map_coordinates(self.grid, ijk[:, ::-1].T, order=order, mode="constant", cval=0.0)

    def with_grid(self, grid: np.ndarray) -> "DensityMap":
        """Same placement, new values (shape must match)."""
        if grid.shape != self.grid.shape:
            raise ValueError(f"grid shape {grid.shape} differs from {self.grid.shape}")
        return DensityMap(grid, self.voxel_size, self.origin)


# ----------------------------------------------------------------------------- reading


def read_map(path: str | os.PathLike) -> DensityMap:
    """Read an MRC/CCP4 map (``.mrc``, ``.map``, ``.ccp4``, optionally gzipped).

    Raises `InputError` naming the file for anything that is not a usable map: a missing or
    empty file, a file that is not MRC, a truncated one, a 2-D image or stack, non-finite
    values, or a map without any variation (e.g. all zeros).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such map file")
    data = path.read_bytes()
    return read_map_bytes(data, name=str(path))


def read_map_bytes(data: bytes, name: str = "<map bytes>") -> DensityMap:
    """Read a map from the bytes of an MRC/CCP4 file (e.g. PyMOL's ``cmd.get_ccp4str``)."""
    density = _read_grid(data, name)
    if float(density.grid.max()) == float(density.grid.min()):
        raise InputError(
            f"{name}: the map is constant ({float(density.grid.max()):g} everywhere): no density"
        )
    return density


def read_mask(path: str | os.PathLike, density: DensityMap) -> DensityMap:
    """Read a mask for ``density``: a map (any grid) whose positive voxels mark the region to
    build in; a box of ones is a mask of the whole box.

    Raises `InputError` naming the file for anything `read_map` refuses (except a constant
    map), and for a mask with no positive voxel in ``density``'s box (e.g. the mask of another
    map, or one placed by another origin convention).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such mask file")
    mask = _read_grid(path.read_bytes(), str(path))
    positive = mask.grid > 0
    if not positive.any():
        raise InputError(f"{path}: the mask has no positive voxel")
    lo, hi = density.extent
    # Masks are sampled at the nearest voxel: the mask voxels nearest to the map's box.
    first = np.maximum(np.round(mask.xyz_to_voxel(lo)).astype(int), 0)
    last = np.minimum(np.round(mask.xyz_to_voxel(hi)).astype(int), mask.shape_xyz - 1)
    inside = positive[first[2] : last[2] + 1, first[1] : last[1] + 1, first[0] : last[0] + 1]
    if np.any(last < first) or not inside.any():
        # [3] (x, y, z) voxel index ranges of the positive voxels, per axis
        used = [np.flatnonzero(positive.any(axis=other)) for other in ((0, 1), (0, 2), (1, 2))]
        region = mask.voxel_to_xyz([[u[0] for u in used], [u[-1] for u in used]])
        raise InputError(
            f"{path}: the mask does not overlap the map: its positive voxels lie in "
            f"{_box_text(*region)} Å, the map covers {_box_text(lo, hi)} Å (is it the mask of "
            "another map?)"
        )
    return mask


def _box_text(lo: np.ndarray, hi: np.ndarray) -> str:
    """``"x -10..40, y 0..50, z 5..60"`` for two ``[3]`` corners (Å)."""
    return ", ".join(f"{axis} {a:.0f}..{b:.0f}" for axis, a, b in zip("xyz", lo, hi))


def _read_grid(data: bytes, name: str) -> DensityMap:
    """The map in the bytes of an MRC/CCP4 file, whatever its values (`read_map_bytes` and
    `read_mask` judge those)."""
    import mrcfile.mrcinterpreter

    if len(data) == 0:
        raise InputError(f"{name}: the map file is empty")
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise InputError(f"{name}: corrupt gzip data ({err})") from None
    _check_header_sizes(data, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mrc = mrcfile.mrcinterpreter.MrcInterpreter(iostream=io.BytesIO(data), permissive=True)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{name}: not a readable MRC/CCP4 map ({err})") from None
    if mrc.header is None or mrc.data is None:
        raise InputError(f"{name}: not an MRC/CCP4 map (no valid header)")
    if mrc.data.ndim != 3 or min(mrc.data.shape) < 2:
        raise InputError(f"{name}: a 3-D volume is needed, got data of shape {mrc.data.shape}")
    density = _from_mrc(mrc, name)
    if not np.all(np.isfinite(density.grid)):
        raise InputError(f"{name}: the map contains NaN or infinite values")
    return density


def _check_header_sizes(data: bytes, name: str) -> None:
    """Refuse ``data`` (an uncompressed MRC file) unless its header is an MRC header whose
    sizes fit in it: checked before the reader allocates the grid the header asks for (a text
    file read as a header asks for gigabytes)."""
    if len(data) < _MRC_HEADER_BYTES:
        raise InputError(
            f"{name}: not an MRC/CCP4 map ({len(data)} bytes, shorter than the 1024-byte header)"
        )
    if data[_MAP_TAG_OFFSET : _MAP_TAG_OFFSET + 4] != b"MAP ":
        raise InputError(f"{name}: not an MRC/CCP4 map (no 'MAP ' tag in the header)")
    # The byte order is the one in which MODE is a known mode (a small number either way).
    for order in "<>":
        nx, ny, nz, mode = np.frombuffer(data, f"{order}i4", 4, _NX_OFFSET).tolist()
        if mode in _MODE_BYTES:
            break
    else:
        raise InputError(f"{name}: not a readable MRC/CCP4 map (unknown data mode {mode})")
    extended = int(np.frombuffer(data, f"{order}i4", 1, _NSYMBT_OFFSET)[0])
    if min(nx, ny, nz) < 1 or extended < 0:
        raise InputError(f"{name}: not a readable MRC/CCP4 map (the header says {nx}x{ny}x{nz} "
                         f"voxels and {extended} bytes of extended header)")
    row_bytes = math.ceil(nx * _MODE_BYTES[mode])
    held = max(len(data) - _MRC_HEADER_BYTES - extended, 0)
    if held < row_bytes * ny * nz:
        raise InputError(
            f"{name}: truncated: the header says {nx * ny * nz} voxels ({nx}x{ny}x{nz}), the "
            f"file holds {int(held // _MODE_BYTES[mode])}"
        )


def _from_mrc(mrc, name: str) -> DensityMap:
    header = mrc.header
    # Data axes as stored: [section, row, column]; MAPC/MAPR/MAPS say which of x=1, y=2, z=3
    # each of column/row/section is.
    axis_of_storage = [int(header.maps), int(header.mapr), int(header.mapc)]
    if sorted(axis_of_storage) != [1, 2, 3]:
        raise InputError(
            f"{name}: invalid axis order MAPC/MAPR/MAPS = "
            f"{int(header.mapc)}/{int(header.mapr)}/{int(header.maps)}"
        )
    data = np.asarray(mrc.data, dtype=np.float32)
    to_zyx = [axis_of_storage.index(axis) for axis in (3, 2, 1)]
    grid = np.transpose(data, to_zyx)

    angles = np.array([float(header.cellb.alpha), float(header.cellb.beta), float(header.cellb.gamma)])
    if np.all(np.isfinite(angles)) and np.any(angles != 0) and np.any(np.abs(angles - 90) > 0.01):
        # An X-ray map of a monoclinic crystal, say: its axes are not x, y, z.
        raise InputError(
            f"{name}: the cell is not orthogonal (angles {angles[0]:g}°, {angles[1]:g}°, "
            f"{angles[2]:g}°); cryobuild reads maps on orthogonal grids, as cryo-EM maps are: "
            "resample it onto an orthogonal grid first (ChimeraX: 'volume resample #1 onGrid #2')"
        )
    cell = np.array([float(header.cella.x), float(header.cella.y), float(header.cella.z)])
    sampling = np.array([int(header.mx), int(header.my), int(header.mz)], dtype=np.float64)
    shape_xyz = np.array(grid.shape[::-1], dtype=np.float64)
    sampling = np.where(sampling > 0, sampling, shape_xyz)
    voxel = cell / sampling
    if not np.all(voxel > 0):
        warnings.warn(f"{name}: the header has no cell size; assuming 1 Å voxels", InputWarning)
        voxel = np.ones(3)

    # NSTART is stored per column/row/section: map it to x, y, z.
    start_crs = [int(header.nxstart), int(header.nystart), int(header.nzstart)]
    axis_of_crs = [int(header.mapc), int(header.mapr), int(header.maps)]
    start_xyz = np.zeros(3)
    for start, axis in zip(start_crs, axis_of_crs):
        start_xyz[axis - 1] = start
    origin_field = np.array(
        [float(header.origin.x), float(header.origin.y), float(header.origin.z)]
    )
    if not np.all(np.isfinite(origin_field)):
        origin_field = np.zeros(3)
    origin = origin_field if np.any(origin_field != 0) else start_xyz * voxel
    return DensityMap(grid, voxel, origin)


# ----------------------------------------------------------------------------- writing


def write_map(density: DensityMap, path: str | os.PathLike, label: str | None = None) -> Path:
    """Write ``density`` as an MRC file, atomically (a temporary file renamed into place).

    The file has the standard axis order (1, 2, 3), NSTART 0 and the placement in ORIGIN.
    A name ending in ``.gz`` is gzipped. ``label`` (ASCII, at most 80 characters, e.g. the
    build that wrote the map) is added to the header's labels.
    """
    import mrcfile

    path = Path(path)
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(density.grid.astype(np.float32))
                vx, vy, vz = density.voxel_size
                mrc.voxel_size = (vx, vy, vz)
                mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z = density.origin
                mrc.header.nxstart = mrc.header.nystart = mrc.header.nzstart = 0
                if label is not None:
                    mrc.add_label(label)
        if path.suffix == ".gz":
            tmp.write_bytes(gzip.compress(tmp.read_bytes()))
    return path


def map_to_bytes(density: DensityMap) -> bytes:
    """The bytes of an MRC file holding ``density`` (the inverse of `read_map_bytes`)."""
    with tempfile.TemporaryDirectory() as tmp:
        return write_map(density, Path(tmp) / "map.mrc").read_bytes()


# ----------------------------------------------------------------------------- operations


def resample(density: DensityMap, voxel_size: float | np.ndarray, *, lattice: bool = False) -> DensityMap:
    """Resample to a new voxel size (Å) by trilinear interpolation.

    Trilinear rather than Fourier resampling: it handles anisotropic voxels, non-cubic boxes and
    any ratio of spacings, does not treat the box as periodic (a crop's opposite faces would
    bleed into each other through the FFT) and never rings at box edges. When the new voxels are
    larger, the map is first low-pass filtered with a Gaussian (sigma = 0.5 * sqrt(f^2 - 1) old
    voxels for a coarsening factor f) so that fine detail does not alias.

    By default the new grid starts at the old origin (voxel 0 stays in place) and covers the old
    extent. With ``lattice``, its points are the multiples of ``voxel_size`` in the map's frame
    that lie within the old extent, so two maps of one molecule that differ only by padding or
    cropping are sampled at the same points in space (from the old origin they would be sampled
    on grids shifted by a fraction of a voxel, and a detector's peaks move with the grid: a
    crop of the MAVS map kept 70 of its 111 Cα candidates within 1 Å of where they were).
    """
    from scipy.ndimage import gaussian_filter, map_coordinates

    new_voxel = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,)).copy()
    if not np.all(new_voxel > 0):
        raise ValueError(f"voxel size must be positive, got {voxel_size}")
    start = np.ceil(density.origin / new_voxel - 1e-6) * new_voxel if lattice else density.origin
    if np.allclose(new_voxel, density.voxel_size, rtol=1e-6, atol=0) and np.allclose(
            start, density.origin, rtol=0, atol=1e-6):
        return density
    factor_xyz = new_voxel / density.voxel_size
    grid = density.grid
    sigma_xyz = np.where(factor_xyz > 1, 0.5 * np.sqrt(np.maximum(factor_xyz**2 - 1, 0)), 0)
    if np.any(sigma_xyz > 0):
        grid = gaussian_filter(grid, sigma=sigma_xyz[::-1], mode="nearest")
    # the new grid's first point and the old extent, in old voxels
    offset = (start - density.origin) / density.voxel_size
    extent = density.shape_xyz - 1 - offset
    new_shape = np.maximum(np.floor(extent / factor_xyz + 1e-6).astype(int) + 1, 1)
    axes = [o + np.arange(n) * f for o, n, f in zip(offset[::-1], new_shape[::-1], factor_xyz[::-1])]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    values = map_coordinates(grid, [zz, yy, xx], order=1, mode="nearest")
    return DensityMap(values.astype(np.float32), new_voxel, start)


def frequency_radius(shape_zyx, voxel_zyx) -> np.ndarray:
    """|s| (1/Å) on the `numpy.fft.rfftn` grid of a box of ``shape_zyx`` voxels whose spacing
    per axis is ``voxel_zyx`` (Å; a scalar for cubic voxels)."""
    voxel_zyx = np.broadcast_to(np.asarray(voxel_zyx, dtype=np.float64), (3,))
    axes = [np.fft.fftfreq(n, d=d) for n, d in zip(shape_zyx[:-1], voxel_zyx[:-1])]
    axes.append(np.fft.rfftfreq(shape_zyx[-1], d=voxel_zyx[-1]))
    kz, ky, kx = np.meshgrid(*axes, indexing="ij")
    return np.sqrt(kx**2 + ky**2 + kz**2)


def fourier_filter(grid: np.ndarray, voxel_zyx, resolution: float, b_extra: float = 0.0) -> np.ndarray:
    """``grid`` ``[Z, Y, X]`` low-passed at ``resolution`` Å with a cosine edge over the top
    10% of the passed frequencies, and multiplied by exp(-B s² / 4) for ``b_extra`` (Å²);
    the box is treated as periodic. float32, same shape."""
    spectrum = np.fft.rfftn(grid)
    s = frequency_radius(grid.shape, voxel_zyx)
    cutoff = 1.0 / resolution
    width = 0.1 * cutoff
    edge = np.clip((s - (cutoff - width)) / width, 0, 1)
    factor = 0.5 * (1 + np.cos(np.pi * edge))
    if b_extra:
        factor = factor * np.exp(-b_extra * s**2 / 4)
    return np.fft.irfftn(spectrum * factor, s=grid.shape, axes=(0, 1, 2)).astype(np.float32)


def resample_onto(source: DensityMap, target: DensityMap) -> DensityMap:
    """``source`` sampled (trilinear) at the voxel centres of ``target``'s grid; 0 outside."""
    axes = [np.arange(n) for n in target.shape_xyz]
    ii, jj, kk = np.meshgrid(*axes, indexing="ij")
    centres = target.voxel_to_xyz(np.stack([ii, jj, kk], -1).reshape(-1, 3))
    values = source.interpolate(centres).reshape(ii.shape).transpose(2, 1, 0)
    return target.with_grid(values.astype(np.float32))


#: A map counts as thresholded (every voxel below a contour level set to 0, as some segmentation
#: tools leave it) when at least this fraction of its voxels are exactly 0, none is negative ...
THRESHOLDED_MIN_ZERO_FRACTION = 0.2
#: ... and its smallest non-zero value is at least this fraction of its median non-zero value.
#: The spike NTD dev segment (EMD-21457) is 76% zeros, its smallest non-zero value 0.184 and
#: the median 0.445 (ratio 0.41); the other dev maps, zoned by a mask, keep negative values
#: inside the zone (1-10% of their voxels), and a soft-edged mask leaves values near 0.
THRESHOLDED_MIN_FLOOR_RATIO = 0.1


def erased_below(density: DensityMap) -> float | None:
    """The contour level below which ``density`` was set to 0 if the map looks thresholded (see
    `THRESHOLDED_MIN_ZERO_FRACTION`), else None. Density weaker than that level is lost: on the
    spike NTD dev segment 59 of the deposited model's 198 Cα atoms sit on zeroed voxels."""
    grid = density.grid
    nonzero = grid[grid != 0]
    too_few_zeros = len(nonzero) > (1 - THRESHOLDED_MIN_ZERO_FRACTION) * grid.size
    if len(nonzero) == 0 or nonzero.min() < 0 or too_few_zeros:
        return None
    floor = float(nonzero.min())
    return floor if floor >= THRESHOLDED_MIN_FLOOR_RATIO * float(np.median(nonzero)) else None


def pad_to_shape(density: DensityMap, min_shape_xyz, value: float = 0.0) -> DensityMap:
    """Pad evenly on both sides up to at least ``min_shape_xyz`` voxels; the origin moves so
    that every existing voxel keeps its position in Å."""
    need = np.maximum(np.asarray(min_shape_xyz, dtype=int) - density.shape_xyz, 0)
    if not np.any(need):
        return density
    before = need // 2
    after = need - before
    pad_zyx = [(int(b), int(a)) for b, a in zip(before[::-1], after[::-1])]
    grid = np.pad(density.grid, pad_zyx, mode="constant", constant_values=value)
    return DensityMap(grid, density.voxel_size, density.voxel_to_xyz(-before))


def crop_box(density: DensityMap, lo_xyz, hi_xyz) -> DensityMap:
    """The part of the map between two corners in Å (voxels whose centres lie inside,
    clipped to the map)."""
    lo = np.ceil(density.xyz_to_voxel(lo_xyz) - 1e-6).astype(int)
    hi = np.floor(density.xyz_to_voxel(hi_xyz) + 1e-6).astype(int)
    lo = np.clip(lo, 0, density.shape_xyz - 1)
    hi = np.clip(hi, lo, density.shape_xyz - 1)
    grid = density.grid[lo[2] : hi[2] + 1, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1]
    return DensityMap(grid.copy(), density.voxel_size, density.voxel_to_xyz(lo))


def mask_around(density: DensityMap, xyz: np.ndarray, radius: float) -> np.ndarray:
    """Boolean ``[Z, Y, X]`` mask of voxels within ``radius`` Å of any of the points ``[N, 3]``."""
    from scipy.spatial import cKDTree

    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    mask = np.zeros(density.grid.shape, dtype=bool)
    if len(xyz) == 0:
        return mask
    lo = np.floor(density.xyz_to_voxel(xyz.min(0) - radius)).astype(int)
    hi = np.ceil(density.xyz_to_voxel(xyz.max(0) + radius)).astype(int)
    lo = np.clip(lo, 0, density.shape_xyz - 1)
    hi = np.clip(hi, 0, density.shape_xyz - 1)
    axes = [np.arange(lo[a], hi[a] + 1) for a in (2, 1, 0)]
    kk, jj, ii = np.meshgrid(*axes, indexing="ij")
    centres = density.voxel_to_xyz(np.stack([ii, jj, kk], -1).reshape(-1, 3))
    dist, _ = cKDTree(xyz).query(centres, distance_upper_bound=radius)
    inside = np.isfinite(dist).reshape(kk.shape)
    mask[lo[2] : hi[2] + 1, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1] = inside
    return mask
