"""``actstore plan``'s host cores per GPU: the measured rates back at the measured shapes, scaled by a config's sites and SAEs."""

from __future__ import annotations

import pytest

from actstore.extraction.host import HOST_MEASURED, host_cores
from actstore.extraction.plan import ExtractPlan
from actstore.store.metadata import SaeInfo, SiteInfo

GPU = 80_000.0


def _plan(d: int, compression: str = "shuffle-zstd", *, stored: bool = True, cap: int = 256, sites: int = 3) -> ExtractPlan:
    """The benchmark's shape: ``sites`` bfloat16 sites of width ``d``, one 16k JumpReLU SAE (bfloat16 values) on each of them."""
    names = [f"blocks.{i}.hook_resid_post" for i in range(sites)]
    site_infos = tuple(SiteInfo(name=n, d=d, dtype="bfloat16", stored=stored, compression=compression) for n in names)
    saes = tuple(SaeInfo(name=f"res{i}", site=n, architecture="jumprelu", d_in=d, d_sae=16_384, code_cap=cap,
                         value_dtype="bfloat16", source="hub/path", sha256="0") for i, n in enumerate(names))
    return ExtractPlan(None, {}, "cuda", site_infos, saes, 0)  # type: ignore[arg-type]  # host_cores reads sites and SAEs only


def test_host_cores_scale_from_the_measured_cases() -> None:
    codes_only = host_cores(_plan(2304, stored=False), GPU, "test")
    per_token = sum(1 / rates["codes_only"] for rates in HOST_MEASURED.values()) / len(HOST_MEASURED)
    assert codes_only.activations == 0 and codes_only.cores == pytest.approx(GPU * per_token)
    for d, rates in HOST_MEASURED.items():  # each measured case back (the line through both widths)
        for compression in ("shuffle-zstd", "zstd", "none"):
            cores = host_cores(_plan(d, compression), GPU, "test").cores
            assert cores == pytest.approx(GPU / rates[compression], rel=0.15), (d, compression)
    default = host_cores(_plan(2304), GPU, "test")
    assert default.cores == pytest.approx(default.activations + default.codes)
    # twice the code slots, twice the codes' work; one site of three, a third of the activations' work
    assert host_cores(_plan(2304, cap=512), GPU, "test").codes == pytest.approx(2 * default.codes)
    assert host_cores(_plan(2304, sites=1), GPU, "test").activations == pytest.approx(default.activations / 3)
    assert host_cores(_plan(2304), 2 * GPU, "test").cores == pytest.approx(2 * default.cores)
    assert "host cores per GPU" in default.render() and "bench_host.py" in default.render()
