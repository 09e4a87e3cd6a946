"""The surface stage inside AssetOptimizer: stages swap in at their steps, the texture stage freezes the geometry,
beta follows its schedule, a resume across the stage boundary matches an uninterrupted run, and the regularizers
in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from dreamstill.backend.engine.step import DistillViews
from dreamstill.backend.engine.surface import (
    Eikonal,
    NormalSmoothness,
    Orientation,
    objects_apart_in_prompt,
    objects_in_prompt,
)
from dreamstill.backend.fields import SDFField
from dreamstill.backend.render import RenderOutput
from dreamstill.backend.render.cameras import orbit_cameras
from dreamstill.protocol import Progress


def params(tensors) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in tensors])


def surface_spec(tiny_spec, **overrides):
    return tiny_spec(**{"surface": True, "steps": 6, "geometry_steps": 3, "texture_steps": 1, **overrides})


def test_objects_in_prompt_counts_compositions():
    assert objects_in_prompt("a red cube") == 1
    assert objects_in_prompt("a red cube next to a blue torus") == 2
    assert objects_in_prompt("a green cone on top of a yellow sphere") == 2
    assert objects_in_prompt("a photo of a hamburger") is None  # free-form: every large part is kept


def test_only_next_to_objects_stand_apart():
    assert objects_apart_in_prompt("a red cube next to a blue torus") == 2
    assert objects_apart_in_prompt("a green cone on top of a yellow sphere") == 1  # resting on each other
    assert objects_apart_in_prompt("a red cube") == 1
    assert objects_apart_in_prompt("a photo of a hamburger") == 1


def test_stages_run_in_order_on_one_count_of_steps(tiny_spec, tiny_prior, small_surface):
    from dreamstill.backend.engine import AssetOptimizer

    opt = AssetOptimizer(surface_spec(tiny_spec), prior=tiny_prior)
    events = [e for e in opt.run() if isinstance(e, Progress)]
    assert [(e.phase, e.step, e.total) for e in events] == [
        ("density", 1, 6),
        ("density", 2, 6),
        ("geometry", 3, 6),
        ("geometry", 4, 6),
        ("geometry", 5, 6),
        ("texture", 6, 6),
    ]
    assert isinstance(opt.field, SDFField) and opt.stage == "texture"
    assert not any(p.requires_grad for p in opt.field.geometry_parameters())


def test_the_texture_stage_moves_the_albedo_alone(tiny_spec, tiny_prior, small_surface):
    from dreamstill.backend.engine import AssetOptimizer

    opt = AssetOptimizer(surface_spec(tiny_spec, steps=7, texture_steps=2), prior=tiny_prior)
    list(opt.run(cancel=lambda: opt.step >= 5))  # the end of the geometry stage
    geometry, albedo = params(opt.field.geometry_parameters()), params(opt.field.albedo_parameters())
    assert len(opt.regularizers) == 3  # eikonal, normal smoothness, orientation
    list(opt.run())
    assert opt.regularizers == [] and opt.step == 7
    assert torch.equal(params(opt.field.geometry_parameters()), geometry)
    assert not torch.equal(params(opt.field.albedo_parameters()), albedo)


def test_beta_is_annealed_geometrically_over_the_geometry_stage(tiny_spec, tiny_prior, small_surface):
    from dreamstill.backend.engine import AssetOptimizer

    opt = AssetOptimizer(surface_spec(tiny_spec), prior=tiny_prior)
    opt._enter("geometry")
    b0, b1 = small_surface.beta_start, small_surface.beta_end
    for step, expected in ((0, b0), (2, math.sqrt(b0 * b1)), (4, b1)):
        opt.surface.before_step(opt, "geometry", step, 5)
        assert float(opt.field.beta) == pytest.approx(expected, rel=1e-6)
    opt.surface.before_step(opt, "texture", 0, 1)  # the texture stage keeps the last beta
    assert float(opt.field.beta) == pytest.approx(b1, rel=1e-6)


def test_the_surface_stage_caps_the_methods_timesteps(tiny_spec, tiny_prior, small_surface):
    from dataclasses import replace

    from dreamstill.backend.engine import AssetOptimizer
    from dreamstill.backend.engine.optimize import EngineDefaults

    defaults = EngineDefaults(surface=replace(small_surface, max_step_percent=0.5))
    opt = AssetOptimizer(surface_spec(tiny_spec), prior=tiny_prior, defaults=defaults)
    T = tiny_prior.num_train_timesteps
    assert opt.method.config.schedule.bounds(0, 10, T)[1] == int(0.98 * T)  # the density stage: the method's own
    opt._enter("geometry")
    assert opt.method.config.schedule.bounds(0, 10, T)[1] == int(0.5 * T)


@pytest.mark.parametrize("stop_after", [2, 3, 5])  # at the boundary, inside the geometry stage, inside the texture's
def test_resume_in_any_stage_matches_the_uninterrupted_run(tiny_spec, tiny_prior, small_surface, tmp_path, stop_after):
    from dreamstill.backend.engine import AssetOptimizer

    spec = surface_spec(tiny_spec, steps=7, texture_steps=2)
    full = AssetOptimizer(spec, prior=tiny_prior)
    list(full.run())

    first = AssetOptimizer(spec, prior=tiny_prior)
    list(first.run(cancel=lambda: first.step >= stop_after))
    first.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = AssetOptimizer(spec, prior=tiny_prior)
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    assert resumed.step == stop_after and resumed.stage == first.stage
    list(resumed.run())
    assert resumed.stage == "texture" and isinstance(resumed.field, SDFField)
    torch.testing.assert_close(params(resumed.field.parameters()), params(full.field.parameters()), rtol=0, atol=1e-4)


def test_a_density_stage_without_a_surface_starts_the_sdf_from_a_ball(
    tiny_spec, tiny_prior, small_surface, monkeypatch
):
    from dreamstill.backend.engine import AssetOptimizer, surface
    from dreamstill.backend.mesh import EmptyFieldError

    def empty(*args, **kwargs):
        raise EmptyFieldError("no ray is half opaque")

    monkeypatch.setattr(surface, "sdf_field_from_density", empty)
    opt = AssetOptimizer(surface_spec(tiny_spec), prior=tiny_prior)
    list(opt.run(cancel=lambda: opt.step >= 3))
    assert isinstance(opt.field, SDFField) and opt.stage == "geometry"
    assert opt.warnings == ["the surface stage started from a ball: no ray is half opaque"]


def test_the_surface_assets_mesh_is_watertight_light_and_smooth(tiny_spec, tiny_prior, small_surface, monkeypatch):
    """Meshing goes through the SDF once the surface stage has begun (here an SDF that is a ball of radius 0.4)."""
    from dreamstill.backend.engine import AssetOptimizer, surface
    from dreamstill.backend.mesh.cleanup import topology

    opt = AssetOptimizer(surface_spec(tiny_spec), prior=tiny_prior)
    opt._enter("geometry")
    monkeypatch.setattr(opt.field, "sdf", lambda x: x.norm(dim=-1) - 0.4)
    assert surface.SurfaceStages is type(opt.surface)
    mesh = opt.to_mesh(32, 0, 300)
    top = topology(mesh)
    assert top.watertight and top.euler == 2 and mesh.num_faces <= 300
    radius = torch.from_numpy(mesh.vertices).norm(dim=-1)
    assert radius.min() > 0.36 and radius.max() < 0.42
    radial = torch.nn.functional.cosine_similarity(torch.from_numpy(mesh.normals), torch.from_numpy(mesh.vertices))
    assert radial.mean() > 0.99 and radial.min() > 0.8  # smooth outward vertex normals (300 faces: some skinny)


def test_the_surface_assets_flat_faces_are_snapped_flat_unless_switched_off(
    tiny_spec, tiny_prior, small_surface, monkeypatch
):
    """A box of half-size 0.35 with bumps 0.02 high: the default mesh (engine.surface_mesh: planar regions snapped
    after decimation) has more area within 15 degrees of the axes than with ``mesh.planes`` None, the same faces."""
    from dataclasses import replace

    from dreamstill.backend.engine import AssetOptimizer
    from dreamstill.backend.mesh.cleanup import axis_aligned_area_share

    opt = AssetOptimizer(surface_spec(tiny_spec), prior=tiny_prior)
    opt._enter("geometry")

    def bumpy_box(x):
        q = x.abs() - 0.35
        box = q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)
        return box - 0.02 * torch.sin(29 * x[:, 0]) * torch.sin(31 * x[:, 1]) * torch.sin(27 * x[:, 2])

    monkeypatch.setattr(opt.field, "sdf", bumpy_box)
    flat = opt.to_mesh(48, 0, 6000)
    opt.surface.mesh_settings = replace(opt.surface.mesh_settings, planes=None)
    raw = opt.to_mesh(48, 0, 6000)
    assert axis_aligned_area_share(raw, 15.0) < 0.8
    assert axis_aligned_area_share(flat, 15.0) > axis_aligned_area_share(raw, 15.0) + 0.1
    assert (flat.faces == raw.faces).all()


# --- regularizers in closed form -----------------------------------------------------------------------------------
def flat_views(normal_sign: float, size: int = 8) -> DistillViews:
    """One view of a wall filling the image at depth 2, opaque, with normals +/- the ray directions."""
    cams = orbit_cameras(1)
    _, dirs = cams.rays(size, size)
    ones = torch.ones(1, size, size, 1)
    out = RenderOutput(
        rgb=ones.expand(-1, -1, -1, 3),
        opacity=ones,
        depth=2 * ones,
        normal=normal_sign * dirs,
        weights=ones,
        ray_dist=2 * ones,
    )
    return DistillViews(torch.zeros(1, 3, 4, 4), ones.permute(0, 3, 1, 2), cams.as_condition(), [out])


def test_orientation_charges_normals_facing_away_from_the_camera():
    assert float(Orientation(10.0)(flat_views(+1.0))) == pytest.approx(10.0)  # n . v = 1 everywhere
    assert float(Orientation(10.0)(flat_views(-1.0))) == 0.0


class Plane:
    """d(x) = 2 x_0: a plane whose gradient has norm 2 everywhere and a constant normal."""

    bound = 1.0

    def sdf_with_gradient(self, x):
        return 2 * x[:, 0], torch.tensor([2.0, 0.0, 0.0]).expand_as(x)

    def normals(self, x):
        return torch.tensor([1.0, 0.0, 0.0]).expand_as(x)


def test_eikonal_and_smoothness_of_a_plane():
    rng = torch.Generator().manual_seed(0)
    views = flat_views(-1.0)
    assert float(Eikonal(Plane(), 3.0, 64, rng)(views)) == pytest.approx(3.0)  # 3 (||grad d|| - 1)^2 = 3
    assert float(NormalSmoothness(Plane(), 5.0, 0.05, 1.0, 16, rng)(views)) == pytest.approx(5.0 * 1e-4)  # sqrt(eps)
    none_hit = DistillViews(views.z, views.opacity, views.camera, [views.outputs[0]])
    none_hit.outputs[0].opacity = torch.zeros_like(views.outputs[0].opacity)
    assert float(NormalSmoothness(Plane(), 5.0, 0.05, 1.0, 16, rng)(none_hit)) == 0.0


def test_only_a_trainable_signed_distance_enters_the_surface_stage_as_it_is(tiny_spec, tiny_prior):
    from dreamstill.backend.engine import AssetOptimizer
    from dreamstill.backend.engine.surface import SurfaceStages, is_trainable_sdf
    from dreamstill.backend.fields import DensityField

    opt = AssetOptimizer(surface_spec(tiny_spec), prior=tiny_prior)
    assert not is_trainable_sdf(opt.field) and is_trainable_sdf(SDFField())
    stages = SurfaceStages(opt.defaults.surface, opt.spec)
    with pytest.raises(TypeError, match="DensityField is not a trainable signed-distance field"):
        stages.enter_surface(opt, DensityField())
    with pytest.raises(ValueError, match="no stage 'density'"):
        stages.enter_surface(opt, SDFField(), "density")
    given = SDFField()
    stages.enter_surface(opt, given, "texture")  # the given field, its distance frozen: no fit from the density
    assert opt.field is given and not any(p.requires_grad for p in given.geometry_parameters())
    assert {id(p) for g in opt.optimizer.param_groups for p in g["params"]} == {
        id(p) for p in given.albedo_parameters()
    }
