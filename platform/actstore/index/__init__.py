"""The feature-major index: every occurrence of every latent, sorted by value (see ``schemas/STORE.md``)."""
