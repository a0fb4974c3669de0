"""Training SAEs from a stored site: the SAE modules, the loop, the SAELens folder they save."""
