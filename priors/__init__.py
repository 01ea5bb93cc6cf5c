"""Synthetic-prior generator: whole tabular datasets sampled from random structural causal models."""
