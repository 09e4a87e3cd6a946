"""scripts/render_glb.py: a red box exported by the backend comes out of Blender as a red object on grey, one view
per camera, in a subprocess (bpy resets its scene with read_factory_settings, which must not touch the test process)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "render_glb.py"


def test_render_glb_shows_the_object_in_every_view(tmp_path):
    pytest.importorskip("bpy")
    import trimesh

    from dreamstill.backend.mesh import Mesh, export_mesh

    box = trimesh.creation.box(extents=(0.8, 0.8, 0.8))
    colors = np.tile(np.array([[220, 20, 20]], np.uint8), (len(box.vertices), 1))
    glb = tmp_path / "box.glb"
    export_mesh(Mesh(box.vertices, box.faces, vertex_colors=colors), glb)
    out = tmp_path / "views.png"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(glb), "-o", str(out), "--views", "2", "--size", "48"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert image.shape == (48, 96, 3)
    for view in (image[:, :48], image[:, 48:]):
        centre, corner = view[24, 24], view[1, 1]
        assert centre[0] > centre[1] + 40 and centre[0] > centre[2] + 40  # red object in the middle
        assert abs(corner[0] - corner[1]) < 10  # grey background at the corner


def test_missing_file_is_named(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nope.glb")], capture_output=True, text=True)
    assert proc.returncode != 0 and "nope.glb does not exist" in proc.stderr
