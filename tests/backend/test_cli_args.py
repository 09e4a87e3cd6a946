"""The job flags of generate / submit / batch are generated from the JobSpec: every field has a flag with help and
its default, a spec survives a trip through the flags, and a new JobSpec field becomes a flag with no other edit."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import pytest

from dreamstill.backend.cli import build_parser
from dreamstill.backend.cli_args import (
    add_job_arguments,
    add_prompt_argument,
    dest_of,
    flag_of,
    spec_from_args,
)
from dreamstill.protocol import JobSpec, JobSpecError, setting, spec_fields


def argv_for(spec: JobSpec) -> list[str]:
    """The flags that describe ``spec`` (every field, defaults included)."""
    argv = []
    for field in spec_fields(type(spec)):
        if field.setting.positional:
            continue
        value = getattr(spec, field.name)
        if field.kind == "pair":
            argv += [flag_of(field), *(repr(x) for x in value)]
        elif field.kind == "json":
            for key, item in value.items():
                argv += [flag_of(field), f"{key}={item!r}" if isinstance(item, float) else f"{key}={item}"]
        elif field.kind == "flag":
            argv.append(flag_of(field) if value else "--no-" + flag_of(field)[2:])
        else:
            argv += [flag_of(field), str(value)]
    return argv


def parse(*argv, command="generate"):
    return build_parser().parse_args([command, *argv])


def spec_of(*argv, output="asset.glb") -> JobSpec:
    args = parse("a red cube", "-o", output, *argv)
    return spec_from_args(args, args.prompt, args.output)


def job_actions(parser: argparse.ArgumentParser) -> dict:
    return {a.dest: a for a in parser._actions}


def test_every_field_is_a_flag_with_help_and_its_default():
    parser = argparse.ArgumentParser()
    add_prompt_argument(parser)
    add_job_arguments(parser)
    actions = job_actions(parser)
    for field in spec_fields():
        action = actions[field.name if field.setting.positional else dest_of(field)]
        assert action.help and field.setting.help in action.help.replace("%%", "%"), field.name
        if not field.setting.positional:
            assert action.default is None  # so the JobSpec's default applies: one default per setting
            assert "(default: " in action.help, field.name


def test_help_gives_units_and_what_zero_means():
    actions = job_actions(build_parser()._subparsers._group_actions[0].choices["generate"])
    assert "degrees" in actions["elevation_range"].help and "degrees" in actions["fov_range"].help
    assert "scene units (metres)" in actions["distance_range"].help
    assert "pixels" in actions["texture_size"].help and "0 = vertex colours only" in actions["texture_size"].help
    assert "(default: -10 45)" in actions["elevation_range"].help
    assert "(default: 100)" in actions["mesh_every"].help


def test_no_flags_give_the_jobspec_defaults():
    assert spec_of() == JobSpec(prompt="a red cube")


def test_a_spec_survives_a_trip_through_the_flags():
    spec = JobSpec(
        prompt="a red cube",
        method="asd",
        mode="instant",
        keep_shape=0.25,
        steps=7,
        surface=False,
        geometry_steps=2,
        texture_steps=1,
        resolution=64,
        seed=11,
        guidance=7.5,
        prior="some/hub-id",
        generator="run/generator.pt",
        refine_steps=100,
        negative_prompt="blurry",
        elevation_range=(0.0, 30.0),
        azimuth_range=(-90.0, 90.0),
        distance_range=(2.0, 4.5),
        fov_range=(30.0, 60.0),
        batch_size=2,
        lr=0.005,
        output_format="obj",
        mesh_resolution=96,
        texture_size=256,
        max_faces=5000,
        preview_every=3,
        mesh_every=0,
        checkpoint_every=20,
        options={"eta": 0.25, "t_sampler": "sqrt", "schedule": [0, 0.98, 0.5, 100]},
    )
    assert {f.name for f in spec_fields()} <= set(spec.to_dict())
    assert all(spec.to_dict()[k] != v for k, v in JobSpec(prompt="x").to_dict().items() if k != "prompt")
    assert spec_of(*argv_for(spec), output="asset.obj") == spec


def test_submit_and_batch_take_the_same_flags():
    submit = parse("a cube", "--steps", "9", "--fov-range", "30", "60", command="submit")
    batch = parse("prompts.txt", "-o", "out", "--steps", "9", "--format", "ply", command="batch")
    assert spec_from_args(submit, submit.prompt, Path("x.glb")).steps == 9
    assert spec_from_args(batch, "a cube").steps == 9 and batch.format == "ply"


def test_generator_implies_instant_unless_the_mode_is_given():
    assert (spec_of().mode, spec_of().generator) == ("optimize", "builtin")
    assert (spec_of("--generator", "g.pt").mode, spec_of("--generator", "g.pt").generator) == ("instant", "g.pt")
    assert spec_of("--mode", "optimize", "--generator", "g.pt").mode == "optimize"
    assert (spec_of("--refine-steps", "100").mode, spec_of("--refine-steps", "100").refine_steps) == ("instant", 100)


def test_the_output_suffix_picks_the_format_unless_format_is_given():
    assert spec_of(output="cube.ply").output_format == "ply"
    assert spec_of("--format", "obj", output="cube.ply").output_format == "obj"
    with pytest.raises(SystemExit, match=r"unknown suffix \.stl"):
        spec_of(output="cube.stl")


def test_bad_values_name_the_field():
    with pytest.raises(JobSpecError, match="guidance: is nan"):
        spec_of("--guidance", "nan")
    with pytest.raises(JobSpecError, match="steps"):
        spec_of("--steps", "0")
    with pytest.raises(JobSpecError, match="elevation_range: .*first number must not exceed"):
        spec_of("--elevation-range", "40", "10")


def test_options_are_key_value_pairs(capsys):
    assert spec_of("--option", "eta=0.1", "--option", "t_sampler=sqrt").options == {"eta": 0.1, "t_sampler": "sqrt"}
    with pytest.raises(SystemExit) as exit_info:
        spec_of("--option", "eta")
    assert exit_info.value.code == 2 and "write it as KEY=VALUE" in capsys.readouterr().err


def test_option_help_lists_each_methods_keys():
    from dreamstill.backend.distill import METHODS, method_class

    text = " ".join(build_parser()._subparsers._group_actions[0].choices["generate"].format_help().split())
    listing = text[text.index("Accepted keys:") :]
    for name in METHODS:
        assert f"{name}: " in listing
        for key in (f.name for f in dataclasses.fields(method_class(name).Config)):
            assert key in listing, (name, key)


def test_a_new_jobspec_field_becomes_a_flag():
    @dataclasses.dataclass
    class Extended(JobSpec):
        surface_steps: int = setting(
            0, label="Surface Steps", help="mesh refinement steps", group="output", minimum=0, maximum=1000
        )
        surface_weight: float = setting(1.0, label="Surface Weight", help="normal loss weight", minimum=0.0)
        surface_refine: bool = setting(False, label="Refine", help="refine the surface after meshing")

    parser = argparse.ArgumentParser()
    add_prompt_argument(parser, Extended)
    add_job_arguments(parser, Extended)
    assert "--surface-steps N" in parser.format_help() and "(default: 0)" in job_actions(parser)["surface_steps"].help
    args = parser.parse_args(["a cube", "--surface-steps", "12", "--surface-weight", "0.5", "--surface-refine"])
    spec = spec_from_args(args, args.prompt, spec_class=Extended)
    assert isinstance(spec, Extended)
    assert (spec.surface_steps, spec.surface_weight, spec.surface_refine) == (12, 0.5, True)
    assert spec_from_args(parser.parse_args(["a cube"]), "a cube", spec_class=Extended).surface_weight == 1.0
    with pytest.raises(JobSpecError, match=r"Extended\.surface_weight: is inf"):
        spec_from_args(parser.parse_args(["a", "--surface-weight", "inf"]), "a", spec_class=Extended)
    assert math.isclose(Extended.from_json(spec.to_json()).surface_weight, 0.5)


def test_method_keys_are_imported_only_when_help_is_printed():
    import subprocess
    import sys

    code = (
        "import argparse, sys\n"
        "from dreamstill.backend.cli_args import add_job_arguments, spec_from_args\n"
        "p = argparse.ArgumentParser(); add_job_arguments(p)\n"
        "spec_from_args(p.parse_args(['--option', 'eta=0.1']), 'a cube')\n"
        "print('dreamstill.backend.distill' in sys.modules, 'torch' in sys.modules)\n"
        "p.format_help()\n"
        "print('dreamstill.backend.distill' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True"]
