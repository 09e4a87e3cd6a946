"""Volume renderer against closed forms (analytic spheres), importance sampling, shading, cameras."""

import math

import pytest
import torch

from dreamstill.backend.fields import (
    Background,
    BackgroundConfig,
    DensityField,
    DensityFieldConfig,
    Field,
    HashGridConfig,
)
from dreamstill.backend.fields.occupancy import OccupancyGrid
from dreamstill.backend.render import (
    Cameras,
    RenderSettings,
    composite_weights,
    lambertian,
    orbit_cameras,
    ray_sphere_intersect,
    render,
    sample_cameras,
    sample_light_positions,
    sample_pdf,
    shade,
    stratified_samples,
)


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


class Sphere(Field):
    """density = ``density`` inside radius r (hard edge), 0 outside; albedo a constant colour."""

    def __init__(self, r=0.5, density=1000.0, color=(0.9, 0.2, 0.1), bound=1.0):
        super().__init__()
        self.bound, self.r, self.inside_density = bound, r, density
        self.color = torch.tensor(color)

    def forward(self, x):
        inside = (x.norm(dim=-1) < self.r).to(x.dtype)
        return self.inside_density * inside, self.color.to(x).expand(x.shape[0], 3)


class Cone(Field):
    """density = k (r - |x|)_+ : smooth inside, so normals are radial (x / |x|) everywhere in the ball."""

    def __init__(self, r=0.5, k=400.0, color=(0.5, 0.5, 0.5)):
        super().__init__()
        self.bound, self.r, self.k = 1.0, r, k
        self.color = torch.tensor(color)

    def forward(self, x):
        return self.k * (self.r - x.norm(dim=-1)).clamp_min(0), self.color.to(x).expand(x.shape[0], 3)


def front_camera(distance=2.5, fov=45.0, elevation=0.0, azimuth=0.0):
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    return Cameras(t(elevation), t(azimuth), t(distance), t(fov))


# --- geometry and quadrature ----------------------------------------------------------------------------------


def test_ray_sphere_chord_closed_form():
    o = torch.tensor([[2.5, 0.0, 0.0], [2.5, 0.0, 0.0], [2.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    d = torch.nn.functional.normalize(torch.tensor([[-1.0, 0.0, 0.0], [-1.0, 0.6, 0.0], [1.0, 0.0, 0.0], [0, 0, 1.0]]))
    near, far, hit = ray_sphere_intersect(o, d, 1.0)
    assert hit.tolist() == [True, False, False, True]
    torch.testing.assert_close(near[[0, 3]], torch.tensor([1.5, 0.0]))  # inside the sphere: near clamps to 0
    torch.testing.assert_close(far[[0, 3]], torch.tensor([3.5, 1.0]))


def test_stratified_samples_midpoints_and_jitter_stay_in_their_bins():
    near, far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.5])
    mid = stratified_samples(near, far, 4)
    torch.testing.assert_close(mid[0], torch.tensor([1.25, 1.75, 2.25, 2.75]))
    jit = stratified_samples(near, far, 4, rng(1))
    width = ((far - near) / 4)[:, None]
    lo = near[:, None] + torch.arange(4) * width
    assert ((jit >= lo) & (jit <= lo + width)).all()
    assert torch.equal(jit, stratified_samples(near, far, 4, rng(1)))


def test_composite_weights_of_constant_density():
    density = torch.full((1, 40), 0.7)
    delta = torch.full((1, 40), 0.05)
    weights = composite_weights(density, delta)
    torch.testing.assert_close(weights.sum(), torch.tensor(1 - math.exp(-0.7 * 2.0)))
    # weight_i = transmittance_i opacity_i with transmittance_i = exp(-0.7 * 0.05 i)
    torch.testing.assert_close(weights[0, 3], torch.tensor(math.exp(-0.7 * 0.15) * (1 - math.exp(-0.035))))


def test_sample_pdf_follows_the_weights():
    edges = torch.linspace(0, 1, 11)[None]  # 10 bins
    w = torch.zeros(1, 10)
    w[0, 6] = 1.0
    s = sample_pdf(edges, w, 64)
    assert ((s >= 0.6) & (s <= 0.7)).float().mean() > 0.95
    uniform = sample_pdf(edges, torch.ones(1, 10), 10)
    torch.testing.assert_close(uniform, torch.linspace(0.05, 0.95, 10)[None], atol=1e-5, rtol=0)
    jittered = sample_pdf(edges, w, 64, rng(2))
    assert ((jittered >= 0.6) & (jittered <= 0.7)).float().mean() > 0.95


# --- analytic spheres -----------------------------------------------------------------------------------------


def test_opaque_sphere_opacity_depth_and_colour():
    field = Sphere(r=0.5)
    out = render(field, front_camera(2.5), 33, 33, background=(0.0, 1.0, 0.0), num_samples=48)
    c = out.opacity[0, 16, 16, 0]
    assert c > 0.999
    assert out.opacity[0, 0, 0, 0] < 1e-6 and out.opacity[0, 32, 32, 0] < 1e-6  # corner rays miss the sphere
    # the centre ray enters at d - r = 2.0; its chord through the bound sphere is [1.5, 3.5] -> spacing 2/48
    spacing = 2.0 / 48
    assert abs(out.depth[0, 16, 16, 0] - 2.0) <= spacing
    torch.testing.assert_close(out.rgb[0, 16, 16], field.color, atol=1e-3, rtol=0)
    torch.testing.assert_close(out.rgb[0, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    # silhouette: pixels whose ray passes within r of the centre are opaque
    n_opaque = (out.opacity[0, ..., 0] > 0.5).sum().item()
    focal = 0.5 * 33 / math.tan(math.radians(22.5))
    half_angle = math.asin(0.5 / 2.5)
    expected = math.pi * (focal * math.tan(half_angle)) ** 2
    assert abs(n_opaque - expected) < 0.1 * expected


def test_translucent_ball_opacity_is_beer_lambert():
    # the centre ray crosses a ball of radius 0.5 of density 1 over length 1: opacity = 1 - e^-1
    out = render(Sphere(r=0.5, density=1.0), front_camera(2.5), 9, 9, num_samples=96)
    assert abs(out.opacity[0, 4, 4, 0] - (1 - math.exp(-1.0))) < 0.02
    # and the expected distance is the mean of an exponential truncated to [2, 3]: 2 + (1 - 2/e) / (1 - 1/e)
    want = 2.0 + (1 - 2 / math.e) / (1 - 1 / math.e)
    assert abs(out.depth[0, 4, 4, 0] - want) < 0.03


def test_importance_sampling_concentrates_samples_at_the_surface():
    field = Sphere(r=0.5)
    cam = front_camera(2.5)
    coarse = render(field, cam, 5, 5, num_samples=24, occupancy=False)
    fine = render(field, cam, 5, 5, num_samples=24, num_importance=24, occupancy=False)
    assert fine.ray_dist.shape[-1] == 48 and fine.weights.shape[-1] == 48
    s_coarse, s_fine = coarse.ray_dist[0, 2, 2], fine.ray_dist[0, 2, 2]
    assert (s_fine[1:] >= s_fine[:-1]).all()  # merged and sorted
    near_surface = lambda s: ((s > 1.9) & (s < 2.1)).sum().item()  # noqa: E731
    assert near_surface(s_coarse) <= 4
    assert near_surface(s_fine) >= 20
    # the finer samples sharpen the depth estimate
    assert abs(fine.depth[0, 2, 2, 0] - 2.0) < abs(coarse.depth[0, 2, 2, 0] - 2.0) + 1e-6
    assert abs(fine.depth[0, 2, 2, 0] - 2.0) < 0.02


def test_renders_are_deterministic_without_an_rng_and_seeded_with_one():
    field = Sphere(r=0.5, density=3.0)
    cams = sample_cameras(2, rng(3))
    a = render(field, cams, 8, 8)
    b = render(field, cams, 8, 8)
    assert torch.equal(a.rgb, b.rgb)
    c = render(field, cams, 8, 8, rng=rng(4))
    d = render(field, cams, 8, 8, rng=rng(4))
    e = render(field, cams, 8, 8, rng=rng(5))
    assert torch.equal(c.rgb, d.rgb) and not torch.equal(c.rgb, e.rgb)


# --- shading --------------------------------------------------------------------------------------------------


def test_lambertian_formula():
    albedo = torch.tensor([[0.8, 0.4, 0.2], [0.8, 0.4, 0.2], [0.8, 0.4, 0.2]])
    n = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    l = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, -1.0]]), dim=-1)
    got = lambertian(albedo, n, l, ambient=0.1)
    cos = torch.tensor([1.0, math.cos(math.pi / 4), 0.0])[:, None]
    torch.testing.assert_close(got, albedo * (0.1 + 0.9 * cos))
    torch.testing.assert_close(shade("textureless", albedo, n, l, 0.25), 0.25 + 0.75 * cos.expand(3, 3))
    torch.testing.assert_close(shade("albedo", albedo), albedo)
    with pytest.raises(ValueError, match="textureless"):
        shade("phong", albedo, n, l)
    with pytest.raises(ValueError, match="normals"):
        shade("lambertian", albedo)


def test_lit_render_of_a_smooth_ball():
    field = Cone(r=0.5, color=(0.8, 0.6, 0.4))
    cam = front_camera(2.5)
    toward_camera = render(field, cam, 9, 9, shading="lambertian", light_dir=torch.tensor([1.0, 0.0, 0.0]))
    away = render(field, cam, 9, 9, shading="lambertian", light_dir=torch.tensor([-1.0, 0.0, 0.0]))
    headlight = render(field, cam, 9, 9, shading="textureless", background=(0.0, 0.0, 0.0))
    c = (0, 4, 4)
    assert toward_camera.opacity[c] > 0.99
    # the centre ray meets the ball where n = +x: full diffuse light, or ambient only from behind
    torch.testing.assert_close(toward_camera.rgb[c], field.color, atol=0.03, rtol=0)
    torch.testing.assert_close(away.rgb[c], 0.1 * field.color, atol=0.01, rtol=0)
    assert headlight.rgb[c].min() > 0.95  # white, lit head-on
    # composited world normal at the centre points at the camera
    n = toward_camera.normal[c] / toward_camera.opacity[c]
    torch.testing.assert_close(n, torch.tensor([1.0, 0.0, 0.0]), atol=0.03, rtol=0)
    # a point light far along +x behaves like the directional light
    point = render(field, cam, 9, 9, shading="lambertian", light_positions=torch.tensor([[100.0, 0.0, 0.0]]))
    torch.testing.assert_close(point.rgb[c], toward_camera.rgb[c], atol=0.01, rtol=0)


def test_sample_light_positions_sit_around_the_cameras():
    cams = sample_cameras(64, rng(6))
    pos = sample_light_positions(cams, rng(7))
    dist = pos.norm(dim=-1)
    assert ((dist >= 1.8 - 1e-5) & (dist <= 3.3 + 1e-5)).all()
    cos = torch.nn.functional.cosine_similarity(pos, cams.position, dim=-1)
    assert cos.mean() > 0.5  # mostly on the camera's side
    assert torch.equal(pos, sample_light_positions(cams, rng(7)))


# --- fields, backgrounds, skipping ----------------------------------------------------------------------------


def test_background_module_fills_missed_rays():
    bg = Background(BackgroundConfig(kind="learned", color=(0.2, 0.3, 0.4)), rng=rng(8))
    out = render(Sphere(r=0.3), front_camera(2.5), 16, 16, background=bg)
    assert out.opacity[0, 0, 0, 0] == 0
    torch.testing.assert_close(out.rgb[0, 0, 0], torch.tensor([0.2, 0.3, 0.4]), atol=0.02, rtol=0)


def test_density_field_render_has_gradients_and_shapes():
    field = DensityField(DensityFieldConfig(grid=HashGridConfig(backend="torch")), rng=rng(9))
    cams = sample_cameras(2, rng(10))
    out = render(field, cams, 12, 10, Background(), shading="lambertian", rng=rng(11), need_normal=True)
    assert out.rgb.shape == (2, 12, 10, 3) and out.opacity.shape == (2, 12, 10, 1)
    assert out.depth.shape == (2, 12, 10, 1) and out.normal.shape == (2, 12, 10, 3)
    assert out.weights.shape == (2, 12, 10, 48)
    assert ((out.rgb >= 0) & (out.rgb <= 1)).all()
    out.rgb.mean().backward()
    assert field.encoding.table.grad.abs().sum() > 0
    assert all(p.grad is not None for p in field.mlp.parameters())
    assert out.normal is not None and render(field, cams, 4, 4).normal is None


def test_analytic_and_finite_difference_normals_agree_on_the_blob():
    field = DensityField(DensityFieldConfig(grid=HashGridConfig(backend="torch")), rng=rng(14))
    cams = orbit_cameras(2, elevation=20.0)
    a = render(field, cams, 10, 10, shading="lambertian", normal_method="analytic")
    b = render(field, cams, 10, 10, shading="lambertian", normal_method="finite_difference", normal_weight_threshold=0)
    torch.testing.assert_close(a.normal, b.normal, atol=2e-3, rtol=0)
    torch.testing.assert_close(a.rgb, b.rgb, atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match="analytic"):
        render(Sphere(), cams, 4, 4, shading="lambertian", normal_method="analytic")


def test_occupancy_skipping_keeps_the_image_and_evaluates_less():
    field = Sphere(r=0.4, density=5.0)
    cams = orbit_cameras(2, elevation=15.0)
    full = render(field, cams, 16, 16, occupancy=False)
    grid = OccupancyGrid(bound=1.0, resolution=16, threshold=0.1)
    grid.update(field.density)
    skipped = render(field, cams, 16, 16, occupancy=grid)
    torch.testing.assert_close(skipped.rgb, full.rgb, atol=1e-5, rtol=0)
    assert skipped.n_evaluated < 0.6 * full.n_evaluated


def test_density_field_refreshes_its_grid_on_training_renders_only():
    field = DensityField(
        DensityFieldConfig(grid=HashGridConfig(backend="torch"), occupancy_update_every=2), rng=rng(12)
    )
    cams = sample_cameras(1, rng(13))
    with torch.no_grad():
        render(field, cams, 4, 4)
    assert int(field.occupancy.updates) == 0
    render(field, cams, 4, 4)
    assert int(field.occupancy.updates) == 1 and field.occupancy.occupied_fraction < 0.5  # the blob, not the box
    render(field, cams, 4, 4)
    render(field, cams, 4, 4)
    assert int(field.occupancy.updates) == 2


def test_render_argument_errors():
    cam = front_camera()
    with pytest.raises(ValueError, match="lambertian"):
        render(Sphere(), cam, 4, 4, shading="phong")
    with pytest.raises(ValueError, match="num_samples"):
        render(Sphere(), cam, 4, 4, num_samples=0)
    with pytest.raises(ValueError, match="light_dir"):
        render(Sphere(), cam, 4, 4, shading="lambertian", light_dir=torch.ones(2, 3))
    with pytest.raises(ValueError, match="background"):
        render(Sphere(), cam, 4, 4, background=(1.0, 0.0))
    with pytest.raises(TypeError, match="num_samples"):  # a misspelt setting names the real ones
        render(Sphere(), cam, 4, 4, num_sample=8)


def test_settings_object_and_keyword_overrides_render_the_same():
    field, cams = Cone(), orbit_cameras(2, elevation=20.0)
    settings = RenderSettings(shading="lambertian", num_samples=24, num_importance=8)
    by_object = render(field, cams, 6, 6, settings=settings, rng=rng(3))
    by_keywords = render(field, cams, 6, 6, shading="lambertian", num_samples=24, num_importance=8, rng=rng(3))
    assert torch.equal(by_object.rgb, by_keywords.rgb) and torch.equal(by_object.ray_dist, by_keywords.ray_dist)
    overridden = render(field, cams, 6, 6, settings=settings, shading="albedo", rng=rng(3))
    assert overridden.normal is None and not torch.equal(overridden.rgb, by_object.rgb)
    assert settings.shading == "lambertian"  # overrides copy, never mutate, the caller's settings


# --- cameras --------------------------------------------------------------------------------------------------


def test_camera_frames_are_orthonormal_even_straight_above():
    cams = Cameras(
        torch.tensor([0.0, 30.0, 90.0, -90.0]),
        torch.tensor([0.0, 45.0, 10.0, -120.0]),
        torch.full((4,), 2.5),
        torch.full((4,), 45.0),
    )
    m = cams.c2w[:, :3, :3]
    assert torch.isfinite(m).all()
    torch.testing.assert_close(m.transpose(1, 2) @ m, torch.eye(3).expand(4, 3, 3), atol=1e-6, rtol=0)
    assert torch.linalg.det(m).sub(1).abs().max() < 1e-5  # right-handed
    o, d = cams.rays(3, 3)
    # the centre pixel looks at the origin
    torch.testing.assert_close(d[:, 1, 1], torch.nn.functional.normalize(-cams.position, dim=-1), atol=1e-6, rtol=0)
    # front camera: +Z is up in the image (row 0 is the top)
    front = cams.rays(3, 3)[1][0]
    assert front[0, 1, 2] > front[2, 1, 2]


def test_float64_cameras_give_float64_rays():
    cams = orbit_cameras(2)
    cams = Cameras(*(v.double() for v in (cams.elevation, cams.azimuth, cams.distance, cams.fov)))
    o, d = cams.rays(4, 4)
    assert d.dtype == torch.float64 and o.dtype == torch.float64


def test_a_density_field_fits_target_renders():
    """End to end: photometric loss through the renderer (occupancy skipping on, lit and unlit) trains the field."""
    target_field = Sphere(r=0.35, density=50.0, color=(0.9, 0.1, 0.1))
    cams = orbit_cameras(3, elevation=15.0)
    with torch.no_grad():
        target = render(target_field, cams, 12, 12, num_samples=32)
    field = DensityField(
        DensityFieldConfig(grid=HashGridConfig(backend="torch"), occupancy_update_every=5), rng=rng(15)
    )
    opt = torch.optim.Adam(field.parameters(), lr=2e-2, betas=(0.9, 0.99), eps=1e-15)
    losses = []
    for step in range(40):
        out = render(
            field,
            cams,
            12,
            12,
            num_samples=32,
            rng=rng(100 + step),
            shading="lambertian" if step % 4 == 3 else "albedo",
        )
        loss = (out.rgb - target.rgb).square().mean() + (out.opacity - target.opacity).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < 0.3 * sum(losses[:4]) / 4
    assert int(field.occupancy.updates) == 8
