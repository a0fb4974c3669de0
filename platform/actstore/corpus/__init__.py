"""actstore.corpus."""
