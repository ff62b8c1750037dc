"""The policy-loss registry, and TRL's ``loss_type``s pinned by loops.

TRL's losses live inside ``GRPOTrainer._compute_loss``, which needs a model, an accelerator and a
trainer state, so it cannot be called on tensors: ``trl_loss`` below re-derives it as a readable
per-response loop from the TRL 1.16.0 source (``trl/trainer/grpo_trainer.py``, ``_compute_loss``
and ``get_gamma_weights``; the vLLM importance-sampling modes from
``_generate_and_score_completions``). verl's losses are pinned to verl's own functions in
``tests/integrations/test_verl_losses.py``.
"""

import math

import pytest
import torch

from rlnb.estimators.losses import (
    POLICY_LOSSES,
    check_policy_loss_options,
    compute_policy_loss,
    get_policy_loss,
    register_policy_loss,
    rollout_is_weights,
    sequence_log_ratio,
)
from tests.batches import ragged_mask

SEEDS = [0, 1, 2]


def batch(seed, B=6, L=5):
    g = torch.Generator().manual_seed(seed)
    mask, lengths = ragged_mask(g, B, L)
    mask = mask.float()
    logp = -torch.rand(B, L, generator=g) * 3 - 0.01
    old = (logp + 0.3 * torch.randn(B, L, generator=g)).clamp(max=-1e-3)
    sampler = (old + 0.2 * torch.randn(B, L, generator=g)).clamp(max=-1e-3)
    adv = 2 * torch.randn(B, generator=g)  # TRL: one advantage per response
    return dict(logp=logp, old=old, sampler=sampler, adv=adv, mask=mask, lengths=lengths)


def trl_vllm_ratio(old, sampler, lengths, mode, cap):
    """TRL's ``importance_sampling_ratio``, per response: a list of per-token ratios."""
    out = []
    for i, n in enumerate(lengths.tolist()):
        diffs = [old[i, t] - sampler[i, t] for t in range(n)]
        if mode.startswith("sequence"):
            ratios = [math.exp(sum(float(d) for d in diffs))] * n
        else:
            ratios = [math.exp(float(d)) for d in diffs]
        if mode.endswith("truncate"):
            ratios = [min(r, cap) for r in ratios]
        else:
            ratios = [0.0 if r > cap else r for r in ratios]
        out.append(ratios)
    return out


def trl_loss(b, logp, loss_type, level="token", eps=0.2, eps_high=0.28, delta=None, is_ratio=None):
    """TRL 1.16's ``_compute_loss`` (beta = 0, no entropy mask, no off-policy mask), one response
    at a time. ``max_completion_length`` = the padded length; ``num_items_in_batch`` = the batch's
    tokens (one process, no accumulation)."""
    L = b["mask"].shape[1]
    per_response, n_tokens = [], int(b["lengths"].sum())
    for i, n in enumerate(b["lengths"].tolist()):
        a = float(b["adv"][i])
        log_ratios = [logp[i, t] - b["old"][i, t] for t in range(n)]
        if level == "sequence":
            seq = sum(log_ratios) / n
            coefs = [torch.exp(seq)] * n
        else:
            coefs = [torch.exp(lr) for lr in log_ratios]
        if loss_type == "vespo":  # get_gamma_weights: φ of the summed, clamped log-ratio
            log_w = sum(float(lr.detach().clamp(-20, 20)) for lr in log_ratios)
            if is_ratio is not None:  # log 0 = −inf, clamped to log 1e-8
                log_w += sum(
                    min(max(math.log(r), math.log(1e-8)), 20.0) if r > 0 else math.log(1e-8)
                    for r in is_ratio[i]
                )
            log_w = min(max(log_w, math.log(1e-8)), 20.0)
            k, lam = (2.0, 3.0) if a >= 0 else (3.0, 2.0)
            phi = math.exp(lam + k * log_w - lam * math.exp(log_w))
        losses = []
        for t in range(n):
            c1 = coefs[t]
            if loss_type == "cispo":
                loss_t = -torch.clamp(c1, max=eps_high).detach() * a * logp[i, t]
            elif loss_type == "sapo":
                tau = 1.0 if a > 0 else 1.05
                loss_t = -torch.sigmoid(tau * (c1 - 1)) * 4 / tau * a
            elif loss_type == "vespo":
                loss_t = -phi * a * logp[i, t]
            else:  # grpo, bnpo, dr_grpo, dapo, luspo
                c2 = torch.clamp(c1, 1 - eps, 1 + eps_high)
                if delta is not None:
                    c1 = torch.clamp(c1, max=delta)
                loss_t = -torch.min(c1 * a, c2 * a)
            if is_ratio is not None and loss_type != "vespo":
                loss_t = loss_t * is_ratio[i][t]
            losses.append(loss_t)
        per_response.append(losses)
    B = len(per_response)
    if loss_type in ("grpo", "sapo"):
        return sum(sum(ls) / len(ls) for ls in per_response) / B
    if loss_type == "bnpo":
        return sum(sum(ls) for ls in per_response) / n_tokens
    if loss_type == "dr_grpo":
        return sum(sum(ls) for ls in per_response) / (B * L)
    if loss_type in ("cispo", "dapo", "vespo"):
        return sum(sum(ls) for ls in per_response) / n_tokens
    if loss_type == "luspo":
        return sum(sum(ls) for ls in per_response) / B
    raise AssertionError(loss_type)


# TRL setting → rlnb loss and options
TRL_CASES = {
    "grpo": (dict(loss_type="grpo"), "ppo", dict(agg="seq-mean-token-mean")),
    "bnpo": (dict(loss_type="bnpo"), "ppo", dict(agg="token-mean")),
    "dapo": (dict(loss_type="dapo"), "ppo", dict(agg="token-mean")),
    "dr_grpo": (dict(loss_type="dr_grpo"), "ppo", dict(agg="seq-mean-token-sum-norm")),
    "grpo_delta": (dict(loss_type="grpo", delta=1.5), "ppo", dict(dual_clip=1.5, agg="seq-mean-token-mean")),
    "gspo": (
        dict(loss_type="grpo", level="sequence"), "gspo",
        dict(level="sequence", agg="seq-mean-token-mean"),
    ),
    "luspo": (dict(loss_type="luspo", level="sequence"), "luspo", {}),
    "cispo": (dict(loss_type="cispo", eps_high=1.3), "cispo", dict(clip_low=1.0, clip_high=0.3)),
    "sapo": (dict(loss_type="sapo"), "sapo", {}),
    "vespo": (dict(loss_type="vespo"), "vespo", {}),
}  # fmt: skip
PPO_CLIPS = dict(clip_low=0.2, clip_high=0.28)


def value_and_grad(fn, logp):
    logp = logp.clone().requires_grad_()
    loss = fn(logp)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.detach(), grad


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "vllm", [None, "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
)
@pytest.mark.parametrize("case", list(TRL_CASES))
def test_trl_loss_types_match_the_loops_from_its_source(case, vllm, seed):
    trl, name, options = TRL_CASES[case]
    if case == "vespo" and vllm is not None and vllm.startswith("sequence"):
        pytest.skip("TRL refuses VESPO with sequence-level vLLM weights")
    b = batch(seed)
    is_ratio = weights = None
    if vllm is not None:
        cap = 1.3  # low enough that the cap binds
        is_ratio = trl_vllm_ratio(b["old"], b["sampler"], b["lengths"], vllm, cap)
        level, mode = vllm.split("_")
        weights = rollout_is_weights(
            b["old"], b["sampler"], b["mask"], level=level, mode=mode, cap=cap
        )
    if name in ("ppo", "gspo", "luspo"):
        options = {**PPO_CLIPS, **options}

    def ours(logp):
        return compute_policy_loss(
            name, logp, b["old"], b["adv"], b["mask"], is_weights=weights, **options
        ).loss

    v_ours, g_ours = value_and_grad(ours, b["logp"])
    v_trl, g_trl = value_and_grad(lambda lp: trl_loss(b, lp, is_ratio=is_ratio, **trl), b["logp"])
    torch.testing.assert_close(v_ours, v_trl.to(v_ours.dtype), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(g_ours, g_trl, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_vllm_modes_bind_on_these_batches(seed):
    """The pins above mean something only if the caps bind: some weights truncated, some masked."""
    b = batch(seed)
    token = rollout_is_weights(b["old"], b["sampler"], b["mask"], cap=1.3)
    masked = rollout_is_weights(b["old"], b["sampler"], b["mask"], mode="mask", cap=1.3)
    assert (token == 1.3).any() and ((masked == 0) & (b["mask"] > 0)).any()


# --- the registry --------------------------------------------------------------------------------


def test_every_loss_is_registered_once_and_called_the_same_way():
    assert set(POLICY_LOSSES) == {
        "ppo", "gspo", "luspo", "cispo", "sapo", "gmpo", "dppo", "dro", "cov", "gpg", "vespo"
    }  # fmt: skip
    b = batch(0)
    for name in POLICY_LOSSES:
        options = dict(beta=0.5) if name == "dro" else {}
        logp = b["logp"].clone().requires_grad_()
        out = compute_policy_loss(name, logp, b["old"], b["adv"], b["mask"], **options)
        out.loss.backward()
        assert torch.isfinite(out.loss) and torch.isfinite(logp.grad).all(), name
        assert (logp.grad[b["mask"] == 0] == 0).all(), name  # padding gets no gradient
        assert 0 <= out.clip_frac <= 1, name


def test_a_user_loss_registers_and_a_taken_name_is_refused():
    @register_policy_loss("halved_gpg_test")
    def halved(logp, old_logp, advantages, mask, *, agg="token-mean", is_weights=None):
        return get_policy_loss("gpg")(
            logp, old_logp, advantages, mask, agg=agg, is_weights=is_weights
        )._replace(
            loss=0.5 * get_policy_loss("gpg")(logp, old_logp, advantages, mask, agg=agg).loss
        )

    try:
        b = batch(1)
        half = compute_policy_loss("halved_gpg_test", b["logp"], b["old"], b["adv"], b["mask"]).loss
        full = compute_policy_loss("gpg", b["logp"], b["old"], b["adv"], b["mask"]).loss
        torch.testing.assert_close(half, 0.5 * full)
        with pytest.raises(ValueError, match="already registered"):
            register_policy_loss("gpg")(halved)
    finally:
        POLICY_LOSSES.pop("halved_gpg_test")


def test_bad_loss_names_and_options_are_value_errors_naming_them():
    with pytest.raises(ValueError, match="loss: expected one of"):
        get_policy_loss("ppo2")
    with pytest.raises(ValueError, match=r"loss_kwargs: \['levle'\]"):
        check_policy_loss_options("gspo", {"levle": "token"})
    with pytest.raises(ValueError, match=r"needs \['beta'\]"):
        check_policy_loss_options("dro", {})
    for name, options, match in [
        ("dro", dict(beta=0.0), "beta"),
        ("gspo", dict(level="tokens"), "level"),
        ("dppo", dict(divergence="js"), "divergence"),
        ("cov", dict(kind="entropy"), "kind"),
        ("cov", dict(ratio=0.0), "ratio"),
        ("sapo", dict(tau_neg=0.0), "tau_pos, tau_neg"),
        ("vespo", dict(k_pos=float("nan")), "k_pos"),
        ("ppo", dict(clip_low=1.0), "clip_low"),
        ("ppo", dict(agg="mean"), "mode"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_policy_loss_options(name, options)
    check_policy_loss_options("gspo", {"level": "sequence", "clip_low": 0.1})
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="is_weights"):
        compute_policy_loss("gpg", x, x, x, torch.ones(2, 3), is_weights=torch.ones(2, 2))
    for kwargs, match in [
        (dict(level="batch"), "level"),
        (dict(mode="clip"), "mode"),
        (dict(cap=0.0), "cap"),
        (dict(floor=0.5), "floor"),  # a floor needs mode="mask"
        (dict(mode="mask", floor=3.0, cap=2.0), "floor"),
    ]:
        with pytest.raises(ValueError, match=match):
            rollout_is_weights(x, x, torch.ones(2, 3), **kwargs)


def test_degenerate_batches_give_zero_not_nan():
    """All-padding rows, zero advantages and equal policies: a loss of 0, no NaN anywhere."""
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    logp = torch.full((2, 3), -1.0, requires_grad=True)
    for name in POLICY_LOSSES:
        options = dict(beta=0.5) if name == "dro" else {}
        out = compute_policy_loss(name, logp, logp.detach(), torch.zeros(2), mask, **options)
        out.loss.backward()
        assert out.loss.item() == 0.0 and torch.isfinite(logp.grad).all(), name
        logp.grad = None


def test_gspo_levels_differ_only_with_per_token_advantages():
    """One advantage per response: GSPO-token and the sequence form have the same gradient in
    every aggregation; per-token advantages: they do not."""
    b = batch(2)

    def grad_of(level, adv, agg):
        logp = b["logp"].clone().requires_grad_()
        wide = dict(clip_low=0.99, clip_high=100.0)  # clips that never bind here
        loss = compute_policy_loss(
            "gspo", logp, b["old"], adv, b["mask"], level=level, agg=agg, **wide
        )
        loss.loss.backward()
        return logp.grad

    per_token = b["adv"][:, None] * torch.linspace(0.5, 1.5, b["mask"].shape[1])
    for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        torch.testing.assert_close(
            grad_of("token", b["adv"], agg), grad_of("sequence", b["adv"], agg)
        )
        assert (
            grad_of("token", per_token, agg) - grad_of("sequence", per_token, agg)
        ).abs().max() > 1e-3


@pytest.mark.parametrize("seed", SEEDS)
def test_sequence_log_ratio_is_the_mean_token_log_ratio_by_a_loop(seed):
    b = batch(seed)
    mask = b["mask"].clone()
    mask[0] = 0  # an empty response: 0
    got = sequence_log_ratio(b["logp"], b["old"], mask)
    for i in range(len(mask)):
        terms = [
            float(b["logp"][i, t] - b["old"][i, t]) for t in range(mask.shape[1]) if mask[i, t]
        ]
        assert math.isclose(float(got[i]), sum(terms) / len(terms) if terms else 0.0, abs_tol=1e-6)
    with pytest.raises(ValueError, match="old_logp"):
        sequence_log_ratio(b["logp"], b["old"][:, :-1], mask)
