"""Site names with a model tag: ``it.blocks.3.hook_z`` is ``blocks.3.hook_z`` of model ``it``."""

from __future__ import annotations

import pytest

from actstore.errors import ConfigError
from actstore.store.sitenames import BASE, check_tag, site_for, split_site


def test_tags_split_off_and_join_back() -> None:
    for site in ("blocks.12.hook_resid_post", "blocks.3.attn.hook_z"):
        assert split_site(site) == (BASE, site) and site_for(site, BASE) == site
        assert split_site(site_for(site, "it")) == ("it", site) and site_for(site, "gemma-2b_it") == f"gemma-2b_it.{site}"
    for tag in ("base", "blocks", "a.b", "", "-x"):
        with pytest.raises(ConfigError, match="is not allowed"):
            check_tag(tag)
