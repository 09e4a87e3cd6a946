"""`dreamstill batch` against a server running the fake engine: results, contact sheet, resume, bad input."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from dreamstill.backend.batch.commands import register
from dreamstill.backend.batch.prompts import output_name, read_prompts
from dreamstill.backend.server.testing import FAKE_JOB_FLAGS, FAKE_RUNNER, result_bytes
from dreamstill.protocol.client import Client

RUNNER, FAKE = FAKE_RUNNER, FAKE_JOB_FLAGS


def run_cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="dreamstill")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def server(fake_server):
    return fake_server


def job_count(server) -> int:
    with Client(server.address, timeout_s=20) as c:
        return len(c.list_jobs(limit=1000))


def test_batch_writes_one_file_per_prompt_a_contact_sheet_and_resumes(server, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n\n# a comment\na blue sphere\na green torus\n")
    out = tmp_path / "out"
    before = job_count(server)
    assert run_cli("batch", prompts, "-o", out, "--server", server.address, *FAKE) == 0
    names = [output_name(i, p, "glb") for i, p in enumerate(read_prompts(prompts), 1)]
    assert names[0] == "001_a_red_cube.glb"
    assert [(out / n).read_bytes() for n in names] == [result_bytes(0, 1000)] * 3
    assert (out / "contact_sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "previews").glob("*.png"))) == 3
    assert job_count(server) == before + 3
    (out / names[1]).unlink()  # interrupted after the job finished, before its file was written
    (out / names[0]).write_bytes(b"truncated")  # damaged after it was written: the record no longer matches
    assert run_cli("batch", prompts, "-o", out, "--server", server.address, *FAKE) == 0
    assert (out / names[0]).read_bytes() == (out / names[1]).read_bytes() == result_bytes(0, 1000)
    assert job_count(server) == before + 3  # fetched again from the server, not recomputed
    (out / names[2]).unlink()  # interrupted before the job was even submitted
    state = json.loads((out / ".batch_jobs.json").read_text())
    del state[names[2]]
    (out / ".batch_jobs.json").write_text(json.dumps(state))
    assert run_cli("batch", prompts, "-o", out, "--server", server.address, *FAKE) == 0
    assert (out / names[2]).exists() and job_count(server) == before + 4  # only the missing one ran again


def test_batch_reports_a_failed_prompt_and_keeps_the_others(server, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\n")
    args = ("batch", prompts, "-o", tmp_path / "out", "--server", server.address, "--steps", "3", "--quiet")
    assert run_cli(*args, "--option", "fake_crash_at=2") == 1
    assert "fake crash" in capsys.readouterr().err
    assert not (tmp_path / "out" / "001_a_red_cube.glb").exists()
    assert run_cli(*args) == 0  # the failed job is submitted again, not re-attached
    assert (tmp_path / "out" / "001_a_red_cube.glb").exists()


def test_bad_input_exits_2_and_says_what_to_change(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    assert run_cli("batch", empty, "-o", tmp_path / "o", "--quiet") == 2
    assert "no prompts" in capsys.readouterr().err
    assert run_cli("batch", tmp_path / "missing.txt", "-o", tmp_path / "o", "--quiet") == 2
    assert "cannot read" in capsys.readouterr().err
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\n")
    assert run_cli("batch", prompts, "-o", tmp_path / "o", "--scene", tmp_path / "s.fbx", "--quiet") == 2
    assert ".usda" in capsys.readouterr().err
    assert run_cli("batch", prompts, "-o", tmp_path / "o", "--steps", "0", "--quiet") == 2
    assert "steps" in capsys.readouterr().err
    assert run_cli("batch", prompts, "-o", tmp_path / "o", "--ray", "local", "--ray-cpus", "0", "--quiet") == 2
    assert "--ray-cpus" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing was started


def test_no_server_exits_3_and_keeps_nothing_half_done(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\n")
    out = tmp_path / "o"
    code = run_cli("batch", prompts, "-o", out, "--server", f"tcp://127.0.0.1:{port}", "--timeout", "0.5", "--quiet")
    assert code == 3
    assert "run the same command again" in capsys.readouterr().err
    assert not list(out.glob("*.glb"))


def test_ray_missing_or_without_a_cluster_says_what_to_do(tmp_path, capsys, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\n")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "ray", None)  # as if Ray were not installed
        assert run_cli("batch", prompts, "-o", tmp_path / "o", "--ray", "local", "--quiet") == 2
    assert "dreamstill[ray]" in capsys.readouterr().err
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert run_cli("batch", prompts, "-o", tmp_path / "o", "--ray", "auto", "--quiet") == 3
    assert "ray start --head" in capsys.readouterr().err
    assert not list((tmp_path / "o").glob("*.glb"))
