"""A worker's SAEs: on its device when they fit beside the model, else encoded in groups.

One forward feeds every SAE of a stage. A worker holds only each SAE's encoder (W_enc, b_enc,
threshold, b_dec: extraction never decodes), W_enc in the SAE's ``weights_dtype``. When all
encoders fit the worker's budget (``workers.sae_memory_gb``; by default, on a GPU, the memory
free once the model is loaded less a batch's working memory; on a CPU, no limit) they stay on the
device. Otherwise they are split, in the plan's order (by layer), into groups that each fit; the
encoders wait in host memory (page-locked on a GPU) and each batch's captured sites are encoded
group after group, each group's weights moved to the device in turn. An SAE's encoder is the same
either way, so the codes are identical; grouping costs one transfer of every group's weights per
batch.
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

__all__ = ["ENCODE_TOKENS", "GB", "EncoderGroups", "batch_working_bytes", "encoder_bytes", "split_groups"]

logger = logging.getLogger(__name__)
GB = 1e9
ENCODE_TOKENS = 4096  # tokens per encode call: bounds the dense [tokens, d_sae] buffer


def encoder_bytes(sae: SaeInfo) -> int:
    """Device bytes of an SAE's encoder: W_enc in its ``weights_dtype``; b_enc, threshold and b_dec in float32."""
    matrix = 2 if sae.weights_dtype == "bfloat16" else 4
    return sae.d_in * sae.d_sae * matrix + (2 * sae.d_sae + sae.d_in) * 4


def split_groups(saes: Sequence[SaeInfo], budget: int | None) -> list[list[str]]:
    """SAE names in groups whose encoders each fit ``budget`` bytes (None: no limit), in order."""
    sizes = {s.name: encoder_bytes(s) for s in saes}
    if budget is None or sum(sizes.values()) <= budget:
        return [list(sizes)] if sizes else []
    for name, size in sizes.items():
        if size > budget:
            raise ConfigError(f"SAE {name!r} needs {size / GB:.3g} GB of device memory for its encoder, more than the "
                              f"{budget / GB:.3g} GB the SAEs may take on a worker; raise workers.sae_memory_gb, hold "
                              "the weights in bfloat16 (weights_dtype), or use a device with more memory")
    groups: list[list[str]] = [[]]
    used = 0
    for name, size in sizes.items():
        if groups[-1] and used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    return groups


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
        holds more than one SAE's full weights besides the encoders), on ``device`` when all fit
        ``budget``, else in host memory for groups."""
        groups = split_groups(saes, budget)
        host = len(groups) > 1
        encoders = {}
        for sae in saes:
            encoder = SAEEncoder(weights(sae.name), "cpu" if host else device, dtype=sae.weights_dtype, decoder=False)
            encoders[sae.name] = encoder.to("cpu", pin=True) if host and device.type == "cuda" else encoder
        if host:
            logger.info("%d SAEs (%.2f GB of encoders) in %d groups of at most %.2f GB: each batch moves every group's "
                        "weights to %s in turn", len(saes), sum(e.nbytes for e in encoders.values()) / GB, len(groups),
                        (budget or 0) / GB, device)
        return cls(encoders, groups, device)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.encoders.values())

    def describe(self) -> dict[str, Any]:
        """For the worker's report: SAEs per group and the encoders' bytes."""
        return {"sae_groups": [len(g) for g in self.groups], "sae_encoder_bytes": self.nbytes}

    def __iter__(self) -> Iterator[dict[str, SAEEncoder]]:
        """Each group's encoders on the device (a group in host memory is copied there for the
        duration of its turn)."""
        if len(self.groups) <= 1:
            yield self.encoders
            return
        for group in self.groups:
            yield {name: self.encoders[name].to(self.device) for name in group}
