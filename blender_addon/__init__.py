"""Dreamstill for Blender: a sidebar tab that turns a text prompt into a textured 3D asset, live.

The add-on is a thin client: it sends a JobSpec to a Dreamstill backend (``dreamstill serve``) over ZeroMQ and
applies the streamed progress, previews and meshes to the scene on the main thread. Modules:

    properties.py   scene settings, the saved queue, JobSpec from settings
    operators.py    bpy.ops.dreamstill.* (connect, start_backend, generate, batch, cancel, wait, import_result ...)
    panel.py        the sidebar tab (drawing only)
    preferences.py  address, CURVE keys, start command, output folder
    session.py      clients, followed jobs, the pump and its timer, the local backend process
    live.py         in-place updates of meshes, images and materials
    batch.py        prompt lists, the grid, the load_post handler that resumes the queue
    proto.py        where the protocol comes from (vendored in the built zip, or installed)

Disabling the add-on stops its timer, closes its sockets, stops a backend it started and removes its handlers.
"""

import bpy

from . import batch, operators, panel, preferences, properties, session

_classes = (*preferences.classes, *operators.classes, *panel.classes)


def register():
    properties.register()
    for cls in _classes:
        bpy.utils.register_class(cls)
    batch.register()


def unregister():
    session.stop_timer()
    session.close_all()
    session.stop_backend()
    batch.unregister()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
    properties.unregister()
