"""Value models on a causal LM (rlnb.models.critic) and their training (rlnb.train.verifier):
the grouped forward against a plain one, the step positions against the task's steps, the targets
on hand-built completions, and training that lowers the loss."""

import pytest
import torch

from rlnb.decoding import sample
from rlnb.envs.tasks import ArithmeticChain
from rlnb.models.critic import ScoreModel, step_positions, verifier_scores
from rlnb.models.forward import position_ids_from_mask
from rlnb.models.lm import char_tokenizer, tiny_causal_lm
from rlnb.train.verifier import (
    score_completions,
    score_targets,
    step_prefixes,
    train_generative_verifier,
    train_score_model,
    verdict_batch,
)

TASK = ArithmeticChain(n_ops=3)


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    tok = char_tokenizer(TASK.alphabet)
    return tiny_causal_lm(len(tok), n_layer=1, n_embd=32, n_head=2, n_positions=64).eval(), tok


def samples_of(tok, pairs):
    """A ``Samples``-like batch of given (prompt, completion) pairs, completions + EOS."""
    from rlnb.decoding.sampling import Samples

    enc = tok([p for p, _ in pairs], return_tensors="pt", padding=True)
    comp = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for _, c in pairs]
    width = max(map(len, comp))
    ids = torch.full((len(pairs), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, c in enumerate(comp):
        ids[i, : len(c)], mask[i, : len(c)] = torch.tensor(c), 1
    return Samples(enc["input_ids"], enc["attention_mask"], ids, mask, torch.zeros(ids.shape),
                   [c for _, c in pairs], [p for p, _ in pairs])  # fmt: skip


PAIRS = [
    ("3+4*2-5=", "3+4=7;7*2=14;14-5=9;9"),  # correct
    ("3+4*2-5=", "3+4=8;8*2=16;16-5=11;11"),  # wrong first step
    ("6*9+2-7=", "6*9=54;54+2=57;"),  # wrong second step, unfinished, trailing delimiter
    ("1+1+1+1=", "1+1=2"),  # one step
    ("2+2+2+2=", ""),  # EOS only: no step
]


@pytest.mark.parametrize("head", ["scalar", "hl_gauss", "two_hot"])
def test_score_model_equals_a_plain_forward_at_every_prefix(lm, head):
    model, tok = lm
    scorer = ScoreModel(model, head=head, n_bins=11).eval()
    s = samples_of(tok, PAIRS)
    with torch.no_grad():
        logits = scorer(s.prompt_ids, s.prompt_mask, s.completion_ids, s.response_mask)
        ids, mask = s.input_ids, s.attention_mask
        hidden = scorer.trunk(input_ids=ids, attention_mask=mask,
                              position_ids=position_ids_from_mask(mask)).last_hidden_state  # fmt: skip
        p = s.prompt_ids.shape[1]
        plain = scorer.head.trunk(hidden[:, p - 1 :].float())
    assert logits.shape == (len(PAIRS), 1 + s.completion_ids.shape[1], scorer.head.n_bins)
    real = torch.cat([torch.ones(len(PAIRS), 1), s.response_mask.float()], 1).bool()
    assert torch.allclose(logits[real], plain[real], atol=1e-5)
    values = scorer.value(logits)
    assert values.shape == logits.shape[:2]
    if head != "scalar":
        assert ((values >= 0) & (values <= 1)).all()


def test_step_positions_align_with_the_tasks_steps(lm):
    model, tok = lm
    s = samples_of(tok, PAIRS)
    delim = tok(";", add_special_tokens=False)["input_ids"][0]
    ends = step_positions(s.completion_ids, s.response_mask, delim)
    for (_, text), cols, n in zip(PAIRS[:4], ends, s.response_mask.sum(1).tolist()):
        assert len(cols) == len(TASK.steps(text)) == len(step_prefixes(TASK, text))
        assert cols[-1] == n  # the last step ends after the last token (EOS)
        for col, prefix in zip(cols[:-1], step_prefixes(TASK, text)):
            assert col == len(prefix)  # one token per character: the column after the ";"
    sampled = sample(model, tok, ["3+4*2-5="], n=8, max_new_tokens=20, seed=0)  # any garbage
    for cols, text in zip(
        step_positions(sampled.completion_ids, sampled.response_mask, delim), sampled.text
    ):
        assert len(cols) == len(TASK.steps(text))


def test_targets_on_hand_built_completions(lm):
    _, tok = lm
    s = samples_of(tok, PAIRS)
    delim = tok(";", add_special_tokens=False)["input_ids"][0]
    oracle = score_targets(TASK, s, "oracle_steps", delim)
    by_row = {i: (oracle.columns[oracle.rows == i].tolist(), oracle.targets[oracle.rows == i].tolist()) for i in range(5)}  # fmt: skip
    assert by_row[0] == ([6, 13, 20, 22], [1.0, 1.0, 1.0, 1.0])  # after each ";" and after EOS
    assert by_row[1] == ([6, 13, 21, 24], [0.0, 0.0, 0.0, 0.0])  # wrong from the first step
    assert by_row[2] == ([7, 15, 16], [1.0, 0.0, 0.0])  # 54+2=57 is wrong; "" after the last ";"
    assert by_row[3] == ([6], [1.0])
    assert by_row[4] == ([], [])
    mc = [[0.5, 0.6, 0.7, 0.8], [0.4, 0.0, 0.0, 0.0], [0.3, 0.2, 0.0], [0.9], [0.1]]
    soft = score_targets(TASK, s, "mc", delim, mc_values=mc)
    row0 = soft.rows == 0
    assert soft.columns[soft.rows == 4].tolist() == [0]
    assert soft.targets[soft.rows == 4].tolist() == pytest.approx([0.1])
    assert soft.columns[row0].tolist() == [0, 6, 13, 20, 22]
    assert soft.targets[row0].tolist() == pytest.approx([0.5, 0.6, 0.7, 0.8, 1.0])  # last: reward
    hard = score_targets(TASK, s, "mc_steps", delim, mc_values=mc)
    assert hard.targets[hard.rows == 2].tolist() == [1.0, 0.0, 0.0]
    assert score_targets(TASK, s, "mc_steps", delim, mc_values=mc, hard=False).targets[
        hard.rows == 0].tolist() == pytest.approx([0.6, 0.7, 0.8, 1.0])  # fmt: skip
    outcome = score_targets(TASK, s, "outcome", delim)
    assert outcome.columns[outcome.rows == 0].tolist() == list(range(23))
    assert set(outcome.targets[outcome.rows == 0].tolist()) == {1.0}
    assert set(outcome.targets[outcome.rows == 1].tolist()) == {0.0}
    with pytest.raises(ValueError, match="targets"):
        score_targets(TASK, s, "prm", delim)
    with pytest.raises(ValueError, match="mc_values"):
        score_targets(TASK, s, "mc", delim)
    with pytest.raises(ValueError, match=r"mc_values\[0\]"):
        score_targets(TASK, s, "mc", delim, mc_values=[[0.5]] * 5)


@pytest.mark.parametrize("head", ["scalar", "hl_gauss"])
def test_training_a_process_reward_model_fits_the_oracle(lm, head):
    model, tok = lm
    torch.manual_seed(1)
    prompts = TASK.prompts(64, "train", seed=0)
    pairs = []
    for i, p in enumerate(prompts):  # half correct, half with one wrong step
        steps = TASK.steps(TASK.answer(p))
        if i % 2:
            lhs, result = steps[i % 3].split("=")
            steps[i % 3] = f"{lhs}={int(result) + 1}"
        pairs.append((p, ";".join(steps)))
    s = samples_of(tok, pairs)
    delim = tok(";", add_special_tokens=False)["input_ids"][0]
    targets = score_targets(TASK, s, "oracle_steps", delim)
    scorer = ScoreModel(model, head=head, n_bins=11)
    history = train_score_model(
        scorer, s, targets, steps=120, batch_size=32, lr=3e-3, progress=False
    )
    # (the cross-entropy of HL-Gauss cannot fall below its targets' entropy, hence a milder ratio)
    ratio = {"scalar": 0.5, "hl_gauss": 0.75}[head]
    assert history.loss.iloc[-10:].mean() < ratio * history.loss.iloc[:10].mean()
    scores = score_completions(scorer, s)
    predicted = scores[targets.rows, targets.columns] > 0.5
    assert (predicted == targets.targets.bool()).float().mean() > 0.9


def test_verdict_batch_labels_only_the_verdict(lm):
    _, tok = lm
    ids, mask, labels = verdict_batch(tok, ["3+4=7?", "1+1=2;2?"], ["Y", "N"])
    assert (labels != -100).sum(1).tolist() == [1, 1]
    assert tok.decode(labels[0, -1:]) == "Y" and tok.decode(labels[1, -1:]) == "N"
    assert mask[0].sum() == len("3+4=7?Y") + 1  # <bos>


def test_generative_verifier_learns_the_verdicts(lm):
    model, tok = lm
    prompts = TASK.prompts(48, "train", seed=1)
    completions = [
        TASK.answer(p) if i % 2 else TASK.answer(p)[:-1] + "0" for i, p in enumerate(prompts)
    ]
    rewards = torch.tensor(TASK.rewards(prompts, completions))
    before = verifier_scores(model, tok, prompts, completions)
    verifier, history = train_generative_verifier(
        model, tok, TASK, prompts, completions, steps=80, batch_size=48, lr=3e-3, progress=False
    )
    after = verifier_scores(verifier, tok, prompts, completions)
    assert ((before >= 0) & (before <= 1)).all() and verifier is not model
    assert history.loss.iloc[-5:].mean() < 0.5 * history.loss.iloc[:5].mean()
    assert ((after > 0.5) == rewards.bool()).float().mean() > 0.9
    with pytest.raises(ValueError, match="prompts, completions"):
        verifier_scores(model, tok, prompts, completions[:3])
