"""B-chefnmr: molecules per second of sampling (EDM Heun, 50 steps, 10 samples per target, the
task's default CPU model, CFG w = 2 i.e. two network passes per denoiser call) and of bond
inference (XYZ → DetermineBonds → SMILES in the worker process), on one thread.

Molecules are ETKDG conformers of the first 32 C,N,O NCI molecules (≤ 12 heavy atoms); the
network is untrained (the cost does not depend on the weights). No baseline exists yet: the lines
print the rates (PASS = finite, > 0) and a `B5: n/2 targets met` line (read by gpu_check.sh). ``--device cuda`` times the sampling on the GPU.
"""

from __future__ import annotations

from _common import bar, header, parse_args, timeit  # first: pins every library to one thread

# isort: split
import torch

from tasks.chefnmr.bonds import BondWorker, xyz_block
from tasks.chefnmr.config import ATOM_TYPES, Config
from tasks.chefnmr.model import DiT, SpectrumEmbedder
from tasks.chefnmr.molecules import embed_conformers, filter_molecules, load_nci
from tasks.chefnmr.sampling import edm_schedule, guided, heun_sample

N_TARGETS, N_SAMPLES, STEPS, SD = 4, 10, 50, 1.6


def main() -> None:
    args = parse_args(__doc__)
    header("B-chefnmr: sampling and bond inference, molecules/s", args.device)
    cfg, dev = Config(), args.device
    mols = filter_molecules(load_nci(), ["C", "N", "O"], 12)[0][:32]
    molhs = [embed_conformers(m, 1, seed=i) for i, m in enumerate(mols)]
    blocks = [xyz_block([a.GetSymbol() for a in h.GetAtoms()], h.GetConformer().GetPositions())
              for h in molhs]
    with BondWorker(2.0) as worker:
        t_bond, _ = timeit(lambda: worker.map(blocks), reps=args.reps)
    met = [bar("bond inference", t_bond > 0, f"{len(blocks) / t_bond:.1f} molecules/s")]

    gen = torch.Generator().manual_seed(0)
    emb = SpectrumEmbedder(cfg.h_points, "c80", 0, cfg.embedder_hidden, cfg.embedder_layers,
                           cfg.heads, "learned").to(dev).eval()
    dit = DiT(cfg.hidden, cfg.heads, cfg.dit_blocks, cfg.embedder_hidden).to(dev).eval()
    for p in dit.parameters():  # non-zero outputs (the final layers start at zero)
        p.data.normal_(0, 0.02, generator=gen) if p.device.type == "cpu" else p.data.normal_(0, 0.02)
    width = max(h.GetNumAtoms() for h in molhs[:N_TARGETS])
    types = torch.full((N_TARGETS * N_SAMPLES, width), -1, dtype=torch.long)
    for i, h in enumerate(molhs[:N_TARGETS]):
        row = torch.tensor([ATOM_TYPES.index(a.GetSymbol()) for a in h.GetAtoms()])
        types[i * N_SAMPLES:(i + 1) * N_SAMPLES, :len(row)] = row
    types = types.to(dev)
    mask = types >= 0
    n = types.shape[0]
    h_spec = torch.rand(n, cfg.h_points, generator=gen).to(dev)
    c_spec = (torch.rand(n, 80, generator=gen) > 0.85).float().to(dev)
    yes = torch.ones(n, dtype=torch.bool, device=dev)

    @torch.no_grad()
    def sample() -> torch.Tensor:
        y = torch.cat([emb(h_spec, c_spec, yes, yes), emb(h_spec, c_spec, ~yes, ~yes)])

        def denoise(x: torch.Tensor, s: float) -> torch.Tensor:
            sig = torch.full((2 * n,), s, device=dev)
            s2 = sig**2 + SD**2
            xx = torch.cat([x, x])
            f = dit(xx / s2.sqrt().view(-1, 1, 1), 0.25 * sig.log(), torch.cat([types, types]),
                    torch.cat([mask, mask]), y)
            d = (SD**2 / s2).view(-1, 1, 1) * xx + (sig * SD / s2.sqrt()).view(-1, 1, 1) * f
            return guided(d[:n], d[n:], 2.0)

        return heun_sample(denoise, (n, width, 3), mask, edm_schedule(STEPS),
                           torch.Generator(device=dev).manual_seed(1))

    t_sample, _ = timeit(sample, reps=max(1, args.reps // 2))
    met.append(bar("sampling", t_sample > 0,
              f"{n / t_sample:.2f} molecules/s ({N_TARGETS} targets x {N_SAMPLES} samples, "
              f"{STEPS} Heun steps, CFG w=2, {t_sample:.2f} s)"))
    print(f"\nB5: {sum(met)}/{len(met)} targets met")
    raise SystemExit(0 if all(met) else 1)


if __name__ == "__main__":
    main()
