"""actstore.store."""
