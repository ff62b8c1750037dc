"""The exercises' graders: every reference solution passes, every typical wrong answer fails on
the input it should and gets the hint meant for it, and an unattempted exercise never fails."""

import ast
import inspect
import json
import math
from pathlib import Path

import pytest
import torch

import rlnb.exercises as ex
from rlnb.exercises import solutions
from rlnb.exercises.grader import compare
from rlnb.notebook import METRICS_ENV, read_records
from rlnb.runner import read_info

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOK_IDS = [p.name.split("_")[0] for p in sorted(NOTEBOOKS.glob("*.ipynb"))]


@pytest.mark.parametrize("name", sorted(ex.EXERCISES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_solution_passes_its_grader(name, seed):
    verdict = ex.check(name, ex.EXERCISES[name].solution, seed=seed, verbose=False)
    assert verdict.status == "passed", verdict.message


# --- typical wrong answers: (exercise, the key of the case it must fail on, the function) -------
def gae_truncation_as_termination(
    rewards, values, next_values, terminated, truncated, gamma, lmbda
):
    return solutions.gae(
        rewards, values, next_values, terminated | truncated, truncated, gamma, lmbda
    )


def gae_crossing_dones(rewards, values, next_values, terminated, truncated, gamma, lmbda):
    A, following = torch.zeros_like(rewards), 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + (0.0 if terminated[t] else gamma * next_values[t]) - values[t]
        following = delta + gamma * lmbda * following  # never reset at an episode's end
        A[t] = following
    return A


def n_step_one_too_many(rewards, next_values, terminated, truncated, gamma, n):
    return solutions.n_step_return(rewards, next_values, terminated, truncated, gamma, n + 1)


def lambda_return_no_truncation(rewards, next_values, terminated, truncated, gamma, lmbda):
    return solutions.lambda_return(
        rewards, next_values, terminated | truncated, torch.zeros_like(truncated), gamma, lmbda
    )


def vtrace_unclipped(r, v, nv, term, trunc, tlp, blp, gamma, rho_clip, c_clip):
    return solutions.vtrace(r, v, nv, term, trunc, tlp, blp, gamma, math.inf, math.inf)


def vtrace_one_clip(r, v, nv, term, trunc, tlp, blp, gamma, rho_clip, c_clip):
    return solutions.vtrace(r, v, nv, term, trunc, tlp, blp, gamma, rho_clip, rho_clip)


def td0_bootstraps_terminal(V, s, r, s_next, terminated, alpha, gamma):
    return solutions.td0_update(V, s, r, s_next, False, alpha, gamma)


def soft_backup_naive_exp(Q, P, r, gamma, tau):
    V = Q.max(dim=1).values if tau == 0 else tau * torch.log(torch.exp(Q / tau).sum(dim=1))
    return r + gamma * P @ V


def soft_backup_hard_max(Q, P, r, gamma, tau):
    return solutions.soft_bellman_backup(Q, P, r, gamma, 0.0)


def mdvi_without_the_past(Q, s_prev, P, r, gamma, kl, entropy):
    return solutions.mdvi_step(Q, torch.zeros_like(s_prev), P, r, gamma, kl, entropy)


def two_hot_unclipped(x, support):
    out = torch.zeros(len(x), len(support), dtype=x.dtype)
    for n in range(len(x)):
        for i in range(len(support) - 1):
            if support[i] <= x[n] <= support[i + 1]:
                w = (x[n] - support[i]) / (support[i + 1] - support[i])
                out[n, i], out[n, i + 1] = 1 - w, w
                break
    return out  # a row of zeros outside the support


def two_hot_global_spacing(x, support):
    out = torch.zeros(len(x), len(support), dtype=x.dtype)
    dz = (support[-1] - support[0]) / (len(support) - 1)
    for n in range(len(x)):
        v = x[n].clamp(support[0], support[-1])
        i = min(int(torch.searchsorted(support, v, right=True)) - 1, len(support) - 2)
        w = (v - support[i]) / dz
        out[n, i], out[n, i + 1] = 1 - w, w
    return out


def hl_gauss_density_at_centres(x, bin_edges, sigma):
    centres = (bin_edges[1:] + bin_edges[:-1]) / 2
    d = torch.exp(-0.5 * ((centres[None, :] - x[:, None]) / sigma) ** 2)
    return d / d.sum(dim=1, keepdim=True)


def hl_gauss_unnormalised(x, bin_edges, sigma):
    cdf = torch.distributions.Normal(x.clamp(bin_edges[0], bin_edges[-1])[:, None], sigma).cdf(
        bin_edges
    )
    return cdf[:, 1:] - cdf[:, :-1]


def c51_drops_mass_on_atoms(next_probs, rewards, discounts, support):
    N, K = next_probs.shape
    dz = (support[-1] - support[0]) / (K - 1)
    m = torch.zeros_like(next_probs)
    for n in range(N):
        for j in range(K):
            b = (
                (rewards[n] + discounts[n] * support[j]).clamp(support[0], support[-1]) - support[0]
            ) / dz
            lo, hi = math.floor(b), math.ceil(b)
            m[n, lo] += next_probs[n, j] * (hi - b)
            m[n, hi] += next_probs[n, j] * (b - lo)
    return m


def dqn_target_not_double(rewards, next_q_online, next_q_target, terminated, gamma):
    return rewards + gamma * (~terminated) * next_q_target.max(dim=1).values


def pass_at_k_plug_in(n, c, k):
    return 1 - (1 - c / n) ** k


def pass_at_k_float_factorials(n, c, k):
    def comb(a, b):
        return math.gamma(a + 1) / (math.gamma(b + 1) * math.gamma(a - b + 1)) if a >= b else 0.0

    try:
        return 1 - comb(n - c, k) / comb(n, k)
    except OverflowError:
        return math.nan


def tree_values_mean_of_leaves(parent, is_leaf, reward):
    value = torch.zeros(len(parent), dtype=torch.float64)
    for i in range(len(parent)):
        under = [j for j in range(len(parent)) if is_leaf[j] and i in _ancestors(parent, j)]
        value[i] = sum(float(reward[j]) for j in under) / len(under)
    return value


def _ancestors(parent, j):
    out = [j]
    while parent[out[-1]] >= 0:
        out.append(int(parent[out[-1]]))
    return out


def auc_ties_lost(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    return (pos[:, None] > neg[None, :]).double().mean()


def auc_nan_for_one_class(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    return wins.sum() / (len(pos) * len(neg))


def rloo_mean_with_itself(rewards, group_size):
    g = rewards.reshape(-1, group_size)
    return (g - g.mean(dim=1, keepdim=True)).reshape(-1)


def rloo_batch_baseline(rewards, group_size):
    n = len(rewards)
    return rewards - (rewards.sum() - rewards) / (n - 1)


def rloo_nan_for_one(rewards, group_size):
    g = rewards.reshape(-1, group_size)
    return (g - (g.sum(1, keepdim=True) - g) / (group_size - 1)).reshape(-1)


def qae_interpolated(rewards, group_size, k):
    g = rewards.reshape(-1, group_size)
    return (g - torch.quantile(g, k, dim=1, keepdim=True)).reshape(-1)


def aggregate_without_mask(values, mask):
    return values.mean()


def aggregate_token_mean(values, mask):
    return (values * mask).sum() / mask.sum()


def aggregate_nan_on_empty(values, mask):
    return ((values * mask).sum(1) / mask.sum(1)).mean()


def grpo_advantages(scores, group_size, unbiased=True):
    g = scores.reshape(-1, group_size)
    std = g.std(dim=1, keepdim=True, unbiased=unbiased)  # NaN for a group of one
    return ((g - g.mean(1, keepdim=True)) / (std + 1e-6)).reshape(-1)


def clipped_per_token(adv, logp, old_logp, clip):
    ratio = (logp - old_logp).exp()
    return -torch.minimum(ratio * adv[:, None], ratio.clamp(1 - clip, 1 + clip) * adv[:, None])


def grpo_biased_std(logp, old_logp, scores, mask, group_size, clip):
    adv = grpo_advantages(scores, group_size, unbiased=False)
    return solutions.seq_mean_token_mean(clipped_per_token(adv, logp, old_logp, clip), mask)


def grpo_unclipped(logp, old_logp, scores, mask, group_size, clip):
    return solutions.grpo_loss(logp, old_logp, scores, mask, group_size, 1e9)


def grpo_token_mean(logp, old_logp, scores, mask, group_size, clip):
    per_token = clipped_per_token(grpo_advantages(scores, group_size), logp, old_logp, clip)
    return (per_token * mask).sum() / mask.sum()


def grpo_nan_for_one(logp, old_logp, scores, mask, group_size, clip):
    adv = grpo_advantages(scores, group_size)
    return solutions.seq_mean_token_mean(clipped_per_token(adv, logp, old_logp, clip), mask)


def sequence_ratio_arithmetic_mean(logp, old_logp, mask):
    m = mask.double()
    return ((logp - old_logp).exp() * m).sum(1) / m.sum(1).clamp(min=1)


def sequence_ratio_unmasked(logp, old_logp, mask):
    return (logp - old_logp).mean(1).exp()


def sequence_ratio_nan_on_empty(logp, old_logp, mask):
    m = mask.to(logp.dtype)
    return (((logp - old_logp) * m).sum(1) / m.sum(1)).exp()


def sequence_ratio_product(logp, old_logp, mask):
    m = mask.to(logp.dtype)
    return ((logp - old_logp) * m).sum(1).exp()


def beta_forgets_after_counting(alpha, beta, prompts, rewards, rho):
    alpha, beta = alpha.clone(), beta.clone()
    for p, r in zip(prompts.tolist(), rewards.tolist()):
        alpha[p], beta[p] = rho * (alpha[p] + r), rho * (beta[p] + 1 - r)
    return torch.stack([alpha, beta])


def beta_forgets_every_prompt(alpha, beta, prompts, rewards, rho):
    alpha, beta = rho * alpha, rho * beta
    for p, r in zip(prompts.tolist(), rewards.tolist()):
        alpha[p], beta[p] = alpha[p] + r, beta[p] + 1 - r
    return torch.stack([alpha, beta])


def barrier_without_the_line(alphas, losses):
    return max(v for a, v in zip(alphas, losses) if 0 < a < 1)


def barrier_with_the_ends(alphas, losses):
    at = dict(zip(alphas, losses))
    return max(v - ((1 - a) * at[0.0] + a * at[1.0]) for a, v in at.items() if 0 <= a <= 1)


def barrier_by_position(alphas, losses):
    return max(
        (v - ((1 - a) * losses[0] + a * losses[-1]) for a, v in zip(alphas, losses) if 0 < a < 1),
        default=0.0,
    )


def barrier_none_without_points(alphas, losses):
    at = dict(zip(alphas, losses))
    return max(v - ((1 - a) * at[0.0] + a * at[1.0]) for a, v in at.items() if 0 < a < 1)


def seen_equivalents_on_a_few_inputs(program, seen, run, inputs):
    return solutions.seen_equivalents(program, seen, run, inputs[:2])


def seen_equivalents_with_itself(program, seen, run, inputs):
    target = [run(program, x) for x in inputs]
    return [q for q in seen if [run(q, x) for x in inputs] == target]


def token_gae_reward_on_last_column(scores, values, mask, lmbda):
    return solutions.token_gae(scores, values, torch.ones_like(mask), lmbda) * mask


def edge_of_reach_with_terminal(states, next_states, terminal):
    return solutions.edge_of_reach(states, next_states, torch.zeros_like(terminal))


def return_to_go_across_episodes(rewards, terminated, truncated, gamma):
    return solutions.return_to_go(rewards, terminated & False, truncated & False, gamma)


def soft_target_truncation_as_termination(
    reward, next_q, next_log_prob, terminated, truncated, gamma, alpha
):
    live = ~(terminated | truncated)
    return reward + gamma * live * (next_q.min(0).values - alpha * next_log_prob)


def soft_value_overflows(rewards, alpha):
    return alpha * torch.log(torch.exp(rewards / alpha).mean(-1))


def on_the_fly_target_max_then_min(reward, next_q, terminated, truncated, gamma):
    value = next_q.max(-1).values.min(0).values
    return reward + gamma * (~terminated) * value


def quadratic_vagram_loss_assumes_symmetric(predicted, next_states, P):
    slope = -2 * next_states[:, :2] @ P.T
    return ((slope**2) * (predicted[:, :2] - next_states[:, :2]) ** 2).sum(-1).mean()


def depth_two_tree_value_discounts_leaves_once(rewards, next_rewards, leaf_values, gamma):
    return (rewards + gamma * (next_rewards + leaf_values).max(-1).values).max()


WRONG = [
    ("depth_two_tree_value", "γ = 0.5", depth_two_tree_value_discounts_leaves_once),
    ("quadratic_vagram_loss", "non-symmetric P", quadratic_vagram_loss_assumes_symmetric),
    ("on_the_fly_target", "critics disagree", on_the_fly_target_max_then_min),
    ("soft_value", "small α", soft_value_overflows),
    ("soft_q_target", "truncated steps", soft_target_truncation_as_termination),
    ("return_to_go", "two episodes", return_to_go_across_episodes),
    ("edge_of_reach", "a terminal next state", edge_of_reach_with_terminal),
    ("td0_update", "a terminal step", td0_bootstraps_terminal),
    ("n_step_return", "no episode end", n_step_one_too_many),
    ("lambda_return", "truncated mid-window", lambda_return_no_truncation),
    ("gae", "truncated mid-window", gae_truncation_as_termination),
    ("gae", "terminated mid-window", gae_crossing_dones),
    ("vtrace", "ratios above the clip", vtrace_unclipped),
    ("vtrace", "ρ̄ ≠ c̄, random episode ends", vtrace_one_clip),
    ("soft_bellman_backup", "τ = 1", soft_backup_hard_max),
    ("soft_bellman_backup", "small τ, large Q", soft_backup_naive_exp),
    ("mdvi_step", "κ = 0 (α = 1)", mdvi_without_the_past),
    ("two_hot", "outside the support", two_hot_unclipped),
    ("two_hot", "uneven support, float64", two_hot_global_spacing),
    ("hl_gauss", "near the centre", hl_gauss_density_at_centres),
    ("hl_gauss", "near an edge", hl_gauss_unnormalised),
    ("c51_projection", "landing on an atom", c51_drops_mass_on_atoms),
    ("double_dqn_target", "they disagree", dqn_target_not_double),
    ("pass_at_k", "k > 1", pass_at_k_plug_in),
    ("pass_at_k", "large n", pass_at_k_float_factorials),
    ("tree_prefix_values", "a path that ends early", tree_values_mean_of_leaves),
    ("auc", "ties", auc_ties_lost),
    ("auc", "one class only", auc_nan_for_one_class),
    ("rloo", "one group", rloo_mean_with_itself),
    ("rloo", "several groups", rloo_batch_baseline),
    ("rloo", "groups of one", rloo_nan_for_one),
    ("qae", "real-valued rewards", qae_interpolated),
    ("seq_mean_token_mean", "padding, equal lengths", aggregate_without_mask),
    ("seq_mean_token_mean", "unequal lengths", aggregate_token_mean),
    ("seq_mean_token_mean", "an empty sequence", aggregate_nan_on_empty),
    ("grpo_loss", "ratios inside the clip", grpo_biased_std),
    ("grpo_loss", "ratios outside the clip", grpo_unclipped),
    ("grpo_loss", "padding", grpo_token_mean),
    ("grpo_loss", "groups of one", grpo_nan_for_one),
    ("token_gae", "padded responses", token_gae_reward_on_last_column),
    ("sequence_ratio", "no padding", sequence_ratio_arithmetic_mean),
    ("sequence_ratio", "padding", sequence_ratio_unmasked),
    ("sequence_ratio", "an empty response", sequence_ratio_nan_on_empty),
    ("sequence_ratio", "no padding", sequence_ratio_product),
    ("beta_tracker_update", "every prompt, one outcome each", beta_forgets_after_counting),
    ("beta_tracker_update", "prompts not sampled this step", beta_forgets_every_prompt),
    ("loss_barrier", "a bump in the middle", barrier_without_the_line),
    ("loss_barrier", "a valley (negative barrier)", barrier_with_the_ends),
    ("loss_barrier", "alphas out of order, beyond [0, 1]", barrier_by_position),
    ("loss_barrier", "only the ends", barrier_none_without_points),
    ("seen_equivalents", "an unseen pair equal to none", seen_equivalents_on_a_few_inputs),
    ("seen_equivalents", "a seen program", seen_equivalents_with_itself),
]


@pytest.mark.filterwarnings("ignore:std:UserWarning")  # a group of one, on purpose
@pytest.mark.parametrize(("name", "key", "wrong"), WRONG, ids=[w.__name__ for *_, w in WRONG])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wrong_answer_fails_with_its_hint(name, key, wrong, seed):
    verdict = ex.check(name, wrong, seed=seed, verbose=False)
    assert verdict.status == "failed"
    assert verdict.case == key, verdict.message
    battery = ex.EXERCISES[name].cases(torch.Generator().manual_seed(seed))
    case = next(c for c in battery if c.key == key)
    assert verdict.message.endswith(f"hint: {case.hint}")


def test_every_exercise_has_a_wrong_answer_in_these_tests():
    assert {name for name, *_ in WRONG} == set(ex.EXERCISES)


def test_wrong_verdict_shows_the_input_as_a_table_with_expected_and_got(capsys):
    ex.check("gae", gae_truncation_as_termination)
    out = capsys.readouterr().out
    assert out.startswith("✗ gae: wrong on input 5 of 7 (truncated mid-window): values differ")
    header = out.splitlines()[1].split()
    assert header == [
        "rewards",
        "values",
        "next_values",
        "terminated",
        "truncated",
        "expected",
        "got",
    ]
    assert "gamma = 0.9" in out and "lmbda = 0.8" in out


def test_right_and_unattempted_verdicts(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(METRICS_ENV, str(tmp_path / "m.jsonl"))
    assert ex.check("gae", solutions.gae)
    unattempted = ex.check("rloo", lambda rewards, group_size: None)
    assert unattempted.status == "not attempted" and not unattempted
    out = capsys.readouterr().out
    assert "✓ gae: right on all 7 inputs" in out
    assert "○ rloo: not attempted yet" in out
    records = read_records(tmp_path / "m.jsonl")
    assert records["exercise gae"] == "passed"
    assert records["exercise rloo"] == "not attempted"


def test_a_function_that_raises_or_returns_junk_fails_without_raising():
    def boom(rewards, group_size):
        raise IndexError("index 4 is out of bounds")

    verdict = ex.check("rloo", boom, verbose=False)
    assert verdict.case == "one group" and "raised IndexError: index 4" in verdict.message
    verdict = ex.check("rloo", lambda rewards, group_size: "nope", verbose=False)
    assert verdict.status == "failed" and "got a str" in verdict.message
    verdict = ex.check("rloo", lambda rewards, group_size: rewards[:2], verbose=False)
    assert "expected shape (4,), got shape (2,)" in verdict.message


def test_compare_rejects_wrong_values_of_the_right_shape_and_nan():
    want = torch.tensor([1.0, 2.0])
    assert compare(torch.tensor([1.0, 2.0]), want, 1e-4, 1e-5) == ""
    assert compare(torch.tensor([1.0, 2.1]), want, 1e-4, 1e-5).startswith("values differ")
    assert "NaN" in compare(torch.tensor([1.0, math.nan]), want, 1e-4, 1e-5)
    assert compare(0.5, torch.tensor(0.5, dtype=torch.float64), 1e-4, 1e-5) == ""
    assert "tuple" in compare(torch.zeros(2), (want, want), 1e-4, 1e-5)


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="name: expected one of"):
        ex.check("gea", solutions.gae)
    with pytest.raises(ValueError, match="fn: expected your function"):
        ex.check("gae", None)


def test_hints_come_one_at_a_time_and_the_solution_prints_its_source(capsys):
    ex.grader._hints_shown.pop("qae", None)
    for _ in range(4):
        ex.hint("qae")
    first, second, third, again = capsys.readouterr().out.splitlines()
    n = len(ex.EXERCISES["qae"].hints)
    assert first.startswith(f"hint 1 of {n}") and second.startswith(f"hint 2 of {n}")
    assert 'solution("qae")' in third and again == third
    ex.solution("qae")
    assert capsys.readouterr().out.startswith("def qae(rewards, group_size, k):")


def test_each_battery_names_its_cases_once_and_hints_them():
    for name, exercise in ex.EXERCISES.items():
        keys = [c.key for c in exercise.cases(torch.Generator().manual_seed(0))]
        assert len(keys) == len(set(keys)) >= 3, name
        assert all(c.hint for c in exercise.cases(torch.Generator().manual_seed(0))), name


@pytest.mark.parametrize("nb_id", NOTEBOOK_IDS)
def test_every_notebook_has_its_exercises_with_a_placeholder(nb_id):
    """DESIGN §10: one self-grading "Try it" per notebook at least, shipped unattempted."""
    (path,) = NOTEBOOKS.glob(f"{nb_id}_*.ipynb")
    names = list(read_info(path).exercises)
    assert names and names == ex.exercises_of(nb_id)
    nb = json.loads(path.read_text(encoding="utf-8"))
    for name in names:
        cell = next(
            "".join(c["source"]) for c in nb["cells"]
            if c["cell_type"] == "code" and f'exercises.check("{name}"' in "".join(c["source"])
        )  # fmt: skip
        assert "return None" in cell, f"{path.name}: the {name} cell should ship unattempted"
        (fn,) = [node for node in ast.parse(cell).body if isinstance(node, ast.FunctionDef)]
        params = [a.arg for a in fn.args.args]
        solution = ex.EXERCISES[name].solution
        assert params == list(inspect.signature(solution).parameters), (path.name, name)
