"""Test-time refinement: a prompt's generated field as trainable copies that start where the generator is, and a
per-prompt optimizer that moves them (and never the generator)."""

import itertools

import pytest
import torch

from dreamstill.backend.generators import ARCHITECTURES, build_generator
from dreamstill.backend.priors.base import TextEmbedding
from dreamstill.protocol import JobSpec


def text_batch(b=3, length=5, dim=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TextEmbedding(torch.randn(b, length, dim, generator=g), torch.randn(b, dim, generator=g))


def perturbed_generator(arch: str, seed: int = 0, text_dim: int = 64):
    """A generator moved off its blob initialisation, so prompts give different fields."""
    torch.manual_seed(seed)
    gen = build_generator(arch, text_dim=text_dim)
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return gen


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_refinable_field_starts_as_the_prompts_field(arch):
    from dreamstill.backend.generators.refine import RefinableField

    gen = perturbed_generator(arch)
    with torch.no_grad():
        fields = gen(text_batch())
        field = RefinableField(fields, index=1)
        x = torch.rand(200, 3) * 2 - 1
        sigma, albedo = field(x)
        want_sigma, want_albedo = fields[1](x)
    torch.testing.assert_close(sigma, want_sigma, rtol=0, atol=0)
    torch.testing.assert_close(albedo, want_albedo, rtol=0, atol=0)
    torch.testing.assert_close(field.density(x), want_sigma, rtol=0, atol=0)
    assert not torch.allclose(sigma, fields[0].density(x))  # prompt 1's field, not prompt 0's
    assert field.bound == fields.bound and all(p.requires_grad for p in field.parameters())


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_training_the_copy_leaves_the_generator_alone(arch):
    from dreamstill.backend.generators.refine import RefinableField

    gen = perturbed_generator(arch)
    before = [p.detach().clone() for p in gen.parameters()]
    with torch.no_grad():
        fields = gen(text_batch())
    field = RefinableField(fields, index=0)
    opt = torch.optim.SGD(field.parameters(), lr=0.1)
    x = torch.rand(100, 3) * 2 - 1
    start = field.density(x).detach().clone()
    field.density(x).sum().backward()
    opt.step()
    assert not torch.allclose(field.density(x), start)  # the copy moved
    assert all(torch.equal(a, b) for a, b in zip(before, gen.parameters()))  # the generator did not
    torch.testing.assert_close(fields[0].density(x), start, rtol=0, atol=0)  # nor its output


def test_refine_optimizer_runs_the_jobs_method_for_refine_steps(tiny_prior):
    from dreamstill.backend.generators.refine import REFINE_LR, RefinableField, refine_optimizer

    text = tiny_prior.encode_text(["a red cube"])
    gen = perturbed_generator("triplane", text_dim=text.tokens.shape[-1])
    with torch.no_grad():
        fields = gen(text)
    spec = JobSpec(
        prompt="a red cube", prior="tiny", mode="instant", refine_steps=2, method="asd", resolution=16, batch_size=1
    )
    optimizer = refine_optimizer(fields, 0, spec, tiny_prior)
    assert isinstance(optimizer.field, RefinableField) and optimizer.spec.steps == 2
    assert optimizer.optimizer.param_groups[0]["lr"] == REFINE_LR
    x = torch.rand(100, 3) * 2 - 1
    start = optimizer.field.density(x).detach().clone()
    progress = [e.step for e in optimizer.run() if hasattr(e, "loss")]
    assert progress == [1, 2] and optimizer.step == 2
    assert not torch.allclose(optimizer.field.density(x).detach(), start)
    lr_spec = JobSpec(**{**spec.to_dict(), "lr": 0.003})
    assert refine_optimizer(fields, 0, lr_spec, tiny_prior).optimizer.param_groups[0]["lr"] == 0.003


# --- an SDF generator's draft, refined as a surface -----------------------------------------------------------


def sdf_fields(arch: str, text_dim: int = 64):
    """A batch of 3 prompts' fields of a perturbed SDF generator (``geometry="sdf"``)."""
    torch.manual_seed(0)
    gen = build_generator(arch, text_dim=text_dim, geometry="sdf")
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        return gen(text_batch(dim=text_dim))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_refinable_sdf_field_starts_as_the_generators_field(arch):
    from dreamstill.backend.generators.refine import RefinableSDFField

    fields = sdf_fields(arch)
    field = RefinableSDFField(fields, index=1)
    x = torch.rand(300, 3) * 2 - 1
    with torch.no_grad():
        want_density, want_albedo = fields[1](x)
        density, albedo = field(x)
        torch.testing.assert_close(field.sdf(x), fields[1].sdf(x), rtol=0, atol=0)
        torch.testing.assert_close(density, want_density, rtol=0, atol=0)
        torch.testing.assert_close(albedo, want_albedo, rtol=0, atol=0)
        assert not torch.allclose(field.sdf(x), fields[0].sdf(x))  # prompt 1's distance, not prompt 0's
        lit_density, lit_albedo, _ = field.forward_with_gradient(x)
    torch.testing.assert_close(lit_density, want_density, rtol=0, atol=0)
    torch.testing.assert_close(lit_albedo, want_albedo, rtol=0, atol=0)
    geometry, appearance = field.geometry_parameters(), field.albedo_parameters()
    assert {id(p) for p in geometry}.isdisjoint(id(p) for p in appearance)
    assert {id(p) for p in geometry + appearance} == {id(p) for p in field.parameters()}
    field.set_beta(0.02)
    assert float(field.beta) == pytest.approx(0.02) and float(fields.decoding.beta) != pytest.approx(0.02)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_refinable_sdf_gradient_matches_finite_differences(arch):
    from dreamstill.backend.generators.refine import RefinableSDFField

    field = RefinableSDFField(sdf_fields(arch), index=0).double()
    x = (torch.rand(100, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1) * 0.7
    h = 1e-6
    with torch.no_grad():
        d, grad = field.sdf_with_gradient(x)
        steps = torch.eye(3, dtype=torch.float64) * h
        numeric = torch.stack([(field.sdf(x + e) - field.sdf(x - e)) / (2 * h) for e in steps], -1)
        normals = field.normals(x)
    torch.testing.assert_close(d, field.sdf(x).detach(), rtol=0, atol=0)
    torch.testing.assert_close(grad, numeric, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(normals, grad / grad.norm(dim=-1, keepdim=True))


def test_sdf_draft_refines_geometry_then_texture_with_the_distance_frozen(tiny_prior):
    from dreamstill.backend.generators.refine import (
        REFINE_ALBEDO_LR,
        REFINE_MAX_STEP_PERCENT,
        REFINE_SDF_GEOMETRY_LR,
        DraftAnchor,
        RefinableSDFField,
        refine_optimizer,
    )

    text = tiny_prior.encode_text(["a red cube"])
    fields = sdf_fields("triplane", text_dim=text.tokens.shape[-1])
    spec = JobSpec(
        prompt="a red cube", prior="tiny", mode="instant", refine_steps=4, method="asd", resolution=16, batch_size=1
    )
    optimizer = refine_optimizer(fields, 0, spec, tiny_prior)
    field = optimizer.field
    assert isinstance(field, RefinableSDFField) and optimizer.plan == (("geometry", 3), ("texture", 1))
    assert optimizer.stage == "geometry" and len(optimizer.regularizers) == 4  # eikonal, smoothness, orientation
    assert isinstance(optimizer.regularizers[-1], DraftAnchor)  # and the draft anchor
    cfg = optimizer.defaults.surface
    assert [g["lr"] for g in optimizer.optimizer.param_groups] == [REFINE_SDF_GEOMETRY_LR, REFINE_ALBEDO_LR]
    # a draft is refined at low noise only: t <= 0.5 T from the first step (ASD's own schedule starts at 0.98 T)
    t_max = optimizer.method.config.schedule.bounds(0, spec.refine_steps, 1000)[1]
    assert REFINE_MAX_STEP_PERCENT == 0.5 and t_max == 500
    x = torch.rand(200, 3) * 2 - 1

    def snapshot():
        with torch.no_grad():
            return field.sdf(x).clone(), field.albedo(x).clone()

    d0, albedo0 = snapshot()
    phases = [e.phase for e in itertools.islice((e for e in optimizer.run() if hasattr(e, "loss")), 3)]
    assert phases == ["geometry"] * 3 and optimizer.step == 3
    d1, albedo1 = snapshot()
    assert not torch.equal(d1, d0) and not torch.equal(albedo1, albedo0)  # the geometry stage moves both
    assert float(field.beta) == pytest.approx(cfg.beta_end)  # annealed from beta_start over the stage
    assert [e.phase for e in optimizer.run() if hasattr(e, "loss")] == ["texture"] and optimizer.step == 4
    d2, albedo2 = snapshot()
    torch.testing.assert_close(d2, d1, rtol=0, atol=0)  # the texture stage leaves the distance alone
    assert not torch.equal(albedo2, albedo1)
    lr_spec = JobSpec(**{**spec.to_dict(), "lr": 0.005})
    assert refine_optimizer(fields, 0, lr_spec, tiny_prior).optimizer.param_groups[0]["lr"] == 0.005


def test_the_draft_anchor_is_zero_at_the_draft_and_holds_the_refinement_near_it(tiny_prior, monkeypatch):
    """DraftAnchor: 0 while the refined distance is the draft's; 6 geometry steps with a dominant anchor end nearer
    the draft's distance than the same steps without it (same seeds)."""
    from dreamstill.backend.generators import refine
    from dreamstill.backend.render.cameras import sample_cameras

    text = tiny_prior.encode_text(["a red cube"])
    fields = sdf_fields("triplane", text_dim=text.tokens.shape[-1])
    spec = JobSpec(prompt="a red cube", prior="tiny", mode="instant", refine_steps=8, resolution=16, batch_size=1)
    x = torch.rand(400, 3, generator=torch.Generator().manual_seed(5)) * 1.6 - 0.8
    with torch.no_grad():
        d_draft = fields.sdf(0, x)
    drift = {}
    for weight in (0.0, 1e6):
        monkeypatch.setattr(refine, "REFINE_DRAFT_ANCHOR_WEIGHT", weight)
        optimizer = refine.refine_optimizer(fields, 0, spec, tiny_prior)
        anchors = [r for r in optimizer.regularizers if isinstance(r, refine.DraftAnchor)]
        assert len(anchors) == (weight > 0)
        if anchors:
            cams = sample_cameras(1, torch.Generator().manual_seed(0))
            views = optimizer.distill.render(
                optimizer.field, optimizer.background, cams, 0, 8, optimizer.camera_rng, optimizer.noise_rng
            )
            assert float(anchors[0](views).detach()) == 0.0
        list(itertools.islice((e for e in optimizer.run() if hasattr(e, "loss")), 6))
        assert optimizer.stage == "geometry" and optimizer.step == 6
        with torch.no_grad():
            drift[weight] = float((optimizer.field.sdf(x) - d_draft).abs().mean())
    assert 0 < drift[1e6] < 0.5 * drift[0.0], drift


def test_surface_refine_plan_splits_refine_steps_three_to_one():
    from dreamstill.backend.generators.refine import surface_refine_plan

    def plan(**kw):
        return surface_refine_plan(JobSpec(prompt="a red cube", mode="instant", **kw))

    assert plan(refine_steps=100) == (("geometry", 75), ("texture", 25))
    assert plan(refine_steps=3) == (("geometry", 3),)  # a quarter of 3 rounds to no texture step
    assert plan(refine_steps=10, texture_steps=4, surface=False) == (("geometry", 6), ("texture", 4))
    with pytest.raises(ValueError, match="texture_steps"):
        plan(refine_steps=4, texture_steps=4)


def test_refine_job_of_an_sdf_generator_meshes_its_surface(tiny_sdf_generator, tmp_path):
    import trimesh

    from dreamstill.backend.jobs import run_job
    from dreamstill.protocol import Done, Progress

    spec = JobSpec(
        prompt="a red cube",
        mode="instant",
        generator=tiny_sdf_generator,
        prior="tiny",
        refine_steps=4,
        method="asd",
        resolution=16,
        batch_size=1,
        mesh_resolution=32,
        texture_size=0,
    )
    events = list(run_job(spec, tmp_path))
    assert isinstance(events[-1], Done), events[-1]
    steps = [
        (e.phase, e.step) for e in events if isinstance(e, Progress) and e.phase in ("density", "geometry", "texture")
    ]
    assert steps == [("geometry", 1), ("geometry", 2), ("geometry", 3), ("texture", 4)]
    glb = next(f for f in events[-1].files if f.endswith(".glb"))
    mesh = trimesh.load(glb).to_geometry()
    assert len(mesh.faces) > 0 and mesh.is_watertight
    assert len(mesh.split(only_watertight=False)) == 1
