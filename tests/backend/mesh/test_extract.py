"""Marching-cubes extraction: closed-form spheres, orientation, coarse-to-fine, floaters, empty fields."""

import math

import numpy as np
import pytest
import torch
import trimesh
from scipy.optimize import brentq

from dreamstill.backend.mesh import EmptyFieldError, extract_mesh, silhouette_threshold
from dreamstill.backend.mesh.export import export_mesh
from dreamstill.backend.mesh.extract import remove_small_components

R = 0.5


def cone_density(peak=100.0, radius=R, center=(0.0, 0.0, 0.0)):
    """density(x) = peak * max(0, 1 - |x - c| / (2 r)): linear in |x|, so {density = peak / 2} is the sphere |x - c| = r."""
    c = torch.tensor(center)

    def density(x):
        return peak * torch.clamp(1.0 - (x - c).norm(dim=-1) / (2 * radius), min=0.0)

    return density


def as_trimesh(m):
    return trimesh.Trimesh(m.vertices, m.faces, process=False)


def test_sphere_is_watertight_outward_and_has_the_right_radius():
    m = extract_mesh(cone_density(), bound=1.0, resolution=64, threshold=50.0)
    assert m.vertices.dtype == np.float32 and m.faces.dtype == np.int32
    tm = as_trimesh(m)
    assert tm.is_watertight
    radius = np.linalg.norm(m.vertices, axis=1)
    assert abs(radius.mean() - R) < 0.02 * R
    assert radius.std() < 0.01
    # outward: positive signed volume close to 4/3 pi r^3, and every face normal points away from the centre
    assert tm.volume == pytest.approx(4 / 3 * math.pi * R**3, rel=0.03)
    centroids = tm.triangles_center
    assert (np.einsum("ij,ij->i", tm.face_normals, centroids) > 0).all()
    assert m.threshold == 50.0 and m.removed_components == 0


def cone_chord_depth(rho, peak, a):
    """Optical depth of the chord at distance rho from the centre of density = peak * (1 - |x| / a):
    int_{-L}^{L} peak (1 - sqrt(rho^2 + t^2) / a) dt = peak (L - rho^2 / a * ln((L + a) / rho)), L = sqrt(a^2 - rho^2).
    """
    length = math.sqrt(a * a - rho * rho)
    return peak * (length - rho * rho / a * math.log((length + a) / rho))


@pytest.mark.parametrize("coarse", [32, 0])
def test_auto_threshold_matches_the_half_opaque_silhouette(coarse):
    # a soft, young field (peak density 8, like the initial blob): the mesh is where chords become half opaque
    peak, a = 8.0, 0.6
    rho = brentq(lambda r: cone_chord_depth(r, peak, a) - math.log(2), 1e-3, a - 1e-6)
    m = extract_mesh(cone_density(peak=peak, radius=a / 2), bound=1.0, resolution=48, coarse_resolution=coarse)
    assert m.threshold == pytest.approx(peak * (1 - rho / a), rel=0.15)
    assert abs(np.linalg.norm(m.vertices, axis=1).mean() - rho) < 0.03 * rho
    assert as_trimesh(m).is_watertight


def test_auto_threshold_finds_a_sharp_wall():
    def ball(x):  # density jumps from 0 to 500 within ~0.01 of |x| = R
        return 500.0 * torch.sigmoid((R - x.norm(dim=-1)) / 0.002)

    m = extract_mesh(ball, bound=1.0, resolution=48, threshold="auto")
    assert abs(np.linalg.norm(m.vertices, axis=1).mean() - R) < 0.02 * R
    assert 0 < m.threshold < 500


def test_silhouette_threshold_closed_form():
    grid = np.zeros((4, 4, 4), np.float32)
    grid[1:3, 1:3, 1:3] = 10.0  # a 2x2x2 block: 4 rays per axis with depth 20 h
    grid[0, 0, 0] = 1.0  # a faint speck: its rays have depth h (not half opaque)
    level, n, depth = silhouette_threshold(grid, [0.1, 0.1, 0.1])
    assert n == 12 and depth == pytest.approx(2.0)
    assert level == pytest.approx(0.5 * (10.0 + 1.0))  # between the 12th and 13th largest ray maxima
    assert silhouette_threshold(grid, [0.01] * 3)[0] is None  # depth 0.2 < ln 2: nothing is half opaque


def test_coarse_to_fine_box_matches_full_grid_and_is_tight():
    full = extract_mesh(cone_density(), bound=1.0, resolution=64, threshold=50.0, coarse_resolution=0)
    c2f = extract_mesh(cone_density(), bound=1.0, resolution=64, threshold=50.0, coarse_resolution=32)
    r_full = np.linalg.norm(full.vertices, axis=1).mean()
    r_c2f = np.linalg.norm(c2f.vertices, axis=1).mean()
    assert abs(r_full - r_c2f) < 0.01 * R
    np.testing.assert_allclose(full.box_min, -1.0)
    # the fine box hugs the sphere (plus about one coarse cell), so its cells are finer and it has more faces
    assert (c2f.box_max < 0.65).all() and (c2f.box_min > -0.65).all()
    assert (c2f.box_max > R).all() and (c2f.box_min < -R).all()
    assert c2f.num_faces > full.num_faces
    assert as_trimesh(c2f).is_watertight


def test_small_floating_blob_is_removed_and_kept_when_asked():
    main, blob = cone_density(), cone_density(radius=0.08, center=(0.75, 0.75, 0.75))

    def density(x):
        return torch.maximum(main(x), blob(x))

    m = extract_mesh(density, bound=1.0, resolution=64, threshold=50.0)
    assert m.removed_components == 1
    assert np.linalg.norm(m.vertices, axis=1).max() < R + 0.03
    assert as_trimesh(m).is_watertight
    kept = extract_mesh(density, bound=1.0, resolution=64, threshold=50.0, min_component_fraction=0.0)
    assert kept.removed_components == 0
    assert len(as_trimesh(kept).split(only_watertight=False)) == 2


def test_remove_small_components_reindexes_faces():
    a = trimesh.creation.icosphere(1, radius=1.0)
    b = trimesh.creation.icosphere(1, radius=0.1)
    b.vertices += 5.0
    v = np.concatenate([b.vertices, a.vertices]).astype(np.float32)  # small part first: indices must shift
    f = np.concatenate([b.faces, a.faces + len(b.vertices)]).astype(np.int32)
    v2, f2, kept, removed = remove_small_components(v, f, 0.05)
    assert removed == 1 and len(v2) == len(a.vertices) and len(f2) == len(a.faces)
    np.testing.assert_array_equal(v2[f2], a.vertices[a.faces].astype(np.float32))
    np.testing.assert_array_equal(kept, np.arange(len(b.vertices), len(v)))


def test_empty_field_raises_and_nothing_is_written(tmp_path):
    out = tmp_path / "asset.glb"
    with pytest.raises(EmptyFieldError, match="half opaque"):  # faint fog: optical depth 0.2 across the box
        m = extract_mesh(lambda x: torch.full((len(x),), 0.1), bound=1.0, resolution=32)
        export_mesh(m, out)
    with pytest.raises(EmptyFieldError, match="lower threshold"):
        extract_mesh(lambda x: torch.full((len(x),), 0.1), bound=1.0, resolution=32, threshold=1.0)
    assert list(tmp_path.iterdir()) == []


def test_single_occupied_sample_is_degenerate():
    grid = np.linspace(-1.0, 1.0, 32, dtype=np.float32)
    p = torch.tensor([grid[20], grid[11], grid[16]])

    def spike(x):  # dense only at one fine-grid sample (full grid: coarse_resolution=0)
        return 100.0 * ((x - p).abs().max(dim=-1).values < 1e-4).float()

    with pytest.raises(EmptyFieldError, match="faces"):
        extract_mesh(spike, bound=1.0, resolution=32, threshold=50.0, coarse_resolution=0)


def test_no_surface_from_skimage_is_an_empty_field_error(monkeypatch):
    # seen in eval of a 3DConv-Net generator: skimage raised RuntimeError("No surface found at the given iso value.")
    import skimage.measure

    def no_surface(*args, **kwargs):
        raise RuntimeError("No surface found at the given iso value.")

    monkeypatch.setattr(skimage.measure, "marching_cubes", no_surface)
    with pytest.raises(EmptyFieldError, match="no faces"):
        extract_mesh(lambda x: torch.full((len(x),), 100.0), bound=0.5, resolution=16, threshold=50.0)


def test_shape_touching_the_box_is_closed_and_stays_inside():
    m = extract_mesh(lambda x: torch.full((len(x),), 100.0), bound=0.5, resolution=16, threshold=50.0)
    tm = as_trimesh(m)
    assert tm.is_watertight and tm.volume > 0
    assert np.abs(m.vertices).max() <= 0.5 + 1e-6


def test_vertex_colors_from_albedo_and_nan_density_is_empty():
    def albedo(x):
        red, blue = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
        return torch.where((x[:, 0] > 0)[:, None], red, blue)

    base = cone_density()

    def density(x):  # NaN outside the sphere's neighbourhood must count as empty, not poison the surface
        s = base(x)
        return torch.where(s > 0, s, torch.full_like(s, float("nan")))

    m = extract_mesh(density, bound=1.0, resolution=32, threshold=50.0, albedo_fn=albedo)
    assert m.vertex_colors.dtype == np.uint8 and m.vertex_colors.shape == (m.num_vertices, 3)
    x = m.vertices[:, 0]
    np.testing.assert_array_equal(m.vertex_colors[x > 0.01], [[255, 0, 0]] * int((x > 0.01).sum()))
    np.testing.assert_array_equal(m.vertex_colors[x < -0.01], [[0, 0, 255]] * int((x < -0.01).sum()))
    assert abs(np.linalg.norm(m.vertices, axis=1).mean() - R) < 0.02 * R


def test_bad_input_errors_say_what_to_change():
    d = cone_density()
    with pytest.raises(ValueError, match="bound"):
        extract_mesh(d, bound=0.0)
    with pytest.raises(ValueError, match="threshold"):
        extract_mesh(d, bound=1.0, threshold="median")
    with pytest.raises(ValueError, match="threshold"):
        extract_mesh(d, bound=1.0, threshold=-1.0)
    with pytest.raises(ValueError, match=r"\(N,\)"):
        extract_mesh(lambda x: torch.ones(len(x), 2), bound=1.0, resolution=16)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        extract_mesh(d, bound=1.0, resolution=16, threshold=50.0, albedo_fn=lambda x: torch.ones(len(x)))


def test_module_density_runs_on_its_own_device_without_grad():
    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(100.0))

        def density(self, x):
            assert x.device == self.scale.device
            return self.scale * torch.clamp(1.0 - x.norm(dim=-1) / (2 * R), min=0.0)

    field = Field()
    m = extract_mesh(field.density, bound=1.0, resolution=24, threshold=50.0)
    assert m.num_faces > 100 and field.scale.grad is None
