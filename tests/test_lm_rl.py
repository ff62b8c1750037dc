"""The LM RL trainer: token-level GAE against a loop, one step of every algorithm, determinism,
the KL term, the critic's alignment and bad input."""

import copy
import dataclasses
import json

import pytest
import torch

from rlnb.decoding import sample
from rlnb.envs.tasks import Addition
from rlnb.estimators import last_token, token_gae
from rlnb.models.lm import load_reasoner
from rlnb.train import lm_rl
from rlnb.train.lm_rl import (
    RLConfig,
    ValueModel,
    algorithms,
    critic_error_by_position,
    informative_prompts,
    train,
)


def gae_loop(score, values, mask, lam):
    """γ = 1, reward = score at the last masked position, V = 0 after it; read top to bottom."""
    idx = mask.nonzero().squeeze(1).tolist()
    adv = torch.zeros_like(values)
    running = 0.0
    for j, t in enumerate(reversed(idx)):
        last = j == 0
        next_v = 0.0 if last else values[idx[len(idx) - j]]
        delta = (score if last else 0.0) + next_v - values[t]
        running = delta + (0.0 if last else lam * running)
        adv[t] = running
    return adv


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_gae_matches_a_loop_on_ragged_responses(seed):
    g = torch.Generator().manual_seed(seed)
    B, L = 5, 9
    mask = torch.zeros(B, L, dtype=torch.long)
    for b in range(B):  # a prompt of random length, then a response of random length, then padding
        start = int(torch.randint(1, 4, (1,), generator=g))
        length = int(torch.randint(1, L - start + 1, (1,), generator=g))
        mask[b, start : start + length] = 1
    values = torch.randn(B, L, generator=g, dtype=torch.float64) * mask
    scores = torch.randint(0, 2, (B,), generator=g).double()
    for lam in (0.0, 0.7, 1.0):
        adv, ret = token_gae(scores, values, mask, lam)
        expected = torch.stack(
            [gae_loop(scores[b].item(), values[b], mask[b], lam) for b in range(B)]
        )
        torch.testing.assert_close(adv, expected)
        torch.testing.assert_close(ret, (expected + values) * mask)
    assert (last_token(mask).sum(1) == 1).all()


@pytest.fixture(scope="module")
def reasoner():
    return load_reasoner("addition")


def small(**kw):
    return RLConfig(steps=1, prompts_per_step=4, group_size=8, eval_prompts=8, progress=False, **kw)


@pytest.mark.parametrize("algorithm", algorithms())
def test_one_step_of_every_algorithm_changes_the_policy_and_stays_finite(reasoner, algorithm):
    model, tok = reasoner
    model = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    history, critic = train(model, tok, Addition(2), small(algorithm=algorithm, lr=1e-3, seed=1))
    row = history.iloc[0]
    assert 0 < row.reward < 1  # the group has a success and a failure: a gradient exists
    assert torch.isfinite(torch.tensor([row.loss, row.grad_norm, row.entropy])).all()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert (critic is not None) == (algorithm in ("ppo", "gae"))
    assert 0 <= row.zero_adv_frac <= 1


def test_zero_advantage_fraction_counts_completions_that_teach_nothing(reasoner):
    """With group_size 1 every group is all-equal: GRPO zeroes every completion, PVPO (whose
    baseline is the frozen policy's success rate, not the group's) almost none."""
    model, tok = reasoner
    cfg = dict(group_size=1, prompts_per_step=16, eval_prompts=8, steps=1, progress=False)
    with pytest.warns(UserWarning, match="singleton"):
        grpo_row = train(copy.deepcopy(model), tok, Addition(2), RLConfig(**cfg))[0].iloc[0]
    assert grpo_row.zero_adv_frac == 1.0
    pvpo_cfg = RLConfig(algorithm="pvpo", reference_rollouts=8, **cfg)
    pvpo_row = train(copy.deepcopy(model), tok, Addition(2), pvpo_cfg)[0].iloc[0]
    assert pvpo_row.zero_adv_frac < 0.5, pvpo_row


@pytest.mark.parametrize(
    "loss,loss_kwargs",
    [("gspo", {"level": "sequence"}), ("cispo", {}), ("dro", {"beta": 0.1}), ("vespo", {})],
)
def test_one_step_with_another_policy_loss(reasoner, loss, loss_kwargs):
    """RLConfig.loss picks a registered loss and loss_kwargs carries its knobs; two epochs so that
    the second pass is off-policy (ratios ≠ 1)."""
    model, tok = reasoner
    model = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = small(loss=loss, loss_kwargs=loss_kwargs, epochs=2, lr=1e-3, seed=1)
    history, _ = train(model, tok, Addition(2), cfg)
    row = history.iloc[0]
    assert torch.isfinite(torch.tensor([row.loss, row.grad_norm])).all()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_same_seed_same_run(reasoner):
    model, tok = reasoner
    runs = [
        train(copy.deepcopy(model), tok, Addition(2), small(algorithm="ppo", seed=3))[0]
        for _ in range(2)
    ]
    cols = ["reward", "loss", "grad_norm", "entropy", "clip_frac"]
    assert runs[0][cols].equals(runs[1][cols])


def test_kl_to_a_reference_copy_starts_at_zero(reasoner):
    model, tok = reasoner
    ref = copy.deepcopy(model)
    history, _ = train(copy.deepcopy(model), tok, Addition(2), small(kl_coef=0.1), ref_model=ref)
    assert abs(history.kl.iloc[0]) < 1e-6  # on-policy first pass: π = π_ref


def test_value_model_is_aligned_and_starts_at_zero(reasoner):
    model, tok = reasoner
    critic = ValueModel(model)
    ids = tok(["12+34=046"], return_tensors="pt")["input_ids"]
    v = critic(ids, torch.ones_like(ids))
    assert v.shape == ids.shape and (v == 0).all()  # zero-initialised head
    assert critic.trunk is not model.base_model
    torch.nn.init.normal_(critic.head.weight, generator=torch.Generator().manual_seed(0))
    v = critic(ids, torch.ones_like(ids))
    for t in range(2, ids.shape[1]):  # entry t is V(x_<t): it sees x_{t-1}, never x_t
        changed = ids.clone()
        changed[0, t] = 3 + (changed[0, t] - 2) % (len(tok) - 3)  # another ordinary token
        w = critic(changed, torch.ones_like(ids))
        torch.testing.assert_close(w[:, : t + 1], v[:, : t + 1])
        if t + 1 < ids.shape[1]:
            assert (w[0, t + 1] - v[0, t + 1]).abs() > 1e-6
    assert (v[:, :2] == 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_completion_values_equal_the_full_pass(reasoner, seed):
    """The grouped path (each prompt once through the trunk) = ``forward`` on prompt +
    completion, values and gradients, on left-padded prompts of different lengths."""
    model, tok = reasoner
    critic = ValueModel(model)
    torch.nn.init.normal_(critic.head.weight, generator=torch.Generator().manual_seed(seed))
    s = sample(model, tok, ["7+35=", "12+34=", "1+2="], n=4, max_new_tokens=4, seed=seed)
    P = s.prompt_ids.shape[1]
    full = critic(s.input_ids, s.attention_mask)[:, P:] * s.response_mask
    ours = (
        critic.completion_values(s.prompt_ids, s.prompt_mask, s.completion_ids, s.response_mask, 4)
        * s.response_mask
    )
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)
    params = list(critic.parameters())
    for a, b in zip(
        torch.autograd.grad(full.sum(), params), torch.autograd.grad(ours.sum(), params)
    ):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_informative_prompts_prefers_mixed_reference_accuracy():
    got = informative_prompts(list("abcdef"), [1.0, 0.5, 0.0, 0.25, 1.0, 0.9], 3)
    assert got == ["b", "d", "f"]
    assert informative_prompts(list("abc"), [0.0, 1.0, 0.5], 3) == ["c", "a", "b"]  # topped up
    with pytest.raises(ValueError, match="accuracy"):
        informative_prompts(list("ab"), [0.5], 1)


def test_pvpo_filter_trains_on_prompts_the_frozen_policy_sometimes_solves(reasoner, monkeypatch):
    model, tok = reasoner
    calls = []

    def spy(candidates, accuracy, n):
        calls.append((list(accuracy), informative_prompts(candidates, accuracy, n)))
        return calls[-1][1]

    monkeypatch.setattr(lm_rl, "informative_prompts", spy)
    cfg = dataclasses.replace(small(algorithm="pvpo", pvpo_filter=True), steps=2)
    history, _ = train(copy.deepcopy(model), tok, Addition(2), cfg)
    assert len(calls) == 2 and history.loss.notna().sum() == 2
    for accuracy, chosen in calls:
        assert len(accuracy) == 4 * cfg.prompts_per_step and len(chosen) == cfg.prompts_per_step
        assert all(
            a * cfg.reference_rollouts == round(a * cfg.reference_rollouts) for a in accuracy
        )
        assert sum(0 < a < 1 for a in accuracy) >= 1  # the checkpoint solves some prompts sometimes


def test_critic_error_by_position():
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]])
    scores = torch.tensor([1.0, 0.0, 1.0, 0.0])
    values = torch.tensor([[0, 0.5, 1, 1], [0, 0.5, 0, 0], [0, 0, 0.5, 1], [0, 0, 0.5, 0.0]])
    table = critic_error_by_position(values, mask, scores, constant=0.5)
    assert table.index.tolist() == [0, 1, 2] and table.n.tolist() == [4, 4, 2]
    assert (
        table.critic_mse.tolist() == [0.25, 0.0, 0.0] and table.constant_mse.tolist() == [0.25] * 3
    )
    assert table.correlation.tolist() == [0.0, 1.0, 1.0]  # no spread at position 0: 0, not NaN
    with pytest.raises(ValueError, match="scores"):
        critic_error_by_position(values, mask, scores[:2], 0.5)


@pytest.mark.parametrize(
    "field, value",
    [
        ("eval_every", 0),  # was a ZeroDivisionError at step 0
        ("eval_prompts", 0),
        ("reference_rollouts", 0),
        ("warmup_steps", -1),
        ("checkpoint_every", -1),
        ("steps", 2.5),
        ("max_new_tokens", 0),
        ("kl_coef", float("nan")),  # NaN passed "kl_coef < 0"
        ("lr", float("nan")),
        ("value_lr", 0.0),
        ("clip_low", 1.0),
        ("clip_high", -0.1),
        ("value_clip", float("nan")),
        ("qae_k", 1.0),  # failed only at the first QAE step
        ("lmbda", 1.5),
        ("temperature", True),
    ],
)
def test_config_values_that_would_fail_later_fail_now(field, value):
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        RLConfig(**{field: value})


def test_bad_config():
    with pytest.raises(ValueError, match="algorithm"):
        RLConfig(algorithm="a2c")
    with pytest.raises(ValueError, match="pvpo_filter"):
        RLConfig(algorithm="grpo", pvpo_filter=True)
    with pytest.raises(ValueError, match="agg"):
        RLConfig(agg="mean")
    with pytest.raises(ValueError, match="loss: expected one of"):
        RLConfig(loss="ppo2")
    with pytest.raises(ValueError, match=r"loss_kwargs: \['levle'\]"):
        RLConfig(loss="gspo", loss_kwargs={"levle": "sequence"})
    with pytest.raises(ValueError, match="beta"):
        RLConfig(loss="dro", loss_kwargs={"beta": -1.0})
    with pytest.raises(ValueError, match="loss_kwargs"):
        RLConfig(loss="gspo", loss_kwargs={"agg": "token-mean"})
    with pytest.raises(ValueError, match="group_size"):
        RLConfig(group_size=0)
    with pytest.raises(ValueError, match="ref_model"):
        train(None, None, Addition(2), RLConfig(kl_coef=0.1, progress=False))


def test_resume_reproduces_the_uninterrupted_run(reasoner, tmp_path):
    """Stop after step 1 (a checkpoint is written after step 1, every 2 steps), resume in a fresh
    process-like setting (a fresh copy of the initial model): steps 2 and 3 equal the run that
    never stopped."""
    model, tok = reasoner
    cfg = dict(algorithm="ppo", steps=4, prompts_per_step=4, group_size=8, eval_prompts=8)
    cfg.update(eval_every=2, seed=5, progress=False, lr=1e-3)
    full, _ = train(copy.deepcopy(model), tok, Addition(2), RLConfig(**cfg))

    def stop_after_1(step, model, row):
        if step == 1:
            raise StopIteration

    ckpt = RLConfig(**cfg, checkpoint_dir=str(tmp_path), checkpoint_every=2)
    first, _ = train(copy.deepcopy(model), tok, Addition(2), ckpt, callbacks=[stop_after_1])
    assert first.step.tolist() == [0, 1]
    resumed, critic = train(copy.deepcopy(model), tok, Addition(2), ckpt)
    cols = ["step", "reward", "loss", "grad_norm", "entropy", "pass1"]
    assert resumed.step.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(
        torch.tensor(resumed[cols].to_numpy(float)),
        torch.tensor(full[cols].to_numpy(float)),
        equal_nan=True,
    )
    assert (tmp_path / "critic.safetensors").exists() and (tmp_path / "history.csv").exists()
    again, _ = train(copy.deepcopy(model), tok, Addition(2), ckpt)  # finished: nothing more to do
    assert again.step.tolist() == [0, 1, 2, 3, 4]


def tiny_run(**kw):
    cfg = dict(steps=2, prompts_per_step=4, group_size=8, eval_prompts=8, eval_every=2)
    return RLConfig(**{**cfg, "progress": False, "lr": 1e-3, "seed": 5, **kw})


@pytest.mark.parametrize("algorithm", ["remax", "optimal_token_baseline", "gdpo"])
def test_estimators_that_need_more_than_scores_train_by_name(reasoner, algorithm, monkeypatch):
    """The rollout supplies each its inputs (a greedy completion's reward, Σπ², two reward
    components), and a few steps train on them: what the update receives is the registered
    estimator of those inputs."""
    model, tok = reasoner
    seen, real_advantages = [], lm_rl.advantages

    def spy(batch, estimator, critic=None, **options):
        adv = real_advantages(batch, estimator, critic, **options)
        seen.append((batch, adv))
        return adv

    monkeypatch.setattr(lm_rl, "advantages", spy)
    policy = copy.deepcopy(model)
    history, _ = train(policy, tok, Addition(2), tiny_run(algorithm=algorithm, steps=3))
    assert len(seen) == 3 and torch.isfinite(torch.tensor(history.loss.iloc[:3].values)).all()
    need = {"remax": "greedy_scores", "optimal_token_baseline": "sum_pi_squared",
            "gdpo": "reward_components"}[algorithm]  # fmt: skip
    for batch, adv in seen:
        assert need in batch.extras and (adv != 0).any()
        B = len(batch.scores)
        if algorithm == "remax":  # a greedy reward per prompt, shared by its group
            greedy = batch.extras[need].view(-1, batch.group_size)
            assert (greedy == greedy[:, :1]).all()
            torch.testing.assert_close(adv[:, 0], batch.scores.float() - batch.extras[need].float())
        if algorithm == "optimal_token_baseline":
            pi2 = batch.extras[need][batch.samples.response_mask.bool()]
            assert ((pi2 > 0) & (pi2 <= 1 + 1e-6)).all()
        if algorithm == "gdpo":
            comps = batch.extras[need]
            assert comps.shape == (B, 2)
            torch.testing.assert_close(comps[:, 0], batch.scores.float())
            assert (comps[:, 1] >= comps[:, 0]).all()  # a right answer has the right length


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_extending_a_finished_run_equals_one_longer_run(reasoner, tmp_path, algorithm):
    """A finished 2-step run continued to 4 steps on its checkpoint = one 4-step run: every step
    is trained once (today's code skipped step 2, taking the 2-step run's final evaluation row
    for a trained step)."""
    model, tok = reasoner
    full, _ = train(copy.deepcopy(model), tok, Addition(2), tiny_run(algorithm=algorithm, steps=4))
    ckpt = dict(algorithm=algorithm, checkpoint_dir=str(tmp_path), checkpoint_every=0)
    policy = copy.deepcopy(model)
    short, _ = train(policy, tok, Addition(2), tiny_run(**ckpt))
    assert short.step.tolist() == [0, 1, 2] and short.loss.iloc[-1] != short.loss.iloc[-1]  # NaN
    longer, _ = train(copy.deepcopy(model), tok, Addition(2), tiny_run(**ckpt, steps=4))
    assert longer.step.tolist() == full.step.tolist() == [0, 1, 2, 3, 4]
    cols = ["step", "reward", "loss", "grad_norm", "entropy", "clip_frac", "pass1"]
    torch.testing.assert_close(
        torch.tensor(longer[cols].to_numpy(float)),
        torch.tensor(full[cols].to_numpy(float)),
        equal_nan=True,
    )
    assert longer.loss.iloc[:4].notna().all()  # step 2 was trained


def test_continuing_with_a_different_run_is_refused(reasoner, tmp_path):
    model, tok = reasoner
    ckpt = dict(steps=1, checkpoint_dir=str(tmp_path))
    train(copy.deepcopy(model), tok, Addition(2), tiny_run(**ckpt))
    with pytest.raises(ValueError, match=r"lr: 0\.001 → 0\.01.*seed: 5 → 6"):
        train(copy.deepcopy(model), tok, Addition(2), tiny_run(**ckpt, lr=1e-2, seed=6))
    with pytest.raises(ValueError, match="task"):
        train(copy.deepcopy(model), tok, Addition(3), tiny_run(**ckpt))
    with pytest.raises(ValueError, match="algorithm"):
        train(copy.deepcopy(model), tok, Addition(2), tiny_run(**ckpt, algorithm="rloo"))
    again, _ = train(  # what may change: steps, eval_every, progress, checkpoint_every
        copy.deepcopy(model), tok, Addition(2), tiny_run(**ckpt, eval_every=1, checkpoint_every=7)
    )
    assert again.step.tolist() == [0, 1]
    longer, _ = train(copy.deepcopy(model), tok, Addition(2), tiny_run(**{**ckpt, "steps": 3}))
    assert longer.step.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="steps: the checkpoint has trained 3 steps"):
        train(copy.deepcopy(model), tok, Addition(2), tiny_run(**{**ckpt, "steps": 2}))


@pytest.fixture
def last_token_estimator():
    """Registered from outside rlnb, as a user would: advantage 1 on the last token only."""
    from rlnb.estimators import ESTIMATORS, register_estimator

    calls = []

    @register_estimator("test_last_token_bonus")
    def last_token_bonus(inputs):
        adv = last_token(inputs.mask).float()
        calls.append(adv)
        return adv

    yield "test_last_token_bonus", calls
    del ESTIMATORS["test_last_token_bonus"]


def test_a_users_estimator_trains_by_name(reasoner, last_token_estimator, monkeypatch):
    name, calls = last_token_estimator
    model, tok = reasoner
    seen, real_update = [], lm_rl.update

    def spy(model, optimizer, batch, adv, *args):
        seen.append(adv)
        return real_update(model, optimizer, batch, adv, *args)

    monkeypatch.setattr(lm_rl, "update", spy)
    policy = copy.deepcopy(model)
    before = [p.detach().clone() for p in policy.parameters()]
    history, critic = train(policy, tok, Addition(2), tiny_run(algorithm=name))
    assert critic is None and len(calls) == 2 and history.loss.iloc[:2].notna().all()
    for adv in seen:  # what the update received: 1 on each completion's last token, 0 elsewhere
        assert (adv.sum(1) == 1).all() and set(adv.unique().tolist()) == {0.0, 1.0}
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.parameters()))


def test_a_custom_rollout_function_plugs_in(reasoner):
    """A rollout that rewards every completion of the first prompt, whatever it says: the reward
    the trainer logs is that of the custom rollout."""
    model, tok = reasoner
    prompts_seen = []

    def first_prompt_wins(model, tokenizer, task, prompts, config, step):
        batch = lm_rl.rollout(model, tokenizer, task, prompts, config, step)
        prompts_seen.append(list(prompts))
        batch.scores = torch.zeros_like(batch.scores)
        batch.scores[: config.group_size] = 1.0
        return batch

    cfg = tiny_run()
    history, _ = train(copy.deepcopy(model), tok, Addition(2), cfg, rollout_fn=first_prompt_wins)
    assert len(prompts_seen) == 2 and all(len(p) == 4 for p in prompts_seen)
    assert history.reward.iloc[:2].tolist() == [0.25, 0.25]


def test_the_progress_bar_reaches_its_total(reasoner, monkeypatch):
    """Every step is a step of the bar: it ends at 100 %, not at "99 %" with a break."""
    model, tok = reasoner
    bars, real = [], lm_rl.progress_bar
    monkeypatch.delenv("RLNB_PROGRESS", raising=False)  # shown, as outside `rlnb run`

    def spy(*args, **kwargs):
        bars.append(real(*args, **kwargs))
        return bars[-1]

    monkeypatch.setattr(lm_rl, "progress_bar", spy)
    train(copy.deepcopy(model), tok, Addition(2), tiny_run(progress=True))
    assert len(bars) == 1 and bars[0].n == bars[0].total == 2


def test_an_interrupted_save_leaves_the_previous_checkpoint(reasoner, tmp_path, monkeypatch):
    """The second checkpoint's save fails half-way (a full disk): resuming continues from the
    first one, exactly as a run that never failed (before, the new policy sat beside the old
    step and optimizer, and resume went on silently from that mix)."""
    model, tok = reasoner
    cfg = dict(algorithm="ppo", steps=3, checkpoint_every=1)
    full, _ = train(copy.deepcopy(model), tok, Addition(2), tiny_run(**cfg))
    calls, real = [], lm_rl.save_file

    def fail_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(lm_rl, "save_file", fail_second_time)
    ckpt = tiny_run(**cfg, checkpoint_dir=str(tmp_path / "run"))
    with pytest.raises(OSError, match="No space"):
        train(copy.deepcopy(model), tok, Addition(2), ckpt)
    monkeypatch.setattr(lm_rl, "save_file", real)
    assert json.loads((tmp_path / "run" / "state.json").read_text())["next_step"] == 1
    resumed, _ = train(copy.deepcopy(model), tok, Addition(2), ckpt)
    cols = ["step", "reward", "loss", "grad_norm", "entropy", "pass1"]
    torch.testing.assert_close(
        torch.tensor(resumed[cols].to_numpy(float)),
        torch.tensor(full[cols].to_numpy(float)),
        equal_nan=True,
    )


def test_a_save_stopped_between_its_renames_is_found(reasoner, tmp_path):
    model, tok = reasoner
    ckpt = tiny_run(steps=1, checkpoint_dir=str(tmp_path / "run"))
    train(copy.deepcopy(model), tok, Addition(2), ckpt)
    (tmp_path / "run").rename(tmp_path / "run.previous")  # the old one moved aside, no new one yet
    assert lm_rl.existing_checkpoint(tmp_path / "run") == tmp_path / "run.previous"
    again, _ = train(copy.deepcopy(model), tok, Addition(2), ckpt)
    assert again.step.tolist() == [0, 1]


@pytest.mark.parametrize("damage", ["truncate history.csv", "flip a byte of policy.safetensors"])
def test_a_damaged_checkpoint_is_refused_by_name_before_the_model_changes(
    reasoner, tmp_path, damage
):
    model, tok = reasoner
    ckpt = tiny_run(steps=1, lr=1e-2, checkpoint_dir=str(tmp_path))
    train(copy.deepcopy(model), tok, Addition(2), ckpt)
    name = damage.split()[-1]
    data = (tmp_path / name).read_bytes()
    if name == "history.csv":  # the last row lost: a silently shorter history before
        (tmp_path / name).write_bytes(b"\n".join(data.rstrip(b"\n").split(b"\n")[:-1]) + b"\n")
    else:  # a bit flip in the weights: silently different weights before
        (tmp_path / name).write_bytes(data[:-7] + bytes([data[-7] ^ 0x10]) + data[-6:])
    fresh = copy.deepcopy(model)
    before = [p.detach().clone() for p in fresh.parameters()]
    with pytest.raises(ValueError, match=f"{name}: corrupt or truncated"):
        train(fresh, tok, Addition(2), dataclasses.replace(ckpt, steps=2))
    assert all(torch.equal(b, p) for b, p in zip(before, fresh.parameters()))


def test_the_trainer_refuses_the_estimators_whose_inputs_it_does_not_supply():
    from rlnb.estimators import ESTIMATORS
    from rlnb.train.lm_rl import SUPPLIED

    left_out = set(ESTIMATORS) - set(algorithms())
    assert left_out == {"single_rollout", "mssr"}  # MSSR's tracker lives on the prompt bandit
    assert all(not set(ESTIMATORS[n].needs) <= SUPPLIED for n in left_out)
    with pytest.raises(ValueError, match="algorithm"):
        RLConfig(algorithm="mssr")
