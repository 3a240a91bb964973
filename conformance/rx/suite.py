"""Receiver modules of the suite (placeholder until written)."""
