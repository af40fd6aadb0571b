"""optimizer_scaling: optimizer dependence of the scaling exponent in random-feature regression."""
