"""mamba_modulation: the spectrum of A governs Mamba's length generalisation (A-power vs Δ scaling)."""
