"""Reference solutions of the exercises, written the way a reader would: plain loops, one step of
the definition per line. ``rlnb.exercises.solution(name)`` prints one; ``tests/test_exercises.py``
checks that each passes its grader (whose expected values come from the library).

Time series are 1-D tensors of length T (``terminated``, ``truncated``: bool); conventions as in
``rlnb.estimators.returns``: ``next_values[t] = V(s_{t+1})``, a terminated step bootstraps nothing,
a truncated step bootstraps from ``next_values[t]`` but no trace crosses it, and the last step of
the window bootstraps from ``next_values[T-1]`` unless it terminated.
"""

from __future__ import annotations

import math

import torch


# --- 00 · the tour --------------------------------------------------------------------------------
def td0_update(V, s, r, s_next, terminated, alpha, gamma):
    """One TD(0) step: ``V(s) ← V(s) + α [r + γ (1 − terminated) V(s') − V(s)]``."""
    V = V.clone()
    target = r if terminated else r + gamma * V[s_next]
    V[s] = V[s] + alpha * (target - V[s])
    return V


# --- 01 · returns and TD ------------------------------------------------------------------------
def n_step_return(rewards, next_values, terminated, truncated, gamma, n):
    """``G_t = r_t + γ r_{t+1} + … + γ^{m−1} r_{t+m−1} + γ^m V(s_{t+m})``, the window ``m ≤ n``
    ending early at the episode's end (no bootstrap after a terminated step) or the data's end."""
    T = len(rewards)
    G = torch.zeros_like(rewards)
    for t in range(T):
        total, discount = 0.0, 1.0
        for i in range(t, min(t + n, T)):
            total += discount * rewards[i]
            discount *= gamma
            if terminated[i]:
                break
            if truncated[i] or i == t + n - 1 or i == T - 1:
                total += discount * next_values[i]
                break
        G[t] = total
    return G


def lambda_return(rewards, next_values, terminated, truncated, gamma, lmbda):
    """``G_t = r_t + γ [(1 − λ) V(s_{t+1}) + λ G_{t+1}]`` backwards, ``G_{t+1}`` replaced by
    ``V(s_{t+1})`` at a truncated step and at the window's end; ``G_t = r_t`` at a terminated step."""
    T = len(rewards)
    G = torch.zeros_like(rewards)
    for t in reversed(range(T)):
        if terminated[t]:
            G[t] = rewards[t]
            continue
        following = next_values[t] if (truncated[t] or t == T - 1) else G[t + 1]
        G[t] = rewards[t] + gamma * ((1 - lmbda) * next_values[t] + lmbda * following)
    return G


# --- 02 · advantage estimation ------------------------------------------------------------------
def gae(rewards, values, next_values, terminated, truncated, gamma, lmbda):
    """``δ_t = r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t)``, ``A_t = δ_t + γλ (1 − done_t) A_{t+1}``."""
    T = len(rewards)
    A = torch.zeros_like(rewards)
    following = 0.0
    for t in reversed(range(T)):
        bootstrap = 0.0 if terminated[t] else gamma * next_values[t]
        delta = rewards[t] + bootstrap - values[t]
        if terminated[t] or truncated[t]:
            following = 0.0  # the trace does not cross an episode's end
        following = delta + gamma * lmbda * following
        A[t] = following
    return A


def vtrace(
    rewards,
    values,
    next_values,
    terminated,
    truncated,
    target_logp,
    behavior_logp,
    gamma,
    rho_clip,
    c_clip,
):
    """V-trace value targets (λ = 1): ``v_t = V(s_t) + δ_t + γ c_t (v_{t+1} − V(s_{t+1}))`` with
    ``δ_t = ρ_t (r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t))``, ``ρ_t = min(ρ̄, π/μ)``,
    ``c_t = min(c̄, π/μ)``; the correction is cut at every episode's end."""
    ratio = (target_logp - behavior_logp).exp()
    T = len(rewards)
    vs = torch.zeros_like(rewards)
    correction = 0.0  # v_{t+1} − V(s_{t+1})
    for t in reversed(range(T)):
        rho = min(ratio[t], rho_clip)
        c = min(ratio[t], c_clip)
        bootstrap = 0.0 if terminated[t] else gamma * next_values[t]
        delta = rho * (rewards[t] + bootstrap - values[t])
        if terminated[t] or truncated[t]:
            correction = 0.0
        correction = delta + gamma * c * correction
        vs[t] = values[t] + correction
    return vs


# --- 03 · regularized dynamic programming -------------------------------------------------------
def soft_bellman_backup(Q, P, r, gamma, tau):
    """``Q'(s, a) = r(s, a) + γ Σ_s' P(s'|s, a) V(s')`` with ``V(s') = τ log Σ_a exp(Q(s', a)/τ)``
    (``max_a Q(s', a)`` when τ = 0). ``Q, r: [S, A]``, ``P: [S, A, S]``."""
    if tau == 0:
        V = Q.max(dim=1).values
    else:
        V = tau * torch.logsumexp(Q / tau, dim=1)  # not log(sum(exp)): exp(Q/τ) overflows
    return r + gamma * P @ V


def mdvi_step(Q, s_prev, P, r, gamma, kl, entropy):
    """One MDVI iteration with the exact model: with ``α = λ/(λ+κ)``, ``β = 1/(λ+κ)``,
    ``s = Q + α s_prev``, ``w = M_β s − α M_β s_prev`` (``M_β f = (1/β) log Σ_a exp(β f)``; the
    max when ``λ = κ = 0``), ``Q_next = r + γ P w``. Returns ``(Q_next, s)``."""
    if kl + entropy == 0:  # no regularization: value iteration
        return r + gamma * P @ Q.max(dim=1).values, Q
    alpha = kl / (kl + entropy)
    beta = 1.0 / (kl + entropy)
    s = Q + alpha * s_prev

    def M(f):
        return torch.logsumexp(beta * f, dim=1) / beta

    w = M(s) - alpha * M(s_prev)
    return r + gamma * P @ w, s


# --- 04 · value losses --------------------------------------------------------------------------
def two_hot(x, support):
    """``[N, K]``: for ``z_i ≤ x ≤ z_{i+1}``, weight ``(z_{i+1} − x)/(z_{i+1} − z_i)`` on ``z_i``
    and the rest on ``z_{i+1}``; ``x`` outside the support is clipped to its ends."""
    K = len(support)
    out = torch.zeros(len(x), K, dtype=x.dtype)
    for n in range(len(x)):
        v = x[n].clamp(support[0], support[-1])
        for i in range(K - 1):
            if support[i] <= v <= support[i + 1]:
                w = (v - support[i]) / (support[i + 1] - support[i])
                out[n, i] = 1 - w
                out[n, i + 1] = w
                break
    return out


def hl_gauss(x, bin_edges, sigma):
    """``p_k ∝ Φ((e_{k+1} − x)/σ) − Φ((e_k − x)/σ)``, normalised over the bins; ``x`` clipped to
    ``[e_0, e_K]``. ``[N, K]`` for ``K + 1`` edges."""
    x = x.clamp(bin_edges[0], bin_edges[-1])
    normal = torch.distributions.Normal(x[:, None], sigma)
    cdf = normal.cdf(bin_edges[None, :])
    mass = cdf[:, 1:] - cdf[:, :-1]
    return mass / mass.sum(dim=1, keepdim=True)


def c51_projection(next_probs, rewards, discounts, support):
    """C51's target: each atom ``z_j`` moves to ``clip(r + γ z_j)`` and its probability is split
    between the two neighbouring atoms (all of it when it lands on one). Evenly spaced support."""
    N, K = next_probs.shape
    v_min, v_max = support[0], support[-1]
    dz = (v_max - v_min) / (K - 1)
    m = torch.zeros_like(next_probs)
    for n in range(N):
        for j in range(K):
            tz = (rewards[n] + discounts[n] * support[j]).clamp(v_min, v_max)
            b = (tz - v_min) / dz
            lo, hi = math.floor(b), math.ceil(b)
            if lo == hi:
                m[n, lo] += next_probs[n, j]
            else:
                m[n, lo] += next_probs[n, j] * (hi - b)
                m[n, hi] += next_probs[n, j] * (b - lo)
    return m


# --- 05 · deep Q-learning -----------------------------------------------------------------------
def double_dqn_target(rewards, next_q_online, next_q_target, terminated, gamma):
    """``y = r + γ (1 − terminated) Q_target(s', argmax_a Q_online(s', a))``. ``[B]``, ``[B, A]``."""
    best = next_q_online.argmax(dim=1)
    next_value = next_q_target[torch.arange(len(best)), best]
    return rewards + gamma * (~terminated) * next_value


# --- 08 · the tiny reasoner ---------------------------------------------------------------------
def pass_at_k(n, c, k):
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: ``1 − C(n − c, k) / C(n, k)``."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# --- 08b · prefix values -------------------------------------------------------------------------
def tree_prefix_values(parent, is_leaf, reward):
    """The Monte Carlo value of every node of a rollout tree: a leaf's value is its reward, an
    inner node's the mean of its children's values (each child weighs the same, however many
    leaves are under it). Nodes are numbered so that a parent comes before its children."""
    value = reward.double().clone()
    total = torch.zeros_like(value)
    count = torch.zeros_like(value)
    for i in reversed(range(len(parent))):  # children first
        if not is_leaf[i]:
            value[i] = total[i] / count[i]
        if parent[i] >= 0:
            total[parent[i]] += value[i]
            count[parent[i]] += 1
    return value


# --- 08c · value models -------------------------------------------------------------------------
def auc(scores, labels):
    """The probability that a random positive (label 1) scores above a random negative (label 0),
    a tie counting half; 0.5 when one of the two classes is empty."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    if not pos or not neg:
        return 0.5
    wins = 0.0
    for p in pos:
        for n in neg:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(pos) * len(neg))


# --- 09 · group baselines -----------------------------------------------------------------------
def rloo(rewards, group_size):
    """``A_i = r_i − mean of the other responses of its group``; a group of one gets 0."""
    adv = torch.zeros_like(rewards)
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        n = len(group)
        if n == 1:
            continue  # no other response to compare with
        for i in range(n):
            others = (group.sum() - group[i]) / (n - 1)
            adv[start + i] = group[i] - others
    return adv


def qae(rewards, group_size, k):
    """``A_i = r_i − r_(⌈k·n⌉)``: the baseline is the group's ⌈k·n⌉-th smallest reward."""
    adv = torch.zeros_like(rewards)
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        rank = math.ceil(k * len(group))  # 1-based
        baseline = group.sort().values[rank - 1]
        adv[start : start + group_size] = group - baseline
    return adv


def seq_mean_token_mean(values, mask):
    """The mean over sequences of each sequence's mean over its response tokens (``mask``);
    a sequence without tokens counts as 0."""
    per_sequence = []
    for b in range(values.shape[0]):
        n = mask[b].sum()
        total = (values[b] * mask[b]).sum()
        per_sequence.append(total / n if n > 0 else total * 0)
    return torch.stack(per_sequence).mean()


# --- 10 · LM RL ---------------------------------------------------------------------------------
def grpo_loss(logp, old_logp, scores, mask, group_size, clip):
    """GRPO's loss on a batch: ``A = (r − mean_g) / (std_g + 1e−6)`` (unbiased std; 0 for a group
    of one or of equal rewards), spread over the response tokens; per token
    ``ℓ = −min(ρ A, clip(ρ, 1 ± ε) A)`` with ``ρ = exp(logp − old_logp)``; aggregated
    seq-mean-token-mean."""
    adv = torch.zeros_like(scores)
    for start in range(0, len(scores), group_size):
        group = scores[start : start + group_size]
        if len(group) > 1 and not (group == group[0]).all():
            adv[start : start + group_size] = (group - group.mean()) / (group.std() + 1e-6)
    A = adv[:, None]
    ratio = (logp - old_logp).exp()
    per_token = -torch.minimum(ratio * A, ratio.clamp(1 - clip, 1 + clip) * A)
    return seq_mean_token_mean(per_token, mask)


def seen_equivalents(program, seen, run, inputs):
    """The seen programs (other than ``program`` itself) that give the same answer as
    ``program`` on every input; ``run(program, x)`` is the answer of ``program`` to ``x``."""
    target = [run(program, x) for x in inputs]
    return [q for q in seen if q != program and [run(q, x) for x in inputs] == target]


def token_gae(scores, values, mask, lmbda):
    """GAE over response tokens with γ = 1 and the score as the reward of the last response token
    (right-padded ``mask``): ``δ_t = r_t + V_{t+1} − V_t`` (``V`` after the last token is 0),
    ``A_t = δ_t + λ A_{t+1}``; 0 off the mask."""
    B, L = values.shape
    A = torch.zeros_like(values)
    for b in range(B):
        n = int(mask[b].sum())
        following = 0.0
        for t in reversed(range(n)):
            reward = scores[b] if t == n - 1 else 0.0
            next_value = values[b, t + 1] if t < n - 1 else 0.0
            delta = reward + next_value - values[b, t]
            following = delta + lmbda * following
            A[b, t] = following
    return A


# --- 10b · policy losses -----------------------------------------------------------------------
def sequence_ratio(logp, old_logp, mask):
    """GSPO's sequence ratio of each response: ``s_i = exp(mean over its tokens of (logp − old_logp))``,
    1 for a response without tokens."""
    s = torch.ones(len(logp), dtype=logp.dtype)
    for i in range(len(logp)):
        terms = [logp[i, t] - old_logp[i, t] for t in range(logp.shape[1]) if mask[i, t]]
        if terms:
            s[i] = torch.exp(sum(terms) / len(terms))
    return s


# --- 10c · the soup reference -------------------------------------------------------------------
def loss_barrier(alphas, losses):
    """The largest excess of the loss over the straight line between the ends,
    ``L(α) − ((1 − α) L(0) + α L(1))``, over the alphas strictly between 0 and 1; 0.0 if none."""
    at = dict(zip(alphas, losses))
    worst = None
    for a, loss in at.items():
        if 0 < a < 1:
            excess = loss - ((1 - a) * at[0.0] + a * at[1.0])
            worst = excess if worst is None else max(worst, excess)
    return 0.0 if worst is None else worst


# --- 09b · the single-rollout baseline ------------------------------------------------------------
def beta_tracker_update(alpha, beta, prompts, rewards, rho):
    """One step of the per-prompt Beta tracker: for each sampled prompt ``p`` with outcome ``r``,
    ``α_p ← ρ α_p + r`` and ``β_p ← ρ β_p + (1 − r)``; the others keep theirs. Returns the two
    tables stacked, ``[2, P]``."""
    alpha, beta = alpha.clone(), beta.clone()
    for p, r in zip(prompts.tolist(), rewards.tolist()):
        alpha[p] = rho * alpha[p] + r
        beta[p] = rho * beta[p] + (1 - r)
    return torch.stack([alpha, beta])


# --- 07 · offline values against the truth --------------------------------------------------------
def edge_of_reach(states, next_states, terminal):
    """States that some transition leads to but none starts from, terminal states left out."""
    S = len(terminal)
    edge = torch.zeros(S, dtype=torch.bool)
    starts = set(states.tolist())
    for s2 in next_states.tolist():
        if s2 not in starts and not terminal[s2]:
            edge[s2] = True
    return edge


# --- 07c · stitching without Bellman completeness ----------------------------------------------------
def return_to_go(rewards, terminated, truncated, gamma):
    """Each step's discounted return to the end of its own episode: walk backwards, restart the
    sum at every episode end (``terminated`` or ``truncated``; nothing is added after either)."""
    out = torch.zeros_like(rewards)
    G = 0.0
    for t in reversed(range(len(rewards))):
        if terminated[t] or truncated[t]:
            G = 0.0
        G = rewards[t] + gamma * G
        out[t] = G
    return out


# --- 06 · the soft target of SAC ------------------------------------------------------------------
def soft_q_target(reward, next_q, next_log_prob, terminated, truncated, gamma, alpha):
    """One row at a time: the smaller twin critic minus α log π(a'|s'), discounted, unless the
    step is terminal; a truncated step bootstraps (its episode was cut, not ended)."""
    y = torch.zeros_like(reward)
    for i in range(len(reward)):
        future = 0.0
        if not terminated[i]:
            future = min(next_q[0, i], next_q[1, i]) - alpha * next_log_prob[i]
        y[i] = reward[i] + gamma * future
    return y


def soft_value(rewards, alpha):
    """One row at a time: α log of the mean of exp(r/α), with the row's max taken out first so
    that exp never overflows."""
    out = torch.zeros(rewards.shape[0])
    for i in range(rewards.shape[0]):
        top = max(rewards[i].tolist())
        total = sum(math.exp((r - top) / alpha) for r in rewards[i].tolist())
        out[i] = top + alpha * math.log(total / rewards.shape[1])
    return out


# --- 06b · EXPO's target with on-the-fly selection ------------------------------------------------
def on_the_fly_target(reward, next_q, terminated, truncated, gamma):
    """One next state at a time: score each candidate by the smaller of the two target critics,
    keep the best score, and bootstrap from it unless the step is terminal."""
    y = torch.zeros_like(reward)
    for b in range(len(reward)):
        best = max(min(next_q[0, b, j], next_q[1, b, j]) for j in range(next_q.shape[2]))
        y[b] = reward[b] + (0.0 if terminated[b] else gamma * best)
    return y


def quadratic_vagram_loss(predicted, next_states, P):
    """Row by row, coordinate by coordinate: the slope of V(s) = −xᵀPx at the true next state,
    squared, times the squared error of the prediction there."""
    total = 0.0
    for n in range(len(next_states)):
        x = next_states[n, :2]
        slope = -(P + P.T) @ x  # ∇_x(−xᵀPx); the distractors' slope is 0
        for i in range(2):
            total += float(slope[i]) ** 2 * float(predicted[n, i] - next_states[n, i]) ** 2
    return torch.tensor(total / len(next_states))


# --- 07d · planning with learned models ----------------------------------------------------------
def depth_two_tree_value(rewards, next_rewards, leaf_values, gamma):
    """Leaf by leaf: the best continuation below each root action, then the best root action."""
    best = None
    for k in range(len(rewards)):
        below = None
        for j in range(len(leaf_values[k])):
            q = float(next_rewards[k, j]) + gamma * float(leaf_values[k, j])
            below = q if below is None else max(below, q)
        q_root = float(rewards[k]) + gamma * below
        best = q_root if best is None else max(best, q_root)
    return torch.tensor(best)
