"""The saved queue (``scene.dreamstill.queue``): sending an item's JobSpec, the object it fills, and resuming.

A texture or refine item names its ``source``, the artist's object whose mesh is read and sent each time the item is
submitted (also when a reopened .blend resubmits it); a texture item (``texture_only``) fills that very object, a
refine item a new object beside it.

What is saved with the .blend is the queue; what lives only in memory (clients, followed jobs) is rebuilt from it on
load (:func:`resume`).
"""

from __future__ import annotations

import json

import bpy

from . import clients, follow, live, painting, placement, scene_mesh
from .proto import JobSpec, client_api, protocol


def spec_json(spec: JobSpec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True)


def item_mesh(item, spec: JobSpec):
    """The mesh a texture or refine item sends: its source object's, read now (None for the other modes).
    ValueError when the object is gone or its mesh cannot travel (MeshTooLarge says how to decimate)."""
    if spec.mode not in protocol.MESH_MODES:
        return None
    source = bpy.data.objects.get(item.source)
    if source is None:
        raise ValueError(f"the object {item.source!r} this {spec.mode} job works on is gone; select a mesh again")
    sent = scene_mesh.read_mesh(source)
    if item.texture_only:
        scene_mesh.check_paintable(source, sent)
        layer = source.data.uv_layers.active
        source[painting.UV_PROPERTY] = layer.name if sent.uvs is not None and layer is not None else ""
    return sent


def submit_item(scene, item) -> str:
    """Send a queue item's JobSpec (and its source object's mesh for texture and refine jobs); its job id.
    ServerUnavailable / JobSpecError / ServerError / ValueError (the mesh) / ProtocolError propagate."""
    spec = JobSpec.from_json(item.spec_json)
    mesh = item_mesh(item, spec)
    job_id = clients.client_for(item.address).submit(spec, mesh=mesh)
    item.job_id = job_id
    item.state = "SUBMITTED"
    item.message = ""
    obj = follow.asset_object(item)
    if obj is not None:
        obj["dreamstill_job_id"] = job_id
        obj["dreamstill_spec"] = item.spec_json
        obj["dreamstill_state"] = "submitted"
    follow.follow(job_id, item.address, scene)
    return job_id


def ensure_object(scene, item):
    """The item's object, made when missing: named after the prompt, at the item's location, in the Dreamstill
    collection (or its batch's), carrying the asset size that streamed meshes are scaled to."""
    obj = follow.asset_object(item)
    if item.texture_only:  # the artist's own object: never made here, never resized
        return obj
    if obj is None:
        coll = live.child_collection(scene, item.batch) if item.batch else live.root_collection(scene)
        obj = live.new_asset_object(placement.asset_name(item.prompt), item.location, coll)
        item.object_name = obj.name
        if item.job_id:
            obj["dreamstill_job_id"] = item.job_id
    obj[live.SIZE_PROPERTY] = float(item.size)
    return obj


def _resume_item(scene, item, api) -> None:
    clients.client_for(item.address).ping()
    ensure_object(scene, item)
    if item.state == "SUBMITTED" and item.job_id:
        try:
            clients.client_for(item.address).attach(item.job_id)
            follow.follow(item.job_id, item.address, scene)
            return
        except api.ServerError as err:
            if err.code != "unknown_job":
                raise
            item.message = "resubmitted: the backend did not know the job (a fresh job store)"
    submit_item(scene, item)


def resume(scenes=None) -> list[str]:
    """Follow again every unfinished queue item (after loading a .blend): attach to submitted jobs, send pending
    ones. Returns messages about items that could not be resumed (they stay in the queue for a later try)."""
    api = client_api()
    problems = []
    down: dict[str, str] = {}  # address -> why; each address is tried once, so a dead backend costs one timeout
    for scene in scenes if scenes is not None else bpy.data.scenes:
        for item in scene.dreamstill.queue:
            if item.state not in ("PENDING", "SUBMITTED") or item.job_id in follow.JOBS:
                continue
            if item.address in down:
                item.message = down[item.address]
                continue
            try:
                _resume_item(scene, item, api)
            except api.ServerUnavailable as err:
                item.message = down[item.address] = f"not resumed (press Resume once the backend runs): {err}"
                clients.drop_client(item.address)
                problems.append(item.message)
            except (ValueError, OSError, api.ServerError) as err:
                item.state, item.message = "FAILED", f"not resumed: {err}"
                problems.append(item.message)
    return problems
