"""finish_asset works for any Asset, not only fields: its phases, empty_field and the warnings it passes on."""

from __future__ import annotations

import numpy as np
import torch

from dreamstill.backend.jobs.finish import finish_asset, finish_phase_names
from dreamstill.backend.jobs.phases import PhaseClock
from dreamstill.backend.mesh import EmptyFieldError, Mesh, load_mesh
from dreamstill.backend.render import RenderOutput
from dreamstill.protocol import Done, Failed, JobSpec, MeshUpdate, Progress


class Tetrahedron:
    """An Asset that is not a field: a fixed coloured tetrahedron, a flat grey image, one warning."""

    device = torch.device("cpu")

    def __init__(self, empty: bool = False):
        self.empty, self.warnings, self.calls = empty, ["made by hand"], []

    def render(self, cameras, height, width, shading="albedo"):
        b = len(cameras)
        zeros = torch.zeros(b, height, width, 1)
        return RenderOutput(torch.full((b, height, width, 3), 0.5), zeros, zeros, None, zeros, zeros)

    def to_mesh(self, resolution, texture_size=0, max_faces=None):
        self.calls.append((resolution, texture_size, max_faces))
        if self.empty:
            raise EmptyFieldError("nothing here")
        vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
        faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int32)
        return Mesh(vertices, faces, vertex_colors=np.full((4, 3), 200, np.uint8))


def spec(**kw) -> JobSpec:
    return JobSpec(prompt="a red cube", mesh_resolution=40, texture_size=0, max_faces=500, output_format="ply", **kw)


def test_any_asset_is_meshed_exported_and_reported(tmp_path):
    asset = Tetrahedron()
    names = finish_phase_names(asset, spec())
    assert names == ["mesh", "export", "views"]  # an asset without phases of its own is one "mesh" phase
    events = list(finish_asset(asset, spec(), tmp_path / "t.ply", PhaseClock(names, 0.0), step=7, metrics={"k": 1}))
    assert asset.calls == [(40, 0, 500)]  # the spec's grid, texture size and face budget
    assert [(e.phase, e.step, e.total) for e in events if isinstance(e, Progress)] == [
        ("mesh", 0, 3),
        ("export", 1, 3),
        ("views", 2, 3),
    ]
    final = next(e for e in events if isinstance(e, MeshUpdate))
    assert final.final and final.step == 7 and len(final.faces) == 4
    done = events[-1]
    assert isinstance(done, Done) and done.metrics == {"k": 1, "warnings": ["made by hand"]}
    assert done.files == [str(tmp_path / "t.ply"), str(tmp_path / "t_views.png")]
    np.testing.assert_allclose(load_mesh(tmp_path / "t.ply").vertices, final.vertices, atol=1e-6)


def test_an_empty_asset_fails_with_empty_field_and_writes_nothing(tmp_path):
    names = finish_phase_names(Tetrahedron(), spec())
    events = list(finish_asset(Tetrahedron(empty=True), spec(), tmp_path / "t.ply", PhaseClock(names, 0.0), step=0))
    assert isinstance(events[-1], Failed) and events[-1].code == "empty_field" and "nothing here" in events[-1].message
    assert not any(isinstance(e, MeshUpdate) for e in events) and list(tmp_path.iterdir()) == []


def test_prompt_warnings_name_a_prompt_outside_the_builtin_world(tiny_spec):
    from dreamstill.backend.jobs.finish import prompt_warnings

    assert prompt_warnings(tiny_spec(prompt="a hamburger", prior="builtin"))[0].count("hamburger") >= 1
    assert prompt_warnings(tiny_spec(prompt="a red cube", prior="builtin")) == []
    assert prompt_warnings(tiny_spec(prompt="a hamburger")) == []  # the tiny test prior: no world to check against


def test_the_contact_sheet_shows_the_textured_mesh_above_its_bare_geometry(tmp_path):
    from PIL import Image

    from dreamstill.backend.jobs.finish import write_views

    v = np.array([[0, 0, 0.5], [0.5, 0, -0.3], [-0.3, 0.45, -0.3], [-0.3, -0.45, -0.3]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]], np.int32)
    mesh = Mesh(v, f, vertex_colors=np.tile(np.array([[0, 0, 255]], np.uint8), (4, 1)))
    sheet = np.asarray(Image.open(write_views(mesh, tmp_path / "v.png", n=3, size=64)))
    assert sheet.shape == (2 * 66 + 2, 3 * 66 + 2, 3)  # two rows of three 64 px views, 2 px apart
    top, bottom = sheet[2:66, 2:66].reshape(-1, 3).astype(int), sheet[68:132, 2:66].reshape(-1, 3).astype(int)
    drawn_top, drawn_bottom = top[(top != 255).any(1)], bottom[(bottom != 255).any(1)]
    assert len(drawn_top) > 200 and len(drawn_bottom) > 200  # framed to fill the view, not a speck
    assert (drawn_top[:, 2] > drawn_top[:, 0]).all()  # blue albedo
    assert (drawn_bottom[:, 0] == drawn_bottom[:, 2]).all()  # grey geometry
