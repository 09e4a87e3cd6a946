"""Job options shared by `dreamstill generate`, `submit` and `batch`, generated from the JobSpec's field Settings.

Every JobSpec field becomes a flag (``--name-with-dashes`` unless its Setting names another), in the argument group
of its Setting, with help that gives the units, the accepted range or choices and the default. Flags default to
None, so :func:`spec_from_args` passes only what was given and the JobSpec's own defaults apply: one default per
setting. Two command-line conveniences sit on top: a flag's Setting may imply other fields (``--generator`` implies
``--mode instant``), and without ``--format`` the output file's suffix picks the format. ``--input-mesh FILE``
(generate, submit) reads the mesh a texture or refine job works on and implies ``--mode texture``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from dreamstill.protocol import FORMATS, GROUPS, JobSpec, SpecField, spec_fields


def flag_of(field: SpecField) -> str:
    return field.setting.flag or "--" + field.name.replace("_", "-")


def dest_of(field: SpecField) -> str:
    return flag_of(field).lstrip("-").replace("-", "_")


def _default_text(field: SpecField) -> str:
    if not field.has_default:
        return ""
    value = field.default
    if field.kind == "pair":
        value = " ".join(f"{x:g}" for x in value)
    elif field.kind == "json":
        value = json.dumps(value) if value else "none"
    elif isinstance(value, str):
        value = repr(value) if value == "" else value
    return f" (default: {value})"


def help_of(field: SpecField, extra: str = "") -> str:
    """The flag's help: the Setting's help, what 0 means, the choices, ``extra``, the default; '%' escaped for
    argparse."""
    s = field.setting
    text = s.help
    if s.zero_means:
        text += f"; 0 = {s.zero_means}"
    if s.choices:
        text += "; " + ", ".join(f"{value} = {description}" for value, _, description in s.choices)
    return (text + extra + _default_text(field)).replace("%", "%%")


def method_option_keys() -> str:
    """Each distillation method's option keys (distill.option_names: its Config's fields, sub-configs flattened), imported only when asked for."""
    from dreamstill.backend.distill import METHODS, option_names

    keys = {}
    for name in METHODS:
        try:
            keys[name] = option_names(name)
        except ImportError as err:
            keys[name] = [f"(unavailable: {err})"]
    shared = set.intersection(*(set(k) for k in keys.values())) if keys else set()
    lines = [f"every method: {', '.join(sorted(shared))}"]
    lines += [f"{name}: {', '.join(k for k in ks if k not in shared) or '-'}" for name, ks in keys.items()]
    return "; ".join(lines)


class KeyValueAction(argparse.Action):
    """``--option KEY=VALUE``, repeatable, collected as a list; VALUE is parsed as JSON when it can be.

    Its help ends with each method's accepted keys, computed only when help is printed (that imports torch)."""

    def __init__(self, option_strings, dest, **kwargs):
        kwargs.setdefault("default", None)
        super().__init__(option_strings, dest, **kwargs)

    @property
    def help(self) -> str:
        return self._help + (" Accepted keys: " + method_option_keys().replace("%", "%%") if self._help else "")

    @help.setter
    def help(self, value) -> None:
        self._help = value or ""

    def __call__(self, parser, namespace, value, option_string=None):
        key, sep, _ = value.partition("=")
        if not sep or not key:
            parser.error(f"{option_string} {value!r}: write it as KEY=VALUE, e.g. {option_string} shift_ratio=0.1")
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), value])


def _add_flag(group, field: SpecField) -> None:
    common = {"dest": dest_of(field), "default": None, "help": help_of(field)}
    kind = field.kind
    if kind == "choice":
        group.add_argument(flag_of(field), choices=field.setting.choice_values, **common)
    elif kind == "text":
        group.add_argument(flag_of(field), metavar="TEXT", **common)
    elif kind == "integer":
        group.add_argument(flag_of(field), type=int, metavar="N", **common)
    elif kind == "number":
        group.add_argument(flag_of(field), type=float, metavar="X", **common)
    elif kind == "pair":
        group.add_argument(flag_of(field), type=float, nargs=2, metavar=("LO", "HI"), **common)
    elif kind == "flag":
        group.add_argument(flag_of(field), action=argparse.BooleanOptionalAction, **common)
    elif kind == "json":
        common["help"] = help_of(field, "; one KEY=VALUE per flag, VALUE parsed as JSON when it can be") + "."
        group.add_argument(flag_of(field), action=KeyValueAction, metavar="KEY=VALUE", **common)
    else:  # a kind added to protocol/schema.py must be given a flag here
        raise TypeError(f"no command-line flag for a {kind!r} setting ({field.name})")


def add_prompt_argument(parser: argparse.ArgumentParser, spec_class: type = JobSpec) -> None:
    """The positional field(s) (the prompt), with their help."""
    for field in spec_fields(spec_class):
        if field.setting.positional:
            parser.add_argument(field.name, help=help_of(field))


def add_job_arguments(parser: argparse.ArgumentParser, spec_class: type = JobSpec) -> None:
    """Every non-positional JobSpec field as a flag, grouped as the Settings say."""
    fields = [f for f in spec_fields(spec_class) if not f.setting.positional]
    order = list(GROUPS) + sorted({f.setting.group for f in fields} - set(GROUPS))
    for name in order:
        members = [f for f in fields if f.setting.group == name]
        if members:
            group = parser.add_argument_group(f"{GROUPS.get(name, name).lower()} settings")
            for field in members:
                _add_flag(group, field)


def parse_options(pairs: list[str]) -> dict:
    """``["shift_ratio=0.1", "name=x"]`` -> ``{"shift_ratio": 0.1, "name": "x"}`` (VALUE as JSON when it parses, else text)."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--option {pair!r}: write it as KEY=VALUE, e.g. --option shift_ratio=0.1")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def format_for(output: Path | None, explicit: str | None) -> str | None:
    """--format wins; otherwise the output suffix decides; None when neither says (the JobSpec default)."""
    if explicit:
        return explicit
    if output is not None and output.suffix:
        suffix = output.suffix.lower().lstrip(".")
        if suffix not in FORMATS:
            raise SystemExit(
                f"output {output}: unknown suffix .{suffix}; use one of {', '.join('.' + f for f in FORMATS)}"
            )
        return suffix
    return None


def spec_from_args(
    args: argparse.Namespace, prompt: str, output: Path | None = None, spec_class: type = JobSpec
) -> JobSpec:
    """The JobSpec of the parsed flags (JobSpecError naming the field to fix); unset flags keep the defaults."""
    fields = spec_fields(spec_class)
    given = {}
    for field in fields:
        value = None if field.setting.positional else getattr(args, dest_of(field), None)
        if value is None:
            continue
        given[field.name] = parse_options(value) if field.kind == "json" else value
    values = dict(given)
    for field in fields:
        if field.name in given:
            for other, implied in field.setting.implies:
                values.setdefault(other, implied)
    fmt = format_for(output, values.get("output_format"))
    if fmt is not None:
        values["output_format"] = fmt
    return spec_class(**{f.name: prompt for f in fields if f.setting.positional}, **values)


def add_input_mesh_argument(parser: argparse.ArgumentParser) -> None:
    """``--input-mesh FILE``: the mesh a texture or refine job works on."""
    parser.add_argument(
        "--input-mesh",
        type=Path,
        default=None,
        metavar="FILE",
        help="a mesh (.glb .gltf .obj .ply .stl .off) to paint, its geometry kept (implies --mode texture), or to "
        "start the shape from (--mode refine); its own UVs are used when it has them",
    )


def with_input_mesh(args: argparse.Namespace, spec: JobSpec):
    """(spec, the InputMesh of --input-mesh or None). --input-mesh without --mode means --mode texture;
    JobSpecError when the mode and the mesh do not go together, FileNotFoundError / ValueError for the file."""
    from dreamstill.protocol import check_mesh_for_mode

    path = getattr(args, "input_mesh", None)
    if path is None:
        return spec, None
    from .mesh.input import load_input_mesh

    if getattr(args, "mode", None) is None:
        spec = dataclasses.replace(spec, mode="texture")
    check_mesh_for_mode(spec.mode, True)
    return spec, load_input_mesh(path)
