"""B3: empirical NTK vs the torch.func recipe (vmap(jacrev) + einsum, the NTK tutorial).

64 inputs, 10 outputs, float64, full (n, n, C, C) kernel. Models: an MLP (100-256-256-10,
tanh) and a small CNN (two 3x3 convs + linear head on 3x16x16 inputs); on both
``ntk_matrix(method="auto")`` takes the structured path (per-layer identity for Linear layers,
Gram matrix of per-sample gradients for Conv2d layers); the CNN's Jacobian path is timed
too. The baseline computes the per-sample Jacobians once (x1 = x2, a slightly stronger baseline
than the tutorial's call with two inputs) and sums 'Naf,Mbf->NMab' einsums over the parameters.
Targets: >= 10x faster (MLP and CNN), relative error <= 1e-5 (max-abs gap over max-abs entry).
LoRA case (the linearization task's kernel): the small GPT-2-style LM (4 layers, d = 64,
eager attention) with LoRA r = 4 on q, v of every layer (B ≠ 0, so A and B both count; 4,096
parameters), 64 right-padded sequences of 32 tokens, 2 logits, float64: the structured LoRA path
of ``ntk_matrix`` vs vmap(jacrev) over the LoRA parameters; targets >= 10x and relative error
<= 1e-10.
``--device cuda`` runs both sides on the GPU; ``--reps`` sets the repetitions.
"""

from __future__ import annotations

from _common import bar, header, parse_args, timeit  # first: pins every library to one thread

# isort: split
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from callbacks.spectra import ntk_matrix, ntk_topk
from callbacks.spectra.ntk import flatten_ntk

REPS = 5


def tutorial_ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def fnet_single(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(fnet_single), (None, 0))(params, x)
    jac = [j.flatten(2) for j in jac.values()]
    return torch.stack([torch.einsum("Naf,Mbf->NMab", j, j) for j in jac]).sum(0)


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3)
        self.c2 = nn.Conv2d(16, 32, 3)
        self.head = nn.Linear(32 * 12 * 12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.c2(torch.tanh(self.c1(x)))).flatten(1))


def lora_model() -> tuple[nn.Module, torch.Tensor]:
    """Return the LoRA classifier of the linearization task (float64) and 64 token rows."""
    from tasks.small_lm.config import BackboneConfig
    from tasks.small_lm.lora import add_lora
    from tasks.small_lm.model import SequenceClassifier, build_backbone

    cfg = BackboneConfig()
    clf = SequenceClassifier(build_backbone(cfg).transformer, 2, cfg.pad_id)
    for p in clf.parameters():
        p.requires_grad_(False)
    add_lora(clf.transformer, list(range(cfg.n_layers)), ["q", "v"], 4, 1.0, 0.1, 0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (64, cfg.seq_len), generator=gen)
    lengths = torch.randint(16, cfg.seq_len + 1, (64,), generator=gen)
    x[torch.arange(cfg.seq_len)[None, :] >= lengths[:, None]] = cfg.pad_id
    return clf.double().eval(), x


def backward_floor(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Return ∂f_c/∂θ summed over the batch for each output c: one forward and C batched
    backward passes through the model, which every exact per-sample Jacobian of θ also needs."""
    params = [p for p in model.parameters() if p.requires_grad]
    f = model(x)
    C = f.shape[1]
    E = torch.eye(C, dtype=f.dtype, device=f.device)[:, None, :].expand(C, *f.shape)
    return torch.autograd.grad(f, params, grad_outputs=E, is_grads_batched=True)


def gemm_rate(dtype: torch.dtype, device: torch.device) -> float:
    """FLOP/s of this machine's (n·C × F) @ (F × n·C) product at the CNN's sizes (640, 4640)."""
    a = torch.randn(640, 4640, dtype=dtype, device=device)
    t, _ = timeit(lambda: a @ a.T, reps=REPS)
    return 2 * 640 * 640 * 4640 / t


def conv_layers(cnn: CNN, x: torch.Tensor) -> list[tuple[nn.Conv2d, tuple[int, ...], int, int]]:
    """Return (conv, input shape, P output positions, in·k²) for each conv of the CNN on x."""
    out, h = [], x
    for conv in (cnn.c1, cnn.c2):
        a, h = h, torch.tanh(conv(h))
        inner = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        out.append((conv, tuple(a.shape), h.shape[-1] * h.shape[-2], inner))
    return out


def cnn_floor_flops(cnn: CNN, x: torch.Tensor, n_out: int) -> dict[str, float]:
    """FLOPs every exact full-kernel method pays on the CNN, by part:

    * per-sample weight gradients of each conv, G_ic = Δ_ic · unfold(a_i)ᵀ:
      2 · nC · out · P · (in·k²) (Δ the backpropagated output gradient at P positions);
    * their Gram, upper triangle only: nC·(nC + 1) · F (F = out·in·k² + out, bias included);
    * the C backward passes for Δ: ≈ 2x the forward's conv FLOPs per output, 2 · nC · out · P ·
      (in·k²) per conv (input gradient and its convolution);
    * the linear head by the per-layer identity (Δ Δᵀ)∘(a aᵀ): 2·(nC)²·C + 2·n²·D.
    """
    n = x.shape[0]
    nc = n * n_out
    flops = {"per-sample gradients": 0.0, "Gram (upper)": 0.0, "backward for Δ": 0.0}
    for conv, _, P, inner in conv_layers(cnn, x):
        F = conv.out_channels * inner + conv.out_channels
        flops["per-sample gradients"] += 2 * nc * conv.out_channels * P * inner
        flops["Gram (upper)"] += nc * (nc + 1) * F
        flops["backward for Δ"] += 2 * nc * conv.out_channels * P * inner
    D = cnn.head.in_features
    flops["linear head"] = 2 * nc * nc * n_out + 2 * n * n * D
    return flops


def cnn_product_floor(cnn: CNN, x: torch.Tensor, n_out: int) -> dict[str, float]:
    """Seconds of the same unavoidable products run bare (random operands of their exact shapes,
    nothing around them), each timed here: the forward; each conv's per-sample weight gradients
    as one batched matmul (n, nC/n·out, P) @ (n, P, in·k²); the input gradient of every conv
    but the first for nC output gradients at once (``conv2d_input``); the head's input gradient
    (nC, C) @ (C, D); each Gram of the (nC, F) per-sample gradients at half a full matmul's time
    (what an ideal symmetric rank-k update would take). The floor of any method built on this
    CPU's torch kernels at these shapes."""
    n, dev, dt = x.shape[0], x.device, x.dtype
    nc = n * n_out
    rnd = lambda *shape: torch.randn(*shape, dtype=dt, device=dev)  # noqa: E731
    with torch.no_grad():
        t = {"forward": timeit(lambda: cnn(x), reps=REPS)[0]}
    t["per-sample gradients"] = t["input gradients"] = t["Gram (half a matmul)"] = 0.0
    for i, (conv, a_shape, P, inner) in enumerate(conv_layers(cnn, x)):
        o = conv.out_channels
        D, U = rnd(n, n_out * o, P), rnd(n, P, inner)
        t["per-sample gradients"] += timeit(lambda D=D, U=U: torch.bmm(D, U), reps=REPS)[0]
        if i > 0:  # Δ of the first conv's output needs the second's input gradient only
            with torch.no_grad():
                z_shape = conv(torch.zeros(1, *a_shape[1:], dtype=dt, device=dev)).shape[1:]
            Dz, inp = rnd(nc, *z_shape), (nc, *a_shape[1:])
            t["input gradients"] += timeit(lambda Dz=Dz, inp=inp, w=conv.weight:
                                           torch.nn.grad.conv2d_input(inp, w, Dz), reps=REPS)[0]
        G = rnd(nc, o * inner + o)
        t["Gram (half a matmul)"] += 0.5 * timeit(lambda G=G: G @ G.T, reps=REPS)[0]
    E, W = rnd(nc, n_out), rnd(n_out, cnn.head.in_features)
    t["input gradients"] += timeit(lambda: E @ W, reps=REPS)[0]
    return t


def run(label: str, model: nn.Module, x: torch.Tensor, target: float | None,
        tol: float = 1e-5, info: bool = True) -> list[bool]:
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"\n--- {label}: {n_params} parameters, x {tuple(x.shape)} ---")
    t_base, K_base = timeit(lambda: tutorial_ntk(model, x), reps=REPS)
    t_us, K_us = timeit(lambda: ntk_matrix(model, x), reps=REPS)
    err = ((K_us - K_base).abs().max() / K_base.abs().max()).item()
    ratio = t_base / t_us
    print(
        f"  median time: vmap(jacrev)+einsum {t_base:.3f}s | ntk_matrix(auto) {t_us:.3f}s "
        f"-> {ratio:.1f}x; relative error {err:.1e}"
    )
    if info:
        t_tr, _ = timeit(lambda: ntk_matrix(model, x, trace_outputs=True), reps=REPS)
        t_top, res = timeit(lambda: ntk_topk(model, x, k=5), reps=3)
        top_dense = torch.linalg.eigvalsh(flatten_ntk(K_base)).flip(0)[:5]
        top_err = ((res.eigenvalues - top_dense).abs() / top_dense).max().item()
        print(
            f"  (info) trace_outputs=True: {t_tr:.3f}s; ntk_topk(k=5, matrix-free): {t_top:.3f}s, "
            f"{res.n_matvecs} products, top-5 relative error {top_err:.1e}"
        )
    out = [bar(f"relative error <= {tol:g}", err <= tol, f"{err:.1e}")]
    if target is not None:
        out.append(bar(f"speed >= {target:g}x", ratio >= target, f"{ratio:.1f}x"))
    else:
        print(f"  (no speed target for this model: {ratio:.2f}x)")
    return out


def main() -> None:
    global REPS
    args = parse_args(__doc__)
    device, REPS = args.device, args.reps
    header("B3 NTK: callbacks.spectra.ntk_matrix vs torch.func vmap(jacrev)+einsum", device)
    torch.manual_seed(0)
    results = []
    mlp = nn.Sequential(
        nn.Linear(100, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10)
    ).double()
    x = torch.randn(64, 100, dtype=torch.float64)  # drawn on the CPU: the same on every device
    results += run("MLP 100-256-256-10 (structured)", mlp.to(device), x.to(device), 10.0)
    cnn = CNN().double()
    xc = torch.randn(64, 3, 16, 16, dtype=torch.float64)
    cnn, xc = cnn.to(device), xc.to(device)
    results += run("CNN conv3x3(16)-conv3x3(32)-linear (structured)", cnn, xc, 10.0)
    t_jac, _ = timeit(lambda: ntk_matrix(cnn, xc, method="jacobian"), reps=min(3, REPS))
    print(f"  (info) CNN with method='jacobian': {t_jac:.3f}s")
    rate = gemm_rate(torch.float64, device)
    parts = cnn_floor_flops(cnn, xc, 10)
    total = sum(parts.values())
    t_base, _ = timeit(lambda: tutorial_ntk(cnn, xc), reps=min(3, REPS))
    t_ours, _ = timeit(lambda: ntk_matrix(cnn, xc), reps=REPS)
    floor = total / rate
    print(f"  (floor) float64 GEMM rate here {rate / 1e9:.1f} GFLOP/s; unavoidable FLOPs "
          + ", ".join(f"{k} {v / 1e9:.2f}G" for k, v in parts.items())
          + f"; total {total / 1e9:.2f} GFLOP = {floor:.3f}s at that rate")
    print(f"  (floor) ours {t_ours:.3f}s = {t_ours / floor:.2f}x the floor; vmap(jacrev) "
          f"{t_base:.3f}s; the floor bounds the speed-up by {t_base / floor:.1f}x "
          f"(ours {t_base / t_ours:.1f}x)")
    bare = cnn_product_floor(cnn, xc, 10)
    t_bare = sum(bare.values())
    print("  (floor) the same products run bare at their shapes: "
          + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in bare.items())
          + f"; total {t_bare:.3f}s: ours {t_ours / t_bare:.2f}x it; it bounds the speed-up by "
          f"{t_base / t_bare:.1f}x")
    lora, xt = lora_model()
    lora, xt = lora.to(device), xt.to(device)
    results += run("LoRA r=4 on q, v of a 4-layer GPT-2 LM (structured LoRA path)",
                   lora, xt, 10.0, tol=1e-10, info=False)
    t_floor, _ = timeit(lambda: backward_floor(lora, xt), reps=REPS)
    print(f"  (info) the floor of any exact method, one forward and C backward passes to the "
          f"LoRA outputs: {t_floor:.3f}s")
    print(f"\nB3: {sum(results)}/{len(results)} targets met")


if __name__ == "__main__":
    main()
