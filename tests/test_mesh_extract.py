"""Marching-cubes extraction: closed-form spheres, orientation, coarse-to-fine, floaters, empty fields."""

import math

import numpy as np
import pytest
import torch
import trimesh

from dreamstill.backend.mesh import EmptyFieldError, extract_mesh, auto_threshold
from dreamstill.backend.mesh.export import export_mesh
from dreamstill.backend.mesh.extract import remove_small_components

R = 0.5


def cone_density(peak=100.0, radius=R, center=(0.0, 0.0, 0.0)):
    """sigma(x) = peak * max(0, 1 - |x - c| / (2 r)): linear in |x|, so {sigma = peak / 2} is the sphere |x - c| = r."""
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


def test_auto_threshold_is_ln2_over_render_step_and_finds_that_level():
    tau = auto_threshold(1.0)
    assert tau == pytest.approx(math.log(2) * 48 / 2.0)
    assert auto_threshold(2.0, render_step=0.01) == pytest.approx(math.log(2) / 0.01)
    # peak 2 tau: the level sigma = tau is the sphere of radius R
    m = extract_mesh(cone_density(peak=2 * tau), bound=1.0, resolution=48)
    assert m.threshold == pytest.approx(tau)
    assert abs(np.linalg.norm(m.vertices, axis=1).mean() - R) < 0.02 * R
    m2 = extract_mesh(cone_density(peak=2 * tau), bound=1.0, resolution=48, threshold="auto")
    assert m2.threshold == pytest.approx(tau)


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
    with pytest.raises(EmptyFieldError, match="threshold"):
        m = extract_mesh(lambda x: torch.full((len(x),), 3.0), bound=1.0, resolution=32)
        export_mesh(m, out)
    assert list(tmp_path.iterdir()) == []


def test_single_occupied_sample_is_degenerate():
    grid = np.linspace(-1.0, 1.0, 32, dtype=np.float32)
    p = torch.tensor([grid[20], grid[11], grid[16]])

    def spike(x):  # dense only at one fine-grid sample (full grid: coarse_resolution=0)
        return 100.0 * ((x - p).abs().max(dim=-1).values < 1e-4).float()

    with pytest.raises(EmptyFieldError, match="faces"):
        extract_mesh(spike, bound=1.0, resolution=32, threshold=50.0, coarse_resolution=0)


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
