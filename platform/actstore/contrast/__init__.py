"""Contrasts: which latents differ between two sets of documents (or, paired, two models or
prompt formats on the same tokens), with tests whose unit is the document, not the token.
:mod:`actstore.contrast.stats` holds the statistics every contrast shares."""
