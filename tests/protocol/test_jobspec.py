"""JobSpec: one declaration whose Settings drive validation; every number finite, integers whole, strings and options
bounded; checked once where a spec is made (and on assignment); plain-data round trips unchanged."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from dreamstill.protocol import GROUPS, JobSpec, JobSpecError, field_defaults, setting, spec_fields
from dreamstill.protocol.jobspec import FORMATS, MAX_OPTIONS_BYTES, MAX_OPTIONS_DEPTH, METHODS, MODES
from dreamstill.protocol.schema import schema_of

FIELDS = spec_fields()
NUMBER_FIELDS = [f.name for f in FIELDS if f.kind in ("number", "pair")]
INTEGER_FIELDS = [f.name for f in FIELDS if f.kind == "integer"]
TEXT_FIELDS = [f for f in FIELDS if f.kind == "text"]


def sample_value(field):
    """A valid value different from the default (what a round trip must carry unchanged)."""
    s = field.setting
    if field.kind == "text":
        return "a blue torus" if field.name != "prior" else "some/hub-id"
    if field.kind == "choice":
        return s.choice_values[-1]
    if field.kind == "integer":
        return int(s.maximum if s.maximum is not None else (s.minimum or 0) + 7)
    if field.kind == "number":
        return 0.5 * ((s.minimum or 0.0) + (s.maximum if s.maximum is not None else 20.0)) + 0.25
    if field.kind == "pair":
        return (s.minimum + 0.5, s.maximum - 0.5)
    if field.kind == "flag":
        return not field.default
    return {"eta": 0.25, "schedule": [0, 0.98, 0.5, 100], "name": "x"}


def full_spec() -> JobSpec:
    return JobSpec(**{f.name: sample_value(f) for f in FIELDS})


def test_every_field_has_label_help_and_a_known_group():
    for f in FIELDS:
        assert f.setting.label and f.setting.help, f.name
        assert f.setting.group in GROUPS, f.name
    assert {f.name: f.setting.choice_values for f in FIELDS if f.kind == "choice"} == {
        "method": METHODS,
        "mode": MODES,
        "output_format": FORMATS,
    }


def test_defaults_are_the_declared_ones():
    spec = JobSpec(prompt="a red cube")
    assert spec.to_dict() == {"prompt": "a red cube", **field_defaults()}
    assert (spec.steps, spec.mesh_every, spec.elevation_range, spec.options) == (400, 100, (-10.0, 45.0), {})


@pytest.mark.parametrize("spec", [JobSpec(prompt="a red cube"), full_spec()], ids=["defaults", "every-field-set"])
def test_dict_and_json_round_trips_are_unchanged(spec):
    assert JobSpec.from_dict(spec.to_dict()) == spec
    assert JobSpec.from_json(spec.to_json()) == spec
    assert JobSpec.from_json(spec.to_json()).to_json() == spec.to_json()
    assert json.loads(spec.to_json()) == json.loads(json.dumps(spec.to_dict()))  # plain JSON types only


def test_numbers_are_normalised_pairs_become_tuples():
    spec = JobSpec(prompt="a", guidance=100, lr=1, elevation_range=[0, 30])
    assert spec.guidance == 100.0 and type(spec.guidance) is float and type(spec.lr) is float
    assert spec.elevation_range == (0.0, 30.0) and isinstance(spec.elevation_range, tuple)


@pytest.mark.parametrize("name", NUMBER_FIELDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_numbers_must_be_finite(name, bad):
    field = schema_of(JobSpec)[name]
    value = (bad, 1.0) if field.kind == "pair" else bad
    with pytest.raises(JobSpecError, match=rf"JobSpec\.{name}: .*finite"):
        JobSpec(prompt="a", **{name: value})


@pytest.mark.parametrize("name", INTEGER_FIELDS)
@pytest.mark.parametrize("bad", [True, False, 16.0, "16", None])
def test_integer_fields_refuse_floats_bools_and_text(name, bad):
    with pytest.raises(JobSpecError, match=rf"JobSpec\.{name}: .*whole number"):
        JobSpec(prompt="a", **{name: bad})


def test_huge_integers_are_refused_without_printing_them():
    with pytest.raises(JobSpecError, match=r"steps: is a \d+-bit integer"):
        JobSpec(prompt="a", steps=10**5000)


@pytest.mark.parametrize("field", TEXT_FIELDS, ids=[f.name for f in TEXT_FIELDS])
def test_every_text_field_has_a_length_limit(field):
    limit = field.setting.max_chars
    assert 0 < limit <= 1024
    JobSpec(**{"prompt": "a", field.name: "x" * limit})
    with pytest.raises(JobSpecError, match=rf"JobSpec\.{field.name}: is {limit + 1} characters; .*at most {limit}"):
        JobSpec(**{"prompt": "a", field.name: "x" * (limit + 1)})
    with pytest.raises(JobSpecError, match=rf"JobSpec\.{field.name}: .*send text"):
        JobSpec(**{"prompt": "a", field.name: 5})


@pytest.mark.parametrize("name", ["prompt", "prior", "generator"])
def test_required_text_must_not_be_blank(name):
    with pytest.raises(JobSpecError, match=rf"JobSpec\.{name}: must be a non-empty"):
        JobSpec(**{"prompt": "a", name: "   "})


def test_choices_ranges_and_pairs_name_the_field_and_the_fix():
    with pytest.raises(JobSpecError, match="method: unknown method 'xx'; choose one of sds, csd"):
        JobSpec(prompt="a", method="xx")
    with pytest.raises(JobSpecError, match=r"mesh_resolution: is 8; .*0 \(the mode's default.*\) or 16\.\.512"):
        JobSpec(prompt="a", mesh_resolution=8)
    with pytest.raises(JobSpecError, match=r"elevation_range: is \(50, 10\); the first number must not exceed"):
        JobSpec(prompt="a", elevation_range=(50, 10))
    with pytest.raises(JobSpecError, match=r"fov_range: is 180; use 1\.\.179"):
        JobSpec(prompt="a", fov_range=(40, 180))
    with pytest.raises(JobSpecError, match="distance_range: .*pair"):
        JobSpec(prompt="a", distance_range=(1.0, 2.0, 3.0))
    with pytest.raises(JobSpecError, match=r"guidance: is -1; use >= 0; 0 = the method's paper default"):
        JobSpec(prompt="a", guidance=-1)
    JobSpec(prompt="a", mesh_resolution=0, texture_size=0, guidance=0, preview_every=0)  # 0 has its meaning


def test_mesh_resolution_and_faces_zero_means_the_modes_default():
    assert JobSpec(prompt="a cube").mesh_grid == 128
    assert JobSpec(prompt="a cube", mode="instant").mesh_grid == 64
    assert JobSpec(prompt="a cube", mode="instant", mesh_resolution=96).mesh_grid == 96
    assert JobSpec(prompt="a cube").face_budget == 20_000
    assert JobSpec(prompt="a cube", mode="instant").face_budget == 5_000
    assert JobSpec(prompt="a cube", mode="instant", refine_steps=100).face_budget == 20_000  # a per-prompt asset


def test_an_instant_draft_bakes_at_most_512_texels_and_a_refined_asset_the_full_size():
    assert JobSpec(prompt="a cube").bake_size == 1024
    assert JobSpec(prompt="a cube", texture_size=2048).bake_size == 2048
    assert JobSpec(prompt="a cube", mode="instant").bake_size == 512
    assert JobSpec(prompt="a cube", mode="instant", texture_size=256).bake_size == 256
    assert JobSpec(prompt="a cube", mode="instant", texture_size=0).bake_size == 0  # vertex colours stay so
    assert JobSpec(prompt="a cube", mode="instant", refine_steps=100).bake_size == 1024


def test_options_are_bounded_plain_json_and_copied():
    theirs = {"eta": 0.1, "schedule": (0, 0.98, 0.5, 100)}
    spec = JobSpec(prompt="a", options=theirs)
    theirs["eta"] = 5.0
    assert spec.options == {"eta": 0.1, "schedule": [0, 0.98, 0.5, 100]}  # a copy, as JSON would carry it
    for bad, why in [
        ({"eta": math.nan}, "finite"),
        ({"a": {1, 2}}, "set"),
        ({1: 2}, "not text"),
        ({"blob": "x" * MAX_OPTIONS_BYTES}, f"more than {MAX_OPTIONS_BYTES} bytes"),
        ([1, 2], "object"),
    ]:
        with pytest.raises(JobSpecError, match=rf"JobSpec\.options: .*{why}"):
            JobSpec(prompt="a", options=bad)


@pytest.mark.parametrize("depth", [MAX_OPTIONS_DEPTH + 1, 600, 200_000])
def test_deep_options_are_refused_without_recursion(depth):
    nested = 1
    for _ in range(depth - 1):
        nested = [nested]
    with pytest.raises(JobSpecError, match=f"options: nested deeper than {MAX_OPTIONS_DEPTH} levels"):
        JobSpec(prompt="a", options={"x": nested})
    ok = 1
    for _ in range(MAX_OPTIONS_DEPTH - 2):
        ok = [ok]
    assert JobSpec(prompt="a", options={"x": ok}).options == {"x": ok}


def test_from_dict_and_from_json_refuse_what_is_not_a_spec():
    with pytest.raises(JobSpecError, match=r"unknown field\(s\) \['3', 'bogus'\]"):
        JobSpec.from_dict({"prompt": "a", "bogus": 1, 3: 4})
    with pytest.raises(JobSpecError, match="JobSpec.prompt: missing"):
        JobSpec.from_dict({"steps": 3})
    with pytest.raises(JobSpecError, match="expected an object"):
        JobSpec.from_dict(["prompt", "a"])
    with pytest.raises(JobSpecError, match="not valid JSON"):
        JobSpec.from_json("{")
    with pytest.raises(JobSpecError, match="not valid JSON"):
        JobSpec.from_json("[" * 100_000 + "]" * 100_000)  # deeper than Python's JSON parser goes


def test_assignment_is_checked_and_keeps_the_old_value_on_error():
    spec = JobSpec(prompt="a")
    with pytest.raises(JobSpecError, match="steps"):
        spec.steps = 0
    assert spec.steps == 400
    spec.steps = 12
    assert spec.steps == 12
    replaced = dataclasses.replace(spec, seed=3)
    assert (replaced.seed, replaced.steps) == (3, 12)
    with pytest.raises(JobSpecError, match="seed"):
        dataclasses.replace(spec, seed=-1)


def test_validate_catches_options_changed_in_place():
    spec = JobSpec(prompt="a", options={"eta": 0.1})
    assert spec.validate() is spec
    spec.options["eta"] = math.inf
    with pytest.raises(JobSpecError, match="options"):
        spec.validate()


def test_summary_holds_the_status_fields():
    spec = JobSpec(prompt="a red cube", method="asd", steps=12, seed=4)
    assert spec.summary() == {"prompt": "a red cube", "method": "asd", "mode": "optimize", "steps": 12}


def test_a_new_field_is_one_declaration():
    @dataclasses.dataclass
    class Extended(JobSpec):
        surface_steps: int = setting(0, label="Surface Steps", help="mesh refinement steps", minimum=0, maximum=99)

    spec = Extended(prompt="a", surface_steps=5)
    assert Extended.from_json(spec.to_json()) == spec and spec.to_dict()["surface_steps"] == 5
    with pytest.raises(JobSpecError, match=r"Extended\.surface_steps: is 100; use a whole number, 0\.\.99"):
        Extended(prompt="a", surface_steps=100)


def test_a_field_without_a_setting_or_bound_is_a_declaration_error():
    @dataclasses.dataclass
    class Bare(JobSpec):
        extra: int = 0

    with pytest.raises(TypeError, match=r"Bare\.extra: declare it with setting"):
        Bare(prompt="a")

    @dataclasses.dataclass
    class Unbounded(JobSpec):
        note: str = setting("", label="Note", help="free text")

    with pytest.raises(TypeError, match=r"Unbounded\.note: a text setting needs max_chars"):
        Unbounded(prompt="a")


# --- the stages ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "steps, plan",
    [
        (400, (("density", 200), ("geometry", 150), ("texture", 50))),
        (481, (("density", 241), ("geometry", 180), ("texture", 60))),  # the shares round down
        (8, (("density", 4), ("geometry", 3), ("texture", 1))),
        (4, (("density", 3), ("geometry", 1))),  # a stage of 0 steps is left out
        (2, (("density", 1), ("geometry", 1))),  # from 2 steps on the geometry stage has a step
        (1, (("density", 1),)),
    ],
)
def test_the_surface_stage_takes_its_shares_of_the_steps(steps, plan):
    spec = JobSpec(prompt="a", steps=steps)
    assert spec.surface and spec.stage_plan == plan and sum(n for _, n in plan) == steps


def test_given_stage_steps_are_kept_and_the_density_stage_gets_the_rest():
    spec = JobSpec(prompt="a", steps=100, geometry_steps=30, texture_steps=5)
    assert spec.stage_plan == (("density", 65), ("geometry", 30), ("texture", 5))
    assert JobSpec(prompt="a", steps=100, geometry_steps=30).stage_plan[-1] == ("texture", 12)


def test_without_the_surface_stage_every_step_optimizes_the_density_field():
    assert JobSpec(prompt="a", steps=50, surface=False, geometry_steps=70).stage_plan == (("optimize", 50),)


@pytest.mark.parametrize("surface", (True, False))
def test_a_job_on_a_given_mesh_has_one_stage_named_by_its_mode(surface):
    texture = JobSpec(prompt="a", mode="texture", steps=50, surface=surface, geometry_steps=70)
    assert texture.stage_plan == (("texture", 50),)
    assert JobSpec(prompt="a", mode="refine", steps=7, surface=surface).stage_plan == (("geometry", 7),)


def test_stages_that_leave_no_density_step_are_refused_naming_what_to_change():
    with pytest.raises(JobSpecError, match=r"steps: is 10, and geometry_steps 9 \+ texture_steps 1 leave"):
        JobSpec(prompt="a", steps=10, geometry_steps=9, texture_steps=1)
    spec = JobSpec(prompt="a", steps=100, geometry_steps=60)
    with pytest.raises(JobSpecError, match="turn the surface stage off"):
        dataclasses.replace(spec, steps=60)
    spec.steps = 60  # assignment checks the field alone; validate() checks the stages too
    with pytest.raises(JobSpecError, match="raise steps above 67"):
        spec.validate()
