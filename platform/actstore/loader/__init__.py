"""Streaming stored activations into training: shuffled, rank-sharded, resumable batches."""
