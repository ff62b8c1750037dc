"""The tiny reasoner: a character tokenizer, a small GPT-2 from a ``transformers`` config, and
``load_reasoner`` for the checkpoints shipped in ``data/reasoners/``.

Everything here is a plain Hugging Face object, so code written against it runs unchanged with a
real model and tokenizer. Checkpoints are safetensors only; nothing is ever unpickled.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AttentionInterface,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from rlnb.models.forward import FAST_ACTIVATION, SMALL_ATTENTION, small_attention

AttentionInterface.register(SMALL_ATTENTION, small_attention)
AttentionMaskInterface.register(SMALL_ATTENTION, eager_mask)  # an additive float mask

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
DATA_ENV = "RLNB_DATA"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json")


class CharTokenizer(PreTrainedTokenizerFast):
    """One token per character; ``<bos>`` is prepended, padding is on the left (for generation).

    Encoding text with a character outside the vocabulary raises a ``ValueError`` naming it.
    """

    def _encode_plus(self, text, text_pair=None, *args, **kwargs):
        vocab = self.get_vocab()
        texts = [text] if isinstance(text, str) else list(text)
        unknown = sorted({ch for t in texts if isinstance(t, str) for ch in t if ch not in vocab})
        if unknown:
            raise ValueError(f"text: characters not in the tokenizer's vocabulary: {unknown}")
        return super()._encode_plus(text, text_pair, *args, **kwargs)


def char_tokenizer(alphabet: str) -> CharTokenizer:
    """A ``PreTrainedTokenizerFast`` over ``alphabet``'s characters plus ``<pad>``, ``<bos>``,
    ``<eos>`` (ids 0, 1, 2). Decoding joins characters without spaces."""
    chars = sorted(set(alphabet))
    if not chars or any(len(c) != 1 for c in chars):
        raise ValueError(f"alphabet: expected a non-empty string of characters, got {alphabet!r}")
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *chars])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return CharTokenizer(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        padding_side="left",
    )


def tiny_causal_lm(
    vocab_size: int, n_layer: int = 2, n_embd: int = 128, n_head: int = 4, n_positions: int = 32,
    activation_function: str = FAST_ACTIVATION, attn_implementation: str = SMALL_ATTENTION,
) -> GPT2LMHeadModel:  # fmt: skip
    """A small GPT-2 (tied input/output embeddings, no dropout) with the given sizes, running
    ``small_attention`` and GPT-2's tanh GELU as one kernel (``FAST_ACTIVATION``) unless told
    otherwise (``build_reasoners`` names the kernels the shipped checkpoints were trained with)."""
    if n_embd % n_head:
        raise ValueError(f"n_embd: expected a multiple of n_head={n_head}, got {n_embd}")
    config = GPT2Config(
        activation_function=activation_function,
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    config._attn_implementation = attn_implementation
    return GPT2LMHeadModel(config)


def model_soup(models: Sequence[torch.nn.Module], weights: Sequence[float] | None = None):
    """A weight average of models of one architecture ("Model soups", and the reference of "SALSA:
    Soup-based Alignment Learning for Stronger Adaptation in RLHF"): a copy of ``models[0]`` whose
    every floating-point parameter and buffer is ``Σ_i w_i θ_i`` (``weights`` default to equal;
    they must sum to 1, and may leave [0, 1] to extrapolate along the line between two models).
    Integer buffers are ``models[0]``'s."""
    models = list(models)
    if not models:
        raise ValueError("models: expected at least one model")
    weights = [1 / len(models)] * len(models) if weights is None else [float(w) for w in weights]
    if len(weights) != len(models) or not abs(sum(weights) - 1) <= 1e-6:  # NaN fails too
        raise ValueError(f"weights: expected {len(models)} numbers summing to 1, got {weights}")
    states = [m.state_dict() for m in models]
    for i, state in enumerate(states[1:], 1):
        if state.keys() != states[0].keys() or any(
            state[k].shape != v.shape for k, v in states[0].items()
        ):
            raise ValueError(f"models: model {i} has other parameters or shapes than model 0")
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(
        {
            k: sum(w * s[k] for w, s in zip(weights, states)).to(v.dtype)
            if v.is_floating_point()
            else v
            for k, v in states[0].items()
        }
    )
    return soup


def loss_barrier(alphas: Sequence[float], losses: Sequence[float]) -> float:
    """The loss barrier on the line between two models: ``max_α [L(α) − ((1 − α) L(0) + α L(1))]``
    over the given ``alphas`` strictly between 0 and 1 (the barrier of "The Role of Permutation
    Invariance in Linear Mode Connectivity of Neural Networks"); ``alphas`` must include 0 and 1.
    Negative: every point between the two is better than the straight line between their losses
    (they share a basin); 0 when only the endpoints are given."""
    pairs = dict(zip((float(a) for a in alphas), (float(v) for v in losses)))
    if len(pairs) != len(alphas) or len(alphas) != len(losses) or not {0.0, 1.0} <= pairs.keys():
        raise ValueError(
            f"alphas, losses: expected distinct alphas including 0 and 1 and one loss each, got "
            f"{list(alphas)} and {len(losses)} losses"
        )
    if not all(math.isfinite(a) for a in pairs):
        raise ValueError(f"alphas: expected finite numbers, got {list(alphas)}")
    if not all(math.isfinite(v) for v in pairs.values()):
        raise ValueError(f"losses: expected finite numbers, got {list(losses)}")
    first, last = pairs[0.0], pairs[1.0]
    excess = [v - ((1 - a) * first + a * last) for a, v in pairs.items() if 0 < a < 1]
    return max(excess, default=0.0)


def data_dir() -> Path:
    """Where shipped artifacts live: ``$RLNB_DATA`` if set, else the repository's ``data/``."""
    return Path(os.environ.get(DATA_ENV, Path(__file__).resolve().parents[2] / "data"))


def shipped_reasoners() -> list[str]:
    """Names of the checkpoints in ``data/reasoners/``."""
    root = data_dir() / "reasoners"
    return (
        sorted(p.name for p in root.iterdir() if (p / "config.json").exists())
        if root.exists()
        else []
    )


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex: what shipped and training checkpoints record."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_checkpoint(path: str | Path) -> Path:
    """Check that ``path`` holds a readable safetensors checkpoint; return it as a ``Path``.

    Raises ``FileNotFoundError`` naming a missing file and ``ValueError`` naming a corrupt one.
    """
    from safetensors import safe_open

    path = Path(path)
    for name in CHECKPOINT_FILES:
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name}: missing from the checkpoint")
    for name in ("config.json", "tokenizer.json"):
        try:
            json.loads((path / name).read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path / name}: corrupt checkpoint file ({err})") from err
    try:
        with safe_open(path / "model.safetensors", framework="pt") as f:
            for key in f.keys():
                f.get_tensor(key)
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path / 'model.safetensors'}: corrupt checkpoint file ({err})") from err
    return path


def load_reasoner(name_or_path: str | Path, device="cpu"):
    """Load ``(model, tokenizer)``: a shipped name (``"addition"``) from ``data/reasoners/``, a
        local directory from there, anything else through ``from_pretrained`` (a hub id needs the
        internet). Weights are read from safetensors only; the model is returned in eval mode. Our own
    character-level reasoners are loaded with ``small_attention`` and GPT-2's tanh GELU as one
    kernel (``FAST_ACTIVATION``, the function of the ``gelu_new`` they were saved with)."""
    path = Path(name_or_path)
    if isinstance(name_or_path, str) and "/" not in name_or_path and not path.exists():
        if name_or_path not in shipped_reasoners():
            raise ValueError(
                f"name_or_path: {name_or_path!r} is neither a shipped reasoner "
                f"{shipped_reasoners()} nor a directory; pass a hub id as 'owner/name'. Shipped "
                f"reasoners are looked for in {data_dir() / 'reasoners'} (the repository's data/, "
                f"or ${DATA_ENV}): clone the repository and set {DATA_ENV} to its data/, or "
                "rebuild one with `python -m rlnb.train.build_reasoners NAME`"
            )
        path = data_dir() / "reasoners" / name_or_path
    elif not path.exists() and _looks_local(name_or_path):
        raise FileNotFoundError(f"name_or_path: {path}: directory not found")
    if path.exists():
        check_checkpoint(path)
        tiny = _is_char_tokenizer(path)
        tokenizer = (CharTokenizer if tiny else AutoTokenizer).from_pretrained(path)
        # Sequences of a dozen tokens: eager attention beats SDPA's kernels (a training step's
        # forward + backward on 128 addition answers, CPU: 20.4 → 16.7 ms), and small_attention
        # beats eager on the decoding steps; GPT-2's GELU as one kernel.
        overrides = {"attn_implementation": SMALL_ATTENTION} if tiny else {}
        if tiny and json.loads((path / "config.json").read_text()).get("activation_function") == (
            "gelu_new"
        ):
            overrides["activation_function"] = FAST_ACTIVATION  # the same function
        model, info = AutoModelForCausalLM.from_pretrained(
            path, use_safetensors=True, output_loading_info=True, **overrides
        )
        check_complete(path, model, tokenizer, info)
    else:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, use_safetensors=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.to(device).eval(), tokenizer


def _looks_local(name_or_path) -> bool:
    """A ``Path``, or a string a hub id (``owner/name``) cannot be: absolute, relative with ``.``
    or ``~``, or with more than one ``/``."""
    if isinstance(name_or_path, Path):
        return True
    return name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1


def check_complete(path: Path, model, tokenizer, loading_info: dict) -> None:
    """Raise ``ValueError`` unless ``model.safetensors`` held exactly the tensors the config's model
    has (``from_pretrained`` would otherwise leave missing ones random with only a log line) and
    every tokenizer id has a row in the model's embedding."""
    problems = {
        kind.replace("_", " "): sorted(str(k) for k in loading_info.get(kind) or ())
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        listed = "; ".join(
            f"{kind}: {', '.join(keys[:6])}{' …' * (len(keys) > 6)}"
            for kind, keys in problems.items()
        )
        raise ValueError(
            f"{path / 'model.safetensors'}: does not match config.json's model ({listed})"
        )
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ValueError(
            f"{path / 'tokenizer.json'}: {len(tokenizer)} token ids, but the model's embedding "
            f"has only {rows} rows"
        )


def _is_char_tokenizer(path: Path) -> bool:
    vocab = json.loads((path / "tokenizer.json").read_text())["model"].get("vocab", {})
    return all(len(t) == 1 or t in SPECIAL_TOKENS for t in vocab)
