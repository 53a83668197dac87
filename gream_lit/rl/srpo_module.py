"""SRPO (docs/gream_spec.md §7.8) as a LightningModule with manual optimisation.

One ``training_step`` = one generation batch: sample ``G`` responses per prompt, score them (RSVR or
exact), keep the groups whose ``match`` varies (dynamic sampling). Kept groups accumulate over
generation batches until ``update_groups`` are ready (or ``max_gen_batches`` were drawn); then the
update runs: advantages (BGAE or GRPO), old and reference log-probs recomputed, and ``ppo_epochs``
passes of mini-batches of ``mini_batch_groups`` groups, each one optimizer step of the dual-clip PPO
loss plus ``kl_coef`` x low-variance KL, aggregated as a token mean over the mini-batch.
``trainer.global_step`` therefore counts optimizer steps (GREAM: 4 per generation step).

Unlike verl, reaching ``max_gen_batches`` with fewer than ``update_groups`` kept groups updates with
what was kept (verl stops with an error); the warm-up counts updates, as verl's does.

Across processes (strategies that keep whole replicas; ``rl/distributed.py``) every rank samples and
keeps its own groups; the update decision uses all ranks' kept groups, gathered in one process's order,
and each optimizer step's rows are split over the ranks with gradients summed, so the step is the token
mean of the whole mini-batch and all ranks stay identical.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass

import lightning as L
import torch
from jsonargparse.typing import PositiveInt  # a range the preflight checks
from lightning.pytorch.strategies import DDPStrategy

from gream_lit.data.direct_prompt import DirectPrompt
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.data.short_thoughts import ThoughtSource, ThoughtWriter
from gream_lit.data.stage_data import RLStageData
from gream_lit.inference import DirectEvaluator
from gream_lit.inference.exclusion import drop_seen
from gream_lit.inference.llm_stage import LLMStageModule
from gream_lit.inference.prefix_tables import id_vocab
from gream_lit.inference.reasoning import ReasoningOptions, reason_then_rank
from gream_lit.inference.sampling import Rollout, RolloutEngine, SamplingConfig, concat_rollouts
from gream_lit.inference.search_precision import check_test_dtype
from gream_lit.metrics import ranking_metrics
from gream_lit.modeling.attention import avoid_cudnn_attention
from gream_lit.modeling.backbone import resolve
from gream_lit.modeling.lora import LoraOptions
from gream_lit.modeling.slim_checkpoint import weights_fingerprint
from gream_lit.rl import telemetry
from gream_lit.rl.advantages import get_advantage
from gream_lit.rl.distributed import Ranks
from gream_lit.rl.filtering import filter_groups
from gream_lit.rl.kept import Kept, gather
from gream_lit.rl.losses import low_var_kl, masked_mean, policy_loss
from gream_lit.rl.policy import load_policy
from gream_lit.rl.rewards import MODES, RewardResult, get_reward, parse_answer, prompt_contexts, thought_reward
from gream_lit.rl.rl_data import seen_tensor
from gream_lit.rl.rollout_callback import ROLLOUT_KEY, ROLLOUT_SECONDS_KEY, RolloutCallback
from gream_lit.rl.sampled_eval import sample_rank_options, sample_ranked, sample_scores
from gream_lit.rl.thought_rollouts import ThoughtRolloutEngine, answers_after

log = logging.getLogger(__name__)


def _as(cls: type, value: object) -> object:
    return value if isinstance(value, cls) else cls(**dict(value))


@dataclass
class _Frozen:
    """Holds the reference model outside ``state_dict`` (it is never trained nor checkpointed)."""

    model: torch.nn.Module


class SRPOModule(LLMStageModule):
    """Group policy optimisation of a causal LM that recommends items by writing their semantic IDs.

    Args:
        backbone: ``tiny``, an HF name, a local folder (the SFT stage's output) or a GGUF alias.
        dtype: weights dtype of a real backbone.
        tiny: ``tiny_causal_lm`` options when ``backbone="tiny"``.
        lora: LoRA options; the reference policy is then the same weights with the adapter disabled.
            ``None`` trains all weights against a frozen copy.
        mode: ``reason`` or ``direct`` (must match the data module's prompts).
        reasoning: ``ReasoningOptions`` with ``layout: short``: SRPO of the short-thought curriculum
            (``mode: reason`` over compact prompts, ``thought_rollouts``): rollouts are thoughts of at most
            ``rollout.max_new_tokens`` tokens, each rewarded by ``rewards.thought_reward`` (``reward`` is
            not used), and the data module's ``eval_mode: reasoning`` tests with these options, as the
            curriculum's reasoning-mode test does. Needs ``eval_decoding: beam``.
        retrieval_weight: the short layout's weight of the target's retrieval credit.
        thought_source: the kinds the curriculum's thoughts name (its data module's ``thought_source``): the
            reasoning-mode test's ``grounded_rate`` checks each thought against its prompt's history.
        reward: ``rsvr`` (prefix credit), ``exact`` (0/1 ablation), or ``package.module.function`` taking
            ``(response, RewardContext)`` (``rewards.RewardContext``: target, history, user, index, catalogue).
        advantage: ``bgae`` (z-score + pass@k bonus), ``grpo`` (z-score only, ablation), or an importable
            ``f(rewards, group_size, *, exact, pass_k)`` (``advantages.AdvantageFn``).
        pass_k: k of the pass@k bonus.
        rollout: training sampling (GREAM: n=10, T=1, top-p=1, 1560 new tokens).
        val_sampling: validation sampling (GREAM: n=5, T=0.6, top-p=0.8).
        test_sampling: test sampling (GREAM reasoning eval: n=10, T=0.7, top-p=0.9).
        max_prompt_tokens: prompts are cut from the left beyond this.
        update_groups: prompt groups per update (GREAM: 256).
        max_gen_batches: generation batches drawn at most before updating with what was kept.
        mini_batch_groups: prompt groups per optimizer step (GREAM: 64).
        ppo_epochs: passes over the update batch.
        clip_low, clip_high, dual_clip_c: PPO ratio clip range and dual clip.
        kl_coef: weight of the KL-to-reference loss (0 skips the reference pass).
        lr, weight_decay, grad_clip, warmup_steps: AdamW, gradient-norm clip, linear warm-up in updates (GREAM: 10).
        forward_batch_size: sequences per forward pass when scoring log-probs.
        ks: cut-offs of the validation/test ranking metrics.
        eval_decoding: ``sample`` (docs/gream_spec.md §8.2: n samples ranked by log-prob) or, in direct mode
            and the short layout, ``beam`` (exact trie-constrained beam search, comparable with the SFT
            stages' direct tests).
        num_beams: beams of ``beam`` evaluation.
        test_dtype: ``float32``, or ``bfloat16`` for the ``beam`` test (a bfloat16 copy of the policy:
            ``inference.search_precision``).
        logits_vocab: ``full``, or ``ids`` (direct mode): rollouts are sampled from, and scored over,
            the ID tokens and EOS only, as is the beam evaluation; the policy of an SFT stage trained
            with ``logits_vocab: ids`` has no distribution over the other rows. In the short layout
            ``ids`` applies to the direct-mode beam test only (thoughts are text).
        log_samples_every: write sample rollouts to TensorBoard every this many generation batches.
        export_dir: if set, ``save_pretrained`` the policy and tokenizer there when training ends.
        avoid_cudnn_attention: on CUDA, switch PyTorch's cuDNN attention off (see
            ``gream_lit.modeling.attention``): rollout lengths change every batch.
    """

    log_prefix = "rl"
    data_contract = RLStageData

    def __init__(
        self,
        backbone: str = "smollm2-135m-instruct",
        dtype: str = "float32",
        tiny: dict | None = None,
        lora: LoraOptions | None = None,
        mode: str = "reason",
        reasoning: ReasoningOptions | None = None,
        retrieval_weight: float = 1.0,
        thought_source: ThoughtSource = "auto",
        reward: str = "rsvr",
        advantage: str = "bgae",
        pass_k: int = 4,
        rollout: SamplingConfig = SamplingConfig(),
        val_sampling: SamplingConfig = SamplingConfig(n=5, temperature=0.6, top_p=0.8),
        test_sampling: SamplingConfig = SamplingConfig(n=10, temperature=0.7, top_p=0.9),
        max_prompt_tokens: int = 768,
        update_groups: int = 256,
        max_gen_batches: int = 10,
        mini_batch_groups: int = 64,
        ppo_epochs: int = 1,
        clip_low: float = 0.2,
        clip_high: float = 0.2,
        dual_clip_c: float = 10.0,
        kl_coef: float = 0.001,
        lr: float = 2e-6,
        weight_decay: float = 0.1,
        warmup_steps: int = 10,
        grad_clip: float = 1.0,
        forward_batch_size: PositiveInt = 16,
        ks: tuple[int, ...] = (1, 5, 10),
        eval_decoding: str = "sample",
        num_beams: PositiveInt = 10,
        test_dtype: str = "float32",
        logits_vocab: str = "full",
        log_samples_every: int = 10,
        export_dir: str | None = None,
        avoid_cudnn_attention: bool = True,
    ) -> None:
        super().__init__()
        check_test_dtype(test_dtype)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        self._reward = get_reward(reward)
        self._advantage = get_advantage(advantage)
        self.reasoning = _as(ReasoningOptions, reasoning) if reasoning is not None else None
        if self.reasoning is not None and (self.reasoning.layout != "short" or mode != "reason"):
            raise ValueError("reasoning options are for SRPO of short thoughts: layout 'short' with mode 'reason'")
        self.short = self.reasoning is not None
        ids_ok = mode == "direct" or self.short
        if eval_decoding not in ("sample", "beam") or (eval_decoding == "beam" and not ids_ok):
            raise ValueError(
                f"eval_decoding {eval_decoding!r}: expected 'sample', or 'beam' with mode 'direct' or short thoughts"
            )
        if self.short and eval_decoding != "beam":
            raise ValueError("short-thought SRPO tests with the constrained search: set eval_decoding: beam")
        if logits_vocab not in ("full", "ids") or (logits_vocab == "ids" and not ids_ok):
            raise ValueError(
                f"logits_vocab {logits_vocab!r}: expected 'full', or 'ids' with mode 'direct' or short thoughts"
            )
        # the CLI may hand dataclass arguments over as plain dicts
        self.sampling = {
            "train": _as(SamplingConfig, rollout),
            "val": _as(SamplingConfig, val_sampling),
            "test": _as(SamplingConfig, test_sampling),
        }
        self.lora = _as(LoraOptions, lora) if lora is not None else None
        group_size = self.sampling["train"].n
        if advantage == "bgae" and not 1 <= pass_k <= group_size:
            raise ValueError(f"pass_k={pass_k} must lie in 1..rollout.n={group_size}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.policy: torch.nn.Module | None = None
        self.engine: RolloutEngine | None = None
        self._ref: _Frozen | None = None
        self._kept = Kept()
        self._direct_len = (4, 5)
        self._lookup: dict[str, int] = {}
        self.direct_eval: DirectEvaluator | None = None
        self._gen_batch = 0
        self._last_answers: list[str] = []
        self._writer: ThoughtWriter | None = None
        self._top1: dict[str, list[int]] = {"val": [], "test": []}
        self._seconds: dict[str, float] = {"val": 0.0, "test": 0.0}
        self.val_metrics = ranking_metrics(tuple(ks), prefix=f"{self.log_prefix}/val/")
        self.test_metrics = ranking_metrics(tuple(ks), prefix=f"{self.log_prefix}/test/")

    @property
    def stage_model(self) -> torch.nn.Module:
        return self.policy

    def base_source(self) -> str:
        return self.hparams.backbone

    def uses_search(self) -> bool:
        """Only the beam test decodes with the (merged, ``test_dtype``) search model."""
        return self.direct_eval is not None

    # ---- building -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        if stage == "fit" and self.trainer.world_size > 1 and not isinstance(strategy, DDPStrategy):
            raise ValueError(
                f"SRPO across processes sums whole-model gradients itself and needs a strategy that keeps whole "
                f"replicas (ddp, ddp_spawn); got {type(strategy).__name__}"
            )
        avoid_cudnn_attention(strategy.root_device, self.hparams.avoid_cudnn_attention)

    def configure_model(self) -> None:
        """Load the policy once the data module (and so the index) is known."""
        if self.policy is None:
            dm = self.stage_data()
            if dm.mode != self.hparams.mode:
                raise ValueError(f"SRPO mode {self.hparams.mode!r} but the data module builds {dm.mode!r} prompts")
            compact_reason = dm.mode == "reason" and dm.prompt_format == "compact"
            if compact_reason != self.short:
                raise ValueError(
                    "short-thought SRPO (model.init_args.reasoning) and compact reasoning prompts "
                    "(data.init_args.prompt_format: compact with mode: reason) go together"
                )
            if dm.eval_mode == "reasoning" and not self.short:
                raise ValueError("data eval_mode 'reasoning' tests the short layout: set model.init_args.reasoning")
            dm.load()
            self.setup_policy(dm.index)

    def setup_policy(self, index: SemanticIndex) -> None:
        """Policy, tokenizer, rollout engine and reference model for ``index``'s IDs."""
        hp = self.hparams
        self.policy, self.tokenizer = load_policy(hp.backbone, index, hp.dtype, hp.tiny, self.lora)
        if hp.backbone != "tiny":
            self.base_fingerprint = weights_fingerprint(resolve(hp.backbone))
        vocab = None
        if hp.logits_vocab == "ids":
            vocab = id_vocab(index, self.tokenizer)
        if self.short:
            opts = self.reasoning
            self.engine = ThoughtRolloutEngine(
                self.tokenizer, hp.max_prompt_tokens, hp.forward_batch_size, opts.think_prefix, opts.answer_open
            )
        else:
            self.engine = RolloutEngine(self.tokenizer, hp.max_prompt_tokens, hp.forward_batch_size, vocab)
        lengths = index.lengths()
        self._direct_len = (int(lengths.min()), int(lengths.max()))
        self._lookup = {index.item_string(i): i for i in range(index.n_items)}
        if hp.eval_decoding == "beam":
            self.direct_eval = DirectEvaluator.from_index(
                index, self.tokenizer, self.log_prefix, num_beams=hp.num_beams, ks=tuple(hp.ks), vocab=vocab
            ).to(self.device)
        if self.lora is None and hp.kl_coef > 0:
            ref = copy.deepcopy(self.policy).eval()
            ref.requires_grad_(False)
            self._ref = _Frozen(ref)

    def on_fit_start(self) -> None:
        if self._ref is not None:
            self._ref.model.to(self.device)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.policy.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        warmup = max(1, hp.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _keys(self, split: str, values: dict) -> dict:
        """``values`` under ``<log_prefix>/<split>/``."""
        return {f"{self.log_prefix}/{split}/{k}": v for k, v in values.items()}

    # ---- scoring --------------------------------------------------------------------------------
    def score(self, texts: list[str], batch: dict, group_size: int) -> list[RewardResult]:
        """Reward of every response (``group_size`` per prompt of ``batch``), each against its prompt's
        context: target, history, user, and the data module's index and catalogue."""
        dm = self.stage_data()
        contexts = prompt_contexts(batch, self.hparams.mode, self._direct_len, dm.index, dm.catalog)
        return [self._reward(text, contexts[i // group_size]) for i, text in enumerate(texts)]

    def score_rollout(self, rollout: Rollout, batch: dict) -> list[RewardResult]:
        """Rewards of a generation batch: ``score`` of the texts, or in the short layout
        ``rewards.thought_reward`` of each thought from what the policy answers after it."""
        if not self.short:
            return self.score(rollout.texts, batch, rollout.group_size)
        dm, g = self.stage_data(), rollout.group_size
        targets = [dm.index.item_tokens(item) for item in batch["item"] for _ in range(g)]
        target_ids = [self.tokenizer.convert_tokens_to_ids(t) for t in targets]
        top, logp = answers_after(
            self.policy,
            self.engine.answer_contexts(rollout),
            target_ids,
            self.direct_eval.tables,
            self.tokenizer.pad_token_id,
            self.hparams.forward_batch_size,
        )
        closed = self.engine.closed(rollout)
        n_items = dm.index.n_items
        close = self.reasoning.answer_open
        self._last_answers = [  # the sample table's answer column
            ("" if c else close) + (dm.index.item_string(int(t)) if t >= 0 else "") for c, t in zip(closed, top)
        ]
        return [
            thought_reward(
                closed[i],
                dm.index.item_string(int(top[i])) if top[i] >= 0 else None,
                batch["target"][i // g],
                float(logp[i]),
                n_items,
                self.hparams.retrieval_weight,
            )
            for i in range(len(rollout))
        ]

    def _log_rollout_stats(
        self, results: list[RewardResult], rollout: Rollout, kept: torch.Tensor, seconds: float | None
    ) -> None:
        stats = telemetry.rollout_stats(results, rollout, kept)
        if seconds is not None:
            stats["rollout_tokens_per_s"] = telemetry.tokens_per_second(float(rollout.response_mask.sum()), seconds)
        n = len(results)
        self.log_dict(self._keys("train", stats), on_step=True, batch_size=n, sync_dist=True)

    def _log_samples(self, batch: dict, rollout: Rollout, results: list[RewardResult]) -> None:
        """The first prompts' rollouts as a TensorBoard table, items by title (``telemetry.sample_table``)."""
        title, lookup, parse = self.stage_data().catalog.title, self._lookup, self._answer
        if self.short:  # the table shows each thought and the top answer the search gave after it
            shown = [t + a for t, a in zip(rollout.texts, self._last_answers)]
            rollout = dataclasses.replace(rollout, texts=shown)
            close = self.reasoning.answer_open
            parse = lambda text: parse_answer(text.rsplit(close, 1)[-1], "direct", self._direct_len)  # noqa: E731
        table = telemetry.sample_table(batch["history"], batch["item"], rollout, results, parse, lookup, title)
        telemetry.write_text(self, telemetry.SAMPLES_TEXT, table, self._gen_batch)

    # ---- training -------------------------------------------------------------------------------
    def configure_callbacks(self) -> list[L.Callback]:
        """A default ``RolloutCallback`` (the HF engine) unless the trainer was given one (another engine),
        and ``telemetry.ValidationSize``."""
        given = {type(cb) for cb in self.trainer.callbacks}
        return [
            cls() for cls in (RolloutCallback, telemetry.ValidationSize) if not any(issubclass(g, cls) for g in given)
        ]

    def training_step(self, batch: dict, batch_idx: int) -> None:
        hp = self.hparams
        rollout = batch.get(ROLLOUT_KEY)
        if rollout is None:
            raise RuntimeError("SRPOModule trains on the rollouts RolloutCallback puts in each batch; none were found")
        results = self.score_rollout(rollout, batch)
        match = torch.tensor([r.match for r in results])
        keep = filter_groups(match, rollout.group_size)
        self._gen_batch += 1
        seconds = batch.get(ROLLOUT_SECONDS_KEY)
        self._log_rollout_stats(results, rollout, keep, seconds)
        if hp.log_samples_every and self._gen_batch % hp.log_samples_every == 1 % hp.log_samples_every:
            self._log_samples(batch, rollout, results)
        kept = self._kept
        kept.add(rollout, keep, results, seconds)
        ranks = Ranks.of(self)
        groups = ranks.sum(kept.groups)  # every rank takes the same decision
        if groups < hp.update_groups and kept.gen_batches < hp.max_gen_batches:
            return
        self._kept = Kept()
        if groups == 0:
            self.log(f"{self.log_prefix}/train/skipped_updates", 1.0, on_step=True, batch_size=1)
            log.info("generation batch %d: no group with varying match; update skipped", self._gen_batch)
            return
        self.update(gather(kept, ranks, self.device))

    @property
    def _temperature(self) -> float:
        return self.sampling["train"].temperature

    @staticmethod
    def _on_rows(rows: torch.Tensor, values: torch.Tensor, rollout: Rollout) -> torch.Tensor:
        """``values`` of ``rows`` placed in a ``[len(rollout), R]`` tensor (zeros elsewhere)."""
        out = values.new_zeros((len(rollout), values.shape[1]))
        out[rows] = values
        return out

    def _reference_logprobs(self, rollout: Rollout, rows: torch.Tensor) -> torch.Tensor | None:
        hp = self.hparams
        if hp.kl_coef == 0:
            return None
        with torch.no_grad():
            if self._ref is not None:
                values = self.engine.logprobs(self._ref.model, rollout, rows, self._temperature)
            else:
                with self.policy.disable_adapter():
                    values = self.engine.logprobs(self.policy, rollout, rows, self._temperature)
        return self._on_rows(rows, values, rollout)

    def update(self, kept: Kept) -> None:
        """PPO mini-batch steps on (at most) the first ``update_groups`` kept groups."""
        hp = self.hparams
        g = kept.rollouts[0].group_size
        rollout = concat_rollouts(kept.rollouts, self.tokenizer.pad_token_id)
        rewards, exact = torch.cat(kept.rewards), torch.cat(kept.exact)
        n_rows = min(len(rollout), hp.update_groups * g)
        rows = torch.arange(n_rows, device=rollout.response_ids.device)
        rollout, rewards, exact = rollout.select(rows), rewards[:n_rows], exact[:n_rows]
        adv = self._advantage(rewards, g, exact=exact, pass_k=hp.pass_k).to(self.device, torch.float32)
        ranks = Ranks.of(self)
        mini_batches = [
            torch.arange(start * g, min(n_rows, (start + hp.mini_batch_groups) * g), device=rows.device)
            for start in range(0, n_rows // g, hp.mini_batch_groups)
        ]
        shares = [ranks.share(mb) for mb in mini_batches]
        own = torch.cat(shares)  # this rank's rows of every mini-batch (all rows in one process)
        self.policy.eval()  # no dropout: old and new log-probs come from the same function
        with torch.no_grad():
            old = self._on_rows(own, self.engine.logprobs(self.policy, rollout, own, self._temperature), rollout)
        ref = self._reference_logprobs(rollout, own)
        mask = rollout.response_mask.bool()
        finite = torch.where(mask, torch.isfinite(old), True).all(1)
        if ref is not None:
            finite &= torch.where(mask, torch.isfinite(ref), True).all(1)
        mask &= finite.unsqueeze(1)
        old = torch.where(mask, old, 0.0)
        ref = torch.where(mask, ref, 0.0) if ref is not None else None
        stats = {"adv_mean": adv.mean().item(), "adv_std": adv.std().item() if len(adv) > 1 else 0.0}
        stats["nonfinite_seqs"] = float((~finite).sum())
        stats["groups_updated"] = float(n_rows // g)
        step_stats: dict[str, list[float]] = {"pg_loss": [], "kl": [], "clip_fraction": [], "grad_norm": []}
        skipped = 0
        tokens_per_s = telemetry.tokens_per_second(kept.tokens, kept.seconds)
        for _ in range(hp.ppo_epochs):
            for mb, mine in zip(mini_batches, shares):
                step = self.global_step
                result = self._optimizer_step(rollout, mb, mine, old, ref, adv, mask, ranks)
                if result is None:
                    skipped += 1
                    continue
                for k, v in result.items():
                    step_stats[k].append(v)
                scalars = telemetry.step_scalars(result, rewards[mb.cpu()], g, tokens_per_s)
                telemetry.write_step(self, scalars, step)
        self.lr_schedulers().step()  # once per update, as verl: warm-up counts generation steps
        stats["skipped_steps"] = float(skipped)
        stats["skipped_updates"] = 0.0
        stats["lr"] = self.optimizers().param_groups[0]["lr"]
        stats.update({k: sum(v) / len(v) for k, v in step_stats.items() if v})
        self.log_dict(self._keys("train", stats), on_step=True, batch_size=n_rows)

    def _optimizer_step(
        self,
        rollout: Rollout,
        rows: torch.Tensor,
        mine: torch.Tensor,
        old: torch.Tensor,
        ref: torch.Tensor | None,
        adv: torch.Tensor,
        mask: torch.Tensor,
        ranks: Ranks,
    ) -> dict[str, float] | None:
        """One optimizer step on the mini-batch ``rows``, of which this rank computes ``mine``; micro-batches
        accumulate an exact token mean over all of ``rows``, summed over ranks. ``None`` = skipped (on
        every rank alike)."""
        hp = self.hparams
        opt = self.optimizers()
        opt.zero_grad()
        total_tokens = mask[rows].sum().clamp(min=1).float()
        sums = torch.zeros(4, dtype=torch.float64)  # pg, kl, clip fraction, non-finite losses
        with ranks.no_grad_sync():
            for start in range(0, len(mine), hp.forward_batch_size):
                r = mine[start : start + hp.forward_batch_size]
                m = mask[r]
                tokens = m.sum().float()
                if tokens == 0:
                    continue
                logp = torch.where(m, self.engine.logprobs(self.policy, rollout, r, self._temperature), 0.0)
                pg, clip = policy_loss(logp, old[r], adv[r], m, hp.clip_low, hp.clip_high, hp.dual_clip_c)
                kl = (
                    masked_mean(low_var_kl(logp, ref[r]), m) if ref is not None else torch.zeros((), device=logp.device)
                )
                loss = (pg + hp.kl_coef * kl) * (tokens / total_tokens)
                if not torch.isfinite(loss):
                    sums[3] += 1
                    break
                self.manual_backward(loss)
                weight = (tokens / total_tokens).item()
                sums[:3] += torch.tensor([pg.item(), kl.item(), clip.item()]) * weight
        sums = ranks.sum_tensor(sums)
        if sums[3] > 0:
            opt.zero_grad()
            return None
        params = [p for p in self.policy.parameters() if p.requires_grad]
        ranks.sum_grads(params)
        norm = torch.nn.utils.clip_grad_norm_(params, hp.grad_clip)
        if not torch.isfinite(norm):
            opt.zero_grad()
            return None
        opt.step()
        pg_sum, kl_sum, clip_sum = sums[:3].tolist()
        return {"pg_loss": pg_sum, "kl": kl_sum, "clip_fraction": clip_sum, "grad_norm": norm.item()}

    # ---- evaluation -----------------------------------------------------------------------------
    def _reasoning_eval(self) -> bool:
        return self.short and self.stage_data().eval_mode == "reasoning"

    def _reason(self, batch: dict):
        """The short layout's reasoning-mode decoding of ``batch``'s prompts, as the curriculum tests it:
        a greedy thought, closed where the model did not, then the constrained beams."""
        ids, mask = self.engine.encode(batch["messages"], self.device)
        tables = self.direct_eval.tables
        seen = seen_tensor(batch, self.device)
        return reason_then_rank(self.decoding_model(), self.tokenizer, ids, mask, tables, self.reasoning, seen)

    def _evaluate_reasoning(self, batch: dict, split: str, metrics) -> dict[str, torch.Tensor]:
        """Reasoning-mode ranking metrics plus ``close_rate`` (thoughts the model closed itself),
        ``distinct_top1`` and ``users_per_s`` (logged at the epoch's end)."""
        start = time.perf_counter()
        result = self._reason(batch)
        self._seconds[split] += time.perf_counter() - start
        self._top1[split] += result.items[:, 0].tolist()
        target = torch.tensor(batch["item"], device=result.items.device)
        metrics.update(result.items, target)
        b = len(batch["item"])
        closed = result.answered.float().mean().item()
        self.log(f"{self.log_prefix}/{split}/close_rate", closed, on_epoch=True, batch_size=b, sync_dist=True)
        writer = self.thought_writer()
        grounded = sum(writer.grounded(t, h) for t, h in zip(result.texts, batch["history"])) / b
        self.log(f"{self.log_prefix}/{split}/grounded_rate", grounded, on_epoch=True, batch_size=b, sync_dist=True)
        self.log_dict(metrics, on_epoch=True, batch_size=b)
        return {"user": torch.tensor(batch["user"]), "target": target, "items": result.items}

    def thought_writer(self) -> ThoughtWriter:
        """The curriculum's thought writer over this run's catalogue (and index, for ``codes``)."""
        if self._writer is None:
            dm = self.stage_data()
            self._writer = ThoughtWriter.over_index(dm.catalog, self.hparams.thought_source, dm.index)
        return self._writer

    def _log_reasoning_rates(self, split: str) -> None:
        top1, seconds = self._top1[split], self._seconds[split]
        if top1:
            self.log(f"{self.log_prefix}/{split}/distinct_top1", len(set(top1)) / len(top1))
            self.log(f"{self.log_prefix}/{split}/users_per_s", len(top1) / max(seconds, 1e-9))
        self._top1[split], self._seconds[split] = [], 0.0

    def on_validation_epoch_end(self) -> None:
        self._log_reasoning_rates("val")

    def on_test_epoch_end(self) -> None:
        self._log_reasoning_rates("test")
        super().on_test_epoch_end()

    def _evaluate(self, batch: dict, sampling: SamplingConfig, split: str, metrics) -> dict[str, torch.Tensor]:
        """Sample ``n`` answers per prompt, rank them by the model's total log-prob (docs/gream_spec.md §8.2), score them."""
        if self._reasoning_eval():
            return self._evaluate_reasoning(batch, split, metrics)
        if self.direct_eval is not None:
            # direct mode, exact trie-constrained beam search: the SFT stages' ranking
            ids, mask = self.engine.encode(batch["messages"], self.device)
            target = torch.tensor(batch["item"], device=self.device)
            model = self.decoding_model()  # the search model in a test epoch
            result = self.direct_eval.step(self, model, ids, mask, target, split, seen_tensor(batch, self.device))
            return {"user": torch.tensor(batch["user"]), "target": target, "items": result.items}
        rollout, ranked, _ = self._sample_ranked(batch, sampling)
        ranked = drop_seen(ranked, seen_tensor(batch, ranked.device))
        results = self.score(rollout.texts, batch, rollout.group_size)
        target = torch.tensor(batch["item"])
        metrics.update(ranked, target)
        b = len(batch["item"])
        values = sample_scores(results, sampling.n)
        self.log_dict(self._keys(split, values), on_epoch=True, batch_size=b, sync_dist=True)
        self.log_dict(metrics, on_epoch=True, batch_size=b)
        return {"user": torch.tensor(batch["user"]), "target": target, "items": ranked}

    def _sample_ranked(self, batch: dict, sampling: SamplingConfig) -> tuple[Rollout, torch.Tensor, list[str]]:
        """``sampled_eval.sample_ranked`` of the policy on ``batch``'s prompts."""
        item = lambda text: self._lookup.get(self._answer(text) or "", -1)  # noqa: E731
        return sample_ranked(self.engine, self.policy, batch["messages"], sampling, item)

    def _answer(self, text: str) -> str | None:
        return parse_answer(text, self.hparams.mode, self._direct_len)

    def bundle_prompt(self) -> DirectPrompt:
        return self.stage_data().direct_prompt(self.hparams.max_prompt_tokens)

    def bundle_reasoning(self) -> tuple[ReasoningOptions, DirectPrompt] | None:
        """A reasoning-mode policy's bundle ranks ``n`` test samples by log-prob, as its test does; a
        short-thought policy's thinks, then searches, as its reasoning-mode test does."""
        if self.hparams.mode == "direct":
            return None
        prompt = self.stage_data().reasoning_prompt(self.hparams.max_prompt_tokens)
        return (self.reasoning if self.short else sample_rank_options(self.sampling["test"])), prompt

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Ranked items of the test users' prompts, decoded as the stage's test decodes them; sampled
        decoding adds each user's best-ranked text (``PredictionWriter``: ``reasoning``)."""
        user = torch.tensor(batch["user"])
        if self._reasoning_eval():
            result = self._reason(batch)
            return {"user": user, "items": result.items, "texts": result.texts}
        if self.direct_eval is not None:
            ids, mask = self.engine.encode(batch["messages"], self.device)
            seen = seen_tensor(batch, self.device)
            return {"user": user, "items": self.direct_eval.rank(self.decoding_model(), ids, mask, seen).items}
        _, ranked, best = self._sample_ranked(batch, self.sampling["test"])
        return {"user": user, "items": drop_seen(ranked, seen_tensor(batch, ranked.device)), "texts": best}

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, self.sampling["val"], "val", self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, self.sampling["test"], "test", self.test_metrics)

    def on_train_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            self.policy.save_pretrained(self.hparams.export_dir)
            self.tokenizer.save_pretrained(self.hparams.export_dir)
            self.write_bundles(self.hparams.export_dir)
            log.info("policy saved to %s", self.hparams.export_dir)
