"""placement without bpy: standing an asset on its base at a size, grid and curve layouts, names."""

from __future__ import annotations

import numpy as np
import pytest

from dreamstill.blender_addon.placement import (
    Placement,
    asset_name,
    beside,
    grid_offsets,
    placement_for,
    points_along,
)


def test_an_asset_stands_on_its_base_at_the_set_size():
    """Box [-1, 3] x [0, 2] x [-0.5, 0.5]: largest extent 4, so size 2 halves it; the footprint's centre (1, 1) and
    the bottom -0.5 go to the origin."""
    corners = np.array([[x, y, z] for x in (-1, 3) for y in (0, 2) for z in (-0.5, 0.5)], np.float32)
    place = placement_for(corners, 2.0)
    assert place.anchor == (1.0, 1.0, -0.5) and place.factor == 0.5
    placed = place.apply(corners)
    np.testing.assert_allclose(placed.min(0), (-1.0, -0.5, 0.0))
    np.testing.assert_allclose(placed.max(0), (1.0, 0.5, 0.5))
    assert float(np.ptp(placed, axis=0).max()) == pytest.approx(2.0)


def test_size_zero_keeps_the_backends_scale_but_still_grounds_it():
    v = np.array([[0, 0, 1], [2, 0, 3]], np.float32)
    place = placement_for(v, 0.0)
    assert place.factor == 1.0
    np.testing.assert_allclose(place.apply(v), [[-1, 0, 0], [1, 0, 2]])


def test_degenerate_meshes_do_not_divide_by_zero():
    assert placement_for(np.zeros((0, 3)), 1.0) == Placement()
    point = placement_for(np.array([[1.0, 2.0, 3.0]] * 3), 5.0)
    assert point.factor == 1.0 and point.anchor == (1.0, 2.0, 3.0)


def test_matrix_takes_backend_coordinates_where_apply_puts_them_plus_the_location():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((50, 3))
    place = placement_for(v, 3.0)
    m = place.matrix((10.0, -2.0, 0.5))
    world = v @ m[:3, :3].T + m[:3, 3]
    np.testing.assert_allclose(world, place.apply(v) + (10.0, -2.0, 0.5), atol=1e-5)
    assert world[:, 2].min() == pytest.approx(0.5)


def test_grid_is_near_square_rows_along_minus_y():
    assert grid_offsets(3, 2.0) == [(0, 0, 0), (2.0, 0, 0), (0, -2.0, 0)]
    offsets = grid_offsets(10, 1.0)  # 4 columns
    assert offsets[3] == (3.0, 0, 0) and offsets[4] == (0, -1.0, 0) and offsets[9] == (1.0, -2.0, 0)
    assert grid_offsets(0, 1.0) == []


def test_points_along_an_open_curve_are_spaced_by_arc_length_not_by_points():
    """Points at x = 0, 1, 4 (uneven): three items at x = 0, 2, 4, both ends used."""
    line = [[0, 0, 0], [1, 0, 0], [4, 0, 0]]
    np.testing.assert_allclose(points_along(line, 3), [[0, 0, 0], [2, 0, 0], [4, 0, 0]])
    np.testing.assert_allclose(points_along(line, 1), [[0, 0, 0]])
    bent = [[0, 0, 0], [3, 0, 0], [3, 3, 0]]  # length 6: items every 2
    np.testing.assert_allclose(points_along(bent, 4), [[0, 0, 0], [2, 0, 0], [3, 1, 0], [3, 3, 0]], atol=1e-12)


def test_points_along_a_closed_curve_do_not_double_up_at_the_seam():
    square = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]
    np.testing.assert_allclose(points_along(square, 4, cyclic=True), square, atol=1e-12)
    eight = points_along(square, 8, cyclic=True)
    np.testing.assert_allclose(eight[1], (0.5, 0, 0)) and np.testing.assert_allclose(eight[7], (0, 0.5, 0))


def test_points_along_repeated_points_and_errors():
    np.testing.assert_allclose(points_along([[0, 0, 0], [0, 0, 0], [2, 0, 0]], 2), [[0, 0, 0], [2, 0, 0]])
    np.testing.assert_allclose(points_along([[1, 1, 1]] * 3, 2), [[1, 1, 1], [1, 1, 1]])
    with pytest.raises(ValueError, match="no points"):
        points_along(np.zeros((0, 3)), 3)


@pytest.mark.parametrize(
    ("prompt", "name"),
    [
        ("a red cube", "red cube"),
        ("  An   old  chair ", "old chair"),
        ("the", "the"),
        ("cube", "cube"),
        ("", "Dreamstill asset"),
        ("a " + "word " * 30, ("word " * 12).strip()),  # cut at a word under 60 characters
    ],
)
def test_asset_name_from_the_prompt(prompt, name):
    assert asset_name(prompt) == name
    assert len(asset_name(prompt)) <= 60


def test_beside_stands_on_the_objects_ground_a_quarter_of_its_width_to_its_right():
    """Box x 1..3, y -1..1, z 0.5..1.5 (width 2): the copy's footprint centre at x = 3 + 0.5 + 1, its base at 0.5,
    its size the largest extent 2; so a copy as large spans x 3.5..5.5, clear of the box."""
    location, size = beside((1.0, -1.0, 0.5), (3.0, 1.0, 1.5))
    assert location == (4.5, 0.0, 0.5) and size == 2.0
    assert location[0] - size / 2 > 3.0
