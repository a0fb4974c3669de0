"""What one extraction worker holds, before any work (``actstore plan``): the model's weights,
the SAEs' encoders (on the device, or in groups when they do not fit beside the model) and the
host buffers of its units in flight. The grouping follows the rule the workers apply
(:mod:`actstore.extraction.encoders`), with the device memory given instead of measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from actstore.extraction.encoders import (
    GB,
    batch_working_bytes,
    encoder_bytes,
    sae_budget,
    split_groups,
)
from actstore.extraction.plan import ExtractPlan
from actstore.store.dtypes import storage_dtype

__all__ = ["WorkerMemory", "sae_flops_per_token", "worker_memory"]


@dataclass(frozen=True)
class WorkerMemory:
    """Bytes per worker (see the module docstring); ``sae_groups``: SAEs per encoding group."""

    device_bytes: int  # the device's memory the plan assumes
    model_bytes: int
    working_bytes: int  # a batch's working memory (estimate)
    encoder_bytes: int
    budget_bytes: int  # what the encoders may take: the configured sae_memory_gb, else what is left
    sae_groups: list[int]
    host_buffer_bytes: int  # unit buffers (activations stored and codes) of the units in flight

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> list[str]:
        n = sum(self.sae_groups)
        lines = [f"SAE encoders per worker: {self.encoder_bytes / GB:.2f} GB for {n} SAEs (W_enc in each SAE's weights_dtype, "
                 "b_enc, threshold, b_dec; the decoders are not loaded)"]
        if len(self.sae_groups) <= 1:
            lines.append(f"encoding: every SAE on the device beside the model ({self.model_bytes / GB:.2f} GB of weights, "
                         f"~{self.working_bytes / GB:.2f} GB per batch) on a {self.device_bytes / GB:.0f} GB device")
        else:
            stay = self.sae_groups[0]
            lines.append(f"encoding in turns: the encoders need {self.encoder_bytes / GB:.2f} GB, {self.budget_bytes / GB:.2f} GB "
                         f"is left on a {self.device_bytes / GB:.0f} GB device beside the model; "
                         f"{f'{stay} SAEs stay on it' if stay else 'none stays on it'}, the other {n - stay} take turns in "
                         f"{len(self.sae_groups) - 1} groups, moved from host memory for every batch (same codes, more transfers)")
        lines.append(f"host buffers per worker: {self.host_buffer_bytes / GB:.2f} GB (the units in flight: stored "
                     "activations and code slots; page-locked on a GPU)")
        return lines


def worker_memory(plan: ExtractPlan, model_config: Any, model_bytes: int, *, device_gb: float) -> WorkerMemory:
    """A worker's memory under ``plan`` on a device of ``device_gb`` GB (the configured
    ``workers.sae_memory_gb`` overrides what is left there for the encoders)."""
    workers, ctx = plan.config.workers, plan.config.context
    itemsize = storage_dtype(plan.model_dtype).itemsize
    working = batch_working_bytes(model_config, batch=workers.batch_size, ctx_len=ctx.ctx_len,
                                  captured_d=sum(s.d for s in plan.captured), max_d_sae=max((a.d_sae for a in plan.saes), default=0),
                                  itemsize=itemsize)
    device = int(device_gb * GB)
    budget = (int(workers.sae_memory_gb * GB) if workers.sae_memory_gb is not None
              else sae_budget(device - model_bytes, working, batch=workers.batch_size))
    tokens = ctx.contexts_per_unit * ctx.ctx_len
    unit = sum(tokens * s.d * storage_dtype(s.dtype).itemsize for s in plan.sites if s.stored)
    unit += sum(tokens * (a.code_cap * (4 + storage_dtype(a.value_dtype).itemsize) + 4) for a in plan.saes)
    return WorkerMemory(device, model_bytes, working, sum(encoder_bytes(a) for a in plan.saes), budget,
                        [len(g) for g in split_groups(plan.saes, budget)], unit * plan.units_in_flight)


def sae_flops_per_token(plan: ExtractPlan) -> float:
    """FLOPs of the SAE encoders per token (one matmul each: 2 x d_in x d_sae)."""
    return float(sum(2 * a.d_in * a.d_sae for a in plan.saes))
