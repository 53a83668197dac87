"""The model card (``README.md``) of a stage's bundle, written from its ``gream_bundle.json``.

The card says what a user needs before trusting the model: the base model it was trained from, the
dataset and the evaluation protocol of its metrics, what the folder holds (an adapter or full weights),
and a snippet that loads it from wherever the folder now is.
"""

from __future__ import annotations

from pathlib import Path

PROTOCOLS = {
    "full": "leave-one-out, ranked over the full catalogue (a user's earlier items may be recommended)",
    "exclude_seen": "leave-one-out, ranked over the catalogue minus each user's earlier items",
}


def write_card(folder: Path, spec: dict) -> None:
    """Write ``folder/README.md`` for the bundle ``spec`` (``inference.bundle.write_bundle``)."""
    prompt, reasoning = spec["prompt"], spec.get("reasoning")
    adapter = spec.get("weights") == "adapter"
    example = ", ".join(repr(i) for i in spec["item_ids"][:3])
    lines = [
        "---",  # Hugging Face card metadata, which peft's save_pretrained reads and updates
        f"library_name: {'peft' if adapter else 'transformers'}",
        *([f"base_model: {spec['base_model']}"] if spec.get("base_model") else []),
        "tags: [gream_lit, recommendation, semantic-ids]",
        "---",
        "",
        f"# gream_lit recommender{': stage ' + spec['stage'] if spec['stage'] else ''}",
        "",
        "A generative recommender: it writes the semantic ID of the next item, decoded with an exact",
        "trie-constrained beam search so that every answer is a catalogue item. From this folder:",
        "",
        "```python",
        "from gream_lit import load_recommender",
        'rec = load_recommender(".")  # or the path of this folder',
        f"items = rec.recommend([{example}], k=10)  # raw item ids, oldest first",
        "print(rec.titles(items))",
        *(["items, text = rec.recommend_with_reasoning([...], k=10)  # and the text it wrote"] if reasoning else []),
        "```",
        "",
        f"- base model: `{spec.get('base_model') or 'unknown'}`",
        f"- dataset: `{spec.get('dataset') or 'unknown'}`, {len(spec['item_ids'])} items "
        "(`index.json`: their semantic IDs; `gream_bundle.json`: their raw ids and titles)",
        f"- weights: {_weights(spec)}",
        f"- prompt: `{prompt['format']}`, the last {prompt['max_history']} items, at most {prompt['max_length']} tokens",
        f"- softmax over: `{spec['logits_vocab']}` vocabulary; beams: {spec['num_beams']}",
        f"- reasoning mode: {'yes (think, then a constrained answer)' if reasoning else 'no (direct only)'}",
    ]
    if spec["metrics"]:
        protocol = PROTOCOLS[spec.get("protocol", "full")]
        lines += ["", "## Test metrics", "", f"Protocol: {protocol}.", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in spec["metrics"].items()]
    (folder / "README.md").write_text("\n".join(lines) + "\n")


def _weights(spec: dict) -> str:
    if spec.get("weights") != "adapter":
        return "full model weights"
    base = spec.get("trained_from") or "its base"
    chained = base.startswith(".")
    return f"a LoRA adapter on `{base}`" + (
        " (another stage's bundle, by a relative path: move or copy the whole run folder together)" if chained else ""
    )
