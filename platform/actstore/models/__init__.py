"""actstore.models: loading causal LMs and capturing activation sites."""
