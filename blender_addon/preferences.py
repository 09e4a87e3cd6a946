"""Add-on preferences: backend address, CURVE keys, the command that starts a local backend, the output folder."""

from __future__ import annotations

from bpy.props import FloatProperty, StringProperty
from bpy.types import AddonPreferences

from .proto import DEFAULT_ADDRESS


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
            default="dreamstill serve --bind {address}",
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


classes = (DREAMSTILL_AP_preferences,)
