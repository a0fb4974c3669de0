"""Chat records through the tokenizer's chat template (``corpus.chat_template``).

A record holding a list of ``{role, content}`` messages is rendered to text by the template the
model was tuned with (``<start_of_turn>user ... <end_of_turn>`` for Gemma 2 -it), then tokenized
like any document (``add_special_tokens=False``). The template's markers are special tokens of
the tokenizer, so packing flags them (``FLAG_SPECIAL``) wherever they land. A template that writes
the BOS token itself (Gemma's begins ``{{ bos_token }}``) would give every record a second BOS
after the one each context starts with: that leading BOS is dropped, and the store records it.
"""

from __future__ import annotations

from typing import Any

from actstore.errors import CorpusError, TokenizerError

__all__ = ["ChatRenderer", "chat_template_source"]


def chat_template_source(tokenizer: Any) -> str:
    """The Jinja source of the tokenizer's chat template; :class:`TokenizerError` without one."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one renders plain conversations
        template = template.get("default")
    if not isinstance(template, str) or not template.strip():
        raise TokenizerError(f"corpus.chat_template is on, but tokenizer {tokenizer.name_or_path!r} has no chat "
                             "template; use the instruction-tuned model's tokenizer, or turn the option off")
    return template


class ChatRenderer:
    """Renders messages with one tokenizer's template into token ids (picklable with the tokenizer)."""

    def __init__(self, tokenizer: Any, *, add_generation_prompt: bool) -> None:
        self.tokenizer = tokenizer
        self.template = chat_template_source(tokenizer)
        self.add_generation_prompt = add_generation_prompt
        self.drops_bos = "bos_token" in self.template

    def text(self, messages: list[dict[str, str]], where: str) -> str:
        """The record as the template writes it; a template error (roles out of order...) names the record."""
        try:
            return str(self.tokenizer.apply_chat_template(messages, tokenize=False, chat_template=self.template,
                                                          add_generation_prompt=self.add_generation_prompt))
        except Exception as exc:  # jinja2's TemplateError and the template's own raise_exception
            raise CorpusError(f"{where}: the chat template refused this record: {type(exc).__name__}: {exc}") from None

    def trim(self, ids: list[int]) -> list[int]:
        """Token ids of a rendered record without the BOS the template wrote at its front (see the module doc)."""
        if self.drops_bos and ids and ids[0] == self.tokenizer.bos_token_id:
            return ids[1:]
        return ids
