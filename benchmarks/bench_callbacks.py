"""B4: overhead of the spectral callbacks in a real Lightning run (GPT-2 4x256 on CPU).

Both sides train the same GPT-2 (transformers GPT2Config(n_layer=4, n_embd=256, n_head=4),
vocab 1024, context 64) on the same procedurally generated token sequences for the same number
of steps, one torch thread. Side A: no spectral callbacks. Side B: the callbacks of
conf/callbacks/spectra.yaml at their default schedule. Runs alternate A/B after a warm-up;
prints the median wall time of each side, the overhead ratio B/A − 1, and each probe's own time
(snapshots, writing and its end plot) with each snapshot's cost — the bar is overhead ≤ 2% for the
leave-on set (weights, features, matrices) — and the fixed cost (the first and last snapshots,
the probe set, the end plots' start) against its floor. After each run the script waits for the
plots drawn in the background (printed, not counted: a run overlaps them with its test stage and
W&B's finish), so that the next run does not share the CPU with them. The default run is 1,000
steps (~15 min a side on one core): the start/end snapshots and the plots are a fixed cost that
a 100-step run cannot amortise. The Hessian and NTK probes are measured separately: their cost per snapshot is printed.

    python benchmarks/bench_callbacks.py [--steps 1000] [--reps 1] [--probes-only]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
LEAVE_ON = ("weight_spectrum", "feature_spectrum", "matrix_spectrum")


class TinyGPT(pl.LightningModule):
    """GPT-2 language model built from its config (no download), next-token loss."""

    def __init__(self, vocab: int = 1024, context: int = 64) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        # eager attention: the Hessian probe needs double backward, which SDPA lacks on CPU
        config = GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=vocab, n_positions=context,
                            bos_token_id=0, eos_token_id=0, attn_implementation="eager")
        self.model = GPT2LMHeadModel(config)
        self.loss_fn = lambda logits, y: torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        )

    def forward(self, x):
        return self.model(input_ids=x).logits

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-4)

    def spectral_matrices(self):
        return {"wte": self.model.transformer.wte.weight[:256]}


def token_data(n_seq: int = 512, context: int = 64, vocab: int = 1024) -> DataLoader:
    """Sequences from a random first-order Markov chain (learnable structure, no download)."""
    gen = torch.Generator().manual_seed(0)
    transitions = torch.softmax(3 * torch.randn(vocab, vocab, generator=gen), dim=1)
    seqs = torch.zeros(n_seq, context + 1, dtype=torch.long)
    seqs[:, 0] = torch.randint(vocab, (n_seq,), generator=gen)
    for t in range(context):
        seqs[:, t + 1] = torch.multinomial(transitions[seqs[:, t]], 1, generator=gen)[:, 0]
    return DataLoader(TensorDataset(seqs[:, :-1], seqs[:, 1:]), batch_size=16, shuffle=False)


def spectra_callbacks(names: tuple[str, ...]) -> list[pl.Callback]:
    """Instantiate the named callbacks from conf/callbacks/spectra.yaml (default schedule)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="config", overrides=["callbacks=spectra"]).callbacks
    return [instantiate(cfg[n]) for n in names]


def train(steps: int, callbacks: list[pl.Callback]) -> float:
    """Return the wall time of `trainer.fit` for `steps` steps with `callbacks`."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            max_steps=steps,
            callbacks=callbacks,
            default_root_dir=tmp,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
        )
        module, data = TinyGPT(), token_data()
        began = time.perf_counter()
        trainer.fit(module, train_dataloaders=data)
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--probes-only", action="store_true",
                        help="only time one Hessian and one NTK snapshot")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.probes_only:
        return time_costly_probes()
    train(10, [])  # warm-up
    plain, with_cb, own, per_probe, waited = [], [], [], [], []
    for _ in range(args.reps):
        plain.append(train(args.steps, []))
        cbs = spectra_callbacks(LEAVE_ON)
        costs = [time_snapshots(cb) for cb in cbs]
        with_cb.append(train(args.steps, cbs))
        own.append(sum(cb._own_s for cb in cbs))
        per_probe.append([(cb.probe, cb._own_s, cb._plot_s, cost)
                          for cb, cost in zip(cbs, costs, strict=True)])
        began = time.perf_counter()  # the plots' children, so that the next run starts alone
        for cb in cbs:
            cb.wait_for_plot()
        waited.append(time.perf_counter() - began)
    a, b = statistics.median(plain), statistics.median(with_cb)
    overhead = b / a - 1
    print(
        f"B4 GPT-2 4x256 (vocab 1024, ctx 64, batch 16), {args.steps} steps, 1 thread, "
        f"{args.reps} reps"
    )
    print(f"  no callbacks        median {a:8.2f} s   runs {[round(t, 2) for t in plain]}")
    print(f"  leave-on spectra    median {b:8.2f} s   runs {[round(t, 2) for t in with_cb]}")
    print(
        f"  callbacks' own time median {statistics.median(own):8.3f} s "
        f"({100 * statistics.median(own) / a:.2f}% of training)"
    )
    print("    the last run's probes:")
    for probe, own_s, plot_s, cost in per_probe[-1]:
        ms = ", ".join(f"{step}: {1000 * cost[step]:.0f}" for step in sorted(cost))
        print(f"    {probe:<9} {own_s:6.2f} s = {len(cost)} snapshots (ms at step {ms}) "
              f"+ plot {plot_s:4.2f} s; fixed {fixed_cost([(own_s, cost)]):5.2f} s")
    fixed = [fixed_cost([(own_s, cost) for _, own_s, _, cost in run]) for run in per_probe]
    print(f"  fixed cost (first and last snapshots, probe sets, plot starts) median "
          f"{statistics.median(fixed):.3f} s   runs {[round(t, 3) for t in fixed]}")
    print(f"  (then waited {statistics.median(waited):.2f} s for the plots drawn in the background: "
          f"not counted; the runner overlaps them with testing and W&B's finish)")
    print(
        f"  overhead (B/A - 1)  {100 * overhead:+.2f}%   bar <= 2%: "
        f"{'PASS' if overhead <= 0.02 else 'FAIL'}"
    )
    print_fixed_cost_floor(statistics.median(fixed), {probe: 2 for probe, *_ in per_probe[-1]})
    print("  (Hessian / NTK snapshot costs: --probes-only)")


def print_fixed_cost_floor(fixed_s: float, snapshots: dict[str, int]) -> None:
    """Print the floor of the leave-on set's cost at these snapshot counts: per feature snapshot
    the bare probe forward (no hooks, eval, no grad) and the float64 covariance products (one
    triangle, rows·d(d+1) FLOP per layer, at the float64 GEMM rate measured here) and the
    float64 eigvalsh of each covariance; per weight snapshot bench_weights' floor (float32 Gram +
    eigvalsh per layer); per matrix snapshot the bare float64 LAPACK call on each matrix
    (`torch.linalg.eigvals` of the square, non-symmetric embedding block). Against the ≤ 1 s
    goal for the first and last snapshots and the plots."""
    from _common import timeit
    from bench_weights import floor as weights_floor

    from callbacks.feature_spectrum import affine_map, flatten_features

    model = TinyGPT().eval()
    (feat,) = spectra_callbacks(("feature_spectrum",))
    feat._probe_set = (token_data().dataset.tensors[0][: feat.n_probe], None)  # the first batches
    feat.prepare(None, model)  # keeps the samples that max_rows token rows need
    x, layers = feat.inputs, feat.layers(model)
    rows = feat._rows_per_sample(model, layers)
    widths: list[int] = []  # the width each layer's covariance is accumulated at

    def width(mod, args, out) -> None:
        A, d = affine_map(mod), flatten_features(out, mod).shape[1]
        if d <= feat.max_dim:  # an expanding affine layer: its inputs' covariance
            widths.append(A.shape[1] if A is not None and A.shape[0] > A.shape[1] else d)

    hooks = [m.register_forward_hook(width) for _, m in layers]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    n_rows = min(feat.max_rows, x.shape[0] * rows)
    flop = sum(n_rows * d * (d + 1) for d in widths)
    a = torch.randn(1024, 1024, dtype=torch.float64)
    rate = 2 * 1024**3 / timeit(lambda: a @ a)[0]
    with torch.no_grad():
        t_fwd = timeit(lambda: model(x), reps=7)[0]
    t_cov = flop / rate
    spd = {d: torch.randn(d, d, dtype=torch.float64) for d in set(widths)}
    spd = {d: a @ a.T for d, a in spd.items()}
    t_eig = sum(timeit(lambda d=d: torch.linalg.eigvalsh(spd[d]))[0] for d in widths)
    t_w = timeit(lambda: weights_floor(model.model), reps=7)[0]
    matrices = [m.detach().double() for m in model.spectral_matrices().values()]
    t_m = timeit(lambda: [torch.linalg.eigvals(m) for m in matrices], reps=7)[0]
    n_f, n_w = snapshots.get("features", 0), snapshots.get("weights", 0)
    n_m = snapshots.get("matrices", 0)
    floor = n_f * (t_fwd + t_cov + t_eig) + n_w * t_w + n_m * t_m
    print(f"  floor of the fixed cost: {n_f} x (probe forward {1000 * t_fwd:.0f} ms + float64 "
          f"covariance products {flop / 1e9:.2f} GFLOP at {rate / 1e9:.1f} GFLOP/s = "
          f"{1000 * t_cov:.0f} ms + {len(widths)} float64 eigvalsh {1000 * t_eig:.0f} ms) + "
          f"{n_w} x weights floor {1000 * t_w:.0f} ms + {n_m} x matrices floor "
          f"{1000 * t_m:.0f} ms = {floor:.2f} s")
    verdict = "PASS" if fixed_s <= 1.0 else ("FLOOR" if floor > 1.0 else "FAIL")
    print(f"  [{verdict}] fixed cost <= 1 s: {fixed_s:.2f} s ({fixed_s / floor:.2f}x the floor"
          + (f"; the floor alone is {floor:.2f} s > 1 s)" if floor > 1.0 else ")"))


def fixed_cost(probes: list[tuple[float, dict[int, float]]]) -> float:
    """Return the fixed part of the probes' own time: each probe's own time (probe set,
    snapshots, writing, plot start) less its snapshots between the first and the last."""
    total = 0.0
    for own_s, cost in probes:
        steps = sorted(cost)
        total += own_s - sum(cost[step] for step in steps[1:-1])
    return total


def time_snapshots(cb: pl.Callback) -> dict[int, float]:
    """Wrap `cb.snapshot` so that each snapshot it records adds {step: seconds, writing
    included} to the returned dict (calls that record nothing are not counted)."""
    cost: dict[int, float] = {}
    snapshot = cb.snapshot

    def timed(trainer, pl_module, force=False):
        before, began = cb._last_step, time.perf_counter()
        snapshot(trainer, pl_module, force=force)
        if cb._last_step != before:
            cost[cb._last_step] = time.perf_counter() - began
    cb.snapshot = timed
    return cost


def time_costly_probes() -> None:
    """Print the cost of one Hessian and one NTK snapshot at their default settings."""
    for name in ("hessian_spectrum", "ntk_spectrum"):
        (cb,) = spectra_callbacks((name,))
        cb.budget_frac = None
        t = train(2, [cb])
        snapshots = 2
        print(
            f"  {name:<19} {1000 * cb._own_s / snapshots:8.0f} ms per snapshot "
            f"(fit of 2 steps: {t:.2f} s); default every {cb.every_n_steps} steps"
        )


if __name__ == "__main__":
    main()
