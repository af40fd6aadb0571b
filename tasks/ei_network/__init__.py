"""ei_network: spectral theory of spatially extended E/I rate networks predicts the regime."""
