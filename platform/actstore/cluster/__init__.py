"""actstore.cluster."""
