"""B-mamba: tokens per second of our Mamba LM (tasks/mamba_modulation) against the
`transformers` Mamba slow path (MambaForCausalLM without the CUDA kernels) on the same config.

Config: the task's default (vocab 256, d_model 64, 2 layers, d_state 16, expand 2). The
references: transformers' default slow path (a sequential scan over time, `hf-sequential`) and
the same with `use_mambapy=True` (mambapy's parallel scan, `hf-mambapy`). Measured:
training (forward + backward + AdamW step, batch 32 at L_train = 64) and evaluation (no grad,
batch 8 at 16 x L_train = 1024). Prints tokens/s of each and the ratios ours / reference.
Target (the spec found the slow path unusable for training on CPU): ours >= 1x on each.
``--device cuda`` runs both on the GPU; ``--reps`` sets the repetitions; ``--eval-len`` the
evaluation length.
"""

from __future__ import annotations

import argparse
import types
import warnings

from _common import bar, header, timeit  # first: pins every library to one thread

# isort: split
import torch
import torch.nn.functional as F

from tasks.mamba_modulation.model import build_lm

VOCAB, D, LAYERS, N, EXPAND, L_TRAIN = 256, 64, 2, 16, 2, 64


def ours(device: torch.device) -> torch.nn.Module:
    cfg = types.SimpleNamespace(d_model=D, n_layers=LAYERS, d_state=N, expand=EXPAND,
                                a_init="long_memory", backbone="mambapy")
    return build_lm(cfg, VOCAB, 0).to(device)


def theirs(device: torch.device, use_mambapy: bool) -> tuple:
    """Return (forward: tokens -> logits, model) of transformers' MambaForCausalLM on the same
    config; without mamba_ssm it runs the slow path: a sequential scan (default), or
    mambapy's parallel scan with use_mambapy=True."""
    from transformers import MambaConfig, MambaForCausalLM

    cfg = MambaConfig(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS, state_size=N,
                      expand=EXPAND, use_mambapy=use_mambapy)
    model = MambaForCausalLM(cfg).to(device)
    return lambda tokens: model(input_ids=tokens).logits, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--eval-len", type=int, default=16 * L_TRAIN)
    args = parser.parse_args()
    device = torch.device(args.device)
    header("B-mamba: Mamba LM tokens/s, ours vs transformers' slow path", device)
    warnings.filterwarnings("ignore")
    gen = torch.Generator().manual_seed(0)
    train = torch.randint(0, VOCAB, (32, L_TRAIN + 1), generator=gen).to(device)
    evalx = torch.randint(0, VOCAB, (8, args.eval_len), generator=gen).to(device)
    lm = ours(device)
    fwd_seq, hf_seq = theirs(device, use_mambapy=False)
    fwd_par, hf_par = theirs(device, use_mambapy=True)
    rows = {}
    for name, fwd, params in (("ours", lm, lm.parameters()),
                              ("hf-sequential", fwd_seq, hf_seq.parameters()),
                              ("hf-mambapy", fwd_par, hf_par.parameters())):
        opt = torch.optim.AdamW(params, lr=1e-3)

        def step(fwd=fwd, opt=opt) -> None:
            logits = fwd(train[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), train[:, 1:].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()

        def evaluate(fwd=fwd) -> None:
            with torch.no_grad():
                fwd(evalx)

        t_train, _ = timeit(step, reps=args.reps)
        t_eval, _ = timeit(evaluate, reps=args.reps)
        rows[name] = (train[:, :-1].numel() / t_train, evalx.numel() / t_eval)
        print(f"  {name:>13}: train {rows[name][0]:9.0f} tok/s ({t_train:.3f} s/step), "
              f"eval at L={args.eval_len}: {rows[name][1]:9.0f} tok/s ({t_eval:.3f} s)")
    for ref in ("hf-sequential", "hf-mambapy"):
        r_train = rows["ours"][0] / rows[ref][0]
        r_eval = rows["ours"][1] / rows[ref][1]
        bar(f"training tokens/s, ours / {ref}", r_train >= 1.0, f"{r_train:.2f}x")
        bar(f"evaluation tokens/s at L={args.eval_len}, ours / {ref}", r_eval >= 1.0,
            f"{r_eval:.2f}x")


if __name__ == "__main__":
    main()
