import pytest
import torch

from rlnb.estimators import aggregate, kl_penalty, policy_loss

V = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
M = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])  # ragged: lengths 4, 2, 1


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("token-mean", (10 + 30 + 5) / 7),
        ("token-sum", 45.0),
        ("seq-mean-token-mean", (2.5 + 15 + 5) / 3),
        ("seq-mean-token-sum", (10 + 30 + 5) / 3),
        ("seq-mean-token-sum-norm", 45 / (3 * 4)),
    ],
)
def test_aggregate_by_hand(mode, expected):
    assert aggregate(V, M, mode).item() == pytest.approx(expected)


def test_aggregate_norm_and_errors():
    assert aggregate(V, M, "seq-mean-token-sum-norm", norm=10).item() == pytest.approx(45 / 30)
    with pytest.raises(ValueError, match="mode"):
        aggregate(V, M, "mean")
    with pytest.raises(ValueError, match="values"):
        aggregate(V[:, :3], M)
    with pytest.raises(ValueError, match="norm"):
        aggregate(V, M, "seq-mean-token-sum-norm", norm=0)


def test_per_token_gradient_weights_show_the_length_bias():
    """d loss / d value of one token, for responses of length 4, 2, 1."""

    def weights(mode):
        v = V.clone().requires_grad_(True)
        aggregate(v, M, mode).backward()
        return v.grad[:, 0]

    torch.testing.assert_close(
        weights("seq-mean-token-mean"), torch.tensor([1 / 12, 1 / 6, 1 / 3])
    )  # ∝ 1/length
    torch.testing.assert_close(weights("token-mean"), torch.full((3,), 1 / 7))
    torch.testing.assert_close(weights("seq-mean-token-sum-norm"), torch.full((3,), 1 / 12))


def verl_policy_loss(logp, old, adv, mask, cl, ch, c):
    ratio = torch.exp(logp - old)
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1 - cl, 1 + ch)
    clip1 = torch.maximum(l1, l2)
    l3 = -adv * c
    clip2 = torch.min(l3, clip1)
    losses = torch.where(adv < 0, clip2, clip1)
    m = mask.float()
    return (
        (losses * m).sum() / m.sum(),
        ((l2 > l1).float() * m).sum() / m.sum(),
        (-(logp - old) * m).sum() / m.sum(),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_policy_loss_matches_verl_formula(seed):
    g = torch.Generator().manual_seed(seed)
    B, L = 5, 7
    logp = -torch.rand(B, L, generator=g) * 3
    old = logp + 0.4 * torch.randn(B, L, generator=g)
    adv = torch.randn(B, L, generator=g)
    mask = torch.rand(B, L, generator=g) < 0.7
    out = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    ref = verl_policy_loss(logp, old, adv, mask, 0.2, 0.28, 3.0)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)


def test_on_policy_gradient_is_the_reinforce_gradient():
    logits = torch.randn(3, 5, requires_grad=True)
    logp = torch.log_softmax(logits, -1)
    adv = torch.tensor([1.0, -2.0, 0.5])
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    loss = policy_loss(logp, logp.detach(), adv, mask, agg="seq-mean-token-sum").loss
    (g1,) = torch.autograd.grad(loss, logits, retain_graph=True)
    reinforce = -(adv[:, None] * logp * mask).sum(-1).mean()
    (g2,) = torch.autograd.grad(reinforce, logits)
    torch.testing.assert_close(g1, g2)


def test_policy_loss_errors():
    x = torch.zeros(2, 3)
    m = torch.ones(2, 3)
    with pytest.raises(ValueError, match="old_logp"):
        policy_loss(x, torch.zeros(2, 2), x, m)
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(x, x, x, m, dual_clip=0.5)
    with pytest.raises(ValueError, match="clip_low"):
        policy_loss(x, x, x, m, clip_low=1.5)


def test_kl_estimators_against_exact_kl():
    """Exact expectations over a categorical π: k1 and k3 are unbiased for KL(π‖ref); k2 is ½E[x²]."""
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        pi = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
        ref = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
        kl = (pi * (pi.log() - ref.log())).sum()
        e = {
            k: (pi * kl_penalty(pi.log(), ref.log(), k, clamp=None)).sum()
            for k in ("k1", "k2", "k3")
        }
        torch.testing.assert_close(e["k1"], kl)
        torch.testing.assert_close(e["k3"], kl)
        torch.testing.assert_close(e["k2"], 0.5 * (pi * (ref.log() - pi.log()) ** 2).sum())
        assert (kl_penalty(pi.log(), ref.log(), "k3") >= 0).all()
    # sampled estimates agree with the exact KL too
    idx = torch.multinomial(pi, 200_000, replacement=True, generator=g)
    est = kl_penalty(pi.log()[idx], ref.log()[idx], "k3").mean()
    assert abs(est - kl) < 0.02


def test_kl_clamp_and_errors():
    big = kl_penalty(torch.tensor([0.0]), torch.tensor([50.0]), "k3")
    assert big.item() == 10.0
    assert kl_penalty(torch.tensor([0.0]), torch.tensor([50.0]), "k3", clamp=None).item() > 1e20
    with pytest.raises(ValueError, match="kind"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k4")
    with pytest.raises(ValueError, match="ref_logp"):
        kl_penalty(torch.zeros(1), torch.zeros(2))


def test_bad_arguments_are_value_errors_naming_them():
    logp = torch.zeros(3, 4)
    mask = torch.ones(3, 4)
    with pytest.raises(ValueError, match=r"advantages: expected \[B\] = \(3,\)"):
        policy_loss(logp, logp, torch.zeros(2), mask)  # one advantage per response, wrong count
    with pytest.raises(ValueError, match="mask: expected a torch.Tensor"):
        aggregate(logp, [[1, 1, 1, 1]] * 3)
    with pytest.raises(ValueError, match="clamp"):
        kl_penalty(logp, logp, "k3", clamp=0.0)  # would turn the KL off silently
    with pytest.raises(ValueError, match="clamp"):
        kl_penalty(logp, logp, "k3", clamp=-1.0)
