"""rlnb's GAE inside TorchRL: a value estimator for TorchRL's losses (needs ``torchrl``).

    from rlnb.integrations.torchrl import RlnbGAE
    loss = ClipPPOLoss(actor, critic)
    loss.make_value_estimator(RlnbGAE, gamma=0.99, lmbda=0.95, value_network=critic)

``RlnbGAE`` reads the same tensordict entries as TorchRL's ``GAE`` (``("next", "reward")``,
``("next", "done")``, ``("next", "terminated")``, ``"state_value"`` and ``("next",
"state_value")``, calling the value network on the root and ``"next"`` tensordicts when the values
are missing) and writes ``"advantage"`` and ``"value_target"``, but the recursion is
``rlnb.estimators.gae``: ``δ_t = r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t)``,
``A_t = δ_t + γλ (1 − done_t) A_{t+1}`` — a truncated step (done, not terminated) still
bootstraps from ``V(s_{t+1})`` and stops the sum. Time is the last batch dimension unless
``time_dim`` says otherwise. Not supported (use TorchRL's ``GAE``): ``shifted`` value calls,
chunked or vmapped value networks, ``auto_reset_env``.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.objectives.value.advantages import ValueEstimatorBase

from rlnb.estimators.advantages import gae


class RlnbGAE(ValueEstimatorBase):
    """GAE with rlnb's recursion (see the module docstring). ``average_gae`` standardises the
    advantages over the batch, as TorchRL's ``GAE`` does."""

    def __init__(
        self,
        *,
        gamma: float,
        lmbda: float,
        value_network=None,
        average_gae: bool = False,
        differentiable: bool = False,
        time_dim: int | None = None,
        **kwargs,
    ):
        unsupported = {k for k in ("shifted", "auto_reset_env") if kwargs.get(k)}
        if unsupported:
            raise ValueError(f"{', '.join(sorted(unsupported))}: not supported by RlnbGAE")
        kwargs = {
            k: v for k, v in kwargs.items() if k not in ("shifted", "auto_reset_env", "vectorized")
        }
        super().__init__(value_network=value_network, differentiable=differentiable, **kwargs)
        self.gamma, self.lmbda = float(gamma), float(lmbda)
        self.average_gae, self.time_dim = average_gae, time_dim

    def _values(self, tensordict: TensorDictBase):
        key = self.tensor_keys.value
        if self.value_network is not None:
            with torch.set_grad_enabled(self.differentiable and torch.is_grad_enabled()):
                self.value_network(tensordict)
            with torch.no_grad():
                self.value_network(tensordict.get("next"))
        value = tensordict.get(key, None)
        next_value = tensordict.get(("next", key), None)
        if value is None or next_value is None:
            raise ValueError(
                f"{key}: missing from the tensordict (root or 'next') and no value network given"
            )
        return value, next_value

    def forward(
        self, tensordict: TensorDictBase, *, params=None, target_params=None, time_dim=None
    ):
        value, next_value = self._values(tensordict)
        reward = tensordict.get(("next", self.tensor_keys.reward))
        done = tensordict.get(("next", self.tensor_keys.done))
        terminated = tensordict.get(("next", self.tensor_keys.terminated), done)
        time = self._get_time_dim(time_dim if time_dim is not None else self.time_dim, tensordict)
        time = time - tensordict.ndim if time >= 0 else time
        time -= value.ndim - tensordict.ndim  # count from the end of the value tensor
        out = gae(
            reward, value.detach() if not self.differentiable else value, next_value.detach(),
            terminated.bool(), done.bool() & ~terminated.bool(), self.gamma, self.lmbda, time_dim=time,
        )  # fmt: skip
        adv = out.advantages
        if self.average_gae:
            adv = (adv - adv.mean()) / adv.std().clamp_min(1e-6)
        tensordict.set(self.tensor_keys.advantage, adv)
        tensordict.set(self.tensor_keys.value_target, out.returns)
        return tensordict

    def value_estimate(self, tensordict, target_params=None, next_value=None, **kwargs):
        """The λ-return target ``A + V`` (what ``forward`` writes as ``value_target``)."""
        return self.forward(tensordict.clone(False)).get(self.tensor_keys.value_target)
