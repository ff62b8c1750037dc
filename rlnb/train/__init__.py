"""Training loops. Each returns a pandas DataFrame of history or the learned quantities."""
