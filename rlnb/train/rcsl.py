"""Return-conditioned supervised learning (RCSL), and MBRCSL's stitching by model rollouts.

"Free from Bellman Completeness: Trajectory Stitching via Model-based Return-conditioned
Supervised Learning" (MBRCSL) contrasts two ways to learn from offline trajectories:

- dynamic programming (fitted Q-iteration), which needs the function class to be closed under the
  Bellman operator (Bellman completeness), and can stitch pieces of different trajectories;
- RCSL, which fits ``π(a | s, g)`` by maximum likelihood on the data's actions, ``g`` the return
  to go; it needs only supervised-learning assumptions, but cannot stitch: it can only reproduce
  returns that some trajectory in the data obtained from the states it passes.

MBRCSL gives RCSL stitching: fit a dynamics model and a behaviour policy to the data, roll out
many synthetic trajectories with them, keep the highest-return ones, and train RCSL on those.

Here on tabular MDPs, in reading order: the stitching dataset (``stitching_dataset``), RCSL with an
MLP or a tiny causal transformer (``train_rcsl``, ``rcsl_return``), the learned model and
behaviour (``fit_tabular_model``), MBRCSL (``model_rollouts``, ``mbrcsl_dataset``), and the
width experiment (``width_experiment``).
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd
import torch
from torch import Tensor, nn

from rlnb.envs.tabular import TabularMDP, Transitions, gridworld, reward_chain
from rlnb.estimators import discounted_returns
from rlnb.models.value import MLP
from rlnb.train.fqi import fitted_q_iteration
from rlnb.train.offline import epsilon_greedy


# --- the data --------------------------------------------------------------------------------------
def return_to_go(data: Transitions, gamma: float) -> Tensor:
    """``[N]``: each step's discounted return to the end of its episode (nothing after a
    truncated end), ``g_t = r_t + γ g_{t+1}``."""
    r = data.rewards.double()
    return discounted_returns(r, torch.zeros_like(r), data.terminated, data.truncated, gamma)


def stitching_gridworld(size: int = 5, decoy_reward: float = 0.5) -> TabularMDP:
    """A deterministic ``size × size`` grid (actions up, right, down, left), γ = 0.95, starting
    top left. The goal, bottom right, pays 1; a decoy, top right, pays ``decoy_reward``; both are
    terminal. The best path from the start goes down the left column and along the bottom row."""
    base = gridworld(size, size, goal=(size - 1, size - 1), slip=0.0, gamma=0.95)
    P, R, terminal = base.P.clone(), base.R.clone(), base.terminal.clone()
    decoy = size - 1
    R[:, :, decoy] = decoy_reward
    P[decoy] = 0.0
    P[decoy, :, decoy] = 1.0
    R[decoy] = 0.0
    terminal[decoy] = True
    return TabularMDP(P, R, base.gamma, base.initial, terminal)


UP, RIGHT, DOWN, LEFT = range(4)


def scripted_episode(mdp: TabularMDP, start: int, moves: list[int], max_steps: int) -> Transitions:
    """One episode of ``moves`` (deterministic dynamics) from ``start``, stopping at a terminal
    state or truncated after ``max_steps`` (or when the moves run out)."""
    if not moves or max_steps < 1:
        raise ValueError(
            f"moves, max_steps: expected at least one step, got {len(moves)} moves and max_steps={max_steps}"
        )
    cols = []
    s = start
    for t, a in enumerate(moves[:max_steps]):
        s2 = int(mdp.P[s, a].argmax())
        term = bool(mdp.terminal[s2])
        last = term or t == min(len(moves), max_steps) - 1
        cols.append((s, a, float(mdp.R[s, a, s2]), s2, term, last and not term))
        s = s2
        if term:
            break
    s_, a_, r_, s2_, te_, tr_ = zip(*cols)
    return Transitions(
        torch.tensor(s_), torch.tensor(a_), torch.tensor(r_, dtype=torch.float64),
        torch.tensor(s2_), torch.tensor(te_), torch.tensor(tr_),
    )  # fmt: skip


KINDS = ("decoy", "down, then lost", "along the bottom")


def stitching_dataset(
    size: int = 5, episodes: int = 30, wander: int = 6, seed: int = 0, kinds: int = 3
) -> tuple[TabularMDP, Transitions]:
    """The stitching task and its data: the first ``kinds`` of these kinds of trajectory, in
    equal numbers (``KINDS``):

    - **decoy**: from the start along the top row into the decoy (return ``γ^{size−2} · decoy``);
    - **down, then lost**: from the start down the left column to the bottom-left corner, then
      ``wander`` random moves that stay off the goal (return 0, truncated);
    - **along the bottom**: from the bottom-left corner along the bottom row into the goal
      (return ``γ^{size−2}``), never through the start.

    The optimal path is the second kind's first half followed by the third kind: in the data only
    in pieces. Returns ``(mdp, data)``."""
    if kinds not in (1, 2, 3):
        raise ValueError(f"kinds: expected 1, 2 or 3, got {kinds!r}")
    if episodes < kinds:
        raise ValueError(f"episodes: expected at least one per kind ({kinds}), got {episodes}")
    mdp = stitching_gridworld(size)
    g = torch.Generator().manual_seed(seed)
    corner = (size - 1) * size
    goal = size * size - 1
    parts = []
    for i in range(episodes):
        kind = i % kinds
        if kind == 0:
            parts.append(scripted_episode(mdp, 0, [RIGHT] * (size - 1), size))
        elif kind == 1:
            moves = [DOWN] * (size - 1)
            s = corner
            for _ in range(wander):  # random moves that never enter the goal or the decoy
                options = [
                    a
                    for a in (UP, RIGHT, DOWN, LEFT)
                    if int(mdp.P[s, a].argmax()) not in (goal, size - 1)
                ]
                a = options[int(torch.randint(len(options), (1,), generator=g))]
                moves.append(a)
                s = int(mdp.P[s, a].argmax())
            parts.append(scripted_episode(mdp, 0, moves, len(moves)))
        else:
            parts.append(scripted_episode(mdp, corner, [RIGHT] * (size - 1), size))
    return mdp, Transitions(*(torch.cat(c) for c in zip(*parts)))


# --- RCSL ------------------------------------------------------------------------------------------
class RCSLInputs(NamedTuple):
    """Training rows: ``states`` ``[N]``, ``returns`` (return to go) ``[N]``, ``actions`` ``[N]``,
    and ``episode_start`` ``[N]`` bool (a transformer's context does not cross it)."""

    states: Tensor
    returns: Tensor
    actions: Tensor
    episode_start: Tensor


def rcsl_inputs(data: Transitions, gamma: float) -> RCSLInputs:
    """The RCSL rows of ``data``: each step's state, return to go and action."""
    start = torch.ones_like(data.done)
    start[1:] = data.done[:-1]
    return RCSLInputs(data.states, return_to_go(data, gamma).float(), data.actions, start)


class MLPPolicy(nn.Module):
    """``π(a | s, g)``: an MLP (two hidden layers of ``width``) of the state's features (default:
    one-hot, ``state_features`` ``[S, d]`` otherwise) and the return to go."""

    def __init__(
        self, n_states: int, n_actions: int, width: int = 64, context: int = 1,
        state_features: Tensor | None = None,
    ):  # fmt: skip
        super().__init__()
        features = torch.eye(n_states) if state_features is None else state_features.float()
        if features.ndim != 2 or features.shape[0] != n_states:
            raise ValueError(
                f"state_features: expected [{n_states}, d], got {tuple(features.shape)}"
            )
        self.register_buffer("features", features)
        self.net = MLP(features.shape[1] + 1, n_actions, (width, width))

    def forward(self, states: Tensor, returns: Tensor) -> Tensor:
        """``states``, ``returns``: ``[B, K]`` (the last column is the current step) → logits."""
        return self.net(torch.cat([self.features[states[:, -1]], returns[:, -1:]], -1))


class TransformerPolicy(nn.Module):
    """``π(a_t | (s, g)_{t−K+1..t})``: a tiny causal transformer over the last ``context``
    (state, return-to-go) tokens, reading the action off the last one (Decision Transformer's
    conditioning, without past actions in the sequence)."""

    def __init__(self, n_states: int, n_actions: int, width: int = 64, context: int = 4):
        super().__init__()
        self.state = nn.Embedding(n_states, width)
        self.ret = nn.Linear(1, width)
        self.pos = nn.Parameter(torch.zeros(context, width))
        layer = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(width, n_actions)

    def forward(self, states: Tensor, returns: Tensor) -> Tensor:
        K = states.shape[1]
        x = self.state(states) + self.ret(returns[..., None]) + self.pos[-K:]
        mask = nn.Transformer.generate_square_subsequent_mask(K)
        return self.head(self.body(x, mask=mask, is_causal=True)[:, -1])


POLICIES = {"mlp": MLPPolicy, "transformer": TransformerPolicy}


def contexts(rows: RCSLInputs, context: int) -> tuple[Tensor, Tensor]:
    """``[N, K]`` states and returns: each row's last ``K = context`` steps within its episode,
    padded at the front by repeating the episode's first step."""
    N = len(rows.states)
    idx = torch.arange(N)
    first = torch.cummax(
        torch.where(rows.episode_start, idx, 0), 0
    ).values  # the episode's first row
    back = idx[:, None] - torch.arange(context - 1, -1, -1)[None, :]
    back = torch.maximum(back, first[:, None])
    return rows.states[back], rows.returns[back]


def train_rcsl(
    rows: RCSLInputs,
    n_states: int,
    n_actions: int,
    kind: str = "mlp",
    *,
    width: int = 64,
    context: int = 4,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 3e-3,
    state_features: Tensor | None = None,
    seed: int = 0,
) -> tuple[nn.Module, pd.DataFrame]:
    """RCSL: maximise ``log π(a_t | s_t, g_t)`` over the rows (``kind`` "mlp" or
    "transformer", ``state_features`` for the MLP only). Returns the policy and its loss history
    (the first step, then one row per 50 steps)."""
    if kind not in POLICIES:
        raise ValueError(f"kind: expected one of {sorted(POLICIES)}, got {kind!r}")
    if kind == "transformer" and state_features is not None:
        raise ValueError("state_features: the transformer embeds states itself; pass None")
    if len(rows.states) == 0:
        raise ValueError("rows: expected at least one training row, got none")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    K = context if kind == "transformer" else 1
    if kind == "mlp":
        policy = MLPPolicy(n_states, n_actions, width, K, state_features)
    else:
        policy = TransformerPolicy(n_states, n_actions, width, K)
    S, G = contexts(rows, K)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    history = []
    for step in range(1, steps + 1):
        i = torch.randint(len(S), (batch_size,), generator=g)
        loss = nn.functional.cross_entropy(policy(S[i], G[i]), rows.actions[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == 1 or step % 50 == 0:
            history.append({"step": step, "loss": loss.item()})
    return policy, pd.DataFrame(history)


@torch.no_grad()
def rcsl_return(
    mdp: TabularMDP, policy: nn.Module, target: float, max_steps: int = 50, context: int = 1
) -> float:
    """The discounted return of running ``policy`` greedily in ``mdp`` from its start state,
    conditioned on ``target`` and updating ``g ← (g − r) / γ`` after each step (deterministic
    dynamics: the most likely next state). ``context`` must be the policy's own (1 for the MLP);
    the first steps see the start repeated, as training rows do at an episode's start."""
    s, g, ret, disc = int(mdp.initial.argmax()), float(target), 0.0, 1.0
    states, returns = [s] * context, [g] * context  # padded as ``contexts`` pads training rows
    for _ in range(max_steps):
        S = torch.tensor([states[-context:]])
        G = torch.tensor([returns[-context:]], dtype=torch.float32)
        a = int(policy(S, G).argmax(-1))
        s2 = int(mdp.P[s, a].argmax())
        r = float(mdp.R[s, a, s2])
        ret += disc * r
        disc *= mdp.gamma
        if mdp.terminal[s2]:
            break
        g = (g - r) / mdp.gamma
        s = s2
        states.append(s)
        returns.append(g)
    return ret


# --- MBRCSL ----------------------------------------------------------------------------------------
class TabularModel(NamedTuple):
    """A model fitted to data by counts: ``P [S, A, S]`` and ``R [S, A]`` (mean reward) for the
    pairs seen, ``behaviour [S, A]`` (the data's action frequencies per state), and ``seen``
    ``[S, A]`` bool. Unseen pairs have no model; unseen states no behaviour."""

    P: Tensor
    R: Tensor
    terminal: Tensor
    behaviour: Tensor
    seen: Tensor


def fit_tabular_model(data: Transitions, n_states: int, n_actions: int) -> TabularModel:
    """The maximum-likelihood tabular dynamics, reward and behaviour policy of ``data``."""
    S, A = n_states, n_actions
    flat = data.states * A + data.actions
    count = torch.bincount(flat, minlength=S * A).double().view(S, A)
    trans = (
        torch.zeros(S * A * S, dtype=torch.float64)
        .index_add_(0, flat * S + data.next_states, torch.ones(len(flat), dtype=torch.float64))
        .view(S, A, S)
    )
    rew = (
        torch.zeros(S * A, dtype=torch.float64)
        .index_add_(0, flat, data.rewards.double())
        .view(S, A)
    )
    seen = count > 0
    P = trans / count.clamp(min=1)[..., None]
    terminal = torch.zeros(S, dtype=torch.bool)
    terminal[data.next_states[data.terminated]] = True
    visits = count.sum(-1, keepdim=True)
    behaviour = torch.where(visits > 0, count / visits.clamp(min=1), 0.0)
    return TabularModel(P, rew / count.clamp(min=1), terminal, behaviour, seen)


def model_rollouts(
    model: TabularModel, start: int, n: int, horizon: int, gamma: float, seed: int = 0
) -> tuple[Transitions, Tensor]:
    """``n`` synthetic episodes from ``start``: actions from the learned behaviour, next states
    from the learned dynamics, until a (learned) terminal state, a state without data, or
    ``horizon`` steps. Returns the steps and each episode's discounted return ``[n]``."""
    g = torch.Generator().manual_seed(seed)
    episodes, returns = [], []
    for _ in range(n):
        s, ret, disc, cols = start, 0.0, 1.0, []
        for _ in range(horizon):
            if model.behaviour[s].sum() == 0:
                break
            a = int(torch.multinomial(model.behaviour[s], 1, generator=g))
            s2 = int(torch.multinomial(model.P[s, a], 1, generator=g))
            r = float(model.R[s, a])
            term = bool(model.terminal[s2])
            cols.append((s, a, r, s2, term))
            ret += disc * r
            disc *= gamma
            s = s2
            if term:
                break
        if not cols:
            continue
        s_, a_, r_, s2_, te_ = zip(*cols)
        trunc = [False] * len(cols)
        trunc[-1] = not te_[-1]
        episodes.append(Transitions(
            torch.tensor(s_), torch.tensor(a_), torch.tensor(r_, dtype=torch.float64),
            torch.tensor(s2_), torch.tensor(te_), torch.tensor(trunc),
        ))  # fmt: skip
        returns.append(ret)
    if not episodes:
        raise ValueError(f"start: the learned behaviour has no data at state {start}")
    steps = Transitions(*(torch.cat(c) for c in zip(*episodes)))
    return steps, torch.tensor(returns, dtype=torch.float64)


def mbrcsl_dataset(
    data: Transitions,
    mdp_shape: tuple[int, int],
    start: int,
    gamma: float,
    *,
    rollouts: int = 2000,
    horizon: int = 30,
    keep: float = 0.1,
    seed: int = 0,
) -> tuple[Transitions, Tensor]:
    """MBRCSL's data: ``rollouts`` synthetic episodes of the learned behaviour in the learned
    model from ``start``, keeping those whose return is in the top ``keep`` fraction (ties at the
    cut kept). Returns the kept steps and the returns of all rollouts."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep: expected a fraction in (0, 1], got {keep}")
    model = fit_tabular_model(data, *mdp_shape)
    steps, returns = model_rollouts(model, start, rollouts, horizon, gamma, seed)
    cut = torch.quantile(returns, 1 - keep)
    ends = torch.nonzero(steps.done).squeeze(1)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), ends[:-1] + 1])
    episode = torch.zeros(len(steps.states), dtype=torch.long)
    episode[starts[1:]] = 1
    episode = episode.cumsum(0)
    kept = returns[episode] >= cut
    return Transitions(*(c[kept] for c in steps)), returns


# --- Bellman completeness: the width a value needs ------------------------------------------------
def width_experiment(
    n_states: list[int],
    width: int = 16,
    *,
    fqi_iterations: int = 30,
    rcsl_steps: int = 1000,
    episodes: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """On ``reward_chain(n)`` for each ``n``, two learners with two hidden layers of ``width``
    units and the state as one number in [−1, 1]:

    - fitted Q-iteration (``rlnb.train.fqi``) on uniform samples of every pair, exact rewards:
      its Q must represent ``r(s) + γ V*(s + 1)``;
    - RCSL (an MLP of the same width on (state, return to go)) on near-optimal episodes
      (ε-greedy, ε = 0.2, from uniform starts): its policy must only say "right".

    Rows: ``n_states``, ``method``, ``q_rmse`` (FQI's Q against Q*, relative to Q*'s standard
    deviation; NaN for RCSL, which has no Q) and ``policy_value`` (mean over start states of the
    greedy policy's true value over V*'s; RCSL conditioned on V*(s) from each state)."""
    rows = []
    for n in n_states:
        mdp = reward_chain(n, seed=seed)
        v_star, pi_star = mdp.value_iteration()
        q_star = mdp.evaluate(pi_star).Q
        live = ~mdp.terminal
        x = torch.linspace(-1, 1, n)[:, None]
        hist, net = fitted_q_iteration(
            mdp, x, reward_noise=0.0, iterations=fqi_iterations, hidden=(width, width),
            n_samples=4000, seed=seed,
        )  # fmt: skip
        with torch.no_grad():
            q = net.value(x.float()).double()
        greedy = epsilon_greedy(q, 0.0)
        rows.append({
            "n_states": n, "method": "FQI",
            "q_rmse": ((q - q_star)[live].pow(2).mean().sqrt() / q_star[live].std()).item(),
            "policy_value": (mdp.evaluate(greedy).V[live] / v_star[live]).mean().item(),
        })  # fmt: skip
        behaviour = 0.8 * pi_star + 0.1
        data = mdp.sample_episodes(behaviour, episodes, 4 * n, seed=seed)
        policy, _ = train_rcsl(
            rcsl_inputs(data, mdp.gamma), n, 2, "mlp", width=width, steps=rcsl_steps, seed=seed,
            state_features=x,
        )  # fmt: skip
        with torch.no_grad():
            states = torch.nonzero(live).squeeze(1)
            logits = policy(states[:, None], v_star[states][:, None].float())
        acting = epsilon_greedy(logits.double(), 0.0)
        full = pi_star.clone()
        full[states] = acting
        rows.append({
            "n_states": n, "method": "RCSL", "q_rmse": float("nan"),
            "policy_value": (mdp.evaluate(full).V[live] / v_star[live]).mean().item(),
        })  # fmt: skip
    return pd.DataFrame(rows)
