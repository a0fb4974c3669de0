"""An SAE's token-major codes in the store: their arrays, and reading them back in one form.

Format 3 (``codes/<sae>/latent``, ``value``, ``l0``): latent ids in the narrowest unsigned type
that holds them (uint16 up to 65,536 latents), slots past a token's L0 holding 0, both arrays
byte-shuffled before zstd. Formats 1 and 2 (``idx``, ``val``, ``l0``): int32 ids with -1 past
the L0, plain zstd. ``schemas/STORE.md`` specifies both. Readers get one form whatever the
layout: ids as int32 with -1 past the token's L0 (at most ``code_cap``), values as stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import zarr

from actstore.errors import StoreMismatchError
from actstore.store.dtypes import from_storage
from actstore.store.layout import UnitGrid, code_array, create_unit_array
from actstore.store.metadata import FORMAT_VERSION, SaeInfo

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["CODES_VERSION", "LEGACY_PARTS", "PARTS", "CodeRows", "code_parts", "create_code_arrays", "latent_dtype",
           "read_codes", "require_current_codes", "unpack_ids"]

CODES_VERSION = 3  # the first format version with the compact layout
LEGACY_PARTS = ("idx", "val", "l0")
PARTS = ("latent", "value", "l0")


class CodeRows(NamedTuple):
    """Codes of some tokens: ``idx`` [..., code_cap] int32 (-1 past the token's L0), ``val`` the
    values in their logical dtype (0 past the L0); None where not asked for."""

    idx: np.ndarray | None
    val: np.ndarray | None


def latent_dtype(d_sae: int) -> str:
    """The stored dtype of latent ids: uint16 when every id fits (d_sae <= 65,536), else uint32."""
    return "uint16" if d_sae <= 2**16 else "uint32"


def code_parts(version: int) -> tuple[str, str, str]:
    """Names of the (ids, values, L0) arrays under ``codes/<sae>/`` in a store of this format version."""
    return PARTS if version >= CODES_VERSION else LEGACY_PARTS  # type: ignore[return-value]


def create_code_arrays(group: zarr.Group, grid: UnitGrid, sae: SaeInfo, *, l0: bool = True) -> None:
    """The format 3 code arrays of ``sae`` (overwriting any of those names; coordinator only);
    ``l0=False`` leaves the L0 array, the same in every format, as it is (an upgrade).

    Ids and values go through byte shuffle then zstd: the high byte of an id or of a value takes
    few distinct values, and shuffle puts them together; the empty slots' zeros cost almost
    nothing (benchmarks/bench_code_bytes.py measures the choices: bit shuffle is a little better
    on codes without empty slots and worse with them)."""
    axes = {"axes": ["ctx", "pos", "slot"], "sae": sae.name}
    create_unit_array(group, code_array(sae.name, "latent"), grid, (sae.code_cap,), latent_dtype(sae.d_sae),
                      compression="shuffle-zstd", attributes=axes)
    create_unit_array(group, code_array(sae.name, "value"), grid, (sae.code_cap,), sae.value_dtype,
                      compression="shuffle-zstd", attributes=axes)
    if l0:
        create_unit_array(group, code_array(sae.name, "l0"), grid, (), "int32", attributes={"axes": ["ctx", "pos"], "sae": sae.name})


def require_current_codes(store: Store, doing: str) -> None:
    """Refuse to write codes or an index into a store of an older format (its codes use the older
    layout): one line saying what to run, before any work."""
    version = store.meta.format_version
    if version < FORMAT_VERSION:
        raise StoreMismatchError(f"cannot {doing}: the store at {store.location.url!r} is format version {version}; "
                                 f"run `actstore upgrade {store.location.url}` first (it rewrites its codes and indexes "
                                 f"in the format {FORMAT_VERSION} layout)")


def read_codes(store: Store, sae: str, rows: slice | np.ndarray, *, ids: bool = True, values: bool = True,
               checked: bool = True) -> CodeRows:
    """The codes of a range of contexts (``slice``) or of scattered contexts (an array, as
    :meth:`Store.read_contexts` takes), in the one form of :class:`CodeRows`. Only committed units
    are read; ``checked=False`` skips listing the manifests for a range the caller knows is
    committed (an index map task: one listing fewer per unit on object storage)."""
    id_path, value_path, l0_path = (f"codes/{sae}/{part}" for part in code_parts(store.meta.format_version))

    def read(path: str) -> np.ndarray:
        if isinstance(rows, slice):
            if checked:
                return store.read(path, rows)
            arr = store.array(path)
            return from_storage(np.asarray(arr[rows]), str(arr.attrs.get("logical_dtype", arr.dtype)))
        return store.read_contexts(path, rows)

    idx = read(id_path) if ids else None
    if idx is not None and store.meta.format_version >= CODES_VERSION:
        idx = unpack_ids(idx, read(l0_path))
    return CodeRows(idx, read(value_path) if values else None)


def unpack_ids(latent: np.ndarray, l0: np.ndarray) -> np.ndarray:
    """Stored ids [..., cap] and the tokens' L0 [...] as int32 ids with -1 in slots >= L0."""
    slot = np.arange(latent.shape[-1], dtype=np.int32)
    return np.where(slot < l0[..., None], latent.astype(np.int32), np.int32(-1))
