"""A field to a mesh by phases: the plan names what runs, and a failed bake keeps vertex colours with a warning."""

from __future__ import annotations

import torch

from dreamstill.backend.engine.meshing import field_mesh_phases, field_to_mesh, mesh_phase_names, run_phases


class Ball(torch.nn.Module):
    bound = 1.0

    def density(self, x):
        return 50.0 * torch.sigmoid((0.5 - x.norm(dim=-1)) * 60.0)

    def forward(self, x):
        return self.density(x), torch.full((len(x), 3), 0.25)


def test_the_plan_lists_the_phases_that_run():
    assert mesh_phase_names(0, None) == ["mesh"]
    assert mesh_phase_names(64, None) == ["mesh", "bake"]
    assert mesh_phase_names(0, 500) == ["mesh", "decimate"]
    assert mesh_phase_names(64, 500) == ["mesh", "decimate", "bake"]
    phases = field_mesh_phases(Ball(), "cpu", 24, 0, 500, [])
    assert [next(phases), next(phases)] == mesh_phase_names(0, 500)
    assert run_phases(phases).num_faces <= 500


def test_field_to_mesh_is_the_phases_run_to_the_end():
    a = field_to_mesh(Ball(), torch.device("cpu"), 24, 0)
    b = run_phases(field_mesh_phases(Ball(), "cpu", 24, 0, None, None))
    assert (a.vertices == b.vertices).all() and (a.vertex_colors == 64).all()  # round(0.25 * 255)


def test_a_failed_bake_keeps_vertex_colours_and_warns(monkeypatch):
    from dreamstill.backend import mesh as mesh_package

    def broken_bake(*args, **kwargs):
        raise mesh_package.TextureBakeError("xatlas crashed")

    monkeypatch.setattr(mesh_package, "bake_texture", broken_bake)
    warnings: list[str] = []
    phases = field_mesh_phases(Ball(), "cpu", 32, 64, None, warnings)
    assert [next(phases), next(phases)] == ["mesh", "bake"]
    mesh = run_phases(phases)
    assert mesh.texture is None and mesh.vertex_colors is not None
    assert warnings == ["texture bake failed, kept vertex colours: xatlas crashed"]
