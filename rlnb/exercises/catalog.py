"""The exercises: for each, the library's answer, the battery of inputs (plain first, then the
edge cases, each with the hint a failure there points to) and the general hints.

Batteries are built from a ``torch.Generator`` (``check(..., seed=)``). Time series keep the
library's conventions (``rlnb.estimators.returns``) and are consistent: ``next_values[t] =
values[t + 1]`` inside an episode, a fresh value at an episode's end.
"""

from __future__ import annotations

import warnings

import torch

from rlnb.decoding.selection import pass_at_k
from rlnb.decoding.tree import Tree, prefix_values
from rlnb.envs.tabular import Transitions
from rlnb.envs.tasks import FUNCTIONS, Composition
from rlnb.estimators import (
    aggregate,
    beta_tracker_update,
    broadcast_to_tokens,
    categorical_projection,
    discounted_returns,
    gae,
    grpo,
    hl_gauss,
    lambda_returns,
    n_step_returns,
    policy_loss,
    qae,
    rloo,
    sequence_log_ratio,
    token_gae,
    two_hot,
    vtrace,
)
from rlnb.estimators.soft import soft_q_target as _soft_q_target
from rlnb.estimators.soft import soft_value as _soft_value
from rlnb.exercises import solutions
from rlnb.exercises.grader import Case, Exercise, register_exercise
from rlnb.metrics import auc
from rlnb.models.lm import loss_barrier
from rlnb.models.value import bellman_target
from rlnb.train.offline import edge_of_reach
from rlnb.train.planning import mdvi_values, soft_max
from rlnb.train.tabular import td0_prediction
from rlnb.train.vagram import vagram_loss as _vagram_loss


def exercise(notebook: str, expected, hints: tuple[str, ...], **tolerance):
    """Decorator on ``cases_<name>``: register exercise ``<name>`` of ``notebook``, graded against
    ``expected`` (within ``rtol``/``atol`` when given), with the reference solution
    ``rlnb.exercises.solutions.<name>``."""

    def register(make_cases):
        name = make_cases.__name__.removeprefix("cases_")
        more = (f'rlnb.exercises.solution("{name}") prints a reference solution.',)
        solution = getattr(solutions, name)
        register_exercise(
            Exercise(name, notebook, expected, make_cases, solution, hints + more, **tolerance)
        )
        return make_cases

    return register


# --- input builders -----------------------------------------------------------------------------
def series(gen, T, dtype=torch.float32, terminated_at=(), truncated_at=(), p_end=0.0) -> dict:
    """``rewards, values, next_values, terminated, truncated`` of length ``T``: episode ends at
    the given steps, or at random with probability ``p_end`` each (half terminated, half truncated)."""
    u = torch.rand(T, generator=gen, dtype=torch.float64)
    terminated, truncated = u < p_end / 2, (u >= p_end / 2) & (u < p_end)
    terminated[list(terminated_at)] = True
    truncated[list(truncated_at)] = True
    v = torch.randn(T + 1, generator=gen, dtype=dtype)
    next_values = v[1:].clone()
    fresh = torch.randn(T, generator=gen, dtype=dtype)  # the last observation of an ended episode
    next_values[terminated | truncated] = fresh[terminated | truncated]
    return dict(
        rewards=torch.randn(T, generator=gen, dtype=dtype),
        values=v[:T].clone(),
        next_values=next_values,
        terminated=terminated,
        truncated=truncated,
    )


def quietly(estimator, *args, **kwargs):
    """Call a group estimator without its warning about groups of one (batteries test them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="every group is a singleton")
        return estimator(*args, **kwargs)


def pick(d: dict, *keys) -> dict:
    return {k: d[k] for k in keys}


TERMINATED = (
    "a terminated step has no next state: its target bootstraps nothing "
    "(multiply γ·V(s') by 1 − terminated)"
)
NOT_ACROSS = "the trace must not cross a done: nothing after a terminated or truncated step flows back into it"
TRUNCATED = (
    "a truncated step is cut by a time limit, not by the task: bootstrap from next_values there "
    "(as a non-terminal step), but do not let the next episode flow back into it"
)
LAST_STEP = "the window's last step bootstraps from next_values[T − 1] unless it terminated"
BOTH = "a step that is both terminated and truncated is terminated: it bootstraps nothing"


def time_cases(gen, hints: dict, make) -> list[Case]:
    """The time-series battery, plainest first; ``make(series_dict, gen)`` → one case's inputs.
    ``hints``: the exercise's own hints by case key, with ``"default"`` for the random case; the
    episode-end cases fall back to the shared hints above."""
    specs = [
        ("no episode end", None, dict(T=6)),
        ("a single step", LAST_STEP, dict(T=1)),
        ("terminated at the last step", TERMINATED, dict(T=5, terminated_at=[4])),
        ("terminated mid-window", NOT_ACROSS, dict(T=7, terminated_at=[2])),
        ("truncated mid-window", TRUNCATED, dict(T=7, truncated_at=[2])),
        ("terminated and truncated at once", BOTH, dict(T=7, terminated_at=[3], truncated_at=[3])),
        ("random episode ends, float64", None, dict(T=16, dtype=torch.float64, p_end=0.3)),
    ]
    return [
        Case(key, hints.get(key) or shared or hints["default"], make(series(gen, **spec), gen))
        for key, shared, spec in specs
    ]


# --- 00 · TD(0) -----------------------------------------------------------------------------------
def expected_td0_update(V, s, r, s_next, terminated, alpha, gamma):
    stream = Transitions(
        *(torch.tensor([x]) for x in (s, 0, r, s_next, terminated, not terminated))
    )
    return td0_prediction(stream, len(V), gamma, alpha, v0=V.numpy())[0]


@exercise(
    "00",
    expected_td0_update,
    (
        "Only V(s) changes: V(s) ← V(s) + α [target − V(s)].",
        "The target is r + γ V(s'), or r alone when s' is terminal.",
    ),
)
def cases_td0_update(gen) -> list[Case]:
    V = torch.randn(5, generator=gen, dtype=torch.float64)
    plain = "V(s) ← V(s) + α [r + γ V(s') − V(s)], every other state keeps its value; return the whole table"
    return [
        Case("a non-terminal step", plain, dict(V=V, s=1, r=0.5, s_next=2, terminated=False, alpha=0.1, gamma=0.9)),
        Case("a terminal step", "a terminal next state is worth 0: the target is r alone", dict(V=V, s=3, r=1.0, s_next=4, terminated=True, alpha=0.5, gamma=0.9)),
        Case("s' = s", "the target uses V(s') from before the update", dict(V=V, s=2, r=-0.3, s_next=2, terminated=False, alpha=0.3, gamma=0.95)),
        Case("α = 1", "with α = 1, V(s) becomes the target", dict(V=V, s=0, r=2.0, s_next=4, terminated=False, alpha=1.0, gamma=0.5)),
    ]  # fmt: skip


# --- 01 · n-step and λ-returns --------------------------------------------------------------------
def expected_n_step_return(rewards, next_values, terminated, truncated, gamma, n):
    return n_step_returns(rewards, next_values, terminated, truncated, gamma, n)


@exercise(
    "01",
    expected_n_step_return,
    (
        "For each t separately: add γ^k r_{t+k} for k = 0, 1, … until you have n rewards, the "
        "episode ends, or the data ends; then add γ^m V(s_{t+m}) = γ^m next_values[t+m−1] unless "
        "the last step terminated.",
        "Check t = T − 1 by hand: its window has one step and bootstraps from next_values[T − 1].",
    ),
)
def cases_n_step_return(gen) -> list[Case]:
    hints = {
        "default": "G_t sums n rewards r_t … r_{t+n−1}, then adds γ^n next_values[t+n−1]; "
        "the window ends early at an episode's end or the data's end",
        "no episode end": "the window holds n rewards r_t … r_{t+n−1} (not n + 1), then "
        "γ^n V(s_{t+n}) = γ^n next_values[t+n−1]; near the data's end it is shorter",
    }

    def make(d, gen):
        return {
            **pick(d, "rewards", "next_values", "terminated", "truncated"),
            "gamma": 0.9,
            "n": 3,
        }

    return time_cases(gen, hints, make)


def expected_lambda_return(rewards, next_values, terminated, truncated, gamma, lmbda):
    return lambda_returns(rewards, next_values, terminated, truncated, gamma, lmbda)


@exercise(
    "01",
    expected_lambda_return,
    (
        "Go backwards: G_t = r_t + γ [(1 − λ) V(s_{t+1}) + λ G_{t+1}].",
        "Where there is no G_{t+1} to use (a truncated step, the window's end), use V(s_{t+1}) "
        "instead; a terminated step has G_t = r_t.",
    ),
)
def cases_lambda_return(gen) -> list[Case]:
    hints = {
        "default": "G_t = r_t + γ (1 − terminated_t) [(1 − λ) V(s_{t+1}) + λ G_{t+1}], backwards",
        "no episode end": "G_t = r_t + γ [(1 − λ) next_values[t] + λ G_{t+1}], going backwards "
        "from the last step, where G_{t+1} is replaced by next_values[T − 1]",
    }

    def make(d, gen):
        pieces = pick(d, "rewards", "next_values", "terminated", "truncated")
        return {**pieces, "gamma": 0.9, "lmbda": 0.7}

    return time_cases(gen, hints, make)


# --- 02 · GAE and V-trace -----------------------------------------------------------------------
def expected_gae(rewards, values, next_values, terminated, truncated, gamma, lmbda):
    return gae(rewards, values, next_values, terminated, truncated, gamma, lmbda).advantages


@exercise(
    "02",
    expected_gae,
    (
        "First the TD errors δ_t = r_t + γ V(s_{t+1}) − V(s_t), then backwards A_t = δ_t + γλ A_{t+1}.",
        "Two different flags: terminated removes the bootstrap γ V(s_{t+1}) from δ_t; terminated "
        "and truncated both stop A_{t+1} from flowing into A_t.",
    ),
)
def cases_gae(gen) -> list[Case]:
    hints = {
        "default": "δ_t = r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t), A_t = δ_t + γλ (1 − done_t) A_{t+1}",
        "no episode end": "δ_t = r_t + γ V(s_{t+1}) − V(s_t) with V(s_{t+1}) = next_values[t]; "
        "A_t = δ_t + γλ A_{t+1}, going backwards, A_T = 0",
        "a single step": "with one step, A_0 = δ_0 = r_0 + γ next_values[0] − values[0]",
        "truncated mid-window": "truncated steps must bootstrap from next_values (δ_t keeps "
        "γ V(s_{t+1})), and A_{t+1} of the next episode must not flow into A_t",
    }

    def make(d, gen):
        return {**d, "gamma": 0.9, "lmbda": 0.8}

    return time_cases(gen, hints, make)


def expected_vtrace(
    rewards, values, next_values, terminated, truncated, target_logp, behavior_logp, gamma,
    rho_clip, c_clip,
):  # fmt: skip
    return vtrace(
        rewards, values, next_values, terminated, truncated, target_logp, behavior_logp, gamma,
        1.0, rho_clip, c_clip,
    ).returns  # fmt: skip


@exercise(
    "02",
    expected_vtrace,
    (
        "Backwards: v_t − V(s_t) = δ_t + γ c_t (v_{t+1} − V(s_{t+1})), with the weighted TD error "
        "δ_t = ρ_t (r_t + γ V(s_{t+1}) − V(s_t)).",
        "ρ_t = min(ρ̄, π/μ) and c_t = min(c̄, π/μ), with π/μ = exp(target_logp − behavior_logp).",
    ),
)
def cases_vtrace(gen) -> list[Case]:
    def make(d, gen, spread, rho_clip=1.0, c_clip=1.0):
        """Log-ratios log π/μ uniform in ±``spread``, the first one +1 (π/μ = e) when ``spread`` ≥ 1."""
        T, dtype = len(d["rewards"]), d["rewards"].dtype
        behavior = torch.rand(T, generator=gen, dtype=dtype).clamp(min=0.05).log()
        log_ratio = spread * (2 * torch.rand(T, generator=gen, dtype=dtype) - 1)
        if spread >= 1:
            log_ratio[0] = 1.0
        return {**d, "target_logp": behavior + log_ratio, "behavior_logp": behavior, "gamma": 0.9,
                "rho_clip": rho_clip, "c_clip": c_clip}  # fmt: skip

    corr = (
        "v_t − V(s_t) = δ_t + γ c_t (v_{t+1} − V(s_{t+1})), δ_t = ρ_t (r_t + γ V(s_{t+1}) − V(s_t))"
    )
    specs = [
        ("on-policy", "with π = μ every ρ_t and c_t is 1: " + corr, dict(T=6), 0.0, {}),
        ("ratios above the clip", "ρ_t = min(ρ̄, π/μ), c_t = min(c̄, π/μ): clip the ratios before using them", dict(T=6), 1.0, {}),
        ("terminated mid-window", TERMINATED + "; " + NOT_ACROSS, dict(T=7, terminated_at=[2]), 0.5, {}),
        ("truncated mid-window", TRUNCATED, dict(T=7, truncated_at=[2]), 0.5, {}),
        ("ρ̄ ≠ c̄, random episode ends", "ρ̄ (rho_clip) clips the TD error's weight ρ_t, c̄ (c_clip) the trace c_t: two different clips", dict(T=16, dtype=torch.float64, p_end=0.3), 1.0, dict(rho_clip=2.0, c_clip=0.8)),
    ]  # fmt: skip
    return [
        Case(key, hint, make(series(gen, **spec), gen, spread, **clips))
        for key, hint, spec, spread, clips in specs
    ]


# --- 03 · soft Bellman backup and MDVI ----------------------------------------------------------
def model(gen, S=4, A=3, dtype=torch.float32) -> dict:
    P = torch.softmax(torch.randn(S, A, S, generator=gen, dtype=dtype), -1)
    return dict(P=P, r=torch.randn(S, A, generator=gen, dtype=dtype))


def expected_soft_bellman_backup(Q, P, r, gamma, tau):
    return r + gamma * P @ soft_max(Q, tau)


@exercise(
    "03",
    expected_soft_bellman_backup,
    (
        "The soft value of a state is τ log Σ_a exp(Q(s, a)/τ), a smooth max over actions.",
        "Q'(s, a) = r(s, a) + γ Σ_s' P(s'|s, a) V(s'): with P of shape [S, A, S], that is P @ V.",
    ),
)
def cases_soft_bellman_backup(gen) -> list[Case]:
    def q(scale=1.0, dtype=torch.float32):
        return scale * torch.randn(4, 3, generator=gen, dtype=dtype)

    backup = "V(s') = τ log Σ_a exp(Q(s', a)/τ), then Q'(s, a) = r(s, a) + γ Σ_s' P(s'|s, a) V(s')"
    return [
        Case("τ = 1", backup, dict(Q=q(), **model(gen), gamma=0.9, tau=1.0)),
        Case("τ = 0", "τ = 0 is the hard max: V(s') = max_a Q(s', a)", dict(Q=q(), **model(gen), gamma=0.9, tau=0.0)),
        Case("small τ, large Q", "exp(Q/τ) overflows for a small τ: use torch.logsumexp(Q / tau, dim=1)", dict(Q=q(50.0), **model(gen), gamma=0.9, tau=0.01)),
        Case("float64, τ = 0.3", backup, dict(Q=q(dtype=torch.float64), **model(gen, dtype=torch.float64), gamma=0.95, tau=0.3)),
    ]  # fmt: skip


def expected_mdvi_step(Q, s_prev, P, r, gamma, kl, entropy):
    w, s = mdvi_values(Q, s_prev, kl, entropy)
    return r + gamma * P @ w, s


@exercise(
    "03",
    expected_mdvi_step,
    (
        "α = λ/(λ+κ) weighs the past, β = 1/(λ+κ) is the inverse temperature: s = Q + α s_prev.",
        "w = M_β s − α M_β s_prev with M_β f = (1/β) log Σ_a exp(β f), then Q_next = r + γ P w; "
        "return the pair (Q_next, s).",
    ),
)
def cases_mdvi_step(gen) -> list[Case]:
    def qs(scale=1.0):
        return dict(
            Q=scale * torch.randn(4, 3, generator=gen),
            s_prev=scale * torch.randn(4, 3, generator=gen),
        )

    return [
        Case("κ = 0 (α = 1)", "α = λ/(λ+κ), β = 1/(λ+κ); s = Q + α s_prev and w = M_β s − α M_β s_prev", dict(**qs(), **model(gen), gamma=0.9, kl=1.0, entropy=0.0)),
        Case("λ = 0 (soft VI)", "with λ = 0, α = 0: s = Q and the step is a soft Bellman backup at temperature κ", dict(**qs(), **model(gen), gamma=0.9, kl=0.0, entropy=0.5)),
        Case("λ, κ > 0", "the previous sum's soft max is subtracted, scaled by α: w = M_β s − α M_β s_prev", dict(**qs(), **model(gen), gamma=0.9, kl=0.5, entropy=0.2)),
        Case("large values", "exp(β s) overflows: M_β f = torch.logsumexp(β f, dim=1) / β", dict(**qs(100.0), **model(gen), gamma=0.9, kl=0.01, entropy=0.0)),
        Case("λ = κ = 0 (value iteration)", "with λ = κ = 0 there is no regularization: α = 0 and M_β is the hard max (β = ∞)", dict(**qs(), **model(gen), gamma=0.9, kl=0.0, entropy=0.0)),
    ]  # fmt: skip


# --- 04 · classification targets ----------------------------------------------------------------
@exercise(
    "04",
    lambda x, support: two_hot(x, support),
    (
        "Find the two atoms around x, z_i ≤ x ≤ z_{i+1}; all other atoms get 0.",
        "Split so that the mean is x: p_i = (z_{i+1} − x)/(z_{i+1} − z_i), p_{i+1} = 1 − p_i.",
    ),
)
def cases_two_hot(gen) -> list[Case]:
    z = torch.linspace(-2, 2, 5)
    uneven = torch.tensor([-3.0, -1.0, 0.0, 0.5, 4.0], dtype=torch.float64)
    split = "for z_i ≤ x ≤ z_{i+1}: p_i = (z_{i+1} − x)/(z_{i+1} − z_i), p_{i+1} = 1 − p_i, so Σ p z = x"
    return [
        Case("between atoms", split, dict(x=torch.tensor([0.3, -1.25, 1.9]), support=z)),
        Case("on an atom", "x on an atom puts all its mass on that atom (mind the support's two ends)", dict(x=torch.tensor([0.0, -2.0, 2.0, 1.0]), support=z)),
        Case("outside the support", "clip x to [z_0, z_{K−1}] first", dict(x=torch.tensor([-5.0, 3.5]), support=z)),
        Case("uneven support, float64", "divide by the local spacing z_{i+1} − z_i, not a global one", dict(x=6 * torch.rand(8, generator=gen, dtype=torch.float64) - 3, support=uneven)),
    ]  # fmt: skip


@exercise(
    "04",
    lambda x, bin_edges, sigma: hl_gauss(x, bin_edges, sigma),
    (
        "Each bin gets the mass a normal N(x, σ²) puts in it: a difference of two CDF values.",
        "torch.distributions.Normal(x[:, None], sigma).cdf(bin_edges) gives every edge at once; "
        "then normalise over the bins.",
    ),
)
def cases_hl_gauss(gen) -> list[Case]:
    edges = torch.linspace(-2, 2, 9)
    sigma = 0.75 * 0.5
    return [
        Case("near the centre", "p_k = Φ((e_{k+1} − x)/σ) − Φ((e_k − x)/σ): the normal's mass in each bin (CDF differences, not the density at the centres)", dict(x=torch.tensor([0.1, -0.3]), bin_edges=edges, sigma=sigma)),
        Case("near an edge", "normalise: divide by the mass inside [e_0, e_K], so each row sums to 1", dict(x=torch.tensor([1.9, -1.8]), bin_edges=edges, sigma=sigma)),
        Case("outside the support", "clip x to [e_0, e_K] first", dict(x=torch.tensor([3.0, -4.0]), bin_edges=edges, sigma=sigma)),
        Case("wide σ, float64", "the same formula; σ is the normal's standard deviation, not its variance", dict(x=4 * torch.rand(6, generator=gen, dtype=torch.float64) - 2, bin_edges=edges.double(), sigma=2.0)),
    ]  # fmt: skip


@exercise(
    "04",
    lambda next_probs, rewards, discounts, support: categorical_projection(
        next_probs, rewards, discounts, support
    ),
    (
        "Each atom z_j of the next state's distribution moves to r + γ z_j (clipped to the "
        "support) and keeps its probability p_j.",
        "That point falls between two atoms l = ⌊b⌋ and u = ⌈b⌉, b = (r + γ z_j − v_min)/Δz: "
        "give p_j (u − b) to l and p_j (b − l) to u.",
    ),
)
def cases_c51_projection(gen) -> list[Case]:
    z = torch.linspace(-4, 4, 9)

    def probs(n, dtype=torch.float32):
        return torch.softmax(torch.randn(n, 9, generator=gen, dtype=dtype), -1)

    return [
        Case("inside the support", "b = (r + γ z_j − v_min)/Δz; split p_j: (u − b) to l = ⌊b⌋, (b − l) to u = ⌈b⌉", dict(next_probs=probs(2), rewards=torch.tensor([0.25, -0.15]), discounts=torch.tensor([0.9, 0.9]), support=z)),
        Case("landing on an atom", "when b lands exactly on an atom, l = u and (u − b) + (b − l) = 0: give that atom all of p_j", dict(next_probs=probs(2), rewards=torch.tensor([1.0, 0.0]), discounts=torch.tensor([1.0, 0.0]), support=z)),
        Case("beyond the support", "clip r + γ z_j to [v_min, v_max] before splitting", dict(next_probs=probs(2), rewards=torch.tensor([3.5, -3.0]), discounts=torch.tensor([0.9, 0.9]), support=z)),
        Case("random, float64", "the same projection for every row", dict(next_probs=probs(5, torch.float64), rewards=2 * torch.randn(5, generator=gen, dtype=torch.float64), discounts=torch.tensor([0.99, 0.0, 0.9, 0.5, 0.99], dtype=torch.float64), support=z.double())),
    ]  # fmt: skip


# --- 05 · Double DQN ----------------------------------------------------------------------------
class _Table:
    """A Q-table standing in for a value network in ``bellman_target`` (observation i → row i)."""

    head = "scalar"

    def __init__(self, q):
        self.q = q

    def logits(self, obs):
        return self.q[obs]

    def values_from_logits(self, logits):
        return logits

    def value(self, obs):
        return self.q[obs]


def expected_double_dqn_target(rewards, next_q_online, next_q_target, terminated, gamma):
    obs = torch.arange(len(rewards))
    discount = gamma * (~terminated).to(rewards.dtype)
    return bellman_target(
        _Table(next_q_target), obs, rewards, discount, online=_Table(next_q_online)
    )[0]


@exercise(
    "05",
    expected_double_dqn_target,
    (
        "Two networks, two jobs: the online one chooses the next action, the target one values it.",
        "a* = next_q_online.argmax(dim=1), then next_q_target[range(B), a*].",
    ),
)
def cases_double_dqn_target(gen) -> list[Case]:
    def qs(B=6, A=3):
        return torch.randn(B, A, generator=gen), torch.randn(B, A, generator=gen)

    rewards, none = torch.randn(6, generator=gen), torch.zeros(6, dtype=torch.bool)
    online, target = qs()
    q2_online, q2_target = qs()
    ends = torch.tensor([True, False, True, False, False, True])
    return [
        Case("online and target agree", "y = r + γ Q_target(s', a*) with a* = argmax_a Q_online(s', a)", dict(rewards=rewards, next_q_online=target, next_q_target=target, terminated=none, gamma=0.99)),
        Case("they disagree", "choose a* with the online network and value it with the target network (not max_a Q_target, not Q_online(s', a*))", dict(rewards=rewards, next_q_online=online, next_q_target=target, terminated=none, gamma=0.99)),
        Case("terminal transitions", "a terminal transition has y = r: multiply by 1 − terminated", dict(rewards=rewards, next_q_online=q2_online, next_q_target=q2_target, terminated=ends, gamma=0.9)),
    ]  # fmt: skip


# --- 08 · pass@k --------------------------------------------------------------------------------
@exercise(
    "08",
    lambda n, c, k: pass_at_k(c, n, k),
    (
        "pass@k is the chance that k samples drawn without replacement from your n contain at "
        "least one of the c correct ones.",
        "1 − (the chance that all k are wrong) = 1 − C(n − c, k) / C(n, k).",
    ),
)
def cases_pass_at_k(gen) -> list[Case]:
    return [
        Case("k = 1", "pass@1 is c / n", dict(n=10, c=3, k=1)),
        Case("k > 1", "1 − C(n − c, k)/C(n, k); 1 − (1 − c/n)^k is the biased plug-in (it samples with replacement)", dict(n=10, c=3, k=4)),
        Case("no correct sample", "c = 0 gives 0", dict(n=10, c=0, k=5)),
        Case("n − c < k", "when n − c < k every k-subset holds a correct sample: 1", dict(n=10, c=8, k=3)),
        Case("large n", "C(n, k) overflows a float: use exact integers (math.comb) or the product ∏_{i=n−c+1}^{n} (1 − k/i)", dict(n=2000, c=7, k=600)),
    ]  # fmt: skip


# --- 08b · the values of a rollout tree ---------------------------------------------------------
def expected_tree_prefix_values(parent, is_leaf, reward):
    depth = torch.zeros_like(parent)
    for i in range(len(parent)):  # a parent comes before its children
        depth[i] = depth[parent[i]] + 1 if parent[i] >= 0 else 0
    none = torch.zeros(0, dtype=torch.long)
    tree = Tree([], parent, depth, none, none, none, none, none, is_leaf, reward, [])
    return prefix_values(tree)[0]


@exercise(
    "08b",
    expected_tree_prefix_values,
    (
        "Work from the leaves up: a leaf's value is its reward, a node's value is the mean of its "
        "children's values.",
        "Children come after their parent: walk the nodes in reverse order and add each value to "
        "its parent's running total and count.",
    ),
)
def cases_tree_prefix_values(gen) -> list[Case]:
    def tree(parent, leaf_rewards):
        """``leaf_rewards`` by node: the nodes that are nobody's parent are the leaves."""
        parent = torch.tensor(parent)
        is_leaf = ~torch.isin(torch.arange(len(parent)), parent)
        reward = torch.zeros(len(parent))
        reward[is_leaf] = torch.tensor(leaf_rewards, dtype=torch.float32)
        return dict(parent=parent, is_leaf=is_leaf, reward=reward)

    binary = (torch.rand(8, generator=gen) < 0.5).float().tolist()
    return [
        Case("one level", "a node's value is the mean of its children's rewards", tree([-1, 0, 0, 0], [1, 0, 1])),
        Case("two levels", "go from the leaves up: the root averages its children's values, which average theirs", tree([-1, 0, 0, 1, 1, 2, 2], [1, 1, 0, 1])),
        Case("a path that ends early", "each child weighs the same, not each leaf: a child that ended early counts as much as one with many leaves under it", tree([-1, 0, 0, 2, 2, 2], [1, 0, 0, 1])),
        Case("two prompts", "every root (parent −1) gets its own value", tree([-1, -1, 0, 0, 1, 1, 1, 3, 3], [1, 0, 1, 0, 0, 1])),
        Case("random rewards", "the same recursion with any rewards", tree([-1, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 4], binary)),
    ]  # fmt: skip


# --- 08c · AUC ----------------------------------------------------------------------------------
@exercise(
    "08c",
    lambda scores, labels: auc(scores, labels),
    (
        "AUC is the fraction of (positive, negative) pairs in which the positive scores higher.",
        "Compare every positive with every negative: a win counts 1, a tie 1/2; divide by the "
        "number of pairs.",
    ),
)
def cases_auc(gen) -> list[Case]:
    return [
        Case("no ties", "count the (positive, negative) pairs in which the positive scores higher, over all such pairs", dict(scores=torch.tensor([0.9, 0.2, 0.6, 0.4, 0.7]), labels=torch.tensor([1, 0, 1, 0, 0]))),
        Case("ties", "a tie between a positive and a negative counts half", dict(scores=torch.tensor([0.5, 0.5, 0.8, 0.5, 0.1]), labels=torch.tensor([1, 0, 1, 0, 1]))),
        Case("one class only", "with no negatives (or no positives) there is no pair: return 0.5, chance", dict(scores=torch.tensor([0.3, 0.9, 0.6]), labels=torch.tensor([1, 1, 1]))),
        Case("random scores", "the same count on more data", dict(scores=torch.rand(20, generator=gen), labels=(torch.rand(20, generator=gen) < 0.4).long())),
    ]  # fmt: skip


# --- 09 · group baselines and aggregation -------------------------------------------------------
@exercise(
    "09",
    lambda rewards, group_size: quietly(rloo, rewards, group_size=group_size),
    (
        "Responses i, i+1, … in blocks of group_size share a prompt; compare each with its group.",
        "The baseline of response i is the mean of the other n − 1 rewards of its group.",
    ),
)
def cases_rloo(gen) -> list[Case]:
    binary = (torch.rand(15, generator=gen) < 0.4).float()
    return [
        Case("one group", "leave the response itself out: its baseline is the mean of the *other* n − 1 rewards", dict(rewards=torch.randn(4, generator=gen), group_size=4)),
        Case("several groups", "each response's baseline comes from its own group only, rewards[start : start + group_size]", dict(rewards=torch.randn(12, generator=gen), group_size=4)),
        Case("all-equal rewards", "a group whose rewards are all equal gets advantage 0", dict(rewards=torch.full((4,), 0.35), group_size=4)),
        Case("groups of one", "a group of one has no other response: its advantage is 0 (not NaN)", dict(rewards=torch.randn(3, generator=gen), group_size=1)),
        Case("binary rewards", "the same formula on 0/1 rewards", dict(rewards=binary, group_size=5)),
    ]  # fmt: skip


@exercise(
    "09",
    lambda rewards, group_size, k: quietly(qae, rewards, group_size=group_size, k=k),
    (
        "The baseline is a quantile of the group's rewards instead of their mean.",
        "Sort the group; the baseline is its ⌈k·n⌉-th smallest reward (1-based): "
        "group.sort().values[math.ceil(k * n) - 1].",
    ),
)
def cases_qae(gen) -> list[Case]:
    return [
        Case("a hard prompt", "the baseline is the group's ⌈k·n⌉-th smallest reward: sort, then index ⌈k·n⌉ − 1", dict(rewards=torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]), group_size=5, k=0.4)),
        Case("an easy prompt", "on an easy prompt the quantile is 1: only the failures get a (negative) advantage", dict(rewards=torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0]), group_size=5, k=0.4)),
        Case("real-valued rewards", "no interpolation: torch.quantile interpolates between order statistics; take the order statistic r_(⌈k·n⌉) itself", dict(rewards=torch.randn(5, generator=gen), group_size=5, k=0.3)),
        Case("several groups", "each group has its own quantile", dict(rewards=torch.randn(12, generator=gen), group_size=4, k=0.6)),
        Case("all-equal rewards", "a group whose rewards are all equal gets advantage 0", dict(rewards=torch.full((5,), 0.35), group_size=5, k=0.4)),
        Case("groups of one", "a group of one is its own quantile: advantage 0", dict(rewards=torch.randn(3, generator=gen), group_size=1, k=0.4)),
    ]  # fmt: skip


@exercise(
    "09",
    lambda values, mask: aggregate(values, mask, "seq-mean-token-mean"),
    (
        "Two means: first over each sequence's response tokens, then over the sequences.",
        "A sequence's mean is (values[b] * mask[b]).sum() / mask[b].sum().",
    ),
)
def cases_seq_mean_token_mean(gen) -> list[Case]:
    def padded(lengths, L=5):
        return torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]

    def v(B=3, L=5):
        return torch.randn(B, L, generator=gen)

    return [
        Case("no padding", "the mean of each sequence's tokens, then the mean over sequences", dict(values=v(), mask=padded([5, 5, 5]))),
        Case("padding, equal lengths", "only response tokens count: multiply by the mask, divide by each sequence's token count", dict(values=v(), mask=padded([3, 3, 3]))),
        Case("unequal lengths", "each sequence's mean first, then the mean over sequences: a short sequence's token weighs more (Σ v·m / Σ m is the token-mean, a different mode)", dict(values=v(), mask=padded([5, 2, 4]))),
        Case("an empty sequence", "a sequence without response tokens counts as 0 in the mean over sequences (and is counted), not NaN", dict(values=v(), mask=padded([4, 0, 2]))),
    ]  # fmt: skip


# --- 10 · a GRPO loss and token-level GAE -------------------------------------------------------
def expected_grpo_loss(logp, old_logp, scores, mask, group_size, clip):
    tokens = broadcast_to_tokens(quietly(grpo, scores, group_size=group_size), mask)
    return policy_loss(logp, old_logp, tokens, mask, clip, agg="seq-mean-token-mean").loss


@exercise(
    "10",
    expected_grpo_loss,
    (
        "Three steps: a group-normalised advantage per response, PPO's clipped surrogate per "
        "token, then the seq-mean-token-mean of the per-token losses.",
        "A = (r − mean_g)/(std_g + 1e−6) with the unbiased std; ρ = exp(logp − old_logp); "
        "ℓ = −min(ρ A, clip(ρ, 1 − clip, 1 + clip) A).",
    ),
    atol=1e-7,  # the loss is −mean((ρ − 1) A) near ρ = 1: small, so a small absolute tolerance
)
def cases_grpo_loss(gen) -> list[Case]:
    def batch(B, lengths, spread, scores=None, group_size=4, L=5):
        """Log-ratios uniform in ±``spread``, the first one +1 (ρ = e, clipped) when ``spread`` ≥ 1."""
        old = torch.rand(B, L, generator=gen).clamp(min=0.05).log()
        log_ratio = spread * (2 * torch.rand(B, L, generator=gen) - 1)
        if spread >= 1:
            log_ratio[0, 0] = 1.0
        mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
        scores = torch.randn(B, generator=gen) if scores is None else scores
        return dict(logp=old + log_ratio, old_logp=old, scores=scores, mask=mask,
                    group_size=group_size, clip=0.2)  # fmt: skip

    equal = torch.tensor([0.35] * 4 + [0.0, 1.0, 0.0, 0.0])  # 0.35: its mean is not exactly 0.35
    return [
        Case("ratios inside the clip", "A_i = (r_i − mean_g)/(std_g + 1e−6) with the unbiased std (n − 1), the same on every token of response i; ℓ = −ρ A", batch(8, [5] * 8, 0.15)),
        Case("ratios outside the clip", "ℓ = −min(ρ A, clip(ρ, 1 − ε, 1 + ε) A): the pessimistic one of the clipped and the unclipped surrogates", batch(8, [5] * 8, 1.0)),
        Case("padding", "average each response's tokens on the mask, then the responses (seq-mean-token-mean)", batch(8, [5, 1, 3, 4, 2, 5, 5, 3], 0.3)),
        Case("an all-equal group", "a group whose rewards are all equal has advantage exactly 0 (test for equality: r − mean leaves a rounding residue that the tiny std blows up)", batch(8, [5] * 8, 0.3, scores=equal)),
        Case("groups of one", "a group of one has no spread: its advantage is 0 (torch.std of one value is NaN)", batch(4, [5, 3, 4, 2], 0.3, group_size=1)),
    ]  # fmt: skip


@exercise(
    "10",
    lambda scores, values, mask, lmbda: token_gae(scores, values, mask, lmbda).advantages,
    (
        "It is GAE with γ = 1 over the response's tokens: the only reward is the score, on the "
        "last response token, and the value after it is 0.",
        "δ_t = r_t + V_{t+1} − V_t, A_t = δ_t + λ A_{t+1}, backwards from the last response token; "
        "padding gets 0.",
    ),
)
def cases_token_gae(gen) -> list[Case]:
    def batch(lengths, lmbda, L=5):
        mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
        B = len(lengths)
        return dict(
            scores=torch.randn(B, generator=gen),
            values=torch.randn(B, L, generator=gen),
            mask=mask,
            lmbda=lmbda,
        )

    return [
        Case("one response, λ = 1", "with λ = 1 and γ = 1, A_t = score − V_t: the score is the reward of the last token", batch([5], 1.0)),
        Case("λ < 1", "δ_t = r_t + V_{t+1} − V_t (V after the last token is 0), A_t = δ_t + λ A_{t+1}, backwards", batch([5, 5], 0.9)),
        Case("padded responses", "the score is the reward of each row's last *response* token (the mask's last 1), nothing bootstraps past it, and padding gets 0", batch([5, 2, 3], 0.95)),
        Case("random", "the same recursion on every row", batch([4, 1, 5, 3], 0.7)),
    ]  # fmt: skip


# --- 10b · GSPO's sequence ratio ---------------------------------------------------------------
@exercise(
    "10b",
    lambda logp, old_logp, mask: sequence_log_ratio(logp, old_logp, mask).exp(),
    (
        "One number per response: its token log-ratios averaged over the response, then exp.",
        "s_i = exp(Σ_t m_it (logp_it − old_logp_it) / Σ_t m_it); with no tokens the mean is 0, "
        "so s_i = 1.",
    ),
)
def cases_sequence_ratio(gen) -> list[Case]:
    def batch(lengths, L=5, scale=0.3):
        old = torch.rand(len(lengths), L, generator=gen).clamp(min=0.05).log()
        logp = old + scale * torch.randn(len(lengths), L, generator=gen)
        mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
        return dict(logp=logp, old_logp=old, mask=mask)

    return [
        Case("no padding", "average the token log-ratios logp − old_logp over the response, then exp: the geometric mean of the token ratios, not their arithmetic mean", batch([5, 5, 5])),
        Case("padding", "only the response's tokens count: mask the log-ratios and divide by each response's own length", batch([5, 2, 4, 1])),
        Case("an empty response", "a response without tokens has mean log-ratio 0 (not 0/0): s = 1", batch([3, 0, 5])),
        Case("a long, moved response", "the same formula: exp of the mean, never the product of the token ratios", batch([5, 5], scale=1.5)),
    ]  # fmt: skip


# --- 10c · the loss barrier ---------------------------------------------------------------------
@exercise(
    "10c",
    lambda alphas, losses: torch.tensor(loss_barrier(alphas, losses), dtype=torch.float64),
    (
        "Draw the straight line from (0, L(0)) to (1, L(1)); the barrier is how far the path rises "
        "above it at its worst point in between.",
        "For each α with 0 < α < 1: L(α) − ((1 − α) L(0) + α L(1)); return the largest, 0.0 when "
        "there is none. Find L(0) and L(1) by α, not by position.",
    ),
)
def cases_loss_barrier(gen) -> list[Case]:
    bump = [0.0, 0.25, 0.5, 0.75, 1.0]
    return [
        Case("a bump in the middle", "subtract the straight line between the ends, (1 − α) L(0) + α L(1), before taking the max: the raw largest loss is not the barrier", dict(alphas=bump, losses=[1.0, 1.6, 2.0, 1.9, 1.2])),
        Case("a valley (negative barrier)", "only the points strictly between 0 and 1 count: the ends are always on their own line (excess 0), so including them would hide a negative barrier", dict(alphas=bump, losses=[1.0, 0.8, 0.7, 0.9, 1.2])),
        Case("alphas out of order, beyond [0, 1]", "L(0) and L(1) are the losses at α = 0 and α = 1 wherever they are in the list; points outside (0, 1) do not count", dict(alphas=[-0.5, 1.0, 0.5, 0.0, 1.5], losses=[5.0, 2.0, 1.0, 1.0, 7.0])),
        Case("only the ends", "no point strictly between 0 and 1: return 0.0", dict(alphas=[0.0, 1.0], losses=[1.0, 3.0])),
        Case("random path", "the same on a longer path", dict(alphas=[i / 10 for i in range(11)], losses=(1 + torch.rand(11, generator=gen)).tolist())),
    ]  # fmt: skip


# --- 09b · the single-rollout baseline -----------------------------------------------------------
@exercise(
    "09b",
    lambda alpha, beta, prompts, rewards, rho: torch.stack(
        beta_tracker_update(alpha, beta, prompts, rewards, rho)
    ),
    (
        "Only the prompts sampled this step change; for each one, first forget (multiply by ρ), "
        "then count this outcome: a success adds 1 to α, a failure 1 to β.",
        "Loop over zip(prompts, rewards): alpha[p] = rho * alpha[p] + r and "
        "beta[p] = rho * beta[p] + (1 − r), on copies of the tables; return "
        "torch.stack([alpha, beta]).",
    ),
)
def cases_beta_tracker_update(gen) -> list[Case]:
    P = 6
    alpha = 1 + 4 * torch.rand(P, generator=gen, dtype=torch.float64)
    beta = 1 + 4 * torch.rand(P, generator=gen, dtype=torch.float64)
    table = dict(alpha=alpha, beta=beta)
    return [
        Case("every prompt, one outcome each", "α ← ρ α + r and β ← ρ β + (1 − r): forget first, then add this outcome (not ρ (α + r))", dict(**table, prompts=torch.tensor([2, 0, 5, 1, 4, 3]), rewards=torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64), rho=0.9)),
        Case("prompts not sampled this step", "a prompt that was not sampled keeps its α and β: neither forgotten nor counted", dict(**table, prompts=torch.tensor([4, 0]), rewards=torch.tensor([0.0, 1.0], dtype=torch.float64), rho=0.8)),
        Case("a failure", "a failure adds 1 to β and nothing to α", dict(**table, prompts=torch.tensor([1, 5, 3]), rewards=torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), rho=0.95)),
        Case("ρ = 1", "with ρ = 1 nothing is forgotten: a plain Beta posterior count", dict(**table, prompts=torch.tensor([0, 1, 2, 3]), rewards=(torch.rand(4, generator=gen) < 0.5).double(), rho=1.0)),
    ]  # fmt: skip


# --- 10a · compositions in disguise -------------------------------------------------------------
def composition_inputs(program: str) -> dict:
    task = Composition()

    def run(p, x):
        """run(p, x): program p's answer to input x (Composition.answer)"""
        return task.answer(f"{p}:{x}=")

    return dict(
        program=program, seen=[*FUNCTIONS, *task.train_pairs], run=run, inputs=task.inputs()
    )


@exercise(
    "10a",
    lambda program, seen, run, inputs: Composition().seen_equivalents(program),
    (
        "Two programs are the same when they give the same answer on every input you have.",
        "Compute program's answers once, [run(program, x) for x in inputs], and compare each seen "
        "program's list with it (leaving out program itself).",
    ),
)
def cases_seen_equivalents(gen) -> list[Case]:
    return [
        Case("an unseen pair equal to a seen one", "a seen program counts when it gives the same answer on every input, not on some", composition_inputs("rw")),
        Case("an unseen pair equal to none", "a seen program counts only when it agrees on every input, not on some; here none does: return an empty list", composition_inputs("co")),
        Case("a seen program", "leave the program itself out of its own equivalents", composition_inputs("r")),
    ]  # fmt: skip


# --- 07 · offline values against the truth --------------------------------------------------------
@exercise(
    "07",
    edge_of_reach,
    (
        "A state is at the edge of reach when a transition leads into it and none starts from it: "
        "its value is used in targets and never trained.",
        "Collect set(states.tolist()); mark every next state not in it, unless terminal[s'] "
        "(a terminal state's value is 0, not learned). Return a bool tensor of len(terminal).",
    ),
)
def cases_edge_of_reach(gen) -> list[Case]:
    S = 12
    terminal = torch.zeros(S, dtype=torch.bool)
    terminal[S - 1] = True
    states = torch.randint(0, 6, (20,), generator=gen)
    return [
        Case("a few transitions", "mark next states that never occur as a state a transition starts from", dict(states=states, next_states=torch.randint(0, S - 1, (20,), generator=gen), terminal=terminal)),
        Case("a terminal next state", "a terminal state is never at the edge: its value is 0 by definition, not learned", dict(states=states, next_states=torch.full((20,), S - 1), terminal=terminal)),
        Case("every next state also starts one", "a state that some transition starts from is trained: not at the edge (here: none is)", dict(states=states, next_states=states.flip(0), terminal=terminal)),
    ]  # fmt: skip


# --- 07c · stitching without Bellman completeness ----------------------------------------------------
@exercise(
    "07c",
    lambda rewards, terminated, truncated, gamma: discounted_returns(
        rewards, torch.zeros_like(rewards), terminated, truncated, gamma
    ),
    (
        "RCSL's label for a step is the discounted sum of the rewards from that step to the end of "
        "its own episode, g_t = r_t + γ g_{t+1}.",
        "Walk backwards with G = 0; at a step where terminated[t] or truncated[t], start over "
        "(G = 0) before adding r_t: nothing after an episode's end belongs to it.",
    ),
)
def cases_return_to_go(gen) -> list[Case]:
    def flags(n, ends, trunc=()):
        term = torch.zeros(n, dtype=torch.bool)
        tr = torch.zeros(n, dtype=torch.bool)
        term[list(ends)] = True
        tr[list(trunc)] = True
        return term, tr

    r = torch.rand(7, generator=gen, dtype=torch.float64)
    one = flags(7, [6])
    two = flags(7, [2, 6])
    cut = flags(7, [6], trunc=[3])
    return [
        Case("one episode", "g_t = r_t + γ g_{t+1}, summed from the end backwards", dict(rewards=r, terminated=one[0], truncated=one[1], gamma=0.9)),
        Case("two episodes", "an episode's return stops at its own end: restart the sum at every terminated step", dict(rewards=r, terminated=two[0], truncated=two[1], gamma=0.9)),
        Case("a truncated end", "a truncated step ends its episode too: restart the sum there, and add nothing after it", dict(rewards=r, terminated=cut[0], truncated=cut[1], gamma=0.8)),
    ]  # fmt: skip


# --- 06 · the soft target of SAC ------------------------------------------------------------------
@exercise(
    "06",
    lambda reward, next_q, next_log_prob, terminated, truncated, gamma, alpha: _soft_q_target(
        reward, next_q.min(0).values, next_log_prob, terminated, gamma, alpha
    ),
    (
        "SAC's target is y = r + γ (1 − terminated) (min_i Q̄_i(s', a') − α log π(a'|s')): the "
        "smaller of the twin critics, and the entropy bonus −α log π of the next action.",
        "Only terminated stops the bootstrap. A truncated step (a time limit) still has a future: "
        "its target bootstraps like any other step.",
    ),
)
def cases_soft_q_target(gen) -> list[Case]:
    B = 6
    reward = torch.randn(B, generator=gen)
    next_q = torch.randn(2, B, generator=gen) * 3
    log_prob = torch.randn(B, generator=gen)
    no = torch.zeros(B, dtype=torch.bool)
    ends = no.clone()
    ends[[1, 4]] = True
    return [
        Case("no episode ends", "bootstrap from the smaller critic, minus α log π of the next action", dict(reward=reward, next_q=next_q, next_log_prob=log_prob, terminated=no, truncated=no, gamma=0.9, alpha=0.2)),
        Case("terminal steps", "after a terminal step nothing follows: y = r there", dict(reward=reward, next_q=next_q, next_log_prob=log_prob, terminated=ends, truncated=no, gamma=0.9, alpha=0.2)),
        Case("truncated steps", "a time-limit truncation is not terminal: bootstrap as usual there", dict(reward=reward, next_q=next_q, next_log_prob=log_prob, terminated=no, truncated=ends, gamma=0.9, alpha=0.2)),
    ]  # fmt: skip


# --- 14 · the soft value of sampled outcomes ------------------------------------------------------
@exercise(
    "14",
    lambda rewards, alpha: _soft_value(rewards, alpha),
    (
        "The soft value of K sampled outcomes is v = α log((1/K) Σ_k exp(r_k / α)), one per row "
        "(over the last dimension).",
        "For a small α, exp(r/α) overflows to inf. Subtract the row's max first, or use "
        "torch.logsumexp(rewards / alpha, -1) − log K.",
    ),
)
def cases_soft_value(gen) -> list[Case]:
    r = torch.rand(4, 8, generator=gen)
    big = torch.rand(3, 5, generator=gen) * 40
    return [
        Case("rewards in [0, 1], α = 1", "average exp(r/α) over each row, take the log and multiply by α", dict(rewards=r, alpha=1.0)),
        Case("one outcome", "with one outcome the soft value is that outcome's reward", dict(rewards=r[:, :1], alpha=0.5)),
        Case("small α", "exp(40 / 0.05) overflows: compute it as α (logsumexp(r/α) − log K)", dict(rewards=big, alpha=0.05)),
    ]  # fmt: skip


def _on_the_fly_target(reward, next_q, terminated, truncated, gamma):
    value = next_q.min(0).values.max(-1).values  # the twin's minimum, then the best candidate
    return _soft_q_target(reward, value, torch.zeros_like(reward), terminated, gamma, 0.0)


@exercise(
    "06b",
    _on_the_fly_target,
    (
        "EXPO's target is y = r + γ (1 − terminated) min_i Q̄_i(s', a*) where a* is the candidate "
        "with the highest min_i Q̄_i(s', ·): score each candidate by the smaller critic, then take "
        "the best score.",
        "next_q is [2, B, M]: the two target critics at the M = 2N candidates of each next state. "
        "Only terminated stops the bootstrap; a truncated step bootstraps.",
    ),
)
def cases_on_the_fly_target(gen) -> list[Case]:
    B, M = 5, 6
    reward = torch.randn(B, generator=gen)
    same = torch.randn(B, M, generator=gen).expand(2, B, M)
    disagree = torch.randn(2, B, M, generator=gen) * 2
    no = torch.zeros(B, dtype=torch.bool)
    ends = no.clone()
    ends[[1, 3]] = True
    return [
        Case("critics agree", "the value of the next state is its best candidate's Q̄", dict(reward=reward, next_q=same, terminated=no, truncated=no, gamma=0.9)),
        Case("critics disagree", "score each candidate by min_i Q̄_i first, then take the max over candidates (min of maxima is another number)", dict(reward=reward, next_q=disagree, terminated=no, truncated=no, gamma=0.9)),
        Case("terminal and truncated steps", "after a terminal step y = r; a truncated step bootstraps as usual", dict(reward=reward, next_q=disagree, terminated=ends, truncated=ends.roll(1), gamma=0.9)),
    ]  # fmt: skip


def _quadratic_vagram_loss(predicted, next_states, P):
    return _vagram_loss(predicted, next_states, lambda s: -((s[..., :2] @ P) * s[..., :2]).sum(-1))


@exercise(
    "07b",
    _quadratic_vagram_loss,
    (
        "VaGraM weights the squared error of each coordinate by the squared slope of the value "
        "there, taken at the true next state: L = mean over rows of Σ_i (∂V/∂s_i(s'))² (f̂_i − s'_i)².",
        "For V(s) = −xᵀPx with x = s[:, :2], ∇_x V = −(P + Pᵀ) x: that is −2Px only when P is "
        "symmetric. The distractor coordinates s[:, 2:] do not enter V, so their slope is 0.",
    ),
)
def cases_quadratic_vagram_loss(gen) -> list[Case]:
    N = 6
    sym = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    skew = torch.tensor([[2.0, 1.5], [-0.5, 1.0]])
    s2 = torch.randn(N, 2, generator=gen)
    s5 = torch.randn(N, 5, generator=gen)
    return [
        Case("symmetric P, no distractors", "the weight of coordinate i is (∂V/∂x_i)², the slope at s'", dict(predicted=s2 + 0.3 * torch.randn(N, 2, generator=gen), next_states=s2, P=sym)),
        Case("distractors", "coordinates the value ignores have slope 0: their error costs nothing", dict(predicted=s5 + 0.3 * torch.randn(N, 5, generator=gen), next_states=s5, P=sym)),
        Case("non-symmetric P", "∇(xᵀPx) = (P + Pᵀ) x, not 2Px", dict(predicted=s2 + 0.3 * torch.randn(N, 2, generator=gen), next_states=s2, P=skew)),
    ]  # fmt: skip


# --- 07d · planning with learned models ----------------------------------------------------------
def _depth_two_tree_value(rewards, next_rewards, leaf_values, gamma):
    return (rewards + gamma * (next_rewards + gamma * leaf_values).max(-1).values).max()


@exercise(
    "07d",
    _depth_two_tree_value,
    (
        "Back up from the leaves: each child's value is max_j (r_kj + γ v_kj), each root action's "
        "Q is r_k + γ × that, and the root's value is the max of those Q.",
        "The leaves sit two steps away: their value is discounted twice (γ²), the second "
        "rewards once, the first rewards not at all.",
    ),
)
def cases_depth_two_tree_value(gen) -> list[Case]:
    K = 3
    r, r2, v = (
        torch.randn(K, generator=gen),
        torch.randn(K, K, generator=gen),
        torch.randn(K, K, generator=gen),
    )
    return [
        Case("γ = 1", "V = max_k (r_k + max_j (r_kj + v_kj))", dict(rewards=r, next_rewards=r2, leaf_values=v, gamma=1.0)),
        Case("γ = 0.5", "the leaves are discounted by γ², the second rewards by γ", dict(rewards=r, next_rewards=r2, leaf_values=v, gamma=0.5)),
        Case("all negative", "a max over negative numbers is negative: do not start the max at 0", dict(rewards=-r.abs() - 1, next_rewards=-r2.abs() - 1, leaf_values=-v.abs() - 1, gamma=0.9)),
        Case("one affordance", "K = 1: the tree is a single path", dict(rewards=r[:1], next_rewards=r2[:1, :1], leaf_values=v[:1, :1], gamma=0.9)),
    ]  # fmt: skip
