"""The small causal language model shared by linearization and mixat (see README.md)."""
