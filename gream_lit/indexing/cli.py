"""``python -m gream_lit index embed|build|report``: item embeddings, semantic-ID indexes, their quality.

``build`` runs a k-means quantiser from flags or a small YAML file (keys = the flag names); the RQ-VAE
quantiser is a LightningModule trained with ``python -m gream_lit fit --config experiments/index_rqvae_*.yaml``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import yaml

from gream_lit.data.catalog import DataError
from gream_lit.data.readers import load_catalog
from gream_lit.indexing.embed import DEFAULT_ENCODER, ENCODER_KINDS, build_encoder, embed_items, load_embeddings

log = logging.getLogger(__name__)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--format", default="lcrec", help="catalog reader name")


def _add_embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default=DEFAULT_ENCODER, help="model name or path")
    p.add_argument("--encoder_kind", default="sentence-transformers", choices=ENCODER_KINDS)
    p.add_argument("--gguf_file", default=None, help="GGUF file inside --encoder (causal-lm only)")
    p.add_argument("--fields", default="title,description", help="comma-separated text fields")
    p.add_argument("--max_length", type=int, default=512, help="token limit per field (causal-lm)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--cache_dir", default=".cache/embeddings")


def _embeddings(args: argparse.Namespace, catalog):
    if getattr(args, "embeddings", None):
        return load_embeddings(args.embeddings, catalog.n_items)
    encoder = build_encoder(args.encoder_kind, args.encoder, max_length=args.max_length, gguf_file=args.gguf_file)
    fields = [f.strip() for f in args.fields.split(",") if f.strip()]
    return embed_items(catalog, encoder, fields, cache_dir=args.cache_dir, batch_size=args.batch_size)


def cmd_embed(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.data, args.format)
    emb = _embeddings(args, catalog)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        np.save(args.out, emb)
    print(f"{catalog.name}: embeddings {emb.shape} {'-> ' + args.out if args.out else '(cached)'}")
    return 0


def refuse_finished_stage(out: Path) -> None:
    """An index is never rebuilt inside a finished pipeline stage (a folder holding ``DONE``): the stages
    trained on it would be re-tested against a different index."""
    for folder in (out.resolve(), *out.resolve().parents):
        if (folder / "DONE").is_file():
            raise DataError(
                f"--out {out}: {folder} is a finished pipeline stage (it holds DONE) whose results describe the "
                "index there; write the new index elsewhere, or delete that stage folder and rerun fit"
            )


def cmd_build(args: argparse.Namespace) -> int:
    from gream_lit.indexing.build import BuildConfig, build_index
    from gream_lit.indexing.quality_report import index_report, print_report, write_report

    refuse_finished_stage(Path(args.out))
    catalog = load_catalog(args.data, args.format)
    emb = _embeddings(args, catalog)
    cfg = BuildConfig(
        method=args.method,
        levels=args.levels,
        codebook_size=args.codebook_size,
        collision=args.collision,
        seed=args.seed,
        max_iter=args.max_iter,
        tol=args.tol,
        n_init=args.n_init,
    )
    result = build_index(emb, cfg)
    out = Path(args.out)
    index_path = out / f"{catalog.name}.index.json"
    result.index.meta.update({"dataset": catalog.name, "encoder": args.encoder, "fields": args.fields})
    result.index.to_json(index_path)
    report = index_report(result.index, catalog, emb, result.codes_before, result.quant_errors, result.seconds)
    print_report(report, title=f"{catalog.name} {cfg.method} index -> {index_path}")
    write_report(report, out, tag=f"index/{cfg.method}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from gream_lit.data.semantic_index import SemanticIndex
    from gream_lit.indexing.quality_report import index_report, print_report, write_report

    catalog = load_catalog(args.data, args.format)
    index = SemanticIndex.from_json(args.index, n_items=catalog.n_items)
    emb = load_embeddings(args.embeddings, catalog.n_items) if args.embeddings else None
    report = index_report(index, catalog, emb)
    print_report(report, title=f"{catalog.name} index {args.index}")
    if args.out:
        write_report(report, Path(args.out), tag="index/report")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gream_lit index", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="embed item text and cache the matrix")
    _add_data_args(p)
    _add_embed_args(p)
    p.add_argument("--out", default="", help="also save the matrix to this .npy path")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("build", help="quantise embeddings into a collision-free semantic-ID index")
    p.add_argument("--config", default=None, help="YAML file whose keys are the flags below")
    _add_data_args(p)
    _add_embed_args(p)
    p.add_argument("--embeddings", default="", help="precomputed .npy instead of embedding the text")
    p.add_argument("--method", default="balanced_rqkmeans", choices=("rqkmeans", "balanced_rqkmeans"))
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--codebook_size", type=int, default=256)
    p.add_argument("--collision", default="rank", choices=("rank", "pad_all", "reassign"))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max_iter", type=int, default=30)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--n_init", type=int, default=1)
    p.add_argument("--out", required=True, help="output folder for <name>.index.json, sidecar and report")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("report", help="quality report of an existing index")
    _add_data_args(p)
    p.add_argument("--index", required=True)
    p.add_argument("--embeddings", default="", help="item embeddings .npy, for quantisation error")
    p.add_argument("--out", default="", help="folder for report.json and TensorBoard events")
    p.set_defaults(func=cmd_report)
    return parser


def _apply_config(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Flags override the YAML file's values, which override the defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    config = pre.parse_known_args(argv[1:])[0].config if argv else None
    if config:
        values = yaml.safe_load(Path(config).read_text()) or {}
        sub = parser._subparsers._group_actions[0].choices[argv[0]]
        unknown = sorted(set(values) - {a.dest for a in sub._actions})
        if unknown:
            raise SystemExit(f"{config}: unknown keys {unknown}")
        sub.set_defaults(**values)
        for action in sub._actions:
            if action.dest in values:
                action.required = False
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _apply_config(_parser(), argv)
    log.debug("index %s: %s", args.command, json.dumps(vars(args), default=str))
    return args.func(args)
