"""Map reading/writing and operations: every placement convention puts density where it belongs."""

from __future__ import annotations

import gzip
import itertools

import mrcfile
import numpy as np
import pytest

from cryobuild.errors import InputError
from cryobuild.maps import (
    DensityMap, crop_box, erased_below, map_to_bytes, mask_around, pad_to_shape,
    read_map, read_map_bytes, read_mask, resample, resample_onto, write_map,
)

#: A density peak must be found this close (Å) to the atom that made it.
PEAK_TOLERANCE = 0.3
ATOM = np.array([13.37, -4.21, 27.9])
BLOB_SIGMA = 1.5  # Å


def blob_map(voxel_xyz, shape_xyz, origin_xyz, atom=ATOM) -> DensityMap:
    """A Gaussian blob (sigma 1.5 Å) at ``atom`` on the given grid."""
    voxel_xyz = np.asarray(voxel_xyz, float)
    axes = [origin_xyz[a] + voxel_xyz[a] * np.arange(shape_xyz[a]) for a in (2, 1, 0)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    r2 = (x - atom[0]) ** 2 + (y - atom[1]) ** 2 + (z - atom[2]) ** 2
    return DensityMap(np.exp(-r2 / (2 * BLOB_SIGMA**2)), voxel_xyz, origin_xyz)


def peak_position(density: DensityMap) -> np.ndarray:
    """Sub-voxel position (Å) of the highest peak (log-parabolic fit along each axis, exact for
    a Gaussian)."""
    grid = np.log(np.maximum(density.grid, 1e-30))
    k, j, i = np.unravel_index(np.argmax(density.grid), grid.shape)
    index = np.array([i, j, k], float)
    for axis, (di, dj, dk) in enumerate([(1, 0, 0), (0, 1, 0), (0, 0, 1)]):
        lo, mid, hi = grid[k - dk, j - dj, i - di], grid[k, j, i], grid[k + dk, j + dj, i + di]
        index[axis] += 0.5 * (lo - hi) / (lo - 2 * mid + hi)
    return density.voxel_to_xyz(index)


def centre_of_mass(density: DensityMap) -> np.ndarray:
    """Density-weighted mean position (Å)."""
    k, j, i = np.indices(density.grid.shape)
    weights = density.grid / density.grid.sum()
    return density.voxel_to_xyz([(weights * i).sum(), (weights * j).sum(), (weights * k).sum()])


def write_with_axis_order(path, density: DensityMap, order_crs, nstart_xyz=(0, 0, 0),
                          origin_field=(0.0, 0.0, 0.0)):
    """Write ``density`` with MAPC/MAPR/MAPS = ``order_crs`` (x=1, y=2, z=3), NSTART given per
    x/y/z axis, and ORIGIN field values, the way other programs may."""
    mapc, mapr, maps = order_crs
    zyx_dim = {1: 2, 2: 1, 3: 0}
    data = density.grid.transpose([zyx_dim[maps], zyx_dim[mapr], zyx_dim[mapc]])
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(data))
        header = mrc.header
        header.mapc, header.mapr, header.maps = mapc, mapr, maps
        nx, ny, nz = density.shape_xyz
        header.mx, header.my, header.mz = nx, ny, nz
        header.cella.x, header.cella.y, header.cella.z = density.voxel_size * [nx, ny, nz]
        start_crs = [nstart_xyz[axis - 1] for axis in order_crs]
        header.nxstart, header.nystart, header.nzstart = start_crs
        header.origin.x, header.origin.y, header.origin.z = origin_field


AXIS_ORDERS = list(itertools.permutations((1, 2, 3)))


@pytest.mark.parametrize("order", AXIS_ORDERS, ids=lambda o: "".join(map(str, o)))
@pytest.mark.parametrize("placement", ["nstart", "origin"])
def test_axis_order_and_placement(tmp_path, order, placement):
    voxel = np.array([0.9, 1.1, 1.3])  # anisotropic
    shape = np.array([30, 36, 26])  # non-cubic
    if placement == "nstart":
        nstart = np.array([7, -5, 12])
        origin = nstart * voxel
        field = (0.0, 0.0, 0.0)
    else:
        nstart = np.zeros(3, int)
        origin = np.array([0.3, -19.6, 11.05])
        field = tuple(origin)
    truth = blob_map(voxel, shape, origin)
    path = tmp_path / "map.mrc"
    write_with_axis_order(path, truth, order, tuple(int(n) for n in nstart), field)
    density = read_map(path)
    np.testing.assert_allclose(density.voxel_size, voxel, rtol=1e-5)
    np.testing.assert_array_equal(density.shape_xyz, shape)
    assert np.linalg.norm(peak_position(density) - ATOM) < PEAK_TOLERANCE
    coarse = resample(density, 1.5)
    np.testing.assert_allclose(coarse.voxel_size, 1.5)
    assert np.linalg.norm(peak_position(coarse) - ATOM) < PEAK_TOLERANCE


def test_lattice_resampling_samples_a_crop_where_it_samples_the_whole_map():
    """With ``lattice`` the new grid lies on multiples of the new voxel size, so a map and a
    crop of it (origins a fraction of a new voxel apart) share their samples; from the origin
    they would not."""
    rng = np.random.default_rng(0)
    density = DensityMap(rng.standard_normal((40, 36, 32)).astype(np.float32), 1.1,
                         np.array([0.37, -3.1, 5.02]))
    crop = crop_box(density, density.origin + 4.0, density.origin + 30.0)
    whole, part = resample(density, 1.5, lattice=True), resample(crop, 1.5, lattice=True)
    assert np.allclose(np.round(whole.origin / 1.5) * 1.5, whole.origin)
    assert np.all(whole.origin >= density.origin) and np.all(whole.origin - density.origin < 1.5)
    shift = np.round((part.origin - whole.origin) / 1.5).astype(int)
    inner = whole.grid[shift[2]:shift[2] + part.grid.shape[0], shift[1]:shift[1] + part.grid.shape[1],
                       shift[0]:shift[0] + part.grid.shape[2]]
    # (the anti-aliasing blur differs within a voxel or two of the crop's faces)
    np.testing.assert_allclose(inner[2:-2, 2:-2, 2:-2], part.grid[2:-2, 2:-2, 2:-2], atol=1e-5)
    plain = resample(crop, 1.5)
    assert not np.allclose((plain.origin - whole.origin) / 1.5,
                           np.round((plain.origin - whole.origin) / 1.5))


def test_origin_field_wins_over_nstart_as_in_pymol(tmp_path):
    """PyMOL and ChimeraX place the grid by ORIGIN when it is non-zero, ignoring NSTART."""
    origin = np.array([5.0, 6.0, 7.0])
    truth = blob_map([1, 1, 1], [30, 30, 30], origin, atom=origin + 15)
    write_with_axis_order(tmp_path / "m.mrc", truth, (1, 2, 3), (3, 3, 3), tuple(origin))
    np.testing.assert_allclose(read_map(tmp_path / "m.mrc").origin, origin)


def test_write_read_round_trip_gzip_and_bytes(tmp_path):
    truth = blob_map([0.8, 0.8, 0.8], [20, 24, 28], [1.5, 2.5, -3.5], atom=[9, 11, 7])
    for name in ("m.mrc", "m.map.gz"):
        back = read_map(write_map(truth, tmp_path / name))
        np.testing.assert_allclose(back.grid, truth.grid, atol=1e-6)
        np.testing.assert_allclose(back.origin, truth.origin, atol=1e-4)
    assert not list(tmp_path.glob(".*part"))
    from_bytes = read_map_bytes(map_to_bytes(truth))
    np.testing.assert_allclose(from_bytes.origin, truth.origin, atol=1e-4)
    from_gz_bytes = read_map_bytes(gzip.compress(map_to_bytes(truth)))
    np.testing.assert_allclose(from_gz_bytes.grid, truth.grid, atol=1e-6)


def test_voxel_index_round_trip():
    density = blob_map([0.9, 1.1, 1.3], [10, 11, 12], [3.0, -2.0, 8.5])
    xyz = np.random.default_rng(0).normal(size=(20, 3)) * 10
    np.testing.assert_allclose(density.voxel_to_xyz(density.xyz_to_voxel(xyz)), xyz)


def test_pad_crop_and_mask_keep_positions():
    density = blob_map([1, 1, 1], [24, 20, 18], [0, 0, 0], atom=[12, 9.5, 8.2])
    padded = pad_to_shape(density, [64, 64, 64])
    np.testing.assert_array_equal(padded.shape_xyz, [64, 64, 64])
    assert np.linalg.norm(peak_position(padded) - [12, 9.5, 8.2]) < PEAK_TOLERANCE
    box = crop_box(density, [6, 4, 3], [18, 15, 14])
    assert np.linalg.norm(peak_position(box) - [12, 9.5, 8.2]) < PEAK_TOLERANCE
    mask = mask_around(density, np.array([[12, 9.5, 8.2]]), 3.0)
    assert 4 / 3 * np.pi * 27 * 0.8 < mask.sum() < 4 / 3 * np.pi * 27 * 1.2
    # back from 1.5 Å: a twice-interpolated peak is flattened, so compare centres of mass
    back = resample_onto(resample(density, 1.5), density)
    assert np.linalg.norm(centre_of_mass(back) - centre_of_mass(density)) < PEAK_TOLERANCE


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "empty"),
        (b"this is not a map\n" * 10, "not an MRC"),
        (b"x" * 2000, "not"),
    ],
)
def test_bad_files_raise_input_errors(tmp_path, content, problem):
    path = tmp_path / "bad.mrc"
    path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as info:
        read_map(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("angles", [(90.0, 105.3, 90.0), (0.0, 0.0, 0.0)])
def test_a_non_orthogonal_cell_is_refused(tmp_path, angles):
    """A monoclinic X-ray map is refused, not read as if its axes were x, y, z; a header with
    no angles (all 0, as some writers leave it) counts as orthogonal."""
    path = write_map(blob_map([1, 1, 1], [20, 20, 20], [0, 0, 0], atom=[10, 10, 10]), tmp_path / "m.mrc")
    with mrcfile.open(path, "r+") as mrc:
        mrc.header.cellb = angles
    if angles[1] == 0:
        assert read_map(path).grid.shape == (20, 20, 20)
        return
    with pytest.raises(InputError, match="not orthogonal .angles 90°, 105.3°, 90°"):
        read_map(path)


def test_truncated_and_constant_maps(tmp_path):
    truth = blob_map([1, 1, 1], [20, 20, 20], [0, 0, 0], atom=[10, 10, 10])
    data = map_to_bytes(truth)
    (tmp_path / "cut.mrc").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_map(tmp_path / "cut.mrc")
    write_map(truth.with_grid(np.zeros_like(truth.grid)), tmp_path / "zeros.mrc")
    with pytest.raises(InputError, match="constant"):
        read_map(tmp_path / "zeros.mrc")
    with pytest.raises(InputError, match="no such"):
        read_map(tmp_path / "missing.mrc")


#: Bytes of memory a refused map file may cost to read, at most (the file is 2 kB; the reader
#: once allocated the 1.76 GB a text file's "header" asked for).
MAX_REFUSAL_BYTES = 1_000_000


def test_a_short_map_file_says_what_the_header_promised(tmp_path):
    """A file cut short, or a header asking for more than the file holds: how much is missing."""
    truth = blob_map([1, 1, 1], [20, 20, 20], [0, 0, 0], atom=[10, 10, 10])
    data = map_to_bytes(truth)
    (tmp_path / "cut.mrc").write_bytes(data[:-1000])  # float32: 250 voxels fewer
    with pytest.raises(InputError, match=r"cut\.mrc: truncated: the header says 8000 voxels "
                                         r"\(20x20x20\), the file holds 7750$"):
        read_map(tmp_path / "cut.mrc")
    header = bytearray(data)
    header[8:12] = np.array([40], "<i4").tobytes()  # NZ 40: twice the data there is
    with pytest.raises(InputError, match="truncated: the header says 16000 voxels .20x20x40., "
                                         "the file holds 8000$"):
        read_map_bytes(bytes(header), "long.mrc")


@pytest.mark.parametrize("kind", ["text", "huge header"])
def test_a_small_file_is_refused_before_reading_what_its_header_claims(kind):
    import tracemalloc

    if kind == "text":
        data = b"HEADER    this is a PDB file, not a map\n" * 45
        problem = "no 'MAP ' tag"
    else:  # an MRC header asking for 2000^3 float32 voxels (32 GB)
        data = bytearray(map_to_bytes(blob_map([1, 1, 1], [8, 8, 8], [0, 0, 0], atom=[4, 4, 4])))
        data[0:12] = np.array([2000, 2000, 2000], "<i4").tobytes()
        data = bytes(data)
        problem = "truncated: the header says 8000000000 voxels"
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=problem):
            read_map_bytes(data, "small.mrc")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MAX_REFUSAL_BYTES


def test_a_mask_may_be_constant_but_must_overlap_the_map(tmp_path):
    density = blob_map([1, 1, 1], [20, 20, 20], [0, 0, 0], atom=[10, 10, 10])
    ones = write_map(density.with_grid(np.ones_like(density.grid)), tmp_path / "ones.mrc")
    np.testing.assert_array_equal(read_mask(ones, density).grid, 1.0)
    with pytest.raises(InputError, match="constant"):  # as a map, it has no density
        read_map(ones)
    far = write_map(DensityMap(np.ones((5, 5, 5), np.float32), 2.0, [100, 0, 0]), tmp_path / "far.mrc")
    with pytest.raises(InputError, match=r"far\.mrc: the mask does not overlap the map: its positive "
                                         r"voxels lie in x 100\.\.108, y 0\.\.8, z 0\.\.8 Å, the map "
                                         r"covers x 0\.\.19, y 0\.\.19, z 0\.\.19 Å"):
        read_mask(far, density)
    edge = np.zeros((5, 5, 5), np.float32)
    edge[0, 0, 0] = 1  # the one positive voxel, at (19.4, 0, 0) Å: nearest to the map's last x
    edge_path = write_map(DensityMap(edge, 1.0, [19.4, 0, 0]), tmp_path / "edge.mrc")
    assert read_mask(edge_path, density).grid.sum() == 1
    zeros = write_map(density.with_grid(np.zeros_like(density.grid)), tmp_path / "zeros.mrc")
    with pytest.raises(InputError, match="the mask has no positive voxel"):
        read_mask(zeros, density)


def z_scored(density: DensityMap) -> DensityMap:
    """The map with mean 0 and standard deviation 1 over its whole box."""
    return density.with_grid((density.grid - density.grid.mean()) / density.grid.std())


def test_dev_maps_have_density_at_reference_calphas(shared_data):
    from cryobuild.data import dev_cases
    from cryobuild.models import read_model

    cases = [c for c in dev_cases(shared_data) if c.model_path is not None]
    assert cases
    for case in cases:
        density = z_scored(read_map(case.map_path))
        ca = read_model(case.model_path).ca
        at_ca = density.interpolate(ca)
        assert at_ca.mean() > 1.0, f"{case.name}: mean z-score at Cα {at_ca.mean():.2f}"
        coarse = z_scored(resample(density, 1.5))
        assert coarse.interpolate(ca).mean() > 1.0, case.name


def test_thresholded_maps_are_recognised():
    """A map cut at a contour level gives that level; the uncut map, a zoned map that keeps its
    negative values and a soft-edged mask's falloff do not."""
    rng = np.random.default_rng(3)
    density = blob_map([1.0] * 3, [30, 30, 30], ATOM - 15)
    noisy = density.with_grid(density.grid + 0.05 * rng.standard_normal(density.grid.shape))
    cut = noisy.with_grid(np.where(noisy.grid >= 0.3, noisy.grid, 0))
    assert erased_below(cut) == pytest.approx(cut.grid[cut.grid > 0].min())
    assert erased_below(noisy) is None
    zoned = noisy.with_grid(np.where(density.grid >= 0.01, noisy.grid, 0))
    assert (zoned.grid < 0).any() and erased_below(zoned) is None
    assert erased_below(density.with_grid(np.where(density.grid >= 1e-4, density.grid, 0))) is None


def test_dev_maps_thresholded_only_the_spike_and_actin(shared_data):
    """Of the real maps, the spike NTD segment (76% zeros, nothing below 0.184) and the actin
    crop (92% zeros, nothing below 9.68 with a median of 36) were thresholded; the zoned ones
    keep negative values inside their zone."""
    from cryobuild.data import dev_cases

    flagged = {c.name for c in dev_cases(shared_data) if erased_below(read_map(c.map_path)) is not None}
    assert flagged == {c.name for c in dev_cases(shared_data) if "spike" in c.name or "actin" in c.name}
