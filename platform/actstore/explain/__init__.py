"""Explaining latents: manual labels, automatic explanations with judges' scores, and search.

Light to import: the chat backends load torch/transformers or openai only when used.
"""

from actstore.explain.config import (
           ExampleConfig,
           ExplainConfig,
           LocalBackend,
           OpenAIBackend,
           SamplingConfig,
)
from actstore.explain.table import EXPLANATION_SCHEMA, current_explanations, scan_explanations

__all__ = ["EXPLANATION_SCHEMA", "ExampleConfig", "ExplainConfig", "LocalBackend", "OpenAIBackend", "SamplingConfig",
           "current_explanations", "scan_explanations"]
