"""The context language: what a hub should understand (stdlib + PyYAML only, no numpy/torch).

A context is Picovoice Rhino's YAML (``[a, b]`` one of, ``(a, b)`` optional,
``$type:name`` slots, ``@macro`` macros) plus hubvoice extensions (slot value synonyms
``{"spoken": "output"}``, number ranges ``{range: [0, 100], step: 10}``, fixed slots),
or Home Assistant intent templates imported with :func:`import_hassil`.

- ``load_context(path)`` / ``parse_context(text_or_data)`` -> :class:`Context`
  (validated; errors are ContextError naming file, intent, expression and column);
- ``Context.count()``, ``.slot_heads()``, ``.intent_slots()``, ``.vocabulary()``, ``.to_yaml()``;
- ``sample_sentences(ctx, n, seed)`` -> balanced, covering :class:`Sample` list;
  ``min_samples_for_coverage(ctx)``; ``iter_sentences(ctx)`` enumerates;
- ``normalize_text(s)``: the spoken form of any text (numbers as words ...).
"""

from assistant.context.hassil import import_hassil
from assistant.context.model import (
    Choice,
    Context,
    Expression,
    Macro,
    MacroRef,
    Node,
    NumberRange,
    Seq,
    Slot,
    SlotType,
    SlotValue,
    Words,
    format_node,
)
from assistant.context.normalize import normalize_text, number_to_words, ordinal_to_words
from assistant.context.parser import load_context, parse_context
from assistant.context.sample import Sample, iter_sentences, min_samples_for_coverage, sample_sentences

__all__ = [
    "Choice",
    "Context",
    "Expression",
    "Macro",
    "MacroRef",
    "Node",
    "NumberRange",
    "Sample",
    "Seq",
    "Slot",
    "SlotType",
    "SlotValue",
    "Words",
    "format_node",
    "import_hassil",
    "iter_sentences",
    "load_context",
    "min_samples_for_coverage",
    "normalize_text",
    "number_to_words",
    "ordinal_to_words",
    "parse_context",
    "sample_sentences",
]
