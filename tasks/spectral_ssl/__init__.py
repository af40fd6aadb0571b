"""spectral_ssl: spectral regularisation against spurious features in SimCLR and SimSiam."""
