"""Value networks with scalar and categorical heads: shapes, decoding, losses, and that every head
fits a regression."""

import pytest
import torch

from rlnb.estimators.distributional import two_hot
from rlnb.models.value import HEADS, MLP, ValueNetwork, categorical_loss


@pytest.mark.parametrize("head", HEADS)
def test_shapes_and_value_decoding(head):
    net = ValueNetwork(3, n_outputs=4, head=head, n_bins=21, v_min=-5, v_max=5)
    x = torch.randn(7, 3)
    bins = 1 if head == "scalar" else 21
    assert net.logits(x).shape == (7, 4, bins) and net.value(x).shape == (7, 4)
    if head != "scalar":
        probs = torch.softmax(net.logits(x), -1)
        torch.testing.assert_close(net.value(x), (probs * net.support).sum(-1))
        assert (net.value(x).abs() <= 5).all()


@pytest.mark.parametrize("head", HEADS)
def test_loss_with_an_action_index_trains_only_that_output(head):
    torch.manual_seed(0)
    net = ValueNetwork(3, n_outputs=2, head=head, n_bins=11, v_min=-2, v_max=2)
    x, targets, index = torch.randn(5, 3), torch.randn(5), torch.tensor([0, 1, 1, 0, 1])
    loss = net.loss(x, targets, index=index)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # the loss equals the per-row loss of the chosen output
    rows = torch.stack(
        [net.loss(x[i : i + 1], targets[i : i + 1], index=index[i : i + 1]) for i in range(5)]
    )
    torch.testing.assert_close(loss, rows.mean())
    with pytest.raises(ValueError, match="targets"):
        net.loss(x, torch.randn(5, 3))


@pytest.mark.parametrize("head", HEADS)
def test_every_head_fits_a_regression(head):
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 256).unsqueeze(1)
    y = 3 * torch.sin(3 * x)
    net = ValueNetwork(1, 1, head=head, n_bins=41, v_min=-4, v_max=4)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(400):
        opt.zero_grad()
        net.loss(x, y).backward()
        opt.step()
    assert (net.value(x) - y).pow(2).mean().sqrt() < 0.1, head


def test_categorical_loss_is_minimised_by_the_target():
    target = two_hot(torch.tensor([0.3, -1.2]), torch.linspace(-2, 2, 9))
    best = categorical_loss(torch.log(target.clamp(min=1e-12)), target)
    worse = categorical_loss(torch.zeros(2, 9), target)
    assert best < worse


def test_bad_configurations():
    with pytest.raises(ValueError, match="head"):
        ValueNetwork(3, head="quantile")
    with pytest.raises(ValueError, match="v_min"):
        ValueNetwork(3, head="c51", v_min=1.0, v_max=-1.0)
    with pytest.raises(ValueError, match="sigma_ratio"):
        ValueNetwork(3, head="hl_gauss", sigma_ratio=0.0)
    assert isinstance(MLP(2, 3, hidden=(8,))[0], torch.nn.Linear)
