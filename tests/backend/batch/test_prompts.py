"""The names of a batch's results."""

from dreamstill.backend.batch.prompts import output_name, prompt_slug


def test_output_names_are_sortable_readable_and_safe():
    assert output_name(1, "A red cube!", "glb") == "001_a_red_cube.glb"
    assert output_name(12, "  ***  ", "usdc") == "012_prompt.usdc"
    assert output_name(3, "x" * 100, "ply") == f"003_{'x' * 48}.ply"
    assert prompt_slug("a   red/cube..on\\a sphere") == "a_red_cube_on_a_sphere"
    assert prompt_slug("a " + "b" * 46 + " c") == "a_" + "b" * 46  # cut at 48, no trailing '_'
