"""params.yaml is the one source of the study's values: the stage parameter classes have no defaults,
and every group, under every profile and in the HDTF-shaped half, gives every field of its class."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from opflowtalker.corpus.build import CorpusParams
from opflowtalker.corpus.lipreading import LipReadingCorpusParams
from opflowtalker.evaluate import EvalParams
from opflowtalker.flow.train import FlowTrainParams
from opflowtalker.models.cost import ModelCostParams
from opflowtalker.params import PARAMS_YAML, ParamsError, from_mapping, from_params_yaml, load_params
from opflowtalker.preprocess import PreprocessParams
from opflowtalker.training.generator import GeneratorTrainParams, all_variants, variant_params, warm_up_params
from opflowtalker.training.lipreader import LipReaderTrainParams
from opflowtalker.training.sync_judge import SyncJudgeTrainParams
from opflowtalker.training.syncnet import SyncNetTrainParams

# Each params.yaml group a stage builds a dataclass from, and the dataclass (the generators' group
# holds its variants, each built by variant_params).
CLASSES = {"corpus": CorpusParams, "lipreading_corpus": LipReadingCorpusParams, "preprocess": PreprocessParams,
           "model_cost": ModelCostParams, "train_flow": FlowTrainParams, "train_syncnet": SyncNetTrainParams,
           "train_sync_judge": SyncJudgeTrainParams, "train_lipreader": LipReaderTrainParams, "evaluate": EvalParams,
           "generators": GeneratorTrainParams}
# The groups that are not a stage's parameter class: settings read as a mapping, and the HD half.
NOT_CLASSES = {"profile", "profiles", "audio", "dataset", "notebooks", "hd"}
PROFILES = ("embedded", "smoke", "paper")


@pytest.mark.parametrize("cls", CLASSES.values(), ids=lambda c: c.__name__)
def test_no_stage_parameter_class_has_a_default(cls):
    defaulted = [f.name for f in dataclasses.fields(cls)
                 if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert defaulted == [], f"{cls.__name__} gives defaults for {defaulted}: params.yaml gives every value"


def test_every_group_of_params_yaml_is_a_parameter_class_or_named_as_none():
    assert set(yaml.safe_load(PARAMS_YAML.read_text())) == set(CLASSES) | NOT_CLASSES


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("hd", [False, True])
def test_params_yaml_gives_every_field_of_every_stage_under_every_profile(profile, hd):
    params = load_params(PARAMS_YAML, hd=hd, profile=profile)
    for group, cls in CLASSES.items():
        if cls is not GeneratorTrainParams:
            from_mapping(cls, params[group], group)  # raises on a key missing or unknown
    for variant in all_variants(params["generators"]):
        variant_params(params["generators"], variant)
    for variant in params["generators"]["warm_up"]["variants"]:
        warm_up_params(params["generators"], variant)


def test_a_group_that_leaves_out_a_field_is_refused_rather_than_defaulted():
    group = yaml.safe_load(PARAMS_YAML.read_text())["train_syncnet"]
    assert from_mapping(SyncNetTrainParams, group).steps == group["steps"]
    del group["lr"]
    with pytest.raises(ParamsError, match="train_syncnet lacks parameter.s. lr"):
        from_mapping(SyncNetTrainParams, group, "train_syncnet")
    with pytest.raises(ParamsError, match="unknown parameter"):
        from_mapping(SyncNetTrainParams, {**group, "lr": 1e-3, "speed": 2}, "train_syncnet")


def test_a_class_built_from_params_yaml_takes_its_group_under_a_profile_with_overrides():
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    written = from_params_yaml(SyncNetTrainParams, "train_syncnet", profile="embedded")
    assert dataclasses.asdict(written) == raw["train_syncnet"]
    smoke = from_params_yaml(SyncNetTrainParams, "train_syncnet", profile="smoke", lr=0.5)
    assert smoke.steps == raw["profiles"]["smoke"]["train_syncnet"]["steps"] and smoke.lr == 0.5
    assert smoke.seed == written.seed
    hd = from_params_yaml(PreprocessParams, "preprocess", profile="embedded", hd=True)
    assert hd.size == raw["hd"]["overrides"]["preprocess"]["size"] != raw["preprocess"]["size"]
    nested = from_params_yaml(GeneratorTrainParams, "generators.defaults", profile="embedded")
    assert nested == variant_params(load_params(PARAMS_YAML, profile="embedded")["generators"], "full")
    with pytest.raises(ParamsError, match="unknown parameter.s. speed"):
        from_params_yaml(SyncNetTrainParams, "train_syncnet", speed=2)
    with pytest.raises(ParamsError, match="no group"):
        from_params_yaml(SyncNetTrainParams, "train_syncnets")
