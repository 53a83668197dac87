"""The paper-scale experiment (``experiments/gream_full_qwen3_4b.yaml``) cannot run on a CPU, but its
mistakes can be found on one: every stage's strategy is built from its resolved config by the same
jsonargparse machinery LightningCLI uses, and the backbone's architecture is built on the meta device
(no weights, no download) to check the parameter count its memory arithmetic assumes and that the FSDP
wrap policy names a layer the model has."""

from __future__ import annotations

from pathlib import Path

import torch
from config_snapshot import finish_all
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, Strategy, StrategyRegistry
from transformers import AutoModelForCausalLM, Qwen3Config

from gream_lit.experiment.preflight import load_experiment
from gream_lit.experiment.run_directory import RunDir
from gream_lit.experiment.stage_configs import stage_config

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "gream_full_qwen3_4b.yaml"
# Qwen/Qwen3-4B-Instruct-2507's config.json (the architecture only)
QWEN3_4B = dict(
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    tie_word_embeddings=True,
    max_position_embeddings=262144,
    rope_theta=5000000.0,
    rms_norm_eps=1e-6,
)


def strategy_of(trainer: dict) -> Strategy | str:
    spec = trainer.get("strategy", "auto")
    if isinstance(spec, str):
        return StrategyRegistry.get(spec) if spec in StrategyRegistry else spec
    parser = ArgumentParser()
    parser.add_subclass_arguments(Strategy, "strategy")
    return parser.instantiate(parser.parse_object({"strategy": spec})).strategy


def test_every_stage_of_the_qwen3_experiment_builds_its_strategy(tmp_path: Path) -> None:
    exp = load_experiment(EXPERIMENT)
    run = RunDir(tmp_path / "run")
    finish_all(exp, run)
    configs = {stage: stage_config(exp, run, stage) for stage in exp["stages"]}
    assert configs["index"]["trainer"]["devices"] == 1
    for stage in ("align", "curriculum"):
        assert configs[stage]["trainer"]["devices"] == -1  # configs/trainer/ddp.yaml: every GPU of the node
        fsdp = strategy_of(configs[stage]["trainer"])
        assert isinstance(fsdp, FSDPStrategy)
        assert fsdp._state_dict_type == "sharded"
    rl = strategy_of(configs["rl"]["trainer"])
    assert isinstance(rl, DDPStrategy) and not isinstance(rl, FSDPStrategy)
    assert configs["rl"]["data"]["init_args"]["batch_size"] * 8 == 2304
    assert configs["curriculum"]["data"]["init_args"]["backbone"].endswith("align/hf/model")


def test_the_backbone_has_the_size_and_layers_the_config_assumes(tmp_path: Path) -> None:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(Qwen3Config(**QWEN3_4B))
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - 4.02e9) / 4.02e9 < 0.005  # the 4.02e9 of the file's memory arithmetic
    assert n_params * 18 / 8 < 9.1e9  # FSDP: 18 bytes of training state per parameter over 8 GPUs, "9 GB each"

    exp = load_experiment(EXPERIMENT)
    run = RunDir(tmp_path / "run")
    finish_all(exp, run)
    fsdp = strategy_of(stage_config(exp, run, "align")["trainer"])
    wrapped = fsdp.kwargs["auto_wrap_policy"]._module_classes
    layer_types = {type(m) for m in model.modules()}
    assert wrapped and set(wrapped) <= layer_types
