"""The add-on's job properties are generated from the JobSpec (bpy 5.0.1): defaults, limits and labels come from the
field Settings, settings -> JobSpec -> settings round-trips, and a new JobSpec field reaches the property group, the
operators and both copies with no edit in the add-on."""

from __future__ import annotations

import dataclasses
import os
import tempfile

import pytest

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="dreamstill-blender-user-"))
bpy = pytest.importorskip("bpy")

from dreamstill.blender_addon import properties  # noqa: E402
from dreamstill.protocol import METHODS, JobSpec, JobSpecError, setting, spec_fields  # noqa: E402


@dataclasses.dataclass
class Extended(JobSpec):
    """A JobSpec with settings of every kind that JobSpec itself does not use yet."""

    surface_steps: int = setting(
        0, label="Surface Steps", help="mesh refinement steps", group="output", minimum=0, maximum=1000
    )
    surface_refine: bool = setting(False, label="Refine Surface", help="refine the surface after meshing")
    surface_note: str = setting("", label="Note", help="a note for the surface stage", max_chars=40)


def _group_class(name: str, spec_class: type):
    return type(name, (bpy.types.PropertyGroup,), {"__annotations__": properties.job_annotations(spec_class)})


@pytest.fixture
def groups():
    """Two property groups on the scene: the generated JobSpec settings and the Extended ones."""
    classes = [_group_class("DSTEST_PG_job", JobSpec), _group_class("DSTEST_PG_extended", Extended)]
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.dstest_job = bpy.props.PointerProperty(type=classes[0])
    bpy.types.Scene.dstest_extended = bpy.props.PointerProperty(type=classes[1])
    scene = bpy.context.scene
    yield scene.dstest_job, scene.dstest_extended
    del bpy.types.Scene.dstest_job, bpy.types.Scene.dstest_extended
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)


def test_fresh_settings_are_the_jobspec_defaults(groups):
    job, _ = groups
    assert properties.spec_from(job, prompt="a red cube") == JobSpec(prompt="a red cube")
    assert job.mesh_every == JobSpec(prompt="x").mesh_every  # one default (the add-on used to say 100, JobSpec 0)


def test_limits_labels_and_help_come_from_the_settings(groups):
    job, _ = groups
    rna = job.bl_rna.properties
    for field in spec_fields():
        prop = rna[properties.property_name(field)]
        assert prop.name == field.setting.label and prop.description, field.name
        if field.kind == "integer" and field.setting.maximum is not None:
            assert prop.hard_max == field.setting.maximum, field.name
    assert (rna["steps"].hard_min, rna["resolution"].hard_min, rna["resolution"].hard_max) == (1, 0, 1024)
    assert rna["elevation_range"].array_length == 2 and rna["elevation_range"].hard_min == -90.0
    assert tuple(i.identifier for i in rna["method"].enum_items) == METHODS
    assert "degrees" in rna["fov_range"].description and "pixels" in rna["texture_size"].description


def test_settings_round_trip_through_a_jobspec(groups):
    job, _ = groups
    spec = JobSpec(
        prompt="a blue torus",
        method="vsd",
        mode="instant",
        steps=123,
        seed=9,
        guidance=7.5,
        prior="some/hub-id",
        generator="run/generator.pt",
        negative_prompt="blurry",
        elevation_range=(0.0, 30.0),
        fov_range=(30.0, 60.0),
        distance_range=(2.0, 4.0),
        output_format="obj",
        mesh_every=0,
        options={"eta": 0.25},
    )
    properties.load_spec_into(job, spec)
    assert job.options_json == '{"eta": 0.25}' and tuple(job.fov_range) == (30.0, 60.0)
    assert properties.spec_from(job) == spec
    job.prior = "   "  # a cleared text field with a default falls back to it
    assert properties.spec_from(job).prior == "builtin"


def test_bad_settings_name_the_field(groups):
    job, _ = groups
    job.prompt = "a cube"
    job.elevation_range = (40.0, 10.0)
    with pytest.raises(JobSpecError, match="elevation_range: .*first number must not exceed"):
        properties.spec_from(job)
    job.elevation_range = (0.0, 10.0)
    job.options_json = "{bad"
    with pytest.raises(JobSpecError, match=r'Options: not valid JSON .*write e.g. \{"shift_ratio": 0.1\}'):
        properties.spec_from(job)
    job.options_json = "[1]"
    with pytest.raises(JobSpecError, match="Options: must be a JSON object"):
        properties.spec_from(job)


def test_a_new_jobspec_field_reaches_the_panel_settings_and_both_copies(groups):
    _, ext = groups
    rna = ext.bl_rna.properties
    assert rna["surface_steps"].hard_max == 1000 and rna["surface_refine"].type == "BOOLEAN"
    ext.prompt, ext.surface_steps, ext.surface_refine, ext.surface_note = "a cube", 12, True, "smooth"
    spec = properties.spec_from(ext, spec_class=Extended)
    assert isinstance(spec, Extended) and (spec.surface_steps, spec.surface_refine, spec.surface_note) == (
        12,
        True,
        "smooth",
    )
    properties.load_spec_into(ext, dataclasses.replace(spec, surface_steps=30, surface_refine=False))
    assert (ext.surface_steps, ext.surface_refine) == (30, False)


def test_a_new_jobspec_field_reaches_the_operators(groups):
    _, ext = groups
    ext.prompt, ext.surface_steps = "from the scene", 5
    seen = []

    class DSTEST_OT_submit(bpy.types.Operator):
        bl_idname = "dstest.submit"
        bl_label = "Submit (test)"
        __annotations__ = properties.job_annotations(Extended)

        def execute(self, context):
            values = properties.job_values(self, context.scene.dstest_extended, spec_class=Extended)
            seen.append(properties.spec_from(values, spec_class=Extended))
            return {"FINISHED"}

    bpy.utils.register_class(DSTEST_OT_submit)
    try:
        assert "surface_steps" in bpy.ops.dstest.submit.get_rna_type().properties.keys()
        assert bpy.ops.dstest.submit(surface_steps=7, steps=9) == {"FINISHED"}
        assert bpy.ops.dstest.submit() == {"FINISHED"}
    finally:
        bpy.utils.unregister_class(DSTEST_OT_submit)
    given, unset = seen
    assert (given.surface_steps, given.steps, given.prompt) == (7, 9, "from the scene")  # set: the operator's
    assert (unset.surface_steps, unset.steps) == (5, 400)  # unset: the scene's values


def test_the_addon_uses_the_protocols_address_policy():
    from dreamstill.blender_addon import clients, proto
    from dreamstill.protocol import DEFAULT_ADDRESS, is_loopback

    assert clients.is_loopback is is_loopback and proto.DEFAULT_ADDRESS == DEFAULT_ADDRESS
    assert not clients.is_loopback("tcp://127.example.com:5555")
