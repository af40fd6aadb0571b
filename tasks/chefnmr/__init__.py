"""chefnmr: structure elucidation from 1D NMR spectra with an atomic diffusion model
(../shared/papers/chefnmr.md). First instalment: data, forward model, bonds, metrics, EDM math."""
