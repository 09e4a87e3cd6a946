"""Add-on preferences: backend address, CURVE keys, the command that starts a local backend, the output folder;
:func:`prefs` reads them (defaults when the add-on's preferences are not registered) and :func:`output_dir` resolves
the folder results are downloaded to."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import bpy
from bpy.props import FloatProperty, StringProperty
from bpy.types import AddonPreferences

from .proto import DEFAULT_ADDRESS

BACKEND_COMMAND = "dreamstill serve --bind {address}"


class DREAMSTILL_AP_preferences(AddonPreferences):
    bl_idname = __package__

    __annotations__ = {
        "address": StringProperty(
            name="Backend Address",
            default=DEFAULT_ADDRESS,
            description=f"Where `dreamstill serve` listens, e.g. {DEFAULT_ADDRESS}",
        ),
        "keys_dir": StringProperty(
            name="CURVE Keys",
            subtype="DIR_PATH",
            default="",
            description="Folder made by `dreamstill keys -o DIR` (server.public, client.public, "
            "client.secret); needed for a backend on another machine",
        ),
        "backend_command": StringProperty(
            name="Start Command",
            default=BACKEND_COMMAND,
            description="Command that starts a local backend; {address} is replaced",
        ),
        "output_dir": StringProperty(
            name="Output Folder",
            subtype="DIR_PATH",
            default="//dreamstill/",
            description="Where result files are downloaded (// = next to the .blend)",
        ),
        "timeout_s": FloatProperty(
            name="Timeout",
            default=10.0,
            min=0.5,
            soft_max=120.0,
            unit="TIME_ABSOLUTE",
            description="Seconds without an answer before the backend counts as down",
        ),
    }

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "address")
        layout.prop(self, "keys_dir")
        layout.prop(self, "backend_command")
        layout.prop(self, "output_dir")
        layout.prop(self, "timeout_s")


def prefs():
    """The add-on preferences, or the defaults when the add-on's preferences are not registered."""
    addon = bpy.context.preferences.addons.get(__package__)
    if addon is not None and addon.preferences is not None:
        return addon.preferences
    return SimpleNamespace(
        address=DEFAULT_ADDRESS, keys_dir="", backend_command=BACKEND_COMMAND, output_dir="", timeout_s=10.0
    )


def output_dir() -> Path:
    """Where results are fetched to: the preferences' folder (``//`` = next to the .blend) or a temp folder."""
    folder = (prefs().output_dir or "").strip()
    if folder.startswith("//") and not bpy.data.filepath:
        folder = ""
    path = Path(bpy.path.abspath(folder)) if folder else Path(tempfile.gettempdir()) / "dreamstill"
    path.mkdir(parents=True, exist_ok=True)
    return path


classes = (DREAMSTILL_AP_preferences,)
