"""Prompts for the explainer and the judges, in delphi's format, and parsing their answers.

An example is a token window. The explainer sees the tokens at >= ``threshold`` x the window's
maximum wrapped in ``<<...>>`` (a run of such tokens wrapped once) and a list of
(token, round(10 * a / max)) for them. The judges see one example at a time: plain text
(detection) or highlighted text (fuzzing), and answer 1 or 0. The templates' texts are hashed
into every result key, so editing a template makes new results instead of reusing old ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

__all__ = ["ANSWER_PREFIX", "EXPLAINER_TEMPLATE", "JUDGE_TEMPLATES", "evidence", "explainer_messages", "highlight",
           "judge_messages", "marked", "parse_explanation", "parse_judgement", "template_hash"]

Message = dict[str, str]

EXPLAINER_SYSTEM = (
    "You are a meticulous AI researcher investigating a neuron in a language model. You will see "
    "text examples in which the neuron fires. Tokens where it fires are between delimiters like "
    "<<this>>; after each example, a list of (token, activation 0-10) pairs; at the end, the tokens "
    "it fires on most over the whole corpus. Find what the marked tokens have in common and "
    "describe it in a short phrase (1 to 6 words). Reply with one line of the form "
    "[EXPLANATION]: <your phrase>"
)
# Few-shot turns about invented words, which no corpus holds: an answer copied from them is
# recognisably not about the latent, and is recorded as unparsed (``parse_explanation``). Both
# answers are plain ("the word ..."): a small model copies the form, so the form should be right.
FEW_SHOT = (
    ("Example 1: the old <<vexlorn>> stood by the door\nActivations: (vexlorn, 10)\n"
     "Example 2: two <<vexlorn>>s were sold\nActivations: (vexlorn, 8)\n"
     'Fires most on: "vexlorn" (91% of its firings; on 100% of its occurrences)',
     '[EXPLANATION]: the word "vexlorn"'),
    ("Example 1: we saw a <<blick>> and three<< blicks>> today\nActivations: (blick, 9), ( blicks, 10)\n"
     "Example 2: no<< blicks>> here\nActivations: ( blicks, 7)\n"
     'Fires most on: " blicks" (64% of its firings; on 98% of its occurrences), "blick" (36%; 95%)',
     '[EXPLANATION]: the words "blick" and "blicks"'),
)
INVENTED = re.compile(r"\b(vexlorn|blicks?)\b")  # the few-shot turns' words: in an answer, they were copied
ANSWER_PREFIX = "[EXPLANATION]:"
EVIDENCE = "Fires most on: {}"
EXPLAINER_TEMPLATE = json.dumps({"system": EXPLAINER_SYSTEM, "few_shot": FEW_SHOT, "answer_prefix": ANSWER_PREFIX,
                                 "evidence": EVIDENCE, "stop": "first line"})

JUDGE_SYSTEM = {
    "detection": (
        "You check explanations of a language-model neuron. You get an explanation and one text "
        "example. Answer 1 if the example contains what the explanation describes, else 0. "
        "Reply with the single digit 1 or 0."
    ),
    "fuzzing": (
        "You check explanations of a language-model neuron. You get an explanation and one text "
        "example with some tokens marked <<like this>>. Answer 1 if the marked tokens are ones "
        "the explanation describes, else 0. Reply with the single digit 1 or 0."
    ),
}
JUDGE_TEMPLATES = {name: json.dumps({"system": text, "user": "Explanation: {explanation}\nExample: {example}"})
                   for name, text in JUDGE_SYSTEM.items()}


def template_hash(*, scorers: Sequence[str], embedding: str = "") -> str:
    """sha256 (first 16 hex digits) of the explainer template, the judges' templates used and
    the embedding scorer's model (its name, when that scorer runs)."""
    texts = [EXPLAINER_TEMPLATE, *(JUDGE_TEMPLATES.get(s, s) for s in sorted(scorers))]
    texts += [embedding] if "embedding" in scorers else []
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]


def marked(values: Sequence[float], *, threshold: float) -> list[bool]:
    """Which tokens are marked: value >= threshold x the window's maximum (none if it is 0)."""
    top = max(values, default=0.0)
    return [top > 0 and v >= threshold * top for v in values]


def highlight(tokens: Sequence[str], marks: Sequence[bool]) -> str:
    """The window as text with each run of marked tokens wrapped once in ``<<...>>``."""
    out, inside = [], False
    for tok, on in zip(tokens, marks, strict=True):
        if on and not inside:
            out.append("<<")
        elif not on and inside:
            out.append(">>")
        inside = on
        out.append(tok)
    if inside:
        out.append(">>")
    return "".join(out)


def _activations(tokens: Sequence[str], values: Sequence[float], marks: Sequence[bool]) -> str:
    top = max(values, default=0.0) or 1.0
    return ", ".join(f"({t}, {round(10 * v / top)})" for t, v, m in zip(tokens, values, marks, strict=True) if m)


def evidence(tokens: Sequence[tuple[str, float, float]], bigrams: Sequence[tuple[str, str, float, float]]) -> str:
    """The token-profile line of the explainer prompt: ``tokens`` as (text, recall, precision),
    ``bigrams`` as (previous text, text, recall, precision)."""
    shown = [f"{_quoted(t)} ({r:.0%} of its firings; on {p:.0%} of its occurrences)" for t, r, p in tokens]
    shown += [f"{_quoted(t)} after {_quoted(b)} ({r:.0%}; {p:.0%})" for b, t, r, p in bigrams]
    return EVIDENCE.format(", ".join(shown))


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def explainer_messages(examples: Sequence[tuple[Sequence[str], Sequence[float]]], *, threshold: float,
                       show_activations: bool = True, profile: str | None = None) -> list[Message]:
    """Chat messages asking for an explanation of (tokens, values) windows; ``profile``: the
    :func:`evidence` line, shown after them."""
    parts = []
    for i, (tokens, values) in enumerate(examples, 1):
        marks = marked(values, threshold=threshold)
        parts.append(f"Example {i}: {highlight(tokens, marks)}")
        if show_activations:
            parts.append(f"Activations: {_activations(tokens, values, marks)}")
    if profile:
        parts.append(profile)
    messages: list[Message] = [{"role": "system", "content": EXPLAINER_SYSTEM}]
    for user, answer in FEW_SHOT:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": "\n".join(parts)})
    return messages


def judge_messages(scorer: str, explanation: str, example: str) -> list[Message]:
    """Chat messages asking a judge for 1 or 0 on one example (already highlighted for fuzzing)."""
    return [{"role": "system", "content": JUDGE_SYSTEM[scorer]},
            {"role": "user", "content": f"Explanation: {explanation}\nExample: {example}"}]


def parse_explanation(answer: str) -> str | None:
    """The text after the first ``[EXPLANATION]:`` up to the end of its line, without the
    prompt's ``<<...>>`` marks (small models copy them from the examples: "the word <<await>>"
    means "the word await"); None if there is none, it is empty, or it is a few-shot answer
    copied (the answer is then recorded as unparsed; the raw answer is kept either way)."""
    at = answer.find(ANSWER_PREFIX)
    if at < 0:
        return None
    text = answer[at + len(ANSWER_PREFIX):].strip().splitlines()
    found = text[0].replace("<<", "").replace(">>", "").strip() if text else ""
    if found.count('"') == 2 and found.startswith('"') and found.endswith('"'):
        found = found[1:-1].strip()  # a whole answer in quotes; quotes inside it are the tokens'
    return None if not found or _copied(found) else found


def _copied(text: str) -> bool:
    """Whether ``text`` is a few-shot answer, or names their invented words (a copy with the
    form kept and the tokens changed, 'the word "await"', is a right answer, not a copy)."""
    norm = _normal(text)
    return norm in {_normal(a.removeprefix(ANSWER_PREFIX)) for _, a in FEW_SHOT} or bool(INVENTED.search(norm))


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9%]+", " ", text.lower()).strip()


_DIGIT = re.compile(r"\b([01])\b")


def parse_judgement(answer: str) -> int | None:
    """The first standalone 0 or 1 in a judge's answer; None if there is none."""
    found = _DIGIT.search(answer)
    return None if found is None else int(found.group(1))
