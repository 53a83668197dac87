"""Semantic-ID indexing: item text embeddings, quantisers (RQ-VAE, residual k-means), collisions, reports."""
