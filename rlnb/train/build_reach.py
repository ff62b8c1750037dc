"""Build the reach task's offline data and behaviour-cloned policies shipped in ``data/reach/``:
``python -m rlnb.train.build_reach`` (one torch thread, seed 0).

- ``offline.npz``: ``demonstrations(N_EPISODES, NOISE_SCALES)`` of ``rlnb.envs.reach``:
  the scripted demonstrator around either side of the obstacle (side drawn per episode), with
  Gaussian action noise of std 0.2, 0.8 or 1.6 (mixed quality).
- ``diffusion_bc.pt``: a state-conditioned DDPM (``GaussianDiffusion``, ``T_DIFFUSION`` steps,
  ``NoiseMLP`` with the state as ``cond``) trained by its ε-loss on all of ``offline``: EXPO's
  expressive base policy.
- ``gaussian_bc.pt``: a ``SquashedGaussianPolicy`` trained by maximum likelihood on the same
  data: the Gaussian policy's start, which must average the two sides.
- ``biased_bc.pt``: a deterministic MLP (``tanh`` output) regressed on the choices of a
  miscalibrated demonstrator (side 0's, plus a constant ``BIAS`` that slows it and drags it off
  the goal): the frozen base of residual RL.
- ``metrics.json``: the build's settings and each policy's success rate over 500 episodes.

``load_reach()`` returns them (from ``$RLNB_DATA/reach`` or the repository's ``data/reach``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlnb.decoding.diffusion import ancestral_sample
from rlnb.envs.reach import demonstrations, expert_action, rollout
from rlnb.models.continuous import SquashedGaussianPolicy
from rlnb.models.diffusion import GaussianDiffusion, NoiseMLP
from rlnb.models.lm import data_dir
from rlnb.models.value import MLP

N_EPISODES = 150
NOISE_SCALES = (0.2, 0.8, 1.6)
T_DIFFUSION = 5
BIAS = np.array([-0.4, -0.4], dtype=np.float32)  # the miscalibrated demonstrator's offset
HIDDEN = (128, 128)
KEYS = ("obs", "action", "reward", "next_obs", "terminated", "episode", "noise", "side")


def diffusion_policy() -> GaussianDiffusion:
    """The untrained EXPO base: ``GaussianDiffusion(NoiseMLP(2, 64, 3, cond_dim=2), 2, T_DIFFUSION)``."""
    return GaussianDiffusion(NoiseMLP(2, hidden=64, layers=3, cond_dim=2), dim=2, T=T_DIFFUSION)


def gaussian_policy() -> SquashedGaussianPolicy:
    one = np.ones(2, dtype=np.float32)
    return SquashedGaussianPolicy(2, 2, -one, one, HIDDEN)


class DeterministicPolicy(nn.Sequential):
    """``a = tanh(MLP(s))``: a deterministic BC policy."""

    def __init__(self, hidden=(64, 64)):
        super().__init__(MLP(2, 2, hidden), nn.Tanh())


def biased_action(obs: np.ndarray) -> np.ndarray:
    """The miscalibrated demonstrator: side 0's ``expert_action`` plus ``BIAS``, clipped."""
    return np.clip(expert_action(obs, np.zeros(len(obs), dtype=int)) + BIAS, -1, 1).astype(np.float32)  # fmt: skip


def biased_demonstrations(n_episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(obs, action)``: the states of ``n_episodes`` of ``biased_action`` run with action noise
    of std 0.2, each labelled with ``biased_action`` (its noise-free choice there)."""
    rng = np.random.default_rng(seed)

    def noisy(obs):
        return biased_action(obs) + rng.normal(0, 0.2, obs.shape).astype(np.float32)

    obs = rollout(noisy, n_episodes, seed=seed)["path"][:-1].reshape(-1, 2)
    return obs, biased_action(obs)


def _fit(loss_fn, params, steps: int, lr: float = 1e-3) -> list[float]:
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def torch_policy(module, kind: str):
    """``f(obs numpy) → actions numpy`` of a BC policy: ``"diffusion"`` one sample, ``"gaussian"``
    the mean action, ``"deterministic"`` the output."""

    @torch.no_grad()
    def f(obs):
        o = torch.as_tensor(obs, dtype=torch.float32)
        if kind == "diffusion":
            return ancestral_sample(module, len(o), cond=o).x.clamp(-1, 1).numpy()
        if kind == "gaussian":
            return module.sample(o)[2].numpy()
        return module(o).numpy()

    return f


def build(out: Path, steps: int = 4000, seed: int = 0) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    data = demonstrations(N_EPISODES, NOISE_SCALES, seed=seed)
    np.savez_compressed(out / "offline.npz", **{k: data[k] for k in KEYS})
    obs, act = torch.as_tensor(data["obs"]), torch.as_tensor(data["action"])

    def batch(x, y, n=256):
        i = torch.randint(len(x), (n,), generator=gen)
        return x[i], y[i]

    diffusion = diffusion_policy()
    d_loss = _fit(lambda: _diffusion_loss(diffusion, *batch(obs, act), gen), diffusion.parameters(), steps)  # fmt: skip
    gaussian = gaussian_policy()
    g_loss = _fit(lambda: -gaussian.log_prob(*batch(obs, act)).mean(), gaussian.parameters(), steps)  # fmt: skip
    b_obs, b_act = map(torch.as_tensor, biased_demonstrations(50, seed + 1))
    biased = DeterministicPolicy()
    b_loss = _fit(lambda: _mse(biased, *batch(b_obs, b_act)), biased.parameters(), steps)
    for name, module in (("diffusion_bc", diffusion), ("gaussian_bc", gaussian), ("biased_bc", biased)):  # fmt: skip
        torch.save(module.state_dict(), out / f"{name}.pt")
    success = {
        name: float(rollout(torch_policy(m, kind), 500, seed=123)["success"].mean())
        for name, m, kind in (
            ("diffusion_bc", diffusion, "diffusion"),
            ("gaussian_bc", gaussian, "gaussian"),
            ("biased_bc", biased, "deterministic"),
        )
    }
    success["demonstrations"] = float(data["reward"].sum() / N_EPISODES)
    metrics = {
        "n_episodes": N_EPISODES,
        "noise_scales": NOISE_SCALES,
        "transitions": len(obs),
        "t_diffusion": T_DIFFUSION,
        "bias": BIAS.tolist(),
        "steps": steps,
        "seed": seed,
        "final_loss": {"diffusion": d_loss[-1], "gaussian": g_loss[-1], "biased": b_loss[-1]},
        "success": success,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


def _diffusion_loss(model, obs, action, gen):
    return model.loss(action, gen, cond=obs)


def _mse(policy, obs, action):
    return (policy(obs) - action).square().mean()


def load_reach(path: str | Path | None = None) -> dict:
    """The shipped reach artifacts: ``offline`` (dict of arrays), ``diffusion``
    (``GaussianDiffusion``), ``gaussian`` (``SquashedGaussianPolicy``), ``biased``
    (``DeterministicPolicy``), all in eval mode, and ``metrics``."""
    root = Path(path) if path is not None else data_dir() / "reach"
    if not (root / "metrics.json").exists():
        raise FileNotFoundError(
            f"{root}: no reach data; build it with `python -m rlnb.train.build_reach`"
        )
    with np.load(root / "offline.npz") as f:
        offline = {k: f[k] for k in f.files}
    models = {"diffusion": diffusion_policy(), "gaussian": gaussian_policy(), "biased": DeterministicPolicy()}  # fmt: skip
    for name, module in models.items():
        module.load_state_dict(torch.load(root / f"{name}_bc.pt", weights_only=True))
        module.eval()
    return {"offline": offline, **models, "metrics": json.loads((root / "metrics.json").read_text())}  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=4000)
    args = parser.parse_args()
    print(json.dumps(build(args.out or data_dir() / "reach", args.steps), indent=1))
