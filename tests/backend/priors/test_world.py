"""Toy world: grammar, signed distances, splits and the sphere tracer."""

import math

import pytest
import torch

from dreamstill.backend.priors.builtin import world as W
from dreamstill.backend.render.cameras import Cameras, sample_cameras


def test_vocabulary_and_prompt_count():
    assert len(W.SHAPES) >= 8 and len(W.COLOURS) >= 8
    prompts = W.all_prompts()
    assert len(prompts) >= 2000
    assert len(set(prompts)) == len(prompts)
    assert "a red cube on top of a blue sphere" in prompts
    assert "a green cone next to a yellow torus" in prompts
    assert "an orange cube" in prompts and "a orange cube" not in prompts


def test_caption_round_trip_for_every_prompt():
    for scene in W.all_scenes():
        text = W.caption(scene)
        assert W.parse_prompt(text) == scene
        assert W.caption(W.parse_prompt(text)) == text


def test_parse_is_forgiving_but_rejects_unknown_words():
    assert W.parse_prompt("  A Red  Cube on  top of a blue sphere. ") == W.Scene.pair(
        "red", "cube", "on top of", "blue", "sphere"
    )
    with pytest.raises(ValueError, match="shape"):
        W.parse_prompt("a red banana")
    with pytest.raises(ValueError, match="colour"):
        W.parse_prompt("a teal cube")
    with pytest.raises(ValueError, match="not a toy-world prompt"):
        W.parse_prompt("a cube under a sphere")


S3 = 1 / math.sqrt(3)
KNOWN = [  # (shape, point, exact signed distance)
    ("sphere", (0, 0, 0), -0.5),
    ("sphere", (1, 0, 0), 0.5),
    ("cube", (1, 0, 0), 1 - W.CUBE_HALF),
    ("cube", (1, 1, 1), math.sqrt(3) * (1 - W.CUBE_HALF)),
    ("cube", (0, 0, 0), -W.CUBE_HALF),
    ("cylinder", (0, 0, 1), 1 - W.CYL_H),
    ("cylinder", (1, 0, 0), 1 - W.CYL_R),
    ("cylinder", (0, 0, 0), -W.CYL_R),
    ("cone", (0, 0, W.CONE_H), 0.0),
    ("cone", (0, 0, 1), 1 - W.CONE_H),
    ("cone", (0, 0, -1), 1 - W.CONE_H),
    ("cone", (W.CONE_R, 0, -W.CONE_H), 0.0),
    ("torus", (W.TORUS_R, 0, 0), -W.TORUS_r),
    ("torus", (0, 0, 0), W.TORUS_R - W.TORUS_r),
    ("torus", (0, 1, 0), 1 - W.TORUS_R - W.TORUS_r),
    ("capsule", (0, 0, 1), 1 - W.CAPSULE_H - W.CAPSULE_R),
    ("capsule", (1, 0, 0), 1 - W.CAPSULE_R),
    ("pyramid", (0, 0, W.PYRAMID_H), 0.0),
    ("pyramid", (0, 0, -1), 1 - W.PYRAMID_H),
    ("pyramid", (W.PYRAMID_HALF, W.PYRAMID_HALF, -W.PYRAMID_H), 0.0),
    ("octahedron", (W.OCTA_R, 0, 0), 0.0),
    ("octahedron", (0, 0, -W.OCTA_R), 0.0),
    ("octahedron", (0, 0, 0), -W.OCTA_R * S3),
]


@pytest.mark.parametrize("shape,point,expected", KNOWN)
def test_primitive_sdf_known_points(shape, point, expected):
    d = W.primitive_sdf(shape, torch.tensor([point], dtype=torch.float32))
    assert d.item() == pytest.approx(expected, abs=1e-5)


def test_cone_side_distance_closed_form():
    # a point on the outward normal of the slanted side, mid-way up: distance equals the offset along the normal
    r, h = W.CONE_R, W.CONE_H
    mid = torch.tensor([r / 2, 0.0])  # (rho, z) mid-point of the side
    normal = torch.tensor([2 * h, r]) / math.hypot(2 * h, r)
    for off in (0.05, 0.2, -0.05):
        q = mid + off * normal
        d = W.primitive_sdf("cone", torch.tensor([[0.0, float(q[0]), float(q[1])]]))
        assert d.item() == pytest.approx(off, abs=1e-5)


@pytest.mark.parametrize("shape", W.SHAPES)
def test_sdf_gradient_norm(shape):
    """Exact SDFs satisfy |grad phi| = 1 almost everywhere; the polyhedra's bound is 1-Lipschitz with |grad| = 1."""
    g = torch.Generator().manual_seed(1)
    p = (torch.rand(400, 3, generator=g) * 2 - 1) * 1.2
    p.requires_grad_(True)
    d = W.primitive_sdf(shape, p)
    (grad,) = torch.autograd.grad(d.sum(), p)
    norm = grad.norm(dim=-1)
    ok = d.abs() > 1e-3
    assert torch.allclose(norm[ok], torch.ones_like(norm[ok]), atol=1e-3)


@pytest.mark.parametrize("shape", W.SHAPES)
def test_sdf_is_a_distance_bound(shape):
    """|phi(x) - phi(y)| <= |x - y| (1-Lipschitz) on random pairs: sphere tracing with it is safe."""
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(500, 3, generator=g) * 2 - 1) * 1.2
    y = x + 0.1 * torch.randn(500, 3, generator=g)
    dx, dy = W.primitive_sdf(shape, x), W.primitive_sdf(shape, y)
    assert ((dx - dy).abs() <= (x - y).norm(dim=-1) + 1e-5).all()


def test_composition_on_top_of():
    scene = W.parse_prompt("a red cube on top of a blue sphere")
    top, bottom = scene.placements()
    s = W.COMPOSITION_SCALE["on top of"]
    assert top.scale == bottom.scale == s
    # the cube's bottom face touches the sphere's top
    assert top.centre[2] - s * W.CUBE_HALF == pytest.approx(bottom.centre[2] + s * W.SPHERE_R)
    # the bounding box is centred at the origin
    assert top.centre[2] + s * W.CUBE_HALF == pytest.approx(-(bottom.centre[2] - s * W.SPHERE_R))
    pts = torch.tensor([top.centre, bottom.centre, (0, 0, top.centre[2] + s * W.CUBE_HALF), (0, 0, 5.0)])
    d = W.scene_sdf(scene, pts)
    assert d[0].item() == pytest.approx(-s * W.CUBE_HALF, abs=1e-5)
    assert d[1].item() == pytest.approx(-s * W.SPHERE_R, abs=1e-5)
    assert d[2].item() == pytest.approx(0.0, abs=1e-5)
    assert d[3].item() == pytest.approx(5.0 - top.centre[2] - s * W.CUBE_HALF, abs=1e-5)
    alb = W.scene_albedo(scene, pts[:2])
    assert torch.allclose(alb[0], torch.tensor(W.COLOURS["red"]))
    assert torch.allclose(alb[1], torch.tensor(W.COLOURS["blue"]))


def test_composition_next_to_first_object_on_the_left():
    scene = W.parse_prompt("a green cone next to a yellow torus")
    a, b = scene.placements()
    assert a.centre[1] < 0 < b.centre[1] and a.centre[0] == b.centre[0] == 0
    ymin = a.centre[1] - a.scale * W.CONE_R
    ymax = b.centre[1] + b.scale * (W.TORUS_R + W.TORUS_r)
    assert ymin == pytest.approx(-ymax)
    d = W.scene_sdf(scene, torch.tensor([[0.0, ymin, a.centre[2] - a.scale * W.CONE_H], [0.0, ymax, 0.0]]))
    assert d.abs().max().item() < 1e-5


def test_scenes_fit_the_bounding_sphere():
    g = torch.Generator().manual_seed(3)
    scenes = W.sample_scenes(64, g, single_fraction=0.0)
    dirs = torch.nn.functional.normalize(torch.randn(64, 200, 3, generator=g), dim=-1)
    d = W.scenes_sdf(scenes, dirs * W.BOUND_RADIUS)
    assert (d > 0.05).all()


def test_split_prompts():
    train, held = W.split_prompts(0)
    assert set(train).isdisjoint(held)
    assert set(train) | set(held) == set(W.all_prompts())
    assert len(held) > 500
    assert W.split_prompts(0) == (train, held) and W.split_prompts(1)[1] != held
    train_scenes = [W.parse_prompt(p) for p in train]
    assert all(not s.is_composition for s in map(W.parse_prompt, W.single_prompts()) if W.caption(s) in train)
    firsts = {s.objects[0] for s in train_scenes if s.is_composition}
    seconds = {s.objects[1] for s in train_scenes if s.is_composition}
    for s in map(W.parse_prompt, held):
        assert s.is_composition and s.objects[0] in firsts and s.objects[1] in seconds


def test_sample_scenes_is_seeded():
    a = W.sample_scenes(50, torch.Generator().manual_seed(5))
    b = W.sample_scenes(50, torch.Generator().manual_seed(5))
    assert a == b
    assert any(s.is_composition for s in a) and any(not s.is_composition for s in a)


def _front(n=1, elev=0.0, az=0.0):
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return Cameras(full(elev), full(az), full(2.75), full(45.0))


def test_render_sphere_centre_pixel_is_lambertian():
    scene = W.Scene.single("red", "sphere")
    cfg = W.RenderConfig(supersample=1)
    img, mask = W.render_scenes([scene], _front(), 33, cfg, return_mask=True)
    assert img.shape == (1, 3, 33, 33) and mask.shape == (1, 1, 33, 33)
    l = torch.tensor(W.LIGHT_DIR_CAMERA)
    lam = (l / l.norm())[2]  # the normal at the image centre faces the camera
    expected = (torch.tensor(W.COLOURS["red"]) * (cfg.ambient + cfg.diffuse * lam)).clamp(0, 1)
    assert torch.allclose(img[0, :, 16, 16], expected, atol=2e-3)
    assert torch.allclose(img[0, :, 0, 0], torch.ones(3))  # white background
    # coverage matches the sphere's projected disc: radius r*f/sqrt(d^2 - r^2) pixels
    f = 0.5 * 33 / math.tan(math.radians(22.5))
    rad = W.SPHERE_R * f / math.sqrt(2.75**2 - W.SPHERE_R**2)
    assert mask.sum().item() == pytest.approx(math.pi * rad**2, rel=0.05)


def test_render_batch_is_in_range_and_view_dependent():
    cube = W.Scene.single("blue", "cube")
    cams = Cameras(
        torch.tensor([20.0, 20.0]), torch.tensor([0.0, 45.0]), torch.tensor([2.75, 2.75]), torch.tensor([45.0, 45.0])
    )
    img = W.render_scenes([cube, cube], cams, 16)
    assert img.shape == (2, 3, 16, 16) and img.min() >= 0 and img.max() <= 1
    assert (img[0] - img[1]).abs().mean() > 0.01
    g = torch.Generator().manual_seed(0)
    scenes = W.sample_scenes(6, g)
    out = W.render_scenes(scenes, sample_cameras(6, g), 16)
    assert out.shape == (6, 3, 16, 16)
    assert ((out < 0.95).float().mean(dim=(1, 2, 3)) > 0.02).all()  # every scene is visible
    with pytest.raises(ValueError, match="one camera per scene"):
        W.render_scenes(scenes[:2], sample_cameras(3, g), 16)
