"""A worker's SAEs: on its device when they fit beside the model, else encoded in groups.

One forward feeds every SAE of a stage. A worker holds only each SAE's encoder (W_enc, b_enc,
threshold, b_dec: extraction never decodes), W_enc in the SAE's ``weights_dtype``. When all
encoders fit the worker's budget (``workers.sae_memory_gb``; by default, on a GPU, the memory
free once the model is loaded less a batch's working memory; on a CPU, no limit) they stay on the
device. Otherwise they are split, in the plan's order (by layer), into groups: the first stays on
the device, as large as it can while room for the largest encoder is left, and the others wait in
host memory (page-locked on a GPU) and take turns in that room; each batch's captured sites are
encoded group after group. An SAE's encoder is the same either way, so the codes are identical;
grouping costs one transfer per batch of the encoders outside the first group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from actstore.errors import ConfigError
from actstore.saes.encode import SAEEncoder
from actstore.saes.formats import SAEWeights
from actstore.store.metadata import SaeInfo

__all__ = ["ENCODE_TOKENS", "GB", "EncoderGroups", "batch_working_bytes", "encoder_bytes", "sae_budget", "split_groups"]

logger = logging.getLogger(__name__)
GB = 1e9
ENCODE_TOKENS = 4096  # tokens per encode call: bounds the dense [tokens, d_sae] buffer


def encoder_bytes(sae: SaeInfo) -> int:
    """Device bytes of an SAE's encoder: W_enc in its ``weights_dtype``; b_enc, threshold and b_dec in float32."""
    matrix = 2 if sae.weights_dtype == "bfloat16" else 4
    return sae.d_in * sae.d_sae * matrix + (2 * sae.d_sae + sae.d_in) * 4


def split_groups(saes: Sequence[SaeInfo], budget: int | None) -> list[list[str]]:
    """SAE names in groups (in order) whose encoders fit ``budget`` bytes (None: no limit): one
    group when all fit; else the first group stays on the device, as large as it can while room
    for the largest encoder is left, and the others take turns in that room (each batch then moves
    only the SAEs outside the first group)."""
    sizes = {s.name: encoder_bytes(s) for s in saes}
    if budget is None or sum(sizes.values()) <= budget:
        return [list(sizes)] if sizes else []
    largest = max(sizes.values())
    if largest > budget:
        name = max(sizes, key=lambda n: sizes[n])
        raise ConfigError(f"SAE {name!r} needs {largest / GB:.3g} GB of device memory for its encoder, more than the "
                          f"{budget / GB:.3g} GB the SAEs may take on a worker; raise workers.sae_memory_gb, hold "
                          "the weights in bfloat16 (weights_dtype), or use a device with more memory")
    names = list(sizes)
    resident: list[str] = []
    used = 0
    while names and used + sizes[names[0]] + largest <= budget:
        used += sizes[names[0]]
        resident.append(names.pop(0))
    groups, room = [resident], budget - used
    turn: list[str] = []
    taken = 0
    for name in names:
        if turn and taken + sizes[name] > room:
            groups.append(turn)
            turn, taken = [], 0
        turn.append(name)
        taken += sizes[name]
    return [*groups, turn]


def batch_working_bytes(model_config: Any, *, batch: int, ctx_len: int, captured_d: int, max_d_sae: int,
                        itemsize: int) -> int:
    """Device bytes a batch needs besides the weights (an estimate, with 25% headroom): the
    captured sites in the model's dtype plus one float32 copy, a block's hidden and MLP tensors,
    eager attention scores (softmax in float32), and one encode call's pre-activations and masks."""
    tokens = batch * ctx_len
    heads = int(model_config.num_attention_heads)
    captured = tokens * captured_d * (itemsize + 4)
    block = tokens * (6 * int(model_config.hidden_size) + 3 * int(model_config.intermediate_size)) * itemsize
    attention = batch * heads * ctx_len * ctx_len * (2 * itemsize + 4)
    encode = min(tokens, ENCODE_TOKENS) * max_d_sae * 6
    return int(1.25 * (captured + block + attention + encode))


def sae_budget(free: int, working: int, *, batch: int) -> int:
    """What the encoders may take of ``free`` device bytes (after the model) beside a batch's
    ``working`` bytes; refuses when a batch alone does not fit."""
    if working >= free:
        raise ConfigError(f"a batch of {batch} contexts needs ~{working / GB:.1f} GB of device memory beside the model, "
                          f"and {free / GB:.1f} GB is left once the model is loaded; lower workers.batch_size")
    return free - working


class EncoderGroups:
    """The SAE encoders of a worker, iterated group by group (one group when they all fit)."""

    def __init__(self, encoders: Mapping[str, SAEEncoder], groups: list[list[str]], device: torch.device) -> None:
        self.encoders, self.groups, self.device = dict(encoders), groups, device

    @classmethod
    def resident(cls, encoders: Mapping[str, SAEEncoder]) -> EncoderGroups:
        """Encoders already on their device, as one group."""
        device = next(iter(encoders.values())).device if encoders else torch.device("cpu")
        return cls(encoders, [list(encoders)] if encoders else [], device)

    @classmethod
    def load(cls, saes: Sequence[SaeInfo], weights: Callable[[str], SAEWeights], device: torch.device,
             budget: int | None) -> EncoderGroups:
        """Build each SAE's encoder from ``weights(name)`` (fetched one at a time, so the host never
        holds more than one SAE's full weights besides the encoders): those of the first group on
        ``device``, the others in host memory (page-locked for a GPU) until their turn."""
        groups = split_groups(saes, budget)
        on_device = set(groups[0]) if groups else set()
        encoders = {}
        for sae in saes:
            here = sae.name in on_device
            encoder = SAEEncoder(weights(sae.name), device if here else "cpu", dtype=sae.weights_dtype, decoder=False)
            encoders[sae.name] = encoder if here or device.type != "cuda" else encoder.to("cpu", pin=True)
        if len(groups) > 1:
            moved = sum(encoders[n].nbytes for g in groups[1:] for n in g)
            logger.info("%d SAEs (%.2f GB of encoders) do not fit the %.2f GB they may take on %s: %d stay there, "
                        "the other %d take turns in %d groups (%.2f GB moved per batch)", len(saes),
                        sum(e.nbytes for e in encoders.values()) / GB, (budget or 0) / GB, device, len(groups[0]),
                        len(saes) - len(groups[0]), len(groups) - 1, moved / GB)
        return cls(encoders, groups, device)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.encoders.values())

    def describe(self) -> dict[str, Any]:
        """For the worker's report: SAEs per group and the encoders' bytes."""
        return {"sae_groups": [len(g) for g in self.groups], "sae_encoder_bytes": self.nbytes}

    def __iter__(self) -> Iterator[dict[str, SAEEncoder]]:
        """Each group's encoders on the device: the first as they are, the others copied there
        for the duration of their turn."""
        for i, group in enumerate(self.groups):
            yield {name: self.encoders[name] if i == 0 else self.encoders[name].to(self.device) for name in group}
