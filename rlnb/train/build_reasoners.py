"""Rebuild the tiny reasoners shipped in ``data/reasoners/``: ``python -m rlnb.train.build_reasoners``.

Each reasoner is a ``tiny_causal_lm`` trained with ``train_sft`` from a fixed seed on one thread
(so the weights are the same bits on every run on a machine) and *stopped early*: at the first
evaluation where greedy accuracy on a fixed sample of train prompts reaches ``stop_greedy`` and
pass@16 at temperature 1 reaches ``stop_pass16``. That leaves the headroom RL and verifiers need:
greedy pass@1 well below 1, pass@16 near 1. The test split is only used for the reported numbers,
which go to ``metrics.json`` next to the weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from rlnb.decoding.selection import evaluate_pass_at_k
from rlnb.envs.tasks import (
    STEP_CONTEXT,
    Addition,
    ArithmeticChain,
    Composition,
    StepwiseComposition,
)
from rlnb.models.lm import (
    char_tokenizer,
    check_checkpoint,
    check_complete,
    data_dir,
    sha256,
    tiny_causal_lm,
)
from rlnb.train.lm_sft import SFTConfig, train_sft


@dataclass
class ReasonerSpec:
    task: str = "addition"
    task_args: dict = field(default_factory=lambda: {"digits": 2})
    model_args: dict = field(
        default_factory=lambda: {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 16}
    )
    sft: SFTConfig = field(
        default_factory=lambda: SFTConfig(
            steps=2000, batch_size=64, lr=3e-4, seed=0, progress=False
        )
    )
    eval_every: int = 10  # steps between checks of the stopping rule
    eval_from: int = 0  # no check before this step
    stop_greedy: float | None = 0.3  # stop once greedy accuracy on the check prompts reaches
    stop_pass16: float = 0.85  # this and pass@16 at temperature 1 this (None: no rule, sft.steps)
    n_check_prompts: int = 256
    n_test_prompts: int | None = None  # the reported numbers: the whole test split, or a sample
    init: str | None = None  # start from this shipped reasoner (from data/, never from --out)


SOUP_SFT_STEPS = 150  # notebook 10c's two SFT runs from "addition"
CHAIN_STEPS = 385  # where "chain" met its stopping rule (data/reasoners/chain/metrics.json)

# The kernels the shipped checkpoints were trained and measured with (sample runs these models
# through their own forward: rlnb.models.gpt2.plain_gpt2), so a rebuild is bit-for-bit; rlnb now
# runs the same functions in fewer kernels (tiny_causal_lm's defaults, load_reasoner).
TRAINED_WITH = {"activation_function": "gelu_new", "attn_implementation": "sdpa"}

SPECS = {
    "addition": ReasonerSpec(),
    # Single functions and 10 of the 20 pairs; stopped while the unseen pairs still gain from
    # sampling (greedy ≈ 0.15, pass@16 ≈ 0.45 on them), as notebook 10a needs.
    "composition": ReasonerSpec(
        task="composition",
        task_args={"length": 4, "n_train_pairs": 10},
        stop_greedy=0.5,
        stop_pass16=0.85,
    ),
}
_STEPWISE_MODEL = {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": STEP_CONTEXT}
SPECS |= {
    # Writes its steps; stopped while greedy is still wrong on most test prompts but sampling
    # finds a right chain (the values, verifiers and search of notebooks 08b on need both).
    "chain": ReasonerSpec(
        task="chain",
        task_args={"n_ops": 3},
        model_args=_STEPWISE_MODEL,
        sft=SFTConfig(steps=2000, batch_size=64, lr=1e-3, seed=0, progress=False),
        eval_every=5,
        eval_from=300,
        n_check_prompts=512,
        stop_greedy=0.3,
        stop_pass16=0.82,
        n_test_prompts=2000,
    ),
    # The same prompts answered without steps, trained for exactly as many steps as "chain"
    # needed to meet its stopping rule (the same budget; set from chain's metrics.json).
    "chain_oneshot": ReasonerSpec(
        task="chain",
        task_args={"n_ops": 3, "show_steps": False},
        model_args=_STEPWISE_MODEL,
        sft=SFTConfig(steps=CHAIN_STEPS, batch_size=64, lr=1e-3, seed=0, progress=False),
        stop_greedy=None,
        n_test_prompts=2000,
    ),
    # Single functions (and the 10 seen pairs) mastered, written as g(x)=…;f(…)=…; the test
    # split is the 10 unseen pairs, reported whatever they are.
    "stepwise_composition": ReasonerSpec(
        task="stepwise_composition",
        task_args={"length": 4, "n_train_pairs": 10},
        model_args=_STEPWISE_MODEL,
        sft=SFTConfig(steps=3000, batch_size=64, lr=1e-3, seed=0, progress=False),
        stop_greedy=0.9,
        stop_pass16=0.95,
    ),
}
# Two continuations of "addition"'s SFT from its weights, differing only in the order of the
# train prompts (the seed): the two SFT models whose weight average is notebook 10c's reference
# (SALSA). A fixed number of steps, no stopping rule.
SPECS |= {
    f"addition_sft_{name}": ReasonerSpec(
        init="addition",
        sft=SFTConfig(steps=SOUP_SFT_STEPS, batch_size=64, lr=3e-4, seed=seed, progress=False),
        stop_greedy=None,
    )
    for name, seed in (("a", 1), ("b", 2))
}
TASKS = {
    "addition": Addition,
    "composition": Composition,
    "chain": ArithmeticChain,
    "stepwise_composition": StepwiseComposition,
}


def build(name: str, out_root: Path | None = None) -> dict:
    """Train, stop early, save ``data/reasoners/<name>/`` and return its metrics."""
    spec = SPECS[name]
    torch.set_num_threads(1)
    torch.manual_seed(spec.sft.seed)
    task = TASKS[spec.task](**spec.task_args)
    tokenizer = char_tokenizer(task.alphabet)
    if spec.init is None:
        model = tiny_causal_lm(len(tokenizer), **spec.model_args, **TRAINED_WITH)
    else:  # as saved (gelu_new), with the eager attention these continuations were trained with
        path = check_checkpoint(data_dir() / "reasoners" / spec.init)
        model, info = AutoModelForCausalLM.from_pretrained(
            path, attn_implementation="eager", use_safetensors=True, output_loading_info=True
        )
        check_complete(path, model, tokenizer, info)
        model.train()
        differ = {k: v for k, v in spec.model_args.items() if getattr(model.config, k) != v}
        if differ or len(tokenizer) != model.config.vocab_size:
            raise ValueError(
                f"init: {spec.init!r} is not a model of this spec (model_args {differ}, vocabulary "
                f"{model.config.vocab_size} against the task's {len(tokenizer)})"
            )
    check_prompts = task.prompts(spec.n_check_prompts, "train", seed=12345)
    checks = []

    def stopping_rule(step, model):
        if spec.stop_greedy is None or step < spec.eval_from or step % spec.eval_every:
            return
        model.eval()
        greedy = evaluate_pass_at_k(
            model, tokenizer, task, check_prompts, n=1, ks=(1,), temperature=0
        )
        sampled = evaluate_pass_at_k(model, tokenizer, task, check_prompts, n=16, ks=(16,))
        model.train()
        checks.append({"step": step, "greedy": greedy[1], "pass16": sampled[16]})
        if greedy[1] >= spec.stop_greedy and sampled[16] >= spec.stop_pass16:
            raise StopIteration

    history, _ = train_sft(model, tokenizer, task, spec.sft, callbacks=[stopping_rule])
    test = task.split("test")
    if spec.n_test_prompts is not None and spec.n_test_prompts < len(test):
        test = task.prompts(spec.n_test_prompts, "test", seed=0)
    greedy = evaluate_pass_at_k(model, tokenizer, task, test, n=1, ks=(1,), temperature=0)
    sampled = evaluate_pass_at_k(model, tokenizer, task, test, n=16, ks=(1, 4, 16))

    out = (out_root or data_dir() / "reasoners") / name
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    metrics = {
        "name": name,
        "task": spec.task,
        "task_args": spec.task_args,
        "model_args": spec.model_args,
        "init": spec.init,
        "sft": asdict(spec.sft),
        "stopped_at_step": int(history["step"].iloc[-1]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "model_safetensors_bytes": (out / "model.safetensors").stat().st_size,
        "model_safetensors_sha256": sha256(out / "model.safetensors"),
        "test_prompts": len(test),
        "test_prompts_of": len(task.split("test")),
        "test_greedy_pass1": greedy[1],
        "test_pass1_t1": sampled[1],
        "test_pass4_t1": sampled[4],
        "test_pass16_t1": sampled[16],
        "checks": checks,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(SPECS), help=f"any of {list(SPECS)}")
    parser.add_argument("--out", type=Path, default=None, help="instead of data/reasoners/")
    args = parser.parse_args(argv)
    for name in args.names:
        if name not in SPECS:
            parser.error(f"unknown reasoner {name!r}; expected one of {list(SPECS)}")
        m = build(name, args.out)
        summary = {k: v for k, v in m.items() if k not in ("checks", "sft")}
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
