"""Dreamstill for Blender: a sidebar tab that turns a text prompt into a textured 3D asset, live.

The add-on is a thin client: it sends a JobSpec to a Dreamstill backend (``dreamstill serve``) over ZeroMQ and
applies the streamed progress, previews and meshes to the scene on the main thread. Modules:

    properties.py       scene settings, the saved queue, JobSpec from settings
    panel_props.py      asset size, batch layout, a job's phase and warnings (merged into properties.py's groups)
    operators.py        bpy.ops.dreamstill.* (connect, start_backend, generate, batch, cancel, wait, import_result ...)
    mesh_operators.py   bpy.ops.dreamstill.texture / refine: work on the artist's selected mesh
    panel.py            the sidebar tab (drawing only)
    preferences.py      address, CURVE keys, start command, output folder
    clients.py          one client per backend address; the address policy
    follow.py           followed jobs: the pump, its timer, the blocking wait, applying events
    job_queue.py        the saved queue: submit, the object of an item, resume after loading a .blend
    backend_process.py  a local backend started by the add-on
    live.py             in-place updates of meshes, images and materials
    painting.py         a texture job's updates on the artist's own object (new material, its UV map)
    scene_mesh.py       reading an artist's mesh object for the backend
    batch.py            prompt lists, grid / curve layout, the load_post handler that resumes the queue
    proto.py            where the protocol comes from (vendored in the built zip, or installed); address policy

Without bpy (tests import them on their own): mesh_data.py (MeshUpdate <-> foreach_set arrays, the outgoing mesh
and its limits), placement.py (ground, size, grid, curve, names), reporting.py (progress lines, bar text, warnings).
This file imports the bpy modules only in register(), so those three import anywhere.

Disabling the add-on stops its timer, closes its sockets, stops a backend it started and removes its handlers.
"""


def _classes():
    from . import mesh_operators, operators, panel, preferences

    return (*preferences.classes, *operators.classes, *mesh_operators.classes, *panel.classes)


def register():
    import bpy

    from . import batch, properties

    properties.register()
    for cls in _classes():
        bpy.utils.register_class(cls)
    batch.register()


def unregister():
    import bpy

    from . import backend_process, batch, clients, follow, properties

    follow.stop_timer()
    follow.forget_all()
    clients.close_all()
    backend_process.stop_backend()
    batch.unregister()
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
    properties.unregister()
