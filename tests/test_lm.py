"""The character tokenizer, the tiny GPT-2 and loading checkpoints (safetensors only)."""

import json
import random
import shutil

import pytest
import torch
from transformers import AutoTokenizer

from rlnb.envs.tasks import Addition, Composition
from rlnb.models.lm import (
    CharTokenizer,
    char_tokenizer,
    data_dir,
    load_reasoner,
    loss_barrier,
    model_soup,
    sha256,
    tiny_causal_lm,
)


@pytest.mark.parametrize("alphabet", [Addition.alphabet, Composition.alphabet])
def test_tokenizer_round_trips_random_strings(alphabet):
    tok = char_tokenizer(alphabet)
    rng = random.Random(0)
    for _ in range(50):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id] == [0, 1, 2]
    assert len(tok) == 3 + len(set(alphabet))


def test_tokenizer_pads_left_and_names_unknown_characters(tmp_path):
    tok = char_tokenizer(Addition.alphabet)
    batch = tok(["1+2=", "10+20="], padding=True)
    assert batch["input_ids"][0][:2] == [0, 0] and batch["attention_mask"][0][:2] == [0, 0]
    with pytest.raises(ValueError, match=r"\['a', 'x'\]"):
        tok(["12+x=", "a"])
    with pytest.raises(ValueError, match="alphabet"):
        char_tokenizer("")
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)  # a plain fast tokenizer, same ids
    assert again("07+35=")["input_ids"] == tok("07+35=")["input_ids"]


def test_tiny_causal_lm_sizes_and_errors():
    model = tiny_causal_lm(15, n_layer=1, n_embd=32, n_head=2, n_positions=8)
    assert model.config.n_layer == 1 and model.get_input_embeddings().weight.shape == (15, 32)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    with pytest.raises(ValueError, match="n_embd"):
        tiny_causal_lm(15, n_embd=30, n_head=4)


@pytest.mark.parametrize(
    "name, greedy_range, min_pass16",
    [
        ("addition", (0.2, 0.5), 0.8),
        ("composition", (0.05, 0.3), 0.3),  # composition: unseen pairs
        ("chain", (0.2, 0.5), 0.8),
        ("chain_oneshot", (0.0, 0.2), 0.2),  # the same budget without steps: far below chain
        ("stepwise_composition", (0.05, 0.4), 0.2),  # unseen pairs, reported whatever they are
        ("addition_sft_a", (0.6, 0.95), 0.9),  # addition's SFT continued 150 steps, two orders
        ("addition_sft_b", (0.6, 0.95), 0.9),
    ],
)
def test_shipped_reasoners_load_offline_and_match_their_record(name, greedy_range, min_pass16):
    model, tok = load_reasoner(name)
    path = data_dir() / "reasoners" / name
    metrics = json.loads((path / "metrics.json").read_text())
    assert isinstance(tok, CharTokenizer) and not model.training
    assert (path / "model.safetensors").stat().st_size < 2 * 2**20
    assert sha256(path / "model.safetensors") == metrics["model_safetensors_sha256"]
    assert sum(p.numel() for p in model.parameters()) == metrics["parameters"]
    assert greedy_range[0] <= metrics["test_greedy_pass1"] <= greedy_range[1]
    assert metrics["test_pass16_t1"] >= min_pass16


@pytest.fixture
def checkpoint(tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(data_dir() / "reasoners" / "addition", dst)
    return dst


def test_load_reasoner_names_a_missing_file(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, checkpoint / "pytorch_model.bin")  # a pickle: never loaded
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_reasoner(checkpoint)


def test_load_reasoner_names_a_corrupt_file(checkpoint):
    data = (checkpoint / "model.safetensors").read_bytes()
    (checkpoint / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors: corrupt"):
        load_reasoner(checkpoint)
    (checkpoint / "model.safetensors").write_bytes(data)
    (checkpoint / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: corrupt"):
        load_reasoner(checkpoint)


def test_load_reasoner_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="shipped reasoner") as err:
        load_reasoner("multiplication")
    message = str(err.value)  # where it looked and how to get the data
    assert str(data_dir() / "reasoners") in message and "RLNB_DATA" in message
    assert "build_reasoners" in message


def test_a_checkpoint_with_half_its_tensors_is_refused_naming_them(checkpoint):
    from safetensors.torch import load_file, save_file

    tensors = load_file(checkpoint / "model.safetensors")
    kept = dict(list(tensors.items())[: len(tensors) // 2])
    save_file(kept, checkpoint / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        ValueError, match="model.safetensors: does not match .*missing keys: "
    ) as err:
        load_reasoner(checkpoint)
    dropped = sorted(set(tensors) - set(kept))
    assert dropped[0] in str(err.value)


def test_tokenizer_ids_beyond_the_embedding_are_refused(checkpoint):
    spec = json.loads((checkpoint / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["Z"] = max(vocab.values()) + 1  # one more character than the model has rows for
    (checkpoint / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="tokenizer.json: 16 token ids, but the model's embedding"):
        load_reasoner(checkpoint)


def test_a_missing_local_directory_is_not_a_hub_error(tmp_path):
    for path in (tmp_path / "nowhere", str(tmp_path / "nowhere"), "./no/such/dir"):
        with pytest.raises(FileNotFoundError, match="directory not found"):
            load_reasoner(path)


def test_model_soup_is_the_weighted_average_of_every_parameter():
    torch.manual_seed(0)
    a, b, c = (tiny_causal_lm(15, n_layer=1, n_embd=32, n_head=2, n_positions=8) for _ in range(3))
    soup = model_soup([a, b, c], [0.5, 0.3, 0.2])
    for name, p in soup.named_parameters():
        parts = [dict(m.named_parameters())[name] for m in (a, b, c)]
        expected = 0.5 * parts[0] + 0.3 * parts[1] + 0.2 * parts[2]
        torch.testing.assert_close(p, expected)
    assert (
        soup is not a
        and a.state_dict()["lm_head.weight"].data_ptr() != soup.lm_head.weight.data_ptr()
    )
    torch.testing.assert_close(
        model_soup([a, b]).lm_head.weight, (a.lm_head.weight + b.lm_head.weight) / 2
    )
    assert (
        soup.lm_head.weight.data_ptr() == soup.get_input_embeddings().weight.data_ptr()
    )  # still tied
    with pytest.raises(ValueError, match="weights"):
        model_soup([a, b], [0.5, 0.6])
    with pytest.raises(ValueError, match="models"):
        model_soup([a, tiny_causal_lm(15, n_layer=1, n_embd=16, n_head=2, n_positions=8)])
    with pytest.raises(ValueError, match="models"):
        model_soup([])
    with pytest.raises(ValueError, match="weights"):
        model_soup([a, b], [float("nan"), 0.5])


def test_loss_barrier_is_the_largest_excess_over_the_straight_line():
    assert loss_barrier([0, 0.5, 1], [1.0, 2.5, 2.0]) == pytest.approx(1.0)  # line at 1.5
    assert loss_barrier([0, 0.25, 0.5, 1], [1.0, 0.9, 0.8, 1.0]) == pytest.approx(-0.1)
    assert loss_barrier([1, 0], [3.0, 1.0]) == 0.0  # only the endpoints
    assert loss_barrier([-0.5, 0, 1, 1.5], [9.0, 1.0, 1.0, 9.0]) == 0.0  # outside [0, 1] ignored
    with pytest.raises(ValueError, match="alphas"):
        loss_barrier([0, 0.5], [1.0, 1.0])
    with pytest.raises(ValueError, match="alphas"):
        loss_barrier([0, 1], [1.0])
    with pytest.raises(ValueError, match="losses"):
        loss_barrier([0, 0.5, 1], [1.0, float("nan"), 1.0])
    with pytest.raises(ValueError, match="alphas"):
        loss_barrier([0, float("nan"), 1], [1.0, 1.0, 1.0])
