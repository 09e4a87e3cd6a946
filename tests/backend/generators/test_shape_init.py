"""Shape initialisation: an SDF generator regressed onto a density generator's solids starts from its weights,
names it in its lineage, and lowers the regression loss."""

import pytest
import torch


def shape_init_config(tiny_train_config, **kw):
    """The tiny training configuration of these tests: a triplane, 20 steps, 24^3 regression targets."""
    return tiny_train_config(**{"arch": "triplane", "steps": 20, "init_sdf_resolution": 24, **kw})


@pytest.fixture
def teacher_path(tiny_prior, tmp_path, tiny_train_config):
    """A tiny density triplane generator, its weights moved off the blob so its solids are not balls."""
    from dreamstill.backend.generators.train import GeneratorTrainer

    teacher = GeneratorTrainer(shape_init_config(tiny_train_config), tmp_path / "teacher", prior=tiny_prior)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in teacher.generator.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    teacher.step = 3
    return teacher.save()


def student(tiny_train_config, tiny_prior, tmp_path, teacher_path, **kw):
    from dreamstill.backend.generators.train import GeneratorTrainer

    config = shape_init_config(
        tiny_train_config, arch_options={"geometry": "sdf"}, init_sdf_from=str(teacher_path), **kw
    )
    return GeneratorTrainer(config, tmp_path / "student", prior=tiny_prior)


def test_student_starts_from_the_teacher_as_the_ball(tiny_prior, tmp_path, teacher_path, tiny_train_config):
    trainer = student(tiny_train_config, tiny_prior, tmp_path, teacher_path)
    teacher_state = torch.load(teacher_path, weights_only=True)
    ours = trainer.generator.state_dict()
    for name, value in teacher_state["generator"].items():
        if name != "decoder.2.weight" and name != "decoder.2.bias":
            torch.testing.assert_close(ours[name], value, rtol=0, atol=0)
    torch.testing.assert_close(ours["decoder.2.weight"][1:], teacher_state["generator"]["decoder.2.weight"][1:])
    assert ours["decoder.2.weight"][0].abs().sum() == 0 and ours["decoder.2.bias"][0] == 0
    assert trainer.lineage == [{"config": teacher_state["config"], "step": 3}]
    x = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.7, 0.0]])
    field = trainer.generator(trainer._rows([0]))[0]
    torch.testing.assert_close(field.sdf(x), torch.tensor([-0.5, 0.2]))


def test_a_few_pretraining_steps_lower_the_regression_loss(tiny_prior, tmp_path, teacher_path, tiny_train_config):
    trainer = student(tiny_train_config, tiny_prior, tmp_path, teacher_path, lr=1e-3)

    def regression_loss() -> float:  # on fixed prompts and points
        idx = [0, 2]
        prompts = [trainer.prompts[i] for i in idx]
        rng = torch.Generator().manual_seed(11)
        fields = trainer.generator(trainer._rows(idx))
        return float(trainer.shape_teacher.loss(fields, trainer._rows(idx), prompts, rng, 24).detach())

    before = regression_loss()
    for _ in range(12):
        trainer.train_step()
    after = regression_loss()
    assert after < 0.7 * before, (before, after)


def test_world_targets_are_the_toy_worlds_exact_solid_and_colours():
    """WorldTarget: d* is the scene's signed distance (a unit cube's: -half extent at its centre, distance to the
    nearest face outside), c* the object's colour, and its grid (which places the near-surface points) the same
    distance at the grid nodes."""
    from dreamstill.backend.generators.shape_init import WorldTarget
    from dreamstill.backend.priors.builtin import world

    target = WorldTarget("a red cube", bound=1.0, resolution=21)
    centre_depth = float(target.distance(torch.zeros(1, 3)))
    assert centre_depth < -0.2
    outside = torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.0, -0.95]])
    torch.testing.assert_close(target.distance(outside), outside.abs().amax(-1) + centre_depth, atol=1e-5, rtol=0)
    torch.testing.assert_close(target.albedo(outside), torch.tensor([world.COLOURS["red"]] * 2), atol=1e-6, rtol=0)
    nodes = torch.tensor([[-1.0, 0.0, 0.5], [0.3, -0.2, 1.0]])  # on the 21-node grid (spacing 0.1)
    torch.testing.assert_close(target.grid.sample(nodes), target.distance(nodes), atol=1e-5, rtol=0)


def test_pretraining_on_world_targets_lowers_their_loss(tiny_prior, tmp_path, teacher_path, tiny_train_config):
    trainer = student(tiny_train_config, tiny_prior, tmp_path, teacher_path, lr=1e-3, shape_targets="world")
    assert trainer.shape_teacher.targets == "world"
    idx = [0, 2]
    prompts = [trainer.prompts[i] for i in idx]

    def regression_loss() -> float:  # on fixed prompts and points
        fields = trainer.generator(trainer._rows(idx))
        rng = torch.Generator().manual_seed(11)
        return float(trainer.shape_teacher.loss(fields, trainer._rows(idx), prompts, rng, 24).detach())

    before = regression_loss()
    for _ in range(12):
        trainer.train_step()
    assert regression_loss() < 0.7 * before


def test_bad_teachers_are_named(tiny_prior, tmp_path, teacher_path, tiny_train_config):
    from dreamstill.backend.generators.train import GeneratorTrainer

    with pytest.raises(ValueError, match="same --arch"):
        GeneratorTrainer(
            shape_init_config(
                tiny_train_config, arch="3dconv", arch_options={"geometry": "sdf"}, init_sdf_from=str(teacher_path)
            ),
            tmp_path / "s",
            prior=tiny_prior,
        )
    with pytest.raises(ValueError, match="geometry=sdf"):
        GeneratorTrainer(
            shape_init_config(tiny_train_config, init_sdf_from=str(teacher_path)), tmp_path / "s", prior=tiny_prior
        )
    sdf_teacher = student(tiny_train_config, tiny_prior, tmp_path, teacher_path).save()
    with pytest.raises(ValueError, match="already an SDF"):
        student(tiny_train_config, tiny_prior, tmp_path, sdf_teacher)


def test_cli_shape_init_then_distillation_records_every_stage(tmp_path, teacher_path, toy_corpus):
    """`train-generator --init-sdf-from T` then `--init-from` that run with geometry=sdf: the second run's lineage
    names the teacher and the shape initialisation; a missing teacher is a clean error."""
    from dreamstill.backend.cli import main

    common = ["--arch", "triplane", "--prior", "tiny", "--corpus", toy_corpus, "--prompts-per-step", "1"]
    common += ["--resolution", "16", "--num-samples", "8", "--grid-every", "0", "--steps", "2"]
    pre = tmp_path / "pre"
    assert (
        main(
            ["train-generator", *common, "--init-sdf-from", str(teacher_path), "--init-sdf-resolution", "20"]
            + ["-o", str(pre)]
        )
        == 0
    )
    state = torch.load(pre / "generator.pt", weights_only=True)
    assert state["config"]["arch_options"] == {"geometry": "sdf"} and state["config"]["init_sdf_from"]
    assert [s["step"] for s in state["lineage"]] == [3]
    run = ["train-generator", *common, "--arch-option", "geometry=sdf", "--init-from", str(pre), "-o"]
    assert main([*run, str(tmp_path / "asd")]) == 0
    lineage = torch.load(tmp_path / "asd" / "generator.pt", weights_only=True)["lineage"]
    assert [s["step"] for s in lineage] == [3, 2] and lineage[1]["config"]["init_sdf_from"] == str(teacher_path)
    with pytest.raises(SystemExit, match="--init-sdf-from: generator .* not found"):
        main(["train-generator", *common, "--init-sdf-from", str(tmp_path / "none"), "-o", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="add --init-sdf-from builtin"):
        main(["train-generator", *common, "--shape-targets", "world", "-o", str(tmp_path / "x")])
    free_form = tmp_path / "prompts.txt"
    free_form.write_text("a red cube\na castle on a hill\n")
    world_run = ["train-generator", *common, "--init-sdf-from", str(teacher_path), "--shape-targets", "world"]
    with pytest.raises(SystemExit, match="needs a toy-world corpus: 'a castle on a hill'"):
        main([*world_run, "--corpus", str(free_form), "-o", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="drop --arch-option geometry"):
        main(["train-generator", *common, "--init-sdf-from", "builtin", "--arch-option", "geometry=density", "-o", "y"])


def test_banded_l1_is_exact_inside_the_band_and_one_sided_beyond():
    from dreamstill.backend.generators.shape_init import banded_l1

    d = torch.tensor([0.3, 0.05, -0.3, 0.3, -0.05, 0.1], requires_grad=True)
    target = torch.tensor([0.5, 0.0, -0.5, -0.5, 0.02, 0.5])
    loss = banded_l1(d, target, 0.15)
    # right side beyond the band: 0; |d - d*| inside it: 0.05, 0.07; wrong side: 0.45; short of the band: 0.05
    assert float(loss.detach()) == pytest.approx((0.05 + 0.45 + 0.07 + 0.05) / 6)
    loss.backward()
    torch.testing.assert_close(d.grad, torch.tensor([0.0, 1.0, 0.0, 1.0, -1.0, -1.0]) / 6)


def world_loss(trainer, idx=(0, 2)) -> float:
    """The reconstruction loss onto the toy world's solids of the corpus prompts ``idx``, on fixed points."""
    prompts = [trainer.prompts[i] for i in idx]
    fields = trainer.generator(trainer._rows(list(idx)))
    trainer_rng = trainer.regularizer_rng
    trainer.regularizer_rng = torch.Generator().manual_seed(11)
    try:
        return float(trainer._shape_loss(fields, prompts).detach())
    finally:
        trainer.regularizer_rng = trainer_rng


def test_shape_regularization_holds_distillation_to_the_world_solids(tiny_prior, tmp_path, tiny_train_config):
    """LATTE3D's shape regularization: the same 12 ASD steps of an SDF generator, once with w_s = 0 and once with
    w_s = 1e4, from the same weights; with it the reconstruction loss onto the toy world's solids ends lower."""
    from dreamstill.backend.generators.train import GeneratorTrainer

    after = {}
    for weight in (0.0, 1e4):
        config = shape_init_config(
            tiny_train_config, arch_options={"geometry": "sdf"}, steps=12, lr=1e-3, shape_regularization=weight
        )
        trainer = GeneratorTrainer(config, tmp_path / f"w{weight}", prior=tiny_prior)
        before = world_loss(trainer)
        for _ in range(12):
            trainer.train_step()
        after[weight] = world_loss(trainer)
    assert after[1e4] < 0.7 * before and after[1e4] < 0.7 * after[0.0], (before, after)


def test_shape_regularization_needs_a_distilling_sdf_generator_on_the_toy_world(
    tiny_prior, tmp_path, tiny_train_config
):
    from dreamstill.backend.cli import main
    from dreamstill.backend.generators.train import GeneratorTrainer

    with pytest.raises(ValueError, match="needs an SDF generator"):
        GeneratorTrainer(shape_init_config(tiny_train_config, shape_regularization=1.0), tmp_path, prior=tiny_prior)
    free_form = tmp_path / "prompts.txt"
    free_form.write_text("a red cube\na castle on a hill\n")
    with pytest.raises(ValueError, match="toy-world corpus: 'a castle on a hill'"):
        GeneratorTrainer(
            shape_init_config(
                tiny_train_config, corpus=str(free_form), arch_options={"geometry": "sdf"}, shape_regularization=1.0
            ),
            tmp_path,
            prior=tiny_prior,
        )
    common = ["train-generator", "--arch", "triplane", "--prior", "tiny", "-o", str(tmp_path / "x")]
    with pytest.raises(SystemExit, match="--shape-regularization: use a weight >= 0"):
        main([*common, "--shape-regularization", "-1"])
    with pytest.raises(SystemExit, match="--arch-option geometry=sdf"):
        main([*common, "--shape-regularization", "100"])
