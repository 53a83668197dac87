"""Exact-score constrained beam search over semantic IDs, batched over users.

Why not ``model.generate``: HF beam search copies each prompt once per beam before the prefill and
calls a Python ``prefix_allowed_tokens_fn`` per beam per step. Here each prompt is prefilled once, the
KV cache is expanded to the beams, and every step looks up the allowed tokens of all beams of all users
with one gather on dense tables (``prefix_tables``). Scores are sums of true log-probs: log-softmax over
the full vocabulary first, then the mask. Works for decoder-only LMs (plain or peft-wrapped) and for
encoder-decoders (TIGER's T5).

With ``vocab`` (the ID tokens plus EOS), a decoder-only model is scored over that vocabulary alone:
the head runs on those rows only and the log-softmax normalises over them. That is the exact search
of a model trained with the same restricted softmax (``SFTModule(logits_vocab="ids")``); for a model
trained over the full vocabulary it renormalises each step, which ``benchmarks/bench_eval_cpu.py``
compares against the full-vocabulary search.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

from gream_lit.inference.exclusion import closed_states, open_slots
from gream_lit.inference.prefix_tables import PrefixTables

# transformers renamed the cache argument and output field from ``past_key_values`` to ``cache`` during
# 5.x; pyproject allows any 5.x, so use whichever this install has (5.17 on the GPU image, 5.24 here).
CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def _trim_left(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the leading columns that pad every row (a chunk of a left-padded batch)."""
    real = attention_mask.any(0).nonzero()
    start = int(real[0]) if len(real) else 0
    return input_ids[:, start:], attention_mask[:, start:]


@dataclass
class BeamResult:
    """Top hypotheses per user, best first.

    Attributes:
        items: ``[B, num_beams]`` item indices; ``-1`` where fewer hypotheses exist or (per-position
            rule) the decoded ID is no catalogue item.
        scores: ``[B, num_beams]`` sequence log-probs (sum over steps); ``-inf`` for missing hypotheses.
        tokens: ``[B, num_beams, steps]`` decoded token ids.
    """

    items: torch.Tensor
    scores: torch.Tensor
    tokens: torch.Tensor


class _Stepper:
    """Runs the model: one prefill per prompt, then one-token steps over ``B * num_beams`` rows."""

    def __init__(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        vocab: torch.Tensor | None = None,
    ) -> None:
        self.model = model
        self.enc_dec = bool(getattr(model.config, "is_encoder_decoder", False))
        self.body = self.head_weight = self.head_bias = None
        if vocab is not None:
            if self.enc_dec:
                raise ValueError("a restricted scoring vocabulary is for decoder-only models")
            lm = model.get_base_model() if hasattr(model, "get_base_model") else model
            head = lm.get_output_embeddings()
            self.body = lm.base_model
            self.head_weight = head.weight[vocab]  # peft's trainable-token wrapper returns merged rows
            bias = getattr(head, "bias", None)
            self.head_bias = None if bias is None else bias[vocab]
        self.mask = attention_mask
        self.cache = None
        self.encoder_outputs = None
        self.positions: torch.Tensor | None = None
        self.input_ids = input_ids

    def prefill(self) -> torch.Tensor:
        """Last-position logits ``[B, V]`` of every prompt."""
        if self.enc_dec:
            self.encoder_outputs = self.model.get_encoder()(input_ids=self.input_ids, attention_mask=self.mask)
            start = torch.full(
                (self.input_ids.shape[0], 1), self.model.config.decoder_start_token_id, device=self.input_ids.device
            )
            out = self.model(
                encoder_outputs=self.encoder_outputs, attention_mask=self.mask, decoder_input_ids=start, use_cache=True
            )
        else:
            self.positions = (self.mask.long().cumsum(-1) - 1).clamp(min=0)
            out = self._decoder(self.input_ids, use_cache=True)
            self.positions = self.positions[:, -1:]
        self.cache = getattr(out, CACHE)
        return self._last_logits(out)

    def _decoder(self, input_ids: torch.Tensor, **kwargs):
        """Decoder-only forward: the body alone when scoring a restricted vocabulary."""
        common = {"input_ids": input_ids, "attention_mask": self.mask, "position_ids": self.positions, **kwargs}
        if self.body is not None:
            return self.body(**common)
        return self.model(**common, logits_to_keep=1)

    def _last_logits(self, out) -> torch.Tensor:
        if self.body is None:
            return out.logits[:, -1]
        logits = out.last_hidden_state[:, -1] @ self.head_weight.T
        return logits if self.head_bias is None else logits + self.head_bias

    def expand(self, num_beams: int) -> None:
        """Repeat the prompt state to ``num_beams`` rows per user (user-major order)."""
        self.cache.batch_repeat_interleave(num_beams)
        self.mask = self.mask.repeat_interleave(num_beams, dim=0)
        if self.enc_dec:
            hidden = self.encoder_outputs.last_hidden_state.repeat_interleave(num_beams, dim=0)
            self.encoder_outputs = type(self.encoder_outputs)(last_hidden_state=hidden)
        else:
            self.positions = self.positions.repeat_interleave(num_beams, dim=0)

    def reorder(self, rows: torch.Tensor) -> None:
        """Point every beam row at its parent's cache.

        A parent is always a beam of the same user, so the prompt part of the cache (and an
        encoder-decoder's cross-attention cache) is already right: only the generated suffix is
        gathered, instead of copying the whole cache every step as HF ``reorder_cache`` does.
        """
        if self.enc_dec:
            self.cache.self_attention_cache.reorder_cache(rows)
            return
        start = self.input_ids.shape[1]
        for layer in self.cache.layers:
            if type(layer) is DynamicLayer:
                layer.keys[:, :, start:] = layer.keys[:, :, start:].index_select(0, rows)
                layer.values[:, :, start:] = layer.values[:, :, start:].index_select(0, rows)
            else:  # sliding-window, static or quantised layers keep their own layout
                layer.reorder_cache(rows)

    def step(self, tokens: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """Reorder the cache to the surviving ``rows`` and feed one token per row; logits ``[N, V]``."""
        if rows is not None:
            self.reorder(rows)
        tokens = tokens.reshape(-1, 1)
        if self.enc_dec:
            out = self.model(
                encoder_outputs=self.encoder_outputs,
                attention_mask=self.mask,
                decoder_input_ids=tokens,
                **{CACHE: self.cache},
                use_cache=True,
            )
        else:
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
            self.positions = self.positions + 1
            out = self._decoder(tokens, **{CACHE: self.cache}, use_cache=True)
        self.cache = getattr(out, CACHE)
        return self._last_logits(out)


def vocab_positions(
    vocab: torch.Tensor, tokens: torch.Tensor, error: str = "decodable token ids outside the scoring vocabulary"
) -> torch.Tensor:
    """``[max id + 1]`` map from vocabulary id to its column in logits restricted to ``vocab`` (-1 outside);
    raises ``error`` with the offenders when one of ``tokens`` (ids that will be looked up) lies outside."""
    tokens = tokens.reshape(-1)
    size = int(max(vocab.max(), tokens.max())) + 1
    position = torch.full((size,), -1, dtype=torch.long, device=vocab.device)
    position[vocab] = torch.arange(len(vocab), device=vocab.device)
    outside = tokens[position[tokens.to(vocab.device)] < 0]
    if outside.numel():
        raise ValueError(f"{error}: {sorted(set(outside.tolist()))[:10]}")
    return position


def _select(cand: torch.Tensor, num_beams: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``num_beams`` of ``[B, C]`` candidate scores, stable on ties; pads with ``-inf`` when C < beams."""
    if cand.shape[1] < num_beams:
        pad = cand.new_full((cand.shape[0], num_beams - cand.shape[1]), float("-inf"))
        cand = torch.cat([cand, pad], dim=1)
    scores, idx = torch.sort(cand, dim=1, descending=True, stable=True)
    return scores[:, :num_beams], idx[:, :num_beams]


@torch.no_grad()
def constrained_beam_search(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tables: PrefixTables,
    num_beams: int = 10,
    vocab: torch.Tensor | None = None,
    max_cache_tokens: int | None = None,
    exclude: torch.Tensor | None = None,
) -> BeamResult:
    """Beam search restricted by ``tables`` for a batch of prompts.

    Args:
        model: HF causal LM (plain or peft) or encoder-decoder, in eval mode, on the prompts' device.
        input_ids: ``[B, T]`` prompts, **left-padded** for causal LMs (any padding for encoder-decoders).
        attention_mask: ``[B, T]`` 1 for real tokens.
        tables: transition tables on the model's device (``build_prefix_tables(...).to(device)``).
        num_beams: hypotheses kept per user; may exceed the number of valid IDs (extra slots get
            item ``-1`` and score ``-inf``). With ``num_beams >= n_items`` the trie result is the exact
            full ranking of the catalogue by sequence log-prob.
        vocab: sorted vocabulary ids to score over (every token of ``tables`` among them); ``None``
            scores over the full vocabulary (see the module docstring).
        max_cache_tokens: bound on ``users x num_beams x prompt length``, the tokens the KV cache holds
            once every prompt is copied to its beams: larger batches are searched a few users at a time
            (same results). A reasoning answer follows a long prompt plus its thinking, where the copies
            dominate memory; ``None``: no bound.
        exclude: ``[B, H]`` catalogue indices each user must not be given (``-1`` padded), e.g. the
            items already in their history (``exclude_seen``). Masked inside the search
            (``inference.exclusion``), so the top ``num_beams`` stay full whenever enough items remain.

    Raises:
        RuntimeError: a user is left with no live hypothesis (an empty allowed set); the search never
            falls back to unconstrained generation.
        ValueError: ``exclude`` with per-position tables, or excluding every item of a user.
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask must both be [B, T]")
    batch = input_ids.shape[0]
    if max_cache_tokens is not None and batch > 1 and batch * num_beams * input_ids.shape[1] > max_cache_tokens:
        users = max(1, max_cache_tokens // (num_beams * input_ids.shape[1]))
        parts = [
            constrained_beam_search(
                model,
                *_trim_left(input_ids[i : i + users], attention_mask[i : i + users]),
                tables,
                num_beams,
                vocab,
                exclude=None if exclude is None else exclude[i : i + users],
            )
            for i in range(0, batch, users)
        ]
        return BeamResult(*(torch.cat([getattr(p, f) for p in parts]) for f in ("items", "scores", "tokens")))
    if exclude is not None and exclude.shape[0] != batch:
        raise ValueError(f"exclude has {exclude.shape[0]} rows for {batch} prompts")
    closed = None if exclude is None else closed_states(tables, exclude.to(input_ids.device))
    stepper = _Stepper(model, input_ids, attention_mask, vocab)
    position = None if vocab is None else vocab_positions(vocab, torch.cat([t.reshape(-1) for t in tables.tokens]))
    logits = stepper.prefill()
    beam_scores = logits.new_zeros((batch, 1), dtype=torch.float32)
    states = torch.zeros((batch, 1), dtype=torch.long, device=input_ids.device)
    seqs = torch.zeros((batch, 1, 0), dtype=torch.long, device=input_ids.device)
    alive_ok = torch.ones((), dtype=torch.bool, device=input_ids.device)
    for t in range(tables.steps):
        logp = logits.float().log_softmax(-1).view(batch, states.shape[1], -1)
        tok = tables.tokens[t][states]  # [B, b, M]
        valid = tables.valid[t][states]
        if closed is not None:
            valid = valid & open_slots(closed[t], tables.next_state[t][states])
        gain = logp.gather(-1, tok if position is None else position[tok])
        gain = torch.where(tables.scored[t][states].unsqueeze(-1), gain, torch.zeros_like(gain))
        cand = torch.where(valid, beam_scores.unsqueeze(-1) + gain, torch.full_like(gain, float("-inf")))
        width = tok.shape[-1]
        alive_ok &= ~(torch.isfinite(beam_scores) & ~valid.any(-1)).any()
        flat = cand.flatten(1)
        beam_scores, idx = _select(flat, num_beams)
        alive_ok &= torch.isfinite(beam_scores[:, 0]).all()
        idx = idx.clamp(max=flat.shape[1] - 1)  # padding slots (score -inf) may point at any real candidate
        parent = idx // width
        chosen = tok.flatten(1).gather(1, idx)
        states = tables.next_state[t][states].flatten(1).gather(1, idx)
        seqs = torch.cat([seqs.gather(1, parent.unsqueeze(-1).expand(-1, -1, seqs.shape[-1])), chosen.unsqueeze(-1)], 2)
        if t == tables.steps - 1:
            break
        if t == 0:
            stepper.expand(num_beams)
            rows = None
        else:
            rows = (parent + torch.arange(batch, device=parent.device).unsqueeze(1) * num_beams).flatten()
        logits = stepper.step(chosen, rows)
    if not bool(alive_ok):
        raise RuntimeError("constrained decoding left a user with no allowed continuation (empty allowed set)")
    items = tables.leaf_item[states] if tables.leaf_item is not None else tables.sequence_items(seqs)
    items = torch.where(torch.isfinite(beam_scores), items, torch.full_like(items, -1))
    return BeamResult(items=items, scores=beam_scores, tokens=seqs)
