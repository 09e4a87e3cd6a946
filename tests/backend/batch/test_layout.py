"""The scene grid: closed-form translations."""

import numpy as np
import pytest

from dreamstill.backend.batch.layout import grid_translations, mesh_bounds

UNIT = (np.array([-0.5, -0.5, -0.5]), np.array([0.5, 0.5, 0.5]))


def test_two_unit_cubes_sit_side_by_side_on_the_ground():
    # cell = 1 + gap 1 = 2; 2 columns, 1 row, centred: x = -1 and +1; lowest point z = -0.5 -> lifted by 0.5
    t = grid_translations([UNIT, UNIT], gap=1.0)
    np.testing.assert_allclose(t, [[-1.0, 0.0, 0.5], [1.0, 0.0, 0.5]])


def test_five_assets_fill_a_three_by_two_grid_in_reading_order():
    offset = (np.array([2.0, 3.0, 1.0]), np.array([3.0, 4.0, 2.0]))  # footprint centre (2.5, 3.5), bottom z = 1
    t = np.array(grid_translations([offset] * 5, gap=0.0))
    cells = t + [2.5, 3.5, 1.0]  # where each footprint centre and bottom end up
    expected = [[-1, 0.5, 0], [0, 0.5, 0], [1, 0.5, 0], [-1, -0.5, 0], [0, -0.5, 0]]
    np.testing.assert_allclose(cells, expected)


def test_the_widest_asset_sets_the_cell_and_nothing_overlaps():
    wide = (np.array([-2.0, -0.1, 0.0]), np.array([2.0, 0.1, 0.3]))
    t = np.array(grid_translations([UNIT, wide, UNIT, UNIT], gap=0.5))
    centres = t[:, :2]
    np.testing.assert_allclose(np.abs(centres), 2.25)  # cell 4.5, 2 x 2 grid centred on the origin
    assert grid_translations([], gap=0.0) == []
    with pytest.raises(ValueError, match="gap"):
        grid_translations([UNIT], gap=-1.0)


def test_mesh_bounds_reads_any_exported_file_in_the_world_frame(tmp_path):
    from dreamstill.backend.mesh import Mesh, export_mesh

    v = np.array([[0, 0, 1], [1, 0, 0], [0, 2, 0]], np.float32)
    path = export_mesh(Mesh(v, np.array([[0, 1, 2]])), tmp_path / "t.glb")[0]  # glb is Y up inside the file
    low, high = mesh_bounds(path)
    np.testing.assert_allclose(low, [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(high, [1, 2, 1], atol=1e-6)
