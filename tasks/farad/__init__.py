"""farad: Fourier-cloud references for debiasing imbalanced semi-supervised learning."""
