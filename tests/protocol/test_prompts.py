"""The one prompt-list parser: batch files, training corpora and the add-on's batch field."""

import pytest

from dreamstill.protocol import parse_prompts, read_prompts


def test_one_prompt_a_line_blank_lines_and_comments_dropped(tmp_path):
    text = "  a red cube  \n\n# a comment\n   # an indented comment\na blue sphere # not a comment\r\n\t\n"
    assert parse_prompts(text) == ["a red cube", "a blue sphere # not a comment"]
    path = tmp_path / "p.txt"
    path.write_text("un cube rouge\nein grüner Torus\n", encoding="utf-8")
    assert read_prompts(path) == ["un cube rouge", "ein grüner Torus"]
    with pytest.raises(OSError):
        read_prompts(tmp_path / "missing.txt")


def test_a_separator_splits_one_line_as_the_addon_field_does():
    assert parse_prompts("a red cube; a blue sphere ;; # skipped", separator=";") == ["a red cube", "a blue sphere"]
    assert parse_prompts("a red cube; a blue sphere") == ["a red cube; a blue sphere"]


def test_a_corpus_file_follows_the_same_rules(tmp_path):
    from dreamstill.backend.generators.config import load_corpus

    path = tmp_path / "corpus.txt"
    path.write_text("# my corpus\na red cube\n\n  a blue sphere  \n", encoding="utf-8")
    assert load_corpus(str(path)) == ["a red cube", "a blue sphere"]
