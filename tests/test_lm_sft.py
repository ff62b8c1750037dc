"""Supervised fine-tuning: labels only on the answer, the loss falls, runs are reproducible."""

import pytest
import torch

from rlnb.envs.tasks import Addition
from rlnb.models.lm import char_tokenizer, tiny_causal_lm
from rlnb.train.lm_sft import SFTConfig, answer_batch, train_sft


def test_answer_batch_masks_the_prompt_and_padding():
    tok = char_tokenizer(Addition.alphabet)
    ids, mask, labels = answer_batch(tok, ["1+2=", "10+20="], ["3", "30"])
    assert tok.decode(ids[1], skip_special_tokens=True) == "10+20=30"
    assert ids[1, -1] == tok.eos_token_id and ids[0, :3].tolist() == [0, 0, 0]
    assert mask[0].tolist() == [0, 0, 0] + [1] * 7
    kept = labels[labels != -100]
    assert tok.decode(kept, skip_special_tokens=True) == "330"
    assert (labels != -100).sum(1).tolist() == [2, 3]  # answer + EOS


def run(seed, steps=60):
    torch.manual_seed(seed)
    task = Addition(1)
    tok = char_tokenizer(task.alphabet)
    model = tiny_causal_lm(len(tok), n_layer=1, n_embd=32, n_head=2, n_positions=16)
    config = SFTConfig(steps=steps, batch_size=32, lr=3e-3, log_every=10, seed=seed, progress=False)
    return train_sft(model, tok, task, config)[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_falls_and_runs_reproduce(seed):
    history = run(seed)
    assert list(history.columns) == ["step", "loss", "lr"] and history["step"].iloc[-1] == 60
    assert history["loss"].iloc[-1] < 0.6 * history["loss"].iloc[0]
    assert history.equals(run(seed))


def test_a_callback_can_stop_training():
    def stop_at_25(step, model):
        if step == 25:
            raise StopIteration

    torch.manual_seed(0)
    task = Addition(1)
    tok = char_tokenizer(task.alphabet)
    model = tiny_causal_lm(len(tok), n_layer=1, n_embd=32, n_head=2, n_positions=16)
    config = SFTConfig(steps=100, batch_size=8, log_every=10, progress=False)
    history, _ = train_sft(model, tok, task, config, callbacks=[stop_at_25])
    assert history["step"].tolist() == [10, 20, 25] and not model.training
