"""actstore.extraction: the extraction plan and the work of one unit (forward, encode, write)."""
