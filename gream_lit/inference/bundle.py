"""A stage's hand-off folder as a recommender you can call: ``load_recommender(path).recommend(history)``.

Generating from an exported model without the trie constraint writes token soup, not an item, and the
constraint needs the semantic index, the prompt layout the model was trained on and the catalogue's raw
item ids. A stage therefore writes, beside its adapter (or model) and tokenizer:

- ``index.json``: the semantic-ID index of the catalogue;
- ``gream_bundle.json``: the raw item ids in index order, the direct-mode prompt layout
  (``data.direct_prompt.DirectPrompt``), the softmax vocabulary (``full`` or ``ids``), the beam count,
  the reasoning-mode options of a stage trained to reason, and, once the pipeline has tested the stage,
  its test metrics;
- ``README.md``: a model card with the same facts.

``Recommender`` runs the same exact trie-constrained beam search as the stage's test (direct mode), or
thinks first and then answers with that search (reasoning mode, ``inference.reasoning``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from gream_lit.data import compact_format as compact
from gream_lit.data.direct_prompt import DirectPrompt
from gream_lit.data.padding import pad
from gream_lit.data.semantic_index import HANDOFF_INDEX_FILE as INDEX_FILE
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.inference.constrained_beam import constrained_beam_search
from gream_lit.inference.exclusion import drop_seen
from gream_lit.inference.model_card import write_card
from gream_lit.inference.prefix_tables import build_prefix_tables, id_vocab, index_token_ids
from gream_lit.inference.reasoning import ReasoningOptions, reason_then_rank, sample_and_rank
from gream_lit.modeling.backbone import load_causal_lm, load_tokenizer

BUNDLE_FILE = "gream_bundle.json"
ADAPTER_CONFIG = "adapter_config.json"
LOGITS_VOCABS = ("full", "ids")
MODES = ("direct", "reasoning")


@dataclass(frozen=True)
class BundleSpec:
    """What a stage's bundle holds besides the model: the catalogue's semantic-ID index, its raw item ids
    in index order and their titles, the direct-mode prompt layout, the softmax vocabulary (``full`` or
    ``ids``), the beam count, the stage name, the decoding options and prompt layout of a stage trained
    to reason (``None``: not), the base the stage trained from (a name, a folder or another bundle), the
    dataset's name and whether its evaluation excluded the users' earlier items (``exclude_seen``)."""

    index: SemanticIndex
    item_ids: Sequence[str]
    prompt: DirectPrompt
    logits_vocab: str = "full"
    num_beams: int = 10
    stage: str = ""
    reasoning: tuple[ReasoningOptions, DirectPrompt] | None = None
    base_model: str = ""
    dataset: str = ""
    titles: Sequence[str] = ()
    exclude_seen: bool = False

    def __post_init__(self) -> None:
        if len(self.item_ids) != self.index.n_items:
            raise ValueError(f"{len(self.item_ids)} item ids for an index of {self.index.n_items} items")
        if self.titles and len(self.titles) != len(self.item_ids):
            raise ValueError(f"{len(self.titles)} titles for {len(self.item_ids)} item ids")
        if self.logits_vocab not in LOGITS_VOCABS:
            raise ValueError(f"logits_vocab {self.logits_vocab!r}; expected one of {LOGITS_VOCABS}")


def write_bundle(folder: str | Path, bundle: BundleSpec) -> Path:
    """Write ``index.json``, ``gream_bundle.json`` and the model card next to a saved model/adapter, and
    make an adapter name a base bundle by a relative path (``portable_base``), so the run folder can move."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bundle.index.to_json(folder / INDEX_FILE)
    reasoning = bundle.reasoning
    adapter = folder / ADAPTER_CONFIG
    trained_from = portable_base(bundle.base_model, folder) if bundle.base_model else ""
    if adapter.is_file() and trained_from:
        config = json.loads(adapter.read_text())
        config["base_model_name_or_path"] = trained_from
        adapter.write_text(json.dumps(config, indent=2, sort_keys=True))
    spec = {
        "format_version": 1,
        "stage": bundle.stage,
        "weights": "adapter" if adapter.is_file() else "model",
        "trained_from": trained_from,
        "base_model": root_base(bundle.base_model),
        "dataset": bundle.dataset,
        "protocol": "exclude_seen" if bundle.exclude_seen else "full",
        "prompt": bundle.prompt.to_dict(),
        "logits_vocab": bundle.logits_vocab,
        "num_beams": bundle.num_beams,
        "item_ids": [str(i) for i in bundle.item_ids],
        "titles": [str(t) for t in bundle.titles],
        "reasoning": None if reasoning is None else {"options": asdict(reasoning[0]), "prompt": reasoning[1].to_dict()},
        "metrics": {},
    }
    (folder / BUNDLE_FILE).write_text(json.dumps(spec, indent=1))
    write_card(folder, spec)
    return folder


def portable_base(base: str, folder: Path) -> str:
    """How the bundle in ``folder`` names its base: another bundle (the stage it was trained from) by a
    path relative to ``folder``, which survives moving or copying the run folder; a hub name, an alias
    or another folder as given."""
    path = Path(base)
    if (path / BUNDLE_FILE).is_file():
        return os.path.relpath(path.resolve(), folder.resolve())
    return base


def root_base(base: str) -> str:
    """The pre-trained model at the root of a chain of bundles (what the model card calls ``base_model``)."""
    spec = Path(base) / BUNDLE_FILE
    if spec.is_file():
        return json.loads(spec.read_text()).get("base_model") or base
    return base


def add_metrics(folder: str | Path, metrics: dict[str, float]) -> bool:
    """Record the test metrics of the stage in its bundle and model card; ``False`` if no bundle."""
    path = Path(folder) / BUNDLE_FILE
    if not path.is_file():
        return False
    spec = json.loads(path.read_text())
    spec["metrics"] = {k: float(v) for k, v in sorted(metrics.items()) if "/test/" in k}
    path.write_text(json.dumps(spec, indent=1))
    write_card(Path(folder), spec)
    return True


class Recommender:
    """A model + tokenizer + index + prompt layout: ranked raw item ids for raw-id histories."""

    def __init__(
        self,
        model,
        tokenizer,
        index: SemanticIndex,
        item_ids: Sequence[str],
        prompt: DirectPrompt,
        logits_vocab: str = "full",
        num_beams: int = 10,
        reasoning: tuple[ReasoningOptions, DirectPrompt] | None = None,
        titles: Sequence[str] = (),
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.index = index
        self.item_ids = [str(i) for i in item_ids]
        self.position = {raw: i for i, raw in enumerate(self.item_ids)}
        self.title_of = dict(zip(self.item_ids, (str(t) for t in titles)))
        self.prompt = prompt
        self.num_beams = num_beams
        self.reasoning = reasoning
        device = next(model.parameters()).device
        token_ids = index_token_ids(index, tokenizer)
        self.tables = build_prefix_tables(token_ids, tokenizer.eos_token_id).to(device)
        self.vocab = id_vocab(index, tokenizer).to(device) if logits_vocab == "ids" else None
        self._rows = compact.item_rows(tokenizer, index)

    def _positions(self, history: Sequence[str | int]) -> list[int]:
        unknown = [h for h in history if str(h) not in self.position]
        if unknown:
            raise KeyError(f"items not in this recommender's catalogue: {unknown[:5]}")
        return [self.position[str(h)] for h in history]

    def titles(self, items: Sequence[str | int]) -> list[str]:
        """The catalogue titles of raw item ids (``""`` where the bundle has none)."""
        return [self.title_of.get(str(i), "") for i in items]

    def _batches(self, histories: Sequence[Sequence[str | int]], prompt: DirectPrompt, batch_size: int):
        """Left-padded prompt batches for raw-id histories, with each history's catalogue indices
        (``-1`` padded: what ``exclude_seen`` masks)."""
        device = next(self.model.parameters()).device
        positions = [self._positions(h) for h in histories]
        prompts = [prompt.encode(self.tokenizer, self.index, p, self._rows) for p in positions]
        for start in range(0, len(prompts), batch_size):
            rows = prompts[start : start + batch_size]
            ids = pad(rows, self.tokenizer.pad_token_id, left=True).to(device)
            seen = pad(positions[start : start + batch_size], -1).to(device)
            yield ids, pad([[1] * len(r) for r in rows], 0, left=True).to(device), seen

    def _ranked(self, items: torch.Tensor, k: int) -> list[list[str]]:
        return [[self.item_ids[i] for i in row[:k] if i >= 0] for row in items.tolist()]

    def _check_k(self, k: int, limit: int) -> None:
        if not 1 <= k <= limit:
            raise ValueError(f"k={k} must lie in 1..{limit} (the ranked list this recommender decodes)")

    @torch.no_grad()
    def recommend_many(
        self,
        histories: Sequence[Sequence[str | int]],
        k: int = 10,
        batch_size: int = 16,
        mode: str = "direct",
        exclude_seen: bool = False,
    ) -> list[list[str]]:
        """Top-``k`` raw item ids for each history (raw item ids, oldest first), best first.

        ``mode="reasoning"`` thinks before answering (``recommend_many_with_reasoning``, texts dropped).
        ``exclude_seen``: never return an item of the history; the search masks them, so the list stays
        ``k`` long while the catalogue has ``k`` other items."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}; expected one of {MODES}")
        if mode == "reasoning":
            pairs = self.recommend_many_with_reasoning(histories, k, batch_size, exclude_seen)
            return [items for items, _ in pairs]
        self._check_k(k, self.num_beams)
        out: list[list[str]] = []
        for ids, mask, seen in self._batches(histories, self.prompt, batch_size):
            exclude = seen if exclude_seen else None
            result = constrained_beam_search(
                self.model, ids, mask, self.tables, self.num_beams, self.vocab, exclude=exclude
            )
            out += self._ranked(result.items, k)
        return out

    @torch.no_grad()
    def recommend_many_with_reasoning(
        self, histories: Sequence[Sequence[str | int]], k: int = 10, batch_size: int = 8, exclude_seen: bool = False
    ) -> list[tuple[list[str], str]]:
        """Reasoning mode: per history, the top-``k`` raw item ids and the text the model wrote (its
        think block and answer). Answers are catalogue items whatever the text: the constrained decoder
        ranks trie-constrained answer beams, ``sample_rank`` drops unparseable samples."""
        if self.reasoning is None:
            raise ValueError(
                "this stage was not trained to reason (its bundle has no reasoning mode); use mode='direct'"
            )
        opts, prompt = self.reasoning
        self._check_k(k, opts.num_beams if opts.decoder == "constrained" else opts.n)
        out: list[tuple[list[str], str]] = []
        for ids, mask, seen in self._batches(histories, prompt, batch_size):
            exclude = seen if exclude_seen else None
            if opts.decoder == "constrained":
                result = reason_then_rank(self.model, self.tokenizer, ids, mask, self.tables, opts, exclude)
                items = result.items
            else:
                result = sample_and_rank(self.model, self.tokenizer, ids, mask, self.index, opts)
                items = drop_seen(result.items, exclude)
            out += list(zip(self._ranked(items, k), result.texts))
        return out

    def recommend(
        self, history: Sequence[str | int], k: int = 10, mode: str = "direct", exclude_seen: bool = False
    ) -> list[str]:
        """Top-``k`` raw item ids for one history of raw item ids (oldest first); ``exclude_seen``:
        none of the history's items."""
        return self.recommend_many([history], k, mode=mode, exclude_seen=exclude_seen)[0]

    def recommend_with_reasoning(
        self, history: Sequence[str | int], k: int = 10, exclude_seen: bool = False
    ) -> tuple[list[str], str]:
        """Reasoning mode for one history: (top-``k`` raw item ids, the text the model wrote)."""
        return self.recommend_many_with_reasoning([history], k, exclude_seen=exclude_seen)[0]


def load_recommender(path: str | Path, device: str | torch.device = "cpu") -> Recommender:
    """The recommender of a stage's hand-off folder (``hf/adapter`` or ``hf/model``)."""
    folder = Path(path)
    spec_path = folder / BUNDLE_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path} not found: {folder} is not a gream_lit stage hand-off folder")
    spec = json.loads(spec_path.read_text())
    if spec.get("format_version") != 1:
        raise ValueError(f"{spec_path}: unknown format_version {spec.get('format_version')!r}")
    model = load_causal_lm(str(folder)).to(device)
    index = SemanticIndex.from_json(folder / INDEX_FILE, n_items=len(spec["item_ids"]), unique=True)
    return Recommender(
        model,
        load_tokenizer(str(folder)),
        index,
        spec["item_ids"],
        DirectPrompt(**spec["prompt"]),
        spec["logits_vocab"],
        spec["num_beams"],
        _reasoning(spec.get("reasoning")),
        spec.get("titles") or (),
    )


def _reasoning(spec: dict | None) -> tuple[ReasoningOptions, DirectPrompt] | None:
    return None if spec is None else (ReasoningOptions(**spec["options"]), DirectPrompt(**spec["prompt"]))
