"""Amortized training: a step changes the generator, resume continues the same run, DDP keeps replicas identical,
the shared shading schedule, and an exported generator serves instant jobs."""

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dreamstill.backend.generators.config import load_corpus


def weights(trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainer.generator.parameters()])


def test_toy_corpora_grow_and_heldout_is_disjoint():
    small, mid, large = load_corpus("toy16"), load_corpus("toy256"), load_corpus("toy2000")
    assert (len(small), len(mid), len(large)) == (16, 256, 2000)
    assert len(set(large)) == 2000
    heldout = load_corpus("toy2000", split="heldout")
    assert heldout and not set(heldout) & set(large)


def test_unknown_corpus_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="toy2000"):
        load_corpus(str(tmp_path / "nope.txt"))


def test_resume_continues_the_same_run(tiny_prior, tmp_path, tiny_train_config):
    from dreamstill.backend.generators.train import GeneratorTrainer

    config = tiny_train_config()
    full = GeneratorTrainer(config, tmp_path / "full", prior=tiny_prior)
    for _ in range(4):
        full.train_step()

    first = GeneratorTrainer(config, tmp_path / "part", prior=tiny_prior)
    before = weights(first).clone()
    for _ in range(2):
        first.train_step()
    assert not torch.equal(before, weights(first))
    path = first.save()
    resumed = GeneratorTrainer(config, tmp_path / "part", prior=tiny_prior)
    resumed.load(path)
    for _ in range(2):
        resumed.train_step()
    torch.testing.assert_close(weights(resumed), weights(full), rtol=0, atol=0)


def test_loss_log_of_a_resumed_run_is_the_uninterrupted_runs(tiny_prior, tmp_path, tiny_train_config):
    """losses.csv has a row per step; a run resumed from step 2 rewrites rows 3-4 (dropping what the cut run wrote
    after its checkpoint) and ends with the uninterrupted run's log, row for row."""
    from dreamstill.backend.generators.train import GeneratorTrainer

    config = tiny_train_config(checkpoint_every=2, keep_checkpoints=True)
    GeneratorTrainer(config, tmp_path / "full", prior=tiny_prior).train(progress=False)
    full = (tmp_path / "full" / "losses.csv").read_text().splitlines()
    assert full[0] == "step,loss" and [int(r.split(",")[0]) for r in full[1:]] == [1, 2, 3, 4]
    assert all(math.isfinite(float(r.split(",")[1])) for r in full[1:])

    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "losses.csv").write_text("\n".join(full[:3] + ["3,123", "4,456", "5,789"]) + "\n")  # cut after step 5
    resumed = GeneratorTrainer(config, cut, prior=tiny_prior)
    resumed.load(tmp_path / "full" / "checkpoints" / "step_000002.pt")
    resumed.train(progress=False)
    assert (cut / "losses.csv").read_text().splitlines() == full


def test_resume_names_changed_flags_and_accepts_older_checkpoints(tiny_prior, tmp_path, tiny_train_config):
    """Resuming with another setting says which one; a checkpoint from before a setting existed resumes when that
    setting is at its default (the behaviour of the code that wrote it), and not when it is changed."""
    from dreamstill.backend.generators.train import GeneratorTrainer

    config = tiny_train_config()
    path = GeneratorTrainer(config, tmp_path / "run", prior=tiny_prior).save()
    with pytest.raises(ValueError, match=r"lr=0\.004.*this run has lr=0\.001"):
        GeneratorTrainer(dataclasses.replace(config, lr=1e-3), tmp_path / "run", prior=tiny_prior).load(path)

    state = torch.load(path, weights_only=True)
    del state["config"]["keep_checkpoints"]  # as written before --keep-checkpoints existed
    torch.save(state, path)
    GeneratorTrainer(config, tmp_path / "run", prior=tiny_prior).load(path)
    with pytest.raises(ValueError, match="keep_checkpoints=False"):
        GeneratorTrainer(dataclasses.replace(config, keep_checkpoints=True), tmp_path / "run", prior=tiny_prior).load(
            path
        )


def test_cli_bad_corpus_and_changed_resume_fail_cleanly(tmp_path, toy_corpus):
    from dreamstill.backend.cli import main

    with pytest.raises(SystemExit, match="--corpus: corpus 'nope.txt'"):
        main(["train-generator", "--corpus", "nope.txt", "-o", str(tmp_path / "run")])
    run = [
        "train-generator",
        "--arch",
        "3dconv",
        "--prior",
        "tiny",
        "--corpus",
        toy_corpus,
        "--steps",
        "1",
        "--prompts-per-step",
        "1",
        "--resolution",
        "16",
        "--num-samples",
        "8",
        "--grid-every",
        "0",
        "-o",
        str(tmp_path / "run"),
    ]
    assert main(run) == 0
    with pytest.raises(SystemExit, match="--resume: .*seed=0; this run has seed=1"):
        main(run + ["--resume", "--seed", "1"])
    with pytest.raises(SystemExit, match="--resume: .*prior_dtype='auto'; this run has prior_dtype='bfloat16'"):
        main(run + ["--resume", "--prior-dtype", "bfloat16"])


def test_prior_dtype_picks_the_priors_precision_and_the_generator_stays_float32(tmp_path, tiny_train_config):
    """--prior-dtype bfloat16 on the CPU: the frozen prior runs in bf16 (as "auto" does on CUDA), the generator's
    weights and updates stay float32; "auto" on the CPU is float32."""
    from dreamstill.backend.generators.train import GeneratorTrainer

    auto = GeneratorTrainer(tiny_train_config(), tmp_path / "auto")
    assert auto.prior.dtype == torch.float32
    trainer = GeneratorTrainer(tiny_train_config(prior_dtype="bfloat16"), tmp_path / "bf16")
    assert trainer.prior.dtype == torch.bfloat16
    before = weights(trainer).clone()
    trainer.train_step()
    after = weights(trainer)
    assert after.dtype == torch.float32 and torch.isfinite(after).all()
    assert not torch.equal(before, after)


def test_kept_checkpoints_are_the_run_at_those_steps(tiny_prior, tmp_path, tiny_train_config):
    """--keep-checkpoints: checkpoints/step_N.pt is the run at step N (resumable, exportable), not overwritten."""
    from dreamstill.backend.generators.train import GeneratorTrainer

    trainer = GeneratorTrainer(
        tiny_train_config(checkpoint_every=2, keep_checkpoints=True),
        tmp_path / "run",
        prior=tiny_prior,
    )
    trainer.train(progress=False)
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["step_000002.pt", "step_000004.pt"]
    replay = GeneratorTrainer(
        tiny_train_config(checkpoint_every=2, keep_checkpoints=True),
        tmp_path / "replay",
        prior=tiny_prior,
    )
    for _ in range(2):
        replay.train_step()
    middle = torch.load(tmp_path / "run" / "checkpoints" / "step_000002.pt", weights_only=True)
    assert middle["step"] == 2
    for name, value in replay.generator.state_dict().items():
        torch.testing.assert_close(middle["generator"][name], value, rtol=0, atol=0)
    assert not torch.equal(weights(trainer), weights(replay))  # the last checkpoint moved on


def test_opacity_terms_match_their_closed_form_and_ramp(tiny_prior, tmp_path, tiny_train_config):
    """ScaleDreamer's configs: 20 * mean sqrt(o^2 + 0.01) + lambda_opaque(k) * mean entropy(o), lambda_opaque ramped
    from 0 at 80% of the steps to 10 at the last."""
    import math

    from dreamstill.backend.generators.train import GeneratorTrainer

    trainer = GeneratorTrainer(tiny_train_config(steps=100), tmp_path / "g", prior=tiny_prior)
    ramp = []
    for step in (0, 80, 90, 100):
        trainer.step = step
        ramp.append(trainer.opaque_weight())
    assert ramp == pytest.approx([0.0, 0.0, 5.0, 10.0])
    o = torch.full((2, 1, 4, 4), 0.3, requires_grad=True)
    trainer.step = 90
    loss = trainer._opacity_loss(o)
    entropy = -(0.3 * math.log(0.3) + 0.7 * math.log(0.7))
    assert float(loss.detach()) == pytest.approx(20 * math.sqrt(0.09 + 0.01) + 5.0 * entropy, rel=1e-5)
    loss.backward()  # d/do = [20 o / sqrt(o^2 + 0.01) + 5 log((1 - o) / o)] / 32 per pixel
    expected = (20 * 0.3 / math.sqrt(0.1) + 5.0 * math.log(0.7 / 0.3)) / 32
    torch.testing.assert_close(o.grad, torch.full_like(o, expected), rtol=1e-5, atol=0)


def test_init_from_starts_a_new_run_from_trained_weights(tiny_prior, tmp_path, tiny_train_config):
    from dreamstill.backend.generators.train import GeneratorTrainer

    trained = GeneratorTrainer(tiny_train_config(), tmp_path / "a", prior=tiny_prior)
    trained.train_step()
    path = trained.save()
    tuned = GeneratorTrainer(tiny_train_config(steps=10, lr=1e-3, seed=3), tmp_path / "b", prior=tiny_prior)
    assert not torch.equal(weights(tuned), weights(trained))
    tuned.init_from(path)
    assert torch.equal(weights(tuned), weights(trained)) and tuned.step == 0
    first_stage = {"config": dataclasses.asdict(trained.config), "step": 1}
    assert tuned.lineage == [first_stage]
    tuned.train_step()
    again = GeneratorTrainer(tiny_train_config(steps=10, lr=1e-3, seed=3), tmp_path / "d", prior=tiny_prior)
    again.init_from(tuned.save())  # a third stage names both earlier ones, oldest first
    assert again.lineage == [first_stage, {"config": dataclasses.asdict(tuned.config), "step": 1}]
    other = GeneratorTrainer(tiny_train_config(arch="triplane"), tmp_path / "c", prior=tiny_prior)
    with pytest.raises(ValueError, match="--arch"):
        other.init_from(path)


def test_two_process_torchrun_keeps_replicas_identical(tmp_path, toy_corpus):
    script = Path(__file__).parent / "helpers" / "ddp_generator_step.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tmp_path),
            toy_corpus,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(r0["before"], r1["before"])
    assert not torch.equal(r0["before"], r0["after"])  # the step did something
    torch.testing.assert_close(r0["after"], r1["after"], rtol=0, atol=1e-7)


def test_cli_generator_flag_implies_instant_mode():
    from dreamstill.backend.cli import build_parser
    from dreamstill.backend.cli_args import spec_from_args

    def spec(*argv):
        args = build_parser().parse_args(["generate", "a red cube", *argv])
        return spec_from_args(args, args.prompt, args.output)

    assert (spec().mode, spec().generator) == ("optimize", "builtin")
    assert (spec("--generator", "g.pt").mode, spec("--generator", "g.pt").generator) == ("instant", "g.pt")
    assert (spec("--mode", "instant").mode, spec("--mode", "instant").generator) == ("instant", "builtin")
    assert spec("--mode", "optimize", "--generator", "g.pt").mode == "optimize"


def test_exported_generator_drops_the_optimizer_and_still_serves(tiny_prior, tmp_path, tiny_train_config, capsys):
    import torch

    from dreamstill.backend.cli import main
    from dreamstill.backend.generators.train import GeneratorTrainer
    from dreamstill.backend.jobs import run_job
    from dreamstill.protocol import Done, JobSpec

    trainer = GeneratorTrainer(tiny_train_config(steps=1), tmp_path / "gen", prior=tiny_prior)
    trainer.train_step()
    trainer.save()
    assert main(["export-generator", str(tmp_path / "gen"), str(tmp_path / "small.pt")]) == 0
    assert "1 steps of asd on " in capsys.readouterr().out
    state = torch.load(tmp_path / "small.pt", weights_only=True)
    assert set(state) == {"config", "step", "lineage", "generator"} and state["step"] == 1
    assert state["lineage"] == []  # trained from scratch: no earlier stages
    spec = JobSpec(
        prompt="a red cube",
        mode="instant",
        generator=str(tmp_path / "small.pt"),
        prior="tiny",
        mesh_resolution=32,
        texture_size=0,
    )
    assert isinstance(list(run_job(spec, tmp_path / "out"))[-1], Done)
    with pytest.raises(SystemExit, match="not found"):
        main(["export-generator", str(tmp_path / "nothing"), str(tmp_path / "x.pt")])


def test_a_generators_lineage_reads_as_its_stages():
    from dreamstill.backend.generators.commands import stage_text

    asd = {"method": "asd", "corpus": "toy2000", "init_sdf_from": ""}
    assert stage_text(asd, 12000) == "12000 steps of asd on toy2000"
    pre = {**asd, "init_sdf_from": "builtin-density", "shape_targets": "teacher"}
    assert stage_text(pre, 3000) == "3000 steps of shape initialisation on builtin-density's solids (toy2000)"
    world = {**pre, "shape_targets": "world"}
    assert stage_text(world, 20000) == "20000 steps of shape initialisation on the toy world's solids (toy2000)"


def sdf_trainer(tiny_train_config, tiny_prior, tmp_path, **kw):
    """A tiny triplane SDF generator's trainer, its weights moved off the ball so |grad d| != 1."""
    from dreamstill.backend.generators.train import GeneratorTrainer

    config = tiny_train_config(arch="triplane", arch_options={"geometry": "sdf"}, **kw)
    trainer = GeneratorTrainer(config, tmp_path / "sdf", prior=tiny_prior)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in trainer.generator.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return trainer


def test_sdf_generator_step_adds_the_eikonal_term_not_the_opacity_terms(tiny_prior, tmp_path, tiny_train_config):
    """Loss with the eikonal weight 100 = loss with weight 0 + 100 (1/P) sum_p E[(||grad d_p|| - 1)^2] at the
    points the step draws; the opacity weights change nothing for an SDF generator; beta follows its schedule."""
    from dreamstill.backend.fields.regularizers import eikonal_loss
    from dreamstill.backend.fields.sdf_init import uniform_ball

    common = dict(normal_smoothness_weight=0.0, eikonal_points=256)
    with_eikonal = sdf_trainer(tiny_train_config, tiny_prior, tmp_path, **common)
    without = sdf_trainer(tiny_train_config, tiny_prior, tmp_path, eikonal_weight=0.0, **common)
    no_opacity = sdf_trainer(tiny_train_config, tiny_prior, tmp_path, eikonal_weight=0.0, lambda_sparsity=0.0, **common)

    sample, points = torch.Generator(), torch.Generator()
    sample.set_state(with_eikonal.sample_rng.get_state())
    points.set_state(with_eikonal.regularizer_rng.get_state())
    idx = torch.randint(len(with_eikonal.prompts), (2,), generator=sample).tolist()
    with torch.no_grad():
        fields = with_eikonal.generator(with_eikonal._rows(idx))
        grads = [fields[p].sdf_with_gradient(uniform_ball(256, 1.0, points))[1] for p in (0, 1)]
    expected = 100.0 * sum(float(eikonal_loss(g)) for g in grads) / 2
    assert expected > 1e-3

    before = weights(with_eikonal).clone()
    loss_with, loss_without = with_eikonal.train_step(), without.train_step()
    assert not torch.equal(before, weights(with_eikonal))
    assert loss_with - loss_without == pytest.approx(expected, rel=1e-3, abs=1e-4 * abs(loss_without))
    assert no_opacity.train_step() == loss_without
    assert float(without.generator.decoding.beta) == pytest.approx(0.01)
    without.step = without.config.steps - 1
    without.train_step()
    assert float(without.generator.decoding.beta) == pytest.approx(0.005)


def test_sdf_generator_normal_smoothness_and_resume(tiny_prior, tmp_path, tiny_train_config):
    """With every surface term on, a step trains the generator and a saved run resumes identically."""
    from dreamstill.backend.generators.train import GeneratorTrainer

    trainer = sdf_trainer(tiny_train_config, tiny_prior, tmp_path, eikonal_points=128, smoothness_points=64)
    trainer.train_step()
    path = trainer.save()
    resumed = GeneratorTrainer(trainer.config, tmp_path / "sdf", prior=tiny_prior)
    resumed.load(path)
    assert trainer.train_step() == resumed.train_step()
    torch.testing.assert_close(weights(resumed), weights(trainer), rtol=0, atol=0)
