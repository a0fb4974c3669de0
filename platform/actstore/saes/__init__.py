"""actstore.saes: SAE file formats (Gemma Scope, SAELens) and encoders (JumpReLU, TopK, ReLU)."""
