"""What a server offers: names only, never a client's path."""

from __future__ import annotations

import pytest

from dreamstill.backend.server.models import ModelCatalog, ModelRefused, parse_named_path


def test_builtins_and_registered_names_resolve_and_paths_are_refused(tmp_path):
    (tmp_path / "sd").mkdir()
    catalog = ModelCatalog.build({"sd": str(tmp_path / "sd")}, {})
    spec = {"prior": "sd", "generator": "builtin", "prompt": "x"}
    assert catalog.resolve(spec) == {"prior": str((tmp_path / "sd").resolve()), "generator": "builtin", "prompt": "x"}
    assert catalog.resolve_prior("builtin") == "builtin" and catalog.resolve_prior("tiny:7") == "tiny:7"
    for name in ("/etc/passwd", str(tmp_path / "sd"), "../sd", "runwayml/stable-diffusion-v1-5", "tiny:x"):
        with pytest.raises(ModelRefused, match="does not offer") as err:
            catalog.resolve_prior(name)
        assert "sd" in str(err.value) and "builtin" in str(err.value)  # says what it offers
    with pytest.raises(ModelRefused, match="generator"):
        catalog.resolve_generator("/etc/hostname")


def test_hub_ids_only_when_allowed():
    catalog = ModelCatalog.build({}, {}, allow_hub=True)
    assert catalog.resolve_prior("stabilityai/sd-turbo") == "stabilityai/sd-turbo"
    for name in ("../x/y", "/a/b", "a/b/c"):
        with pytest.raises(ModelRefused):
            catalog.resolve_prior(name)
    assert catalog.offers()["hub"] is True


def test_models_folder_is_scanned(tmp_path):
    (tmp_path / "priors" / "mine").mkdir(parents=True)
    (tmp_path / "generators" / "g1").mkdir(parents=True)
    (tmp_path / "generators" / "g2.pt").write_bytes(b"")
    catalog = ModelCatalog.build({}, {}, models_dir=tmp_path)
    offers = catalog.offers()
    assert "mine" in offers["priors"] and {"g1", "g2"} <= set(offers["generators"])
    assert catalog.resolve_generator("g2") == str((tmp_path / "generators" / "g2.pt").resolve())
    assert catalog.known_paths()[str((tmp_path / "priors" / "mine").resolve())] == "prior 'mine'"


def test_bad_flags_say_what_to_write(tmp_path):
    assert parse_named_path(f"sd={tmp_path}") == ("sd", str(tmp_path.resolve()))
    for text in ("sd", "=x", "bad name=/x", "sd="):
        with pytest.raises(ValueError, match="NAME=PATH"):
            parse_named_path(text)
    with pytest.raises(ValueError, match="does not exist"):
        ModelCatalog.build({"sd": str(tmp_path / "missing")}, {})
