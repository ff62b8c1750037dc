"""The gradient each policy loss actually produces, checked in expectation against the truth.

The policy is small enough to enumerate: 2 prompts; a response is one token from {EOS, a, b}, or
a non-EOS token followed by a second one (7 responses, ragged: lengths 1 and 2); a tabular
autoregressive policy π_θ. The reference is always the exact gradient of an enumerated objective by
autograd — ``∇J``, ``J(θ) = mean_p Σ_y π_θ(y|p) r(p, y)``, or a documented bias of it in closed
form — never the loss under test. Everything is float64 and compared to 1e-10. Expectations over samples are exact sums over every response
(or every group of responses), weighted by their probability under the sampling policy μ.

What is covered:

* ``test_on_policy_*``: every registered loss (11, both kinds of ``cov``, both GSPO levels), on
  policy, two aggregations: the policy gradient of ``A(y)·c(y)`` (``c = 1`` under
  ``seq-mean-token-sum``: ``∇J`` itself; ``c = 1/|y|`` under ``seq-mean-token-mean``: the length
  bias, which is not ``∇J``).
* ``test_off_policy_*`` (samples from μ ≠ π_θ): sequence-level rollout IS weights make the plain
  policy gradient (``gpg``) unbiased; token-level weights, and PPO's per-token ratio, give
  ``Σ_t ρ_t ∇log π_t`` instead (closed form; not ``∇J``); GSPO's gradient is the length-normalised
  sequence ratio times the whole response's score (closed form; not ``∇J``, and not PPO's);
  PPO's clip removes exactly the tokens that left the trust region in their advantage's direction.
* ``test_estimator_times_loss_*``: every group estimator whose advantage depends on the response's
  own reward and its group's success count (rloo, dr_grpo, grpo, maxrl, qae) × every loss, on
  policy, groups of 3 enumerated exactly (7³ = 343 per prompt): ``E[−∇ℓ] = Σ_p c_p ∇J_p`` with ``c_p``
  a binomial sum of the estimator's formula (rloo 1; dr_grpo (G−1)/G, the mean baseline's bias;
  grpo the std scaling's per-prompt reweighting).
* ``test_kl_*``: k1, k2, k3, k3+ and importance-corrected k1/k3 as loss terms: their expected
  gradient against ∇KL(π‖π_ref) (k2, k3+, corrected k1/k3: equal; k3: ∇KL(π_ref‖π); k1: 0).
"""

import itertools
import math

import pytest
import torch

from rlnb.estimators import compute_advantages, kl_penalty, rollout_is_weights
from rlnb.estimators.losses import POLICY_LOSSES, compute_policy_loss
from rlnb.estimators.registry import AdvantageInputs

EOS, P = 0, 2
RESPONSES = [(0,), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
LENGTHS = torch.tensor([len(y) for y in RESPONSES], dtype=torch.float64)
MASK = (torch.arange(2)[None, :] < LENGTHS[:, None]).double()  # [7, 2]
REWARD = torch.tensor([[0, 1, 0, 0, 0, 1, 1], [1, 0, 0, 1, 0, 0, 0]], dtype=torch.float64)

# every loss, with the options that make it an honest member of its family here
LOSS_CASES = {
    "ppo": ("ppo", dict(clip_low=0.2)),
    "gspo_token": ("gspo", dict(level="token", clip_low=0.2)),
    "gspo_sequence": ("gspo", dict(level="sequence", clip_low=0.2)),
    "luspo": ("luspo", dict(clip_low=0.2)),
    "cispo": ("cispo", {}),
    "sapo": ("sapo", {}),
    "gmpo": ("gmpo", {}),
    "dppo_tv": ("dppo", dict(divergence="tv")),
    "dppo_kl": ("dppo", dict(divergence="kl")),
    "dro": ("dro", dict(beta=0.5)),
    "cov_clip": ("cov", dict(kind="clip")),
    "cov_kl": ("cov", dict(kind="kl")),
    "gpg": ("gpg", {}),
    "vespo": ("vespo", {}),
}
WIDE = dict(clip_low=0.99, clip_high=100.0)  # clips that never bind here


def test_the_cases_cover_every_registered_loss():
    assert {name for name, _ in LOSS_CASES.values()} == set(POLICY_LOSSES)


def params(seed: int, scale: float = 1.0) -> torch.Tensor:
    """θ: first-token logits [P, 3] and second-token logits [P, 2, 3] (after a or b), flat."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(P * 3 + P * 2 * 3, generator=g, dtype=torch.float64)


def token_logps(theta: torch.Tensor, p: int) -> torch.Tensor:
    """log π_θ of each token of each response to prompt p, ``[7, 2]`` (0 on padding)."""
    first = torch.log_softmax(theta[: P * 3].view(P, 3)[p], -1)
    second = torch.log_softmax(theta[P * 3 :].view(P, 2, 3)[p], -1)
    rows = []
    for y in RESPONSES:
        lp = [first[y[0]]] + ([second[y[0] - 1, y[1]]] if len(y) == 2 else [])
        rows.append(torch.stack(lp + [torch.zeros((), dtype=theta.dtype)] * (2 - len(lp))))
    return torch.stack(rows)


def seq_probs(theta, p):
    return (token_logps(theta, p) * MASK).sum(-1).exp()


def grad(objective, theta):
    theta = theta.clone().requires_grad_()
    (g,) = torch.autograd.grad(objective(theta), theta)
    return g


def true_gradient(theta):
    """∇J, J = mean_p Σ_y π_θ(y|p) r(p, y)."""
    return grad(lambda th: sum((seq_probs(th, p) * REWARD[p]).sum() for p in range(P)) / P, theta)


def values(theta):
    with torch.no_grad():
        return [(seq_probs(theta, p) * REWARD[p]).sum() for p in range(P)]


def expected_loss_gradient(loss, theta, theta_old, agg, is_level=None):
    """E_{y ~ μ}[∇ℓ(y)], μ = π_{θ_old}: the loss of each response alone (a batch of one), weighted
    by μ(y|p), summed exactly; advantages ``A = r − V(p)`` (the true value under θ_old)."""
    name, options = loss
    v = values(theta_old)

    def objective(th):
        total = 0.0
        for p in range(P):
            logp = token_logps(th, p)
            old = token_logps(theta_old, p).detach()
            mu = seq_probs(theta_old, p).detach()
            for i in range(len(RESPONSES)):
                sl = slice(i, i + 1)
                w = None
                if is_level is not None:
                    w = rollout_is_weights(logp[sl], old[sl], MASK[sl], level=is_level, cap=1e9)
                adv = (REWARD[p, i] - v[p]).reshape(1)
                out = compute_policy_loss(
                    name, logp[sl], old[sl], adv, MASK[sl], agg=agg, is_weights=w,
                    **options,
                )  # fmt: skip
                total = total + mu[i] * out.loss
        return -total / P  # −∇loss: the direction the update ascends

    return grad(objective, theta)


def closed_form(theta, theta_old, per_response):
    """∇_θ of ``mean_p Σ_y μ(y|p)·A(y)·per_response(logp_θ, logp_old, y)`` with μ and A fixed."""
    v = values(theta_old)

    def objective(th):
        total = 0.0
        for p in range(P):
            logp, old = token_logps(th, p), token_logps(theta_old, p).detach()
            mu = seq_probs(theta_old, p).detach()
            adv = REWARD[p] - v[p]
            total = total + (mu * adv * per_response(logp, old)).sum()
        return total / P

    return grad(objective, theta)


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def far(a, b, margin=1e-3):
    assert (a - b).abs().max() > margin, "expected a biased gradient, got the reference"


# --- on policy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_on_policy_every_loss_is_the_policy_gradient(case, seed):
    """With θ_old = θ every ratio is 1 and every loss is the policy gradient: of J itself under
    ``seq-mean-token-sum``, of ``A(y)/|y|`` (the length bias) under ``seq-mean-token-mean``."""
    theta = params(seed)
    got = expected_loss_gradient(LOSS_CASES[case], theta, theta, "seq-mean-token-sum")
    close(got, true_gradient(theta))
    got = expected_loss_gradient(LOSS_CASES[case], theta, theta, "seq-mean-token-mean")
    biased = closed_form(theta, theta, lambda lp, old: (lp * MASK).sum(-1) / LENGTHS)
    close(got, biased)
    far(got, true_gradient(theta))


# --- off policy ------------------------------------------------------------------------------------


def off_policy(seed):
    theta_old = params(seed)
    return theta_old + params(seed + 10, scale=0.4), theta_old


def seq_ratio(lp, old):
    return ((lp - old) * MASK).sum(-1).exp()


def token_ratio_score(lp, old):
    """Σ_t sg(ρ_t)·log π_t: its gradient is Σ_t ρ_t ∇log π_t."""
    return ((lp - old).exp().detach() * lp * MASK).sum(-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_off_policy_sequence_is_weights_make_the_policy_gradient_unbiased(seed):
    theta, theta_old = off_policy(seed)
    truth = true_gradient(theta)
    # the A-weighted IS objective Σ_y μ A π/μ: its gradient is ∇J (the baseline term vanishes)
    close(closed_form(theta, theta_old, seq_ratio), truth)
    close(
        expected_loss_gradient(("gpg", {}), theta, theta_old, "seq-mean-token-sum", "sequence"),
        truth,
    )
    # token-level weights: Σ_t ρ_t ∇log π_t, biased
    got = expected_loss_gradient(("gpg", {}), theta, theta_old, "seq-mean-token-sum", "token")
    close(got, closed_form(theta, theta_old, token_ratio_score))
    far(got, truth)
    # without weights, the on-policy loss on off-policy data follows μ's gradient field
    got = expected_loss_gradient(("gpg", {}), theta, theta_old, "seq-mean-token-sum")
    close(got, closed_form(theta, theta_old, lambda lp, old: (lp * MASK).sum(-1)))
    far(got, truth)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_off_policy_ppo_per_token_ratio_and_gspo_sequence_ratio(seed):
    """Clips wide enough to stay inactive: PPO's gradient is Σ_t ρ_t ∇log π_t (token ratios);
    GSPO's is s·Σ_t ∇log π_t with s = (π(y)/μ(y))^{1/|y|}, at either level under
    ``seq-mean-token-sum``. Neither is ∇J, and they differ from each other."""
    theta, theta_old = off_policy(seed)
    truth = true_gradient(theta)
    ppo = expected_loss_gradient(("ppo", WIDE), theta, theta_old, "seq-mean-token-sum")
    close(ppo, closed_form(theta, theta_old, token_ratio_score))

    def gspo_surrogate(lp, old):  # |y|·s(y): its gradient is s·Σ_t ∇log π_t
        return LENGTHS * (((lp - old) * MASK).sum(-1) / LENGTHS).exp()

    gspo_expected = closed_form(theta, theta_old, gspo_surrogate)
    for level in ("token", "sequence"):
        loss = ("gspo", dict(WIDE, level=level))
        close(expected_loss_gradient(loss, theta, theta_old, "seq-mean-token-sum"), gspo_expected)
    far(gspo_expected, truth)
    far(gspo_expected, ppo)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_off_policy_ppo_clip_drops_exactly_the_tokens_out_of_the_region(seed):
    """PPO's clip (ε = 0.2) keeps ρ_t ∇log π_t where the ratio has not left [1 − ε, 1 + ε] in the
    direction of its advantage, and 0 elsewhere."""
    theta, theta_old = off_policy(seed)
    v = values(theta_old)

    def kept_score(p):
        def per_response(lp, old):
            rho = (lp - old).exp().detach()
            adv = (REWARD[p] - v[p])[:, None]
            keep = ~(((adv > 0) & (rho > 1.2)) | ((adv < 0) & (rho < 0.8)))
            return (rho * keep * lp * MASK).sum(-1)

        return per_response

    def objective(th):
        total = 0.0
        for p in range(P):
            lp, old = token_logps(th, p), token_logps(theta_old, p).detach()
            mu = seq_probs(theta_old, p).detach()
            total = total + (mu * (REWARD[p] - v[p]) * kept_score(p)(lp, old)).sum()
        return total / P

    got = expected_loss_gradient(LOSS_CASES["ppo"], theta, theta_old, "seq-mean-token-sum")
    close(got, grad(objective, theta))
    far(got, closed_form(theta, theta_old, token_ratio_score))  # the clip is active somewhere


# --- estimator × loss, groups enumerated -----------------------------------------------------------

G = 3  # responses per group: 7³ = 343 ordered groups per prompt


def binary_weight(adv, q):
    """``c = E[A | own r = 1] − E[A | own r = 0]`` for a group of G binary rewards with success
    probability q, ``adv(r, k)`` the advantage of a response with reward r in a group of k
    successes: then ``E[A_1 ∇log π(y_1)] = c·∇P(success)``."""
    total = 0.0
    for k_others in range(G):
        p_k = math.comb(G - 1, k_others) * q**k_others * (1 - q) ** (G - 1 - k_others)
        total += p_k * (adv(1.0, k_others + 1) - adv(0.0, k_others))
    return total


def _std(k):  # unbiased std of k ones and G − k zeros
    m = k / G
    return math.sqrt((k * (1 - m) ** 2 + (G - k) * m**2) / (G - 1))


CLOSED_FORMS = {  # the estimator's formula for binary rewards, written out (0 for all-equal groups)
    "rloo": lambda r, k: r - (k - r) / (G - 1),
    "dr_grpo": lambda r, k: r - k / G,
    "grpo": lambda r, k: 0.0 if k in (0, G) else (r - k / G) / (_std(k) + 1e-6),
    "maxrl": lambda r, k: 0.0 if k == 0 else (r - k / G) / (k / G),
    "qae": lambda r, k: r - (0.0 if (G - k) / G >= 0.4 else 1.0),
}


def success_gradient(theta, p):
    """∇ P_θ(success | p), by autograd on the enumerated success probability."""
    return grad(lambda th: (seq_probs(th, p) * REWARD[p]).sum(), theta)


@pytest.mark.parametrize("estimator", list(CLOSED_FORMS))
def test_estimator_times_loss_on_policy_groups(estimator):
    """Every group of G responses enumerated with its probability; the estimator's advantages
    (``compute_advantages``) feed each loss (token-mean over the group); the expected update is
    ``Σ_p c_p ∇P(success | p) / P`` with ``c_p`` from ``binary_weight`` (rloo: c = 1, ∇J itself;
    dr_grpo: (G − 1)/G)."""
    theta = params(3)
    groups = list(itertools.product(range(len(RESPONSES)), repeat=G))
    idx = torch.tensor(groups)  # [n_groups, G]
    reference = torch.zeros_like(theta)
    for p in range(P):
        q = float((seq_probs(theta, p) * REWARD[p]).sum())
        reference += binary_weight(CLOSED_FORMS[estimator], q) * success_gradient(theta, p) / P
    if estimator == "rloo":
        close(reference, true_gradient(theta))
    if estimator == "dr_grpo":
        close(reference, (G - 1) / G * true_gradient(theta))
    scores = [REWARD[p][idx].reshape(-1) for p in range(P)]
    adv = [
        compute_advantages(estimator, AdvantageInputs(s, group_size=G))[:, 0].view(-1, G)
        for s in scores
    ]
    for name, options in LOSS_CASES.values():
        if name == "cov":
            continue  # its token selection is batch-wide: covered one response at a time above

        def objective(th):
            total = 0.0
            for p in range(P):
                lp = token_logps(th, p)
                mu = seq_probs(theta, p).detach()
                prob = mu[idx].prod(-1)  # [n_groups]
                for n, members in enumerate(idx):
                    out = compute_policy_loss(
                        name, lp[members], lp[members].detach(), adv[p][n],
                        MASK[members], agg="seq-mean-token-sum", **options,
                    )  # fmt: skip
                    total = total - prob[n] * out.loss
            return total / P

        close(grad(objective, theta), reference)


# --- KL estimators as loss terms ---------------------------------------------------------------


def kl_setting(seed):
    g = torch.Generator().manual_seed(seed)
    logits, ref_logits, old_logits = (
        torch.randn(5, generator=g, dtype=torch.float64) for _ in range(3)
    )
    return logits, torch.log_softmax(ref_logits, 0), torch.log_softmax(old_logits, 0)


def expected_kl_grad(kind, logits, ref, old=None):
    """E over samples a ~ π (or ~ π_old with ``old``), held fixed, of ∇ kl_penalty(a)."""

    def objective(z):
        logp = torch.log_softmax(z, 0)
        weight = (old if old is not None else logp).detach().exp()
        return (weight * kl_penalty(logp, ref, kind, clamp=None, old_logp=old)).sum()

    return grad(objective, logits)


def exact_kl_grad(logits, ref, reverse=False):
    def objective(z):
        logp = torch.log_softmax(z, 0)
        if reverse:  # KL(π_ref ‖ π)
            return (ref.exp() * (ref - logp)).sum()
        return (logp.exp() * (logp - ref)).sum()

    return grad(objective, logits)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_gradients_in_expectation(seed):
    logits, ref, old = kl_setting(seed)
    forward, reverse = exact_kl_grad(logits, ref), exact_kl_grad(logits, ref, reverse=True)
    close(expected_kl_grad("k2", logits, ref), forward)
    close(expected_kl_grad("k3+", logits, ref), forward)
    close(expected_kl_grad("k3", logits, ref), reverse)  # k3's gradient is the other direction
    far(reverse, forward)
    close(expected_kl_grad("k1", logits, ref), torch.zeros_like(logits))  # E[∇ log π] = 0
    # samples from π_old, importance-corrected (TRL's use_bias_correction_kl): unbiased again
    close(expected_kl_grad("k3", logits, ref, old), forward)
    close(expected_kl_grad("k1", logits, ref, old), forward)
