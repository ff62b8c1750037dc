"""Offline values on tabular MDPs, where the truth is known.

A fixed dataset of transitions, and learners that see the MDP only through it (or, for
model-based rollouts, through the *true* dynamics from dataset states). Every learner returns its
values so a notebook can set them against ``TabularMDP.evaluate`` and ``value_iteration``
(notebook 07). In reading order:

- datasets: ``behaviour_dataset`` (a narrow policy mixed with the uniform one), ``rollout`` (k
  steps in the true dynamics), ``intervention_episodes`` (a policy with expert takeovers),
  ``random_walk_chain`` (action-free walks for goal-conditioned values);
- ``rollout_fqi``: FQI on data plus rollouts with a min over a Q-ensemble ("The Edge-of-Reach
  Problem in Offline Model-Based Reinforcement Learning", RAVL), ``edge_of_reach``;
- ``dual_value_learning``: in-sample values with the conjugate losses of "Dual RL";
- ``goal_value_learning`` with ``option_target`` (OTA), ``subgoal_sign_accuracy``;
- ``chunk_td_values`` and ``monte_carlo_values`` (ALOE's chunk-level bootstrapping against
  outcome regression);
- ``cql_training`` and ``workflow_checkpoint`` ("A Workflow for Offline Model-Free Robotic
  Reinforcement Learning").
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd
import torch
from torch import Tensor

from rlnb.envs.tabular import TabularMDP, Transitions
from rlnb.estimators import discounted_returns, n_step_returns
from rlnb.estimators.offline import cql_penalty, dual_value_loss, expectile_loss
from rlnb.models.value import MLP, polyak_update


def epsilon_greedy(Q: Tensor, epsilon: float) -> Tensor:
    """``[S, A]`` probabilities: greedy in ``Q`` (ties to the lowest action) with prob ``1 − ε``,
    uniform with prob ``ε``."""
    A = Q.shape[-1]
    greedy = torch.nn.functional.one_hot(Q.argmax(-1), A).to(torch.float64)
    return (1 - epsilon) * greedy + epsilon / A


def behaviour_dataset(
    mdp: TabularMDP,
    narrow: Tensor,
    coverage: float,
    episodes: int,
    max_steps: int = 50,
    seed: int = 0,
) -> Transitions:
    """``episodes`` episodes of the behaviour ``(1 − coverage) · narrow + coverage · uniform``
    (``narrow`` an ``[S, A]`` policy), truncated after ``max_steps``."""
    if not 0.0 <= coverage <= 1.0:
        raise ValueError(f"coverage: expected a float in [0, 1], got {coverage}")
    if tuple(torch.as_tensor(narrow).shape) != (mdp.n_states, mdp.n_actions):
        raise ValueError(
            f"narrow: expected a policy of shape {(mdp.n_states, mdp.n_actions)}, got {tuple(torch.as_tensor(narrow).shape)}"
        )
    behaviour = (1 - coverage) * torch.as_tensor(narrow, dtype=torch.float64) + (
        coverage * mdp.uniform_policy()
    )
    return mdp.sample_episodes(behaviour, episodes, max_steps, seed=seed)


def state_action_counts(mdp: TabularMDP, data: Transitions) -> Tensor:
    """``[S, A]`` number of times each pair occurs as ``(s, a)`` in ``data``."""
    flat = data.states * mdp.n_actions + data.actions
    return torch.bincount(flat, minlength=mdp.n_states * mdp.n_actions).view(
        mdp.n_states, mdp.n_actions
    )


def group_mean(index: Tensor, values: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """``(mean, count)``, each ``[size]``: the mean of ``values`` over the entries of each
    ``index`` (0 where there are none) and how many there are."""
    count = torch.bincount(index, minlength=size).double()
    total = torch.zeros(size, dtype=torch.float64).index_add_(0, index, values.double())
    return total / count.clamp(min=1), count


def fitted_q_sweep(mdp: TabularMDP, data: Transitions, Q: Tensor, next_value: Tensor) -> Tensor:
    """One exact fitted-Q step on tables: every pair seen in ``data`` gets the mean of its targets
    ``r + γ (1 − terminated) next_value[s']``; unseen pairs keep their value. ``Q`` is
    ``[..., S, A]`` (heads first), ``next_value`` ``[S]``."""
    S, A = mdp.n_states, mdp.n_actions
    y = (
        data.rewards.double()
        + mdp.gamma * (~data.terminated).double() * next_value[data.next_states]
    )
    mean, count = group_mean(data.states * A + data.actions, y, S * A)
    return torch.where((count > 0).view(S, A), mean.view(S, A), Q)


def tabular_fqi(mdp: TabularMDP, data: Transitions, sweeps: int = 200) -> Tensor:
    """``Q [S, A]`` after ``sweeps`` fitted-Q sweeps on ``data`` from zeros (``fitted_q_sweep``
    with the greedy target ``max_a' Q(s', a')``); pairs the data never holds stay at 0."""
    Q = torch.zeros(mdp.n_states, mdp.n_actions, dtype=torch.float64)
    for _ in range(sweeps):
        Q = fitted_q_sweep(mdp, data, Q, Q.max(-1).values)
    return Q


class RolloutFQI(NamedTuple):
    """``Q``: the heads ``[N, S, A]``; ``pessimistic``: ``min_i Q_i`` ``[S, A]``; ``edge``: states
    that occur as a next state but never as a start of a training transition ``[S]`` bool;
    ``history``: one row per iteration."""

    Q: Tensor
    pessimistic: Tensor
    edge: Tensor
    history: pd.DataFrame


def rollout(
    mdp: TabularMDP, policy: Tensor, starts: Tensor, length: int, generator: torch.Generator
) -> Transitions:
    """``length``-step rollouts of ``policy`` in ``mdp``'s true dynamics from each of ``starts``;
    a rollout that enters a terminal state stops there. The last step is neither terminated nor
    truncated here: a rollout's end is not an episode's end, and its next state is bootstrapped."""
    cols, state = [], starts[~mdp.terminal[starts]]
    for _ in range(length):
        if len(state) == 0:
            break
        a = torch.multinomial(policy[state], 1, generator=generator).squeeze(1)
        s2 = torch.multinomial(mdp.P[state, a], 1, generator=generator).squeeze(1)
        term = mdp.terminal[s2]
        cols.append((state, a, mdp.R[state, a, s2], s2, term, torch.zeros_like(term)))
        state = s2[~term]
    if not cols:
        empty = torch.zeros(0, dtype=torch.long)
        return Transitions(empty, empty, empty.double(), empty, empty.bool(), empty.bool())
    return Transitions(*(torch.cat(c) for c in zip(*cols)))


def concat(*parts):
    """Batches of one NamedTuple type (``Transitions``, ``point_mass.Batch``, …) laid end to end,
    field by field."""
    return type(parts[0])(*(torch.cat(c) for c in zip(*parts)))


def rollout_fqi(
    mdp: TabularMDP,
    data: Transitions,
    *,
    n_heads: int = 10,
    rollout_length: int = 5,
    rollouts: int = 200,
    iterations: int = 60,
    sweeps: int = 5,
    epsilon: float = 0.2,
    init_scale: float = 1.0,
    seed: int = 0,
) -> RolloutFQI:
    """Offline model-based Q-learning with k-step rollouts in the *true* dynamics, and RAVL's
    ensemble pessimism ("The Edge-of-Reach Problem in Offline Model-Based Reinforcement
    Learning").

    Each iteration starts ``rollouts`` rollouts of ``rollout_length`` steps from states of
    ``data`` with the ε-greedy policy of the pessimistic Q (MBPO's loop) and adds them to a
    buffer; then ``sweeps`` fitted-Q sweeps on ``data`` ∪ buffer move every head towards

        y = r + γ (1 − terminated) · max_a' min_{i ≤ N} Q_i(s', a').

    The heads start from independent draws ``N(0, init_scale²)`` — the "arbitrary" values of
    states no update reaches. A state that the rollouts reach only at their last step is a next
    state but never a training input (edge of reach): its heads keep their initial values, and a
    single head (``n_heads=1``, MBPO-style FQI) passes the largest of them on through the max.
    With N heads, the heads agree wherever they are trained and disagree at the edge, so the
    min turns the void pessimistic. (The paper's RAVL is EDAC on MBPO, with a diversity term
    for neural heads; tabular heads need none, their initial draws already differ.)
    """
    if not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"n_heads: expected a positive int, got {n_heads!r}")
    if not isinstance(rollout_length, int) or rollout_length < 0:
        raise ValueError(f"rollout_length: expected an int ≥ 0, got {rollout_length!r}")
    for name, value in (("iterations", iterations), ("sweeps", sweeps), ("rollouts", rollouts)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon: expected a probability, got {epsilon}")
    g = torch.Generator().manual_seed(seed)
    S, A = mdp.n_states, mdp.n_actions
    live = ~mdp.terminal
    Q = init_scale * torch.randn(n_heads, S, A, generator=g, dtype=torch.float64) * live[:, None]
    v_star = mdp.value_iteration()[0]
    start = mdp.initial.argmax()
    buffer = data
    rows = []
    for it in range(1, iterations + 1):
        pess = Q.min(0).values
        if rollout_length > 0:
            starts = data.states[torch.randint(len(data.states), (rollouts,), generator=g)]
            new = rollout(mdp, epsilon_greedy(pess, epsilon), starts, rollout_length, g)
            buffer = concat(buffer, new)
        for _ in range(sweeps):
            pess = Q.min(0).values
            Q = fitted_q_sweep(mdp, buffer, Q, pess.max(-1).values)
        pess = Q.min(0).values
        edge = edge_of_reach(buffer.states, buffer.next_states, mdp.terminal)
        V = pess.max(-1).values
        v_pi = mdp.evaluate(epsilon_greedy(pess, 0.0)).V
        rows.append(
            {
                "iteration": it,
                "start_value": V[start].item(),
                "start_value_true": v_star[start].item(),
                "policy_value": v_pi[start].item(),
                "edge_states": int(edge.sum()),
                "edge_overestimation": edge_overestimation(V, v_star, edge),
            }
        )
    return RolloutFQI(Q, Q.min(0).values, edge, pd.DataFrame(rows))


def edge_of_reach(states: Tensor, next_states: Tensor, terminal: Tensor) -> Tensor:
    """``[S]`` bool (``S = len(terminal)``): non-terminal states that occur among
    ``next_states`` but never among ``states`` — values bootstrapped from and never trained."""
    S = len(terminal)
    source = torch.bincount(states, minlength=S) > 0
    target = torch.bincount(next_states, minlength=S) > 0
    return target & ~source & ~terminal


def edge_overestimation(V: Tensor, v_true: Tensor, edge: Tensor) -> float:
    """Mean of ``max(V − V*, 0)`` over the ``edge`` states (0 when there are none)."""
    if not edge.any():
        return 0.0
    return (V - v_true)[edge].clamp(min=0).mean().item()


def supported_optimum(mdp: TabularMDP, data: Transitions) -> Tensor:
    """``[S]``: the optimal value when only the actions ``data`` takes in each state are allowed,
    ``V(s) = max_{a: n(s,a) > 0} Σ_s' P(s'|s,a) (R + γ V(s'))`` in the true dynamics (the in-sample
    optimum in-sample learners aim at); a state without data has value 0."""
    return mdp.value_iteration(allowed=state_action_counts(mdp, data) > 0)[0]


def dual_value_learning(
    mdp: TabularMDP,
    data: Transitions,
    loss: str,
    betas,
    *,
    steps: int = 1500,
    lr: float = 0.05,
    dtype: torch.dtype = torch.float32,
    **loss_options,
) -> pd.DataFrame:
    """In-sample value learning on tables, one temperature β per row of ``betas``, all at once.

    Alternates full-batch Adam steps on (IQL/XQL's scheme, as in the f-DVL code)
        Q-loss: mean over data of (Q(s, a) − r − γ (1 − terminated) V(s'))²
        V-loss: ``value_loss(loss, Q̄(s, a) − V(s), β)`` with Q̄ = Q without gradient,
    the value objective of "Dual RL: Unification and New Methods for Reinforcement and Imitation
    Learning" with the conjugate ``loss`` (``gumbel`` is XQL's, ``chi2`` and ``tv`` f-DVL's).
    Rows: ``beta``, ``finite`` (no NaN/inf in V at the end), ``value_error`` (mean |V − V*_D|
    over dataset states, V*_D = ``supported_optimum``) and ``rmse_over_constant`` (the RMSE
    over the best constant's, the standard deviation of V*_D; inf when V*_D is constant); both
    inf when not finite.
    """
    beta_list = [float(b) for b in betas]
    betas = torch.as_tensor(beta_list, dtype=dtype)
    if betas.ndim != 1 or not (betas > 0).all():
        raise ValueError(f"betas: expected a 1-D sequence of positive temperatures, got {betas}")
    B, S, A = len(betas), mdp.n_states, mdp.n_actions
    Q = torch.zeros(B, S, A, dtype=dtype, requires_grad=True)
    V = torch.zeros(B, S, dtype=dtype, requires_grad=True)
    opt = torch.optim.Adam([Q, V], lr=lr)
    s, a, s2 = data.states, data.actions, data.next_states
    r = data.rewards.to(dtype)
    cont = mdp.gamma * (~data.terminated).to(dtype)
    beta = betas[:, None]
    for _ in range(steps):
        q = Q[:, s, a]
        q_loss = (q - (r + cont * V[:, s2].detach())).pow(2).mean(-1)
        v_loss = dual_value_loss(loss, q.detach() - V[:, s], beta, **loss_options).mean(-1)
        opt.zero_grad(set_to_none=True)
        (q_loss + v_loss).sum().backward()
        opt.step()
    truth = supported_optimum(mdp, data)
    in_data = torch.bincount(s, minlength=S) > 0
    V = V.detach().double()
    finite = torch.isfinite(V).all(-1)
    gap = (V - truth)[:, in_data]
    inf = torch.tensor(torch.inf, dtype=torch.float64)
    spread = truth[in_data].std(unbiased=False)  # the best constant's RMSE
    rmse = gap.pow(2).mean(-1).sqrt() / spread if spread > 0 else torch.full((B,), torch.inf)
    return pd.DataFrame(
        {
            "beta": beta_list,
            "finite": finite.tolist(),
            "value_error": torch.where(finite, gap.abs().mean(-1), inf).tolist(),
            "rmse_over_constant": torch.where(finite, rmse, inf).tolist(),
        }
    )


class GoalValues(NamedTuple):
    """``values[s, g]``: the learned goal-conditioned value on the chain; ``history``: the loss."""

    values: Tensor
    history: pd.DataFrame


def random_walk_chain(n_states: int, trajectories: int, length: int, seed: int = 0) -> Tensor:
    """``[trajectories, length + 1]`` states of random walks (left or right with prob ½, walls
    reflect) on a chain of ``n_states``, each from a uniform start: action-free, goal-free data."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(n_states, (trajectories, 1), generator=g)
    steps = torch.randint(0, 2, (trajectories, length), generator=g) * 2 - 1
    out = [start[:, 0]]
    for t in range(length):
        out.append((out[-1] + steps[:, t]).clamp(0, n_states - 1))
    return torch.stack(out, 1)


def option_target(
    state: Tensor, ahead: Tensor, goal: Tensor, next_value: Tensor, gamma: float
) -> Tensor:
    """OTA's option-aware TD target for ``V(state, goal)``: ``−1 + γ (1 − reached) V̄(s_{t+n}, g)``,
    0 when ``state == goal``. ``ahead`` ``[B, n]`` holds ``s_{t+1..t+n}``, ``next_value`` ``[B]``
    is ``V̄(s_{t+n}, g)``, and ``reached`` = the goal is among ``ahead``. With ``n = 1`` this is
    the one-step target with reward −1 per step."""
    reached = (ahead == goal[:, None]).any(-1)
    y = -1.0 + gamma * (~reached).to(next_value.dtype) * next_value
    return torch.where(state == goal, torch.zeros_like(y), y)


def goal_value_learning(
    walks: Tensor,
    n_states: int,
    option_steps: int = 1,
    *,
    gamma: float = 0.99,
    expectile: float = 0.7,
    steps: int = 3000,
    batch_size: int = 512,
    lr: float = 1e-3,
    hidden=(256, 256),
    polyak: float = 0.005,
    seed: int = 0,
) -> GoalValues:
    """A goal-conditioned value ``V(s, g)`` (an MLP of ``(s, g)`` scaled to [0, 1]) by expectile TD
    on the walks with uniform random goals (HIQL mixes the current, future and random states as
    goals; uniform goals suffice on a chain); with ``option_steps = n``
    the update is option-aware ("Option-aware Temporally Abstracted Value for Offline
    Goal-Conditioned Reinforcement Learning", OTA):

        y = −1 + γ (1 − reached) V̄(s_{t+n}, g)        (y = 0 when s_t = g)

    one reward of −1 and one discount per *option* of n dataset steps, ``reached`` = the goal
    occurs among ``s_{t+1..t+n}``. ``n = 1`` is the one-step TD of HIQL's value. V̄ is the Polyak
    average of V. With one discount per option, a value n dataset steps away is discounted once
    instead of n times, so distant values crowd together less.
    """
    if not isinstance(option_steps, int) or option_steps < 1:
        raise ValueError(f"option_steps: expected a positive int, got {option_steps!r}")
    if not isinstance(n_states, int) or n_states < 2:
        raise ValueError(f"n_states: expected an int ≥ 2, got {n_states!r}")
    if walks.ndim != 2 or walks.shape[1] <= option_steps:
        raise ValueError(
            f"walks: expected [trajectories, length + 1] with length ≥ option_steps, got {tuple(walks.shape)}"
        )
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = MLP(2, 1, hidden)
    target = MLP(2, 1, hidden).requires_grad_(False)
    target.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    N, T1 = walks.shape
    n = option_steps
    scale = 1.0 / (n_states - 1)

    def value(model, s, goal):
        return model(torch.stack([s * scale, goal * scale], -1).float()).squeeze(-1)

    rows = []
    for step in range(1, steps + 1):
        i = torch.randint(N, (batch_size,), generator=g)
        t = torch.randint(T1 - n, (batch_size,), generator=g)
        goal = torch.randint(n_states, (batch_size,), generator=g)
        ahead = walks[i[:, None], t[:, None] + torch.arange(1, n + 1)]  # [B, n]
        s = walks[i, t]
        with torch.no_grad():
            y = option_target(s, ahead, goal, value(target, ahead[:, -1], goal), gamma)
        loss = expectile_loss(y - value(net, s, goal), expectile).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        polyak_update(target, net, polyak)
        if step % 100 == 0:
            rows.append({"step": step, "loss": loss.item()})
    grid = torch.arange(n_states)
    with torch.no_grad():
        V = value(net, grid[:, None].expand(-1, n_states), grid[None, :].expand(n_states, -1))
    return GoalValues(V.double(), pd.DataFrame(rows))


def subgoal_sign_accuracy(values: Tensor, subgoal_steps: int) -> pd.DataFrame:
    """How often the high-level advantage ``A = V(s ± k, g) − V(s, g)`` has the right sign on a
    chain, by distance ``d = |s − g| > k``: moving ``k`` towards ``g`` must have ``A > 0`` and
    moving ``k`` away ``A < 0`` (``k = subgoal_steps``; a step off the chain's end is skipped).
    Rows: ``distance``, ``accuracy`` (over every state, goal and direction at that distance)."""
    S, k = values.shape[0], subgoal_steps
    s = torch.arange(S)[:, None].expand(S, S)
    goal = torch.arange(S)[None, :].expand(S, S)
    d = (s - goal).abs()
    toward = torch.sign(goal - s)
    rows = []
    for direction, want in ((1, 1.0), (-1, -1.0)):
        s2 = s + direction * k * toward
        ok = (d > k) & (s2 >= 0) & (s2 < S)
        adv = values[s2.clamp(0, S - 1), goal] - values[s, goal]
        rows.append(pd.DataFrame({"distance": d[ok], "correct": (torch.sign(adv[ok]) == want)}))
    df = pd.concat(rows)
    return df.groupby("distance").correct.mean().rename("accuracy").reset_index()


class InterventionData(NamedTuple):
    """Episodes of a policy with expert takeovers: the steps, and ``intervened`` ``[N]`` = the
    expert chose this step's action."""

    transitions: Transitions
    intervened: Tensor


def intervention_episodes(
    mdp: TabularMDP,
    policy: Tensor,
    expert: Tensor,
    episodes: int,
    *,
    p_intervene: float = 0.1,
    takeover: int = 5,
    max_steps: int = 60,
    seed: int = 0,
) -> InterventionData:
    """Run ``policy``; at each of its steps an expert takes over with probability
    ``p_intervene`` and acts for ``takeover`` steps, then hands back (mixed data, as from a
    robot with human interventions). Episodes are truncated after ``max_steps``."""
    if not 0.0 <= p_intervene <= 1.0:
        raise ValueError(f"p_intervene: expected a probability, got {p_intervene}")
    for name, value in (("episodes", episodes), ("takeover", takeover), ("max_steps", max_steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    g = torch.Generator().manual_seed(seed)
    state = torch.multinomial(mdp.initial.expand(episodes, -1), 1, generator=g).squeeze(1)
    alive = ~mdp.terminal[state]
    left = torch.zeros(episodes, dtype=torch.long)  # expert steps still to go
    steps, live = [], []
    for t in range(max_steps):
        if not alive.any():
            break
        start = (left == 0) & (torch.rand(episodes, generator=g) < p_intervene)
        left = torch.where(start, takeover, left)
        expert_acts = left > 0
        probs = torch.where(expert_acts[:, None], expert[state], policy[state])
        a = torch.multinomial(probs, 1, generator=g).squeeze(1)
        s2 = torch.multinomial(mdp.P[state, a], 1, generator=g).squeeze(1)
        term = mdp.terminal[s2]
        steps.append(
            (state, a, mdp.R[state, a, s2], s2, term, ~term & (t == max_steps - 1), expert_acts)
        )
        live.append(alive.clone())
        alive = alive & ~term
        left = (left - 1).clamp(min=0)
        state = s2
    mask = torch.stack(live, 1)
    cols = [torch.stack(c, 1)[mask] for c in zip(*steps)]
    return InterventionData(Transitions(*cols[:6]), cols[6])


def fit_values(n_states: int, states: Tensor, targets, sweeps: int = 300) -> Tensor:
    """Tabular least squares by repeated sweeps: ``V[s] ← mean of targets(V)`` over the samples
    of ``s`` (``targets`` a tensor, or a function of the current ``V`` for bootstrapped targets);
    states without samples keep 0."""
    V = torch.zeros(n_states, dtype=torch.float64)
    for _ in range(sweeps if callable(targets) else 1):
        V, _ = group_mean(states, targets(V) if callable(targets) else targets, n_states)
    return V


def chunk_td_values(
    mdp: TabularMDP, data: InterventionData, chunk: int, sweeps: int = 300
) -> Tensor:
    """``V^π`` from mixed data by chunk-level TD on the policy's own steps (the bootstrapping of
    "ALOE: Action-Level Off-Policy Evaluation for Vision-Language-Action Model Post-Training",
    on state values):

        V(s_t) ← Σ_{k<m} γ^k r_{t+k} + γ^m (1 − terminated) V(s_{t+m}),  m ≤ H = ``chunk``

    for every step t the policy chose, the chunk cut short (m < H) where an expert takes over or
    the episode ends, so every reward in a target follows the evaluated policy. ``chunk = 1`` is
    one-step TD. A state where the policy never acted keeps value 0, also where a chunk
    bootstraps from it (at a takeover). Uses ``rlnb.estimators.n_step_returns``."""
    tr, own = data.transitions, ~data.intervened
    next_own = torch.cat([own[1:], own.new_ones(1)]) | tr.done
    cut = tr.truncated | ~next_own  # the chunk stops before an expert's step

    def targets(V):
        G = n_step_returns(
            tr.rewards.double(), V[tr.next_states], tr.terminated, cut, mdp.gamma, chunk
        )
        return G[own]

    return fit_values(mdp.n_states, tr.states[own], targets, sweeps)


def monte_carlo_values(mdp: TabularMDP, data: InterventionData) -> Tensor:
    """``V^π`` by regressing each of the policy's steps on its observed discounted return to the
    episode's end (after a truncated end, nothing): the outcome regression that takes the
    experts' later help for the policy's own."""
    tr, own = data.transitions, ~data.intervened
    G = discounted_returns(
        tr.rewards.double(),
        torch.zeros_like(tr.rewards.double()),
        tr.terminated,
        tr.truncated,
        mdp.gamma,
    )
    return fit_values(mdp.n_states, tr.states[own], G[own])


def cql_training(
    mdp: TabularMDP,
    data: Transitions,
    features: Tensor,
    *,
    alpha: float = 1.0,
    steps: int = 3000,
    checkpoint_every: int = 100,
    batch_size: int = 64,
    lr: float = 1e-3,
    hidden=(256, 256),
    target_every: int = 50,
    seed: int = 0,
) -> tuple[pd.DataFrame, Tensor]:
    """Discrete CQL with an MLP Q-network on state ``features``, and the training-time signals of
    "A Workflow for Offline Model-Free Robotic Reinforcement Learning". The loss per minibatch
    of ``data`` is

        ½ (Q(s, a) − r − γ (1 − terminated) max_a' Q̄(s', a'))² + α (logsumexp_a Q(s, a) − Q(s, a))

    (Q̄ copied every ``target_every`` steps; "Conservative Q-Learning for Offline Reinforcement
    Learning"). Every ``checkpoint_every`` steps a row records what the workflow may look at —
    ``dataset_q`` (mean Q(s, a) over the whole dataset) and ``td_error`` (its mean squared TD
    error) — and what it may not: ``policy_value``, the true value (``mdp.evaluate``) of the greedy
    policy from the initial distribution. Returns the history and the last ``Q [S, A]``."""
    if features.ndim != 2 or features.shape[0] != mdp.n_states:
        raise ValueError(f"features: expected [{mdp.n_states}, d], got {tuple(features.shape)}")
    for name, value in (
        ("steps", steps),
        ("checkpoint_every", checkpoint_every),
        ("target_every", target_every),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = MLP(features.shape[1], mdp.n_actions, hidden)
    target = MLP(features.shape[1], mdp.n_actions, hidden).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    x, x2 = features[data.states].float(), features[data.next_states].float()
    a, r = data.actions, data.rewards.float()
    cont = mdp.gamma * (~data.terminated).float()
    N = len(a)
    rows = []
    for step in range(steps + 1):
        if step % target_every == 0:
            target.load_state_dict(net.state_dict())
        if step % checkpoint_every == 0 or step == steps:
            with torch.no_grad():
                q_all = net(features.float()).double()
                q_data = net(x)
                td = q_data.gather(1, a[:, None]).squeeze(1) - (r + cont * target(x2).max(1).values)
                greedy = epsilon_greedy(q_all, 0.0)
                rows.append(
                    {
                        "step": step,
                        "dataset_q": q_data.gather(1, a[:, None]).mean().item(),
                        "td_error": td.pow(2).mean().item(),
                        "policy_value": (mdp.initial @ mdp.evaluate(greedy).V).item(),
                    }
                )
        if step == steps:
            break
        i = torch.randint(N, (batch_size,), generator=g)
        q = net(x[i])
        with torch.no_grad():
            y = r[i] + cont[i] * target(x2[i]).max(1).values
        loss = 0.5 * (q.gather(1, a[i, None]).squeeze(1) - y).pow(2) + alpha * cql_penalty(q, a[i])
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        opt.step()
    return pd.DataFrame(rows), q_all


def workflow_checkpoint(history: pd.DataFrame, window: int = 3) -> int:
    """The row the workflow's rule picks, from training-time signals only: the peak of the
    average dataset Q-value (smoothed by a centred moving average of ``window`` checkpoints).
    A curve that rises and then falls is the paper's sign of overfitting, and the peak is its
    early-stopping point; a curve that keeps rising picks the last checkpoint."""
    smooth = history["dataset_q"].rolling(window, center=True, min_periods=1).mean()
    return int(smooth.to_numpy().argmax())
