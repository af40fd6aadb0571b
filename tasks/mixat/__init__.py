"""MixAT: mixed discrete + continuous adversarial training of a small chat LM (see README.md)."""
