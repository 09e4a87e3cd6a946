"""The one prompt-file parser and the result names."""

import pytest

from dreamstill.backend.batch.prompts import output_name, parse_prompts, prompt_slug, read_prompts


def test_one_prompt_a_line_blank_lines_and_comments_dropped(tmp_path):
    text = "  a red cube  \n\n# a comment\n   # an indented comment\na blue sphere # not a comment\r\n\t\n"
    assert parse_prompts(text) == ["a red cube", "a blue sphere # not a comment"]
    path = tmp_path / "p.txt"
    path.write_text("un cube rouge\nein grüner Torus\n", encoding="utf-8")
    assert read_prompts(path) == ["un cube rouge", "ein grüner Torus"]
    with pytest.raises(OSError):
        read_prompts(tmp_path / "missing.txt")


def test_output_names_are_sortable_readable_and_safe():
    assert output_name(1, "A red cube!", "glb") == "001_a_red_cube.glb"
    assert output_name(12, "  ***  ", "usdc") == "012_prompt.usdc"
    assert output_name(3, "x" * 100, "ply") == f"003_{'x' * 48}.ply"
    assert prompt_slug("a   red/cube..on\\a sphere") == "a_red_cube_on_a_sphere"
    assert prompt_slug("a " + "b" * 46 + " c") == "a_" + "b" * 46  # cut at 48, no trailing '_'
