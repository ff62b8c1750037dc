"""rlnb's estimators and policy loss inside verl, loaded through verl's plugin entry point.

Runs in an environment of its own (``make test-integrations`` makes ``.venv-verl``: verl pins
tensordict ≤ 0.10, TorchRL needs a newer one); skipped where verl is not installed. This module
does not import ``rlnb.integrations.verl`` at the top: ``import verl`` must do that by itself.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.batches import ragged_mask, shuffled_groups

verl = pytest.importorskip("verl")

from verl import DataProto  # noqa: E402
from verl.trainer.config import AlgoConfig  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402

from rlnb.estimators import group as G  # noqa: E402

NAMES = ["rlnb_grpo", "rlnb_dr_grpo", "rlnb_rloo", "rlnb_qae", "rlnb_qae_k70", "rlnb_passk"]


def grouped_batch(seed, n_groups=6, max_group=5, min_group=2, L=7, binary=True):
    """Random scores in groups of random sizes, shuffled, with ragged response masks."""
    g = torch.Generator().manual_seed(seed)
    ids = shuffled_groups(g, n_groups, min_group, max_group)
    B = len(ids)
    mask, lengths = ragged_mask(g, B, L)
    mask = mask.float()
    scores = (torch.rand(B, generator=g) < 0.5).float() if binary else torch.randn(B, generator=g)
    rewards = torch.zeros(B, L)
    rewards[torch.arange(B), lengths - 1] = scores  # the outcome reward on the last token
    index = np.array([f"uid-{int(i)}" for i in ids], dtype=object)
    return rewards, mask, index, scores, ids


def test_import_verl_alone_registers_the_rlnb_names():
    code = (
        "import sys, verl\n"
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn\n"
        f"fns = [get_adv_estimator_fn(n) for n in {NAMES!r}]\n"
        "get_policy_loss_fn('rlnb')\n"
        "assert 'rlnb.integrations.verl' in sys.modules\n"
        "print('ok', len(fns))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok", str(len(NAMES))]


def test_an_estimator_registered_before_import_verl_is_carried():
    code = (
        "import torch\n"
        "from rlnb.estimators import register_estimator\n"
        "register_estimator('mine')(lambda inputs: 2.0 * inputs.mask)\n"
        "import verl\n"
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn\n"
        "adv, _ = get_adv_estimator_fn('rlnb_mine')(torch.ones(2, 3), torch.ones(2, 3), ['a', 'b'])\n"
        "print(adv.sum().item())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "12.0"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_registered_estimator_equals_the_direct_rlnb_call(seed):
    from rlnb.integrations.verl import QAE_QUANTILES, VERL_ESTIMATORS

    rewards, mask, index, scores, ids = grouped_batch(seed, min_group=1, binary=seed != 2)
    direct = {
        "rlnb_grpo": G.grpo(scores, group_ids=ids),
        "rlnb_dr_grpo": G.dr_grpo(scores, group_ids=ids),
        "rlnb_rloo": G.rloo(scores, group_ids=ids),
        "rlnb_reinforce_pp": G.reinforce_pp_baseline(scores, group_ids=ids),
        "rlnb_lite_ppo": G.lite_ppo(scores, group_ids=ids),
        "rlnb_passk": G.passk_advantages(scores, group_ids=ids),
        "rlnb_qae": G.qae(scores, k=0.4, group_ids=ids),
        **{f"rlnb_qae_k{round(100 * k)}": G.qae(scores, k=k, group_ids=ids) for k in (0.1, 0.9)},
    }
    quantiles = {f"rlnb_qae_k{round(100 * k)}" for k in QAE_QUANTILES}
    token_level = {  # pinned in test_verl_estimators.py
        f"rlnb_{n}"
        for n in ("opo", "gpg", "maxrl", "reinforce_plus_plus", "reinforce_plus_plus_baseline")
    }
    assert set(VERL_ESTIMATORS) == set(direct) | quantiles | token_level  # from the registry
    for name, want in direct.items():
        fn = core_algos.get_adv_estimator_fn(name)
        assert fn is VERL_ESTIMATORS[name]
        adv, ret = fn(token_level_rewards=rewards, response_mask=mask, index=index, config=None)
        torch.testing.assert_close(adv, want[:, None] * mask, atol=0, rtol=0, msg=name)
        torch.testing.assert_close(ret, adv, atol=0, rtol=0)


def verl_builtin(name, rewards, mask, index):
    fn = core_algos.get_adv_estimator_fn
    if name == "rlnb_grpo":
        return core_algos.compute_grpo_outcome_advantage(rewards, mask, index, epsilon=1e-6)[0]
    if name == "rlnb_dr_grpo":
        return core_algos.compute_grpo_outcome_advantage(
            rewards, mask, index, norm_adv_by_std_in_grpo=False
        )[0]
    if name == "rlnb_rloo":
        return fn("rloo")(rewards, mask, index)[0]
    if name == "rlnb_passk":
        return fn("grpo_passk")(rewards, mask, index, config=AlgoConfig())[0]
    raise KeyError(name)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["rlnb_grpo", "rlnb_dr_grpo", "rlnb_rloo", "rlnb_passk"])
def test_matches_verls_builtin_estimator(name, seed):
    rewards, mask, index, *_ = grouped_batch(seed, binary=seed != 2)
    ours, _ = core_algos.get_adv_estimator_fn(name)(rewards, mask, index)
    torch.testing.assert_close(ours, verl_builtin(name, rewards, mask, index), atol=1e-6, rtol=0)


def test_a_group_of_one_is_the_documented_difference():
    rewards, mask = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 1.0]]), torch.ones(3, 2)
    index = np.array(["a", "b", "b"], dtype=object)
    ours, _ = core_algos.get_adv_estimator_fn("rlnb_grpo")(rewards, mask, index)
    theirs = core_algos.compute_grpo_outcome_advantage(rewards, mask, index)[0]
    assert ours[0].abs().max() == 0  # rlnb: a lone response carries no relative signal
    torch.testing.assert_close(theirs[0], torch.ones(2), atol=1e-5, rtol=0)  # verl: raw score
    torch.testing.assert_close(ours[1:], theirs[1:], atol=1e-6, rtol=0)


def test_compute_advantage_runs_end_to_end_with_rlnb_qae():
    rewards, mask, index, scores, ids = grouped_batch(3)
    data = DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": mask},
        non_tensors={"uid": index},
    )
    out = compute_advantage(data, adv_estimator="rlnb_qae", config=AlgoConfig())
    want = G.qae(scores, k=0.4, group_ids=ids)[:, None] * mask
    torch.testing.assert_close(out.batch["advantages"], want, atol=0, rtol=0)
    torch.testing.assert_close(out.batch["returns"], want, atol=0, rtol=0)


class ActorCfg(dict):
    """The fields of verl's actor config that a policy loss reads."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "mode",
    [
        "token-mean",
        "token-sum",
        "seq-mean-token-mean",
        "seq-mean-token-sum",
        "seq-mean-token-sum-norm",
    ],
)
@pytest.mark.parametrize("dp", [1, 2])
@pytest.mark.parametrize("with_weights", [False, True])
def test_rlnb_policy_loss_equals_verls_vanilla_loss(mode, dp, seed, with_weights):
    g = torch.Generator().manual_seed(seed)
    B, L = 6, 9
    mask = (torch.arange(L)[None, :] < torch.randint(1, L + 1, (B, 1), generator=g)).float()
    old = -torch.rand(B, L, generator=g) * 3
    logp = old + 0.4 * torch.randn(B, L, generator=g)
    adv = torch.randn(B, L, generator=g)
    info = {"dp_size": dp}
    if dp > 1:  # this rank holds part of a global batch: normalise by the global counts
        info |= {"batch_num_tokens": int(mask.sum()) * dp + 5, "global_batch_size": B * dp + 1}
    cfg = ActorCfg(
        clip_ratio=0.2,
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
        clip_ratio_c=3.0,
        global_batch_info=info,
    )
    w = (0.3 * torch.randn(B, L, generator=g)).exp() * mask if with_weights else None  # rollout IS
    ours, m_ours = core_algos.get_policy_loss_fn("rlnb")(old, logp, adv, mask, mode, cfg, w)
    theirs, m_theirs = core_algos.get_policy_loss_fn("vanilla")(old, logp, adv, mask, mode, cfg, w)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    assert m_ours["actor/pg_clipfrac"] == pytest.approx(m_theirs["actor/pg_clipfrac"], abs=1e-6)
    assert m_ours["actor/ppo_kl"] == pytest.approx(m_theirs["actor/ppo_kl"], abs=1e-6)


def test_ray_worker_that_only_imports_verl_finds_the_rlnb_estimators():
    ray = pytest.importorskip("ray")
    # the actor travels by value, so the worker does not import this module (nor rlnb) first
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

    @ray.remote
    class Worker:
        def advantages(self, name, rewards, mask, index):
            import sys

            preloaded = "rlnb.integrations.verl" in sys.modules
            import verl  # noqa: F401 — loads the plugins, as inside any verl worker
            from verl.trainer.ppo.core_algos import get_adv_estimator_fn

            return preloaded, get_adv_estimator_fn(name)(rewards, mask, index)[0]

    rewards, mask, index, *_ = grouped_batch(4)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        preloaded, remote = ray.get(
            Worker.remote().advantages.remote("rlnb_qae", rewards, mask, index)
        )
    finally:
        ray.shutdown()
    local, _ = core_algos.get_adv_estimator_fn("rlnb_qae")(rewards, mask, index)
    assert not preloaded
    torch.testing.assert_close(remote, local, atol=0, rtol=0)
