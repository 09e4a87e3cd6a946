"""No path of the server's disk in text that leaves the server."""

from __future__ import annotations

from dreamstill.backend.server.redact import Redactor


def test_known_folders_become_labels_and_other_paths_disappear():
    redact = Redactor({"/srv/jobs": "<job store>", "/srv/jobs/models/sd": "prior 'sd'"})
    text = (
        "cannot write /srv/jobs/0001-ab/asset.glb: [Errno 28]; loading /srv/jobs/models/sd failed; "
        "see /home/alice/.cache/x.log and ~/secret.txt; server tcp://127.0.0.1:5555 at step 3/10"
    )
    out = redact(text)
    assert "/srv" not in out and "alice" not in out and "secret" not in out
    assert "<job store>/0001-ab/asset.glb" in out and "prior 'sd'" in out
    assert "tcp://127.0.0.1:5555" in out and "step 3/10" in out and out.count("<server path>") == 2
