"""SRPO math against the spec's hand-worked oracles (§7.3 RSVR, §7.4 BGAE table + example, §7.5, §7.6)."""

from __future__ import annotations

import math

import pytest
import torch

from gream_lit.rl import (
    bgae_advantages,
    exact_reward,
    filter_groups,
    grpo_advantages,
    low_var_kl,
    passk_bonus,
    policy_loss,
    rsvr_reward,
)

TARGET = "<|a_3|><|b_7|><|c_1|><|d_9|>"


def reason(answer: str) -> str:
    return f"<think>\nStep 1 ...\n</think>\n\nthe recommended product is <answer>{answer}</answer><|im_end|>"


@pytest.mark.parametrize(
    "answer, reward, levels",
    [
        (TARGET, 1.0, 4),
        ("<|a_3|><|b_7|><|c_1|><|d_2|>", 0.866, 3),
        ("<|a_3|><|b_7|><|c_2|><|d_9|>", 0.707, 2),
        ("<|a_3|><|b_1|><|c_1|><|d_9|>", 0.5, 1),
        ("<|a_4|><|b_7|><|c_1|><|d_9|>", 0.0, 0),
        ("<|a_3|><|b_7|><|c_1|><|d_9|><|e_1|>", 0.95, 4),
    ],
)
def test_rsvr_prefix_credit(answer: str, reward: float, levels: int) -> None:
    r = rsvr_reward(reason(answer), TARGET)
    assert r.reward == pytest.approx(reward)
    assert r.match == pytest.approx(reward)
    assert r.matched_levels == levels
    assert r.format_ok and r.exact == (reward == 1.0)


def test_rsvr_format_gate_zeroes_reward_but_keeps_match() -> None:
    no_think_close = f"<think>\nStep 1 <answer>{TARGET}</answer>"
    r = rsvr_reward(no_think_close, TARGET)
    assert (r.reward, r.match, r.format_ok, r.exact, r.hit) == (0.0, 1.0, False, True, False)
    assert rsvr_reward(reason(TARGET), TARGET).hit


def test_rsvr_answer_with_text_inside_is_not_parsed() -> None:
    r = rsvr_reward(reason(f"item {TARGET}"), TARGET)
    assert (r.reward, r.match, r.format_ok) == (0.0, 0.0, False)


def test_rsvr_first_all_id_answer_wins() -> None:
    text = f"<think>x</think><answer>none</answer><answer>{TARGET}</answer><answer><|a_1|></answer>"
    assert rsvr_reward(text, TARGET).reward == 1.0


@pytest.mark.parametrize("response", ["", "<|im_end|>", "garbage <answer></answer>", "<think></think><answer>"])
def test_rsvr_empty_or_malformed_is_zero(response: str) -> None:
    r = rsvr_reward(response, TARGET)
    assert (r.reward, r.match, r.format_ok, r.exact, r.matched_levels) == (0.0, 0.0, False, False, 0)


def test_rsvr_direct_mode() -> None:
    assert rsvr_reward(f"sure: {TARGET}", TARGET, mode="direct").reward == 1.0
    short = rsvr_reward("<|a_3|><|b_7|>", TARGET, mode="direct")
    assert (short.format_ok, short.reward) == (False, 0.0)
    tiny = rsvr_reward("<|a_3|><|b_1|>", "<|a_3|><|b_7|>", mode="direct", direct_len=(2, 2))
    assert (tiny.format_ok, tiny.reward) == (True, 0.5)


def test_rsvr_lcrec_token_style() -> None:
    target = "<a_2><b_6><c_0><d_8>"
    assert rsvr_reward(reason("<a_2><b_6><c_5><d_8>"), target).reward == pytest.approx(0.707)
    assert rsvr_reward(reason(target), target).exact


def test_rsvr_rejects_target_without_ids() -> None:
    with pytest.raises(ValueError, match="no semantic-ID tokens"):
        rsvr_reward(reason(TARGET), "item 3")


def test_exact_reward_is_binary() -> None:
    assert exact_reward(reason("<|a_3|><|b_7|><|c_1|><|d_2|>"), TARGET).reward == 0.0
    assert exact_reward(reason(TARGET), TARGET).reward == 1.0
    assert exact_reward(f"<answer>{TARGET}</answer>", TARGET).reward == 0.0


# (c, rho, sigma, bonus on hit, bonus on non-hit) for n = 10, K = 4: docs/gream_spec.md §7.4 table.
BONUS_TABLE = [
    (1, 0.4000, 0.4899, 1.2247, -0.1361),
    (2, 0.6667, 0.4714, 0.7071, -0.1768),
    (3, 0.8333, 0.3727, 0.4472, -0.1917),
    (4, 0.9286, 0.2575, 0.2773, -0.1849),
    (5, 0.9762, 0.1525, 0.1562, -0.1562),
    (6, 0.9952, 0.0688, 0.0692, -0.1038),
    (7, 1.0, 0.0, 0.0, 0.0),
    (10, 1.0, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("hits, rho, sigma, on_hit, on_miss", BONUS_TABLE)
def test_passk_bonus_table(hits: int, rho: float, sigma: float, on_hit: float, on_miss: float) -> None:
    got_hit, got_miss = passk_bonus(hits, 10, 4)
    assert got_hit == pytest.approx(on_hit, abs=1e-4)
    assert got_miss == pytest.approx(on_miss, abs=1e-4)
    assert (1 - rho) / (sigma + 1e-6) == pytest.approx(on_hit, abs=2e-3)


def test_passk_bonus_zero_without_hits_and_rejects_bad_k() -> None:
    assert passk_bonus(0, 10, 4)[1] == 0.0
    with pytest.raises(ValueError, match="1 <= k <= group_size"):
        passk_bonus(1, 3, 4)


def test_bgae_worked_example() -> None:
    rewards = torch.tensor([1, 0.866, 0.5, 0.5, 0, 0, 0, 0, 0.707, 0], dtype=torch.float64)
    z = grpo_advantages(rewards, 10)
    expected_z = [1.589, 1.257, 0.353, 0.353, -0.883, -0.883, -0.883, -0.883, 0.864, -0.883]
    assert z.tolist() == pytest.approx(expected_z, abs=1e-3)
    a = bgae_advantages(rewards, 10, k=4)
    expected_a = [2.813, 1.121, 0.217, 0.217, -1.019, -1.019, -1.019, -1.019, 0.728, -1.019]
    assert a.tolist() == pytest.approx(expected_a, abs=1e-3)


def test_bgae_exact_mask_overrides_reward_test_and_groups_are_independent() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0])
    no_hits = bgae_advantages(rewards, 2, k=1, exact_mask=torch.zeros(4, dtype=torch.bool))
    assert torch.allclose(no_hits, grpo_advantages(rewards, 2))
    with_hit = bgae_advantages(rewards, 2, k=1)
    # group 0: one hit of two, k=1 -> rho = 0.5, sigma = 0.5: +1 on the hit, -1 on the miss.
    assert with_hit[:2].tolist() == pytest.approx([0.7071 + 1.0, -0.7071 - 1.0], abs=1e-4)
    assert torch.allclose(with_hit[2:], grpo_advantages(rewards, 2)[2:])


def test_grpo_group_of_one_and_constant_group() -> None:
    assert grpo_advantages(torch.tensor([0.5, 2.0]), 1).tolist() == pytest.approx([0.5, 2.0], abs=1e-5)
    zeros = grpo_advantages(torch.zeros(4), 4)
    assert torch.isfinite(zeros).all() and zeros.abs().max() == 0
    with pytest.raises(ValueError, match="groups of 3"):
        grpo_advantages(torch.zeros(4), 3)


def test_filter_groups_keeps_only_varied_match() -> None:
    match = torch.tensor([0.0, 0.0, 0.5, 0.0, 0.707, 0.707, 1.0, 1.0])
    assert filter_groups(match, 2).tolist() == [False, True, False, False]
    assert filter_groups(match, 4).tolist() == [True, True]


def test_policy_loss_hand_values() -> None:
    # one token each: (A, ratio) -> per-token loss
    # (+1, 1.5) -> max(-1.5, -1.2) = -1.2 (clipped); (-1, 0.5) -> max(0.5, 0.8) = 0.8 (clipped);
    # (-1, 20) -> min(max(20, 1.2), 10) = 10 (dual clip); (+1, 1.0) -> -1 (not clipped)
    ratios = torch.tensor([[1.5], [0.5], [20.0], [1.0]])
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0])
    logp = torch.log(ratios)
    old = torch.zeros_like(logp)
    mask = torch.ones_like(logp)
    loss, clip = policy_loss(logp, old, adv, mask, 0.2, 0.2, 10.0)
    assert loss.item() == pytest.approx((-1.2 + 0.8 + 10.0 - 1.0) / 4, abs=1e-5)
    assert clip.item() == pytest.approx(0.5)
    mask[2] = 0
    loss, clip = policy_loss(logp, old, adv, mask)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 1.0) / 3, abs=1e-5)
    assert clip.item() == pytest.approx(2 / 3)


def test_policy_loss_token_mean_weights_long_sequences_more() -> None:
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    loss, _ = policy_loss(logp, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), mask)
    assert loss.item() == pytest.approx((-3 + 1) / 4)
    loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-0.25, -0.25, -0.25, 0.25, 0.0, 0.0])


def test_low_var_kl_hand_value_and_clamp() -> None:
    kl = low_var_kl(torch.log(torch.tensor([0.5, 0.5, 1e-9])), torch.log(torch.tensor([0.25, 0.5, 1.0])))
    assert kl[0].item() == pytest.approx(0.5 - math.log(0.5) - 1, abs=1e-6)
    assert kl[1].item() == 0.0
    assert kl[2].item() == 10.0
