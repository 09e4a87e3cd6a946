"""Options -> Config: flat keys, sub-configs by prefix or as a dict, renamed keys, and errors that list the keys."""

import dataclasses
import warnings

import pytest

from dreamstill.backend.distill import METHODS, make_method, method_class, option_names
from dreamstill.backend.distill.lora import LoRAConfig
from dreamstill.backend.distill.options import DistillConfig, parse_options
from dreamstill.backend.distill.vsd import VSDConfig


def test_lora_fields_are_set_by_prefix_or_as_a_dict():
    cfg = parse_options(VSDConfig, {"lora_rank": 8, "lora_lr": 0.05, "lora_steps_per_iter": 3}, "vsd")
    assert isinstance(cfg.lora, LoRAConfig) and cfg.lora.rank == 8 and cfg.lora.lr == 0.05
    assert cfg.lora_steps_per_iter == 3  # a VSD field that merely starts with "lora_"
    assert cfg.lora.lora_alpha == LoRAConfig().lora_alpha  # untouched fields keep their defaults
    assert parse_options(VSDConfig, {"lora_alpha": 8.0}, "vsd").lora.lora_alpha == 8.0  # its own name
    cfg = parse_options(VSDConfig, {"lora": {"rank": 2, "target_modules": ["to_q"]}}, "vsd")
    assert cfg.lora.rank == 2 and cfg.lora.target_modules == ("to_q",)
    with pytest.raises(ValueError, match="lora.bogus"):
        parse_options(VSDConfig, {"lora": {"bogus": 1}}, "vsd")


def test_vsd_config_holds_a_lora_config_without_copied_fields():
    vsd_fields = {f.name for f in dataclasses.fields(VSDConfig)}
    lora_fields = {f.name for f in dataclasses.fields(LoRAConfig)}
    assert "lora" in vsd_fields
    assert not vsd_fields & {f"lora_{n}" for n in lora_fields}  # no flat copies
    assert not vsd_fields & lora_fields
    lora_keys = [k for k in option_names("vsd") if k not in vsd_fields]
    assert len(lora_keys) == len(lora_fields)  # every LoRA field has its own key, none shadowed by a VSD field


def test_option_names_list_the_flat_keys():
    names = option_names("vsd")
    assert {"lora_rank", "lora_alpha", "lora_lr", "lora_camera_dropout", "lora_dtype", "order"} <= set(names)
    assert "lora" not in names
    assert {"perp_neg", "cfg_rescale", "min_step_percent"} <= set(option_names("sds"))
    assert {"shift_ratio", "random_shift"} <= set(option_names("asd"))
    assert {"lookahead_lr", "lookahead_reduction", "last_layer"} <= set(option_names("l2vsd"))
    for name in METHODS:  # every name parses back into the Config
        cls = method_class(name).Config
        assert dataclasses.is_dataclass(cls) and issubclass(cls, DistillConfig)


def test_unknown_keys_are_named_and_the_accepted_ones_listed(harness):
    with pytest.raises(ValueError, match=r"etta.*accepts: .*shift_ratio"):
        make_method("asd", harness.prior, etta=0.1)
    with pytest.raises(ValueError, match=r"lora_bogus.*accepts: .*lora_rank"):
        parse_options(VSDConfig, {"lora_bogus": 1}, "vsd")


def test_renamed_keys_warn_and_map_to_the_new_ones():
    with pytest.warns(FutureWarning, match="lora_camera_dropout"):
        cfg = parse_options(VSDConfig, {"camera_dropout": 0.3}, "vsd")
    assert cfg.lora.camera_dropout == 0.3
    with pytest.raises(ValueError, match="same setting"):
        parse_options(VSDConfig, {"camera_dropout": 0.3, "lora_camera_dropout": 0.2}, "vsd")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_options(VSDConfig, {"lora_camera_dropout": 0.3}, "vsd")  # the new key does not warn


def test_values_are_validated_when_the_method_is_made(harness):
    with pytest.raises(ValueError, match="weighting"):
        make_method("sds", harness.prior, weighting="bogus")
    with pytest.raises(ValueError, match="cfg_rescale"):
        make_method("sds", harness.prior, cfg_rescale=1.5)
    with pytest.raises(ValueError, match="grad_clip"):
        make_method("sds", harness.prior, grad_clip=[0, 1.0, 0.1, 0.5])
    with pytest.raises(ValueError, match="lora_rank"):
        parse_options(VSDConfig, {"lora_rank": 0}, "vsd")
