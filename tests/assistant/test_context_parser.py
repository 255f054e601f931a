"""Parsing Rhino YAML contexts: every syntax element, the extensions, and every error with its location."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from assistant.context import (
    Choice,
    MacroRef,
    NumberRange,
    Seq,
    Slot,
    SlotValue,
    Words,
    load_context,
    parse_context,
)
from assistant.errors import ContextError

# A Picovoice coffee-maker-like context, written the way Rhino users write theirs.
COFFEE = """\
context:
  expressions:
    orderBeverage:
      - "[give, get, bring, make] (me) (a, an) $size:size $coffeeDrink:coffeeDrink"
      - "(can I, could I, may I) (please) (have, get) (a, an) (@quantity) $size:size $numberOfShots:numberOfShots $coffeeDrink:coffeeDrink (please)"
      - "$size:size $roast:roast $numberOfShots:numberOfShots $coffeeDrink:coffeeDrink with $milkAmount:milkAmount and $sugarAmount:sugarAmount"
      - "(I'd like, I want) (a, an) [$size:size, $roast:roast] $coffeeDrink:coffeeDrink ([with, and] $milkAmount:milkAmount)"
      - "(a, an) $coffeeDrink:coffeeDrink (with $sugarAmount:sugarAmount)"
    cancelOrder:
      - "[cancel, forget] (my, the) order"
      - "never mind"
  slots:
    coffeeDrink: [americano, cappuccino, espresso, latte, mocha, flat white]
    size: [small, medium, large]
    numberOfShots: [single shot, double shot, 3 shots]
    roast: [light roast, dark roast]
    milkAmount: [a little bit of soy milk, some milk, no milk]
    sugarAmount: [no sugar, one sugar, two sugars]
  macros:
    quantity: [one, a cup of]
"""


def _context(expressions: list[Any], slots: dict[str, Any] | None = None,
             macros: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"expressions": {"lights": expressions}}
    body["slots"] = slots if slots is not None else {"state": ["on", "off"], "location": ["kitchen", "hall"]}
    if macros is not None:
        body["macros"] = macros
    return {"context": body}


def _error(source: Any) -> ContextError:
    with pytest.raises(ContextError) as info:
        parse_context(source, file="ctx.yaml")
    return info.value


def test_coffee_maker_context_parses_with_every_slot() -> None:
    ctx = parse_context(COFFEE, file="coffee.yaml")
    assert ctx.intents == ("orderBeverage", "cancelOrder")
    assert len(ctx.expressions["orderBeverage"]) == 5
    assert ctx.intent_slots("orderBeverage") == {
        "size", "coffeeDrink", "numberOfShots", "roast", "milkAmount", "sugarAmount"}
    assert ctx.intent_slots("cancelOrder") == frozenset()
    assert ctx.slots["milkAmount"].values[0] == SlotValue("a little bit of soy milk", "a little bit of soy milk")
    assert ctx.slots["numberOfShots"].values[2].spoken == "3 shots"
    # expression 3 by hand: 3 sizes * 2 roasts * 3 shots * 6 drinks * 3 milks * 3 sugars
    assert ctx.count_node(ctx.expressions["orderBeverage"][2].node) == 3 * 2 * 3 * 6 * 3 * 3
    # expression 4: (2+1) * (2+1) * (3+2) * 6 * (2*3+1)
    assert ctx.count_node(ctx.expressions["orderBeverage"][3].node) == 3 * 3 * 5 * 6 * 7
    assert ctx.count("cancelOrder") == 2 * 3 + 1
    assert "soy" in ctx.vocabulary() and "three" in ctx.vocabulary() and "i'd" in ctx.vocabulary()


def test_trees_of_each_syntax_element() -> None:
    ctx = parse_context(_context(
        ["(@polite) [turn, switch] $state:state (the, a) $location:location [light, lights]",
         "[turn [on, off], (dim) (the) $location:location] lights"],
        macros={"polite": ["please", "could you"]}))
    first = ctx.expressions["lights"][0].node
    assert first == Seq((
        Choice((MacroRef("polite"),), optional=True),
        Choice((Words("turn"), Words("switch"))),
        Slot("state", "state"),
        Choice((Words("the"), Words("a")), optional=True),
        Slot("location", "location"),
        Choice((Words("light"), Words("lights"))),
    ))
    second = ctx.expressions["lights"][1].node
    assert second == Seq((
        Choice((
            Seq((Words("turn"), Choice((Words("on"), Words("off"))))),
            Seq((Choice((Words("dim"),), True), Choice((Words("the"),), True), Slot("location", "location"))),
        )),
        Words("lights"),
    ))
    assert ctx.macros["polite"].node == Choice((Words("please"), Words("could you")))
    assert ctx.count("lights") == (3 * 2 * 2 * 3 * 2 * 2) + (2 + 2 * 2 * 2) * 1


def test_scalars_stay_strings_and_apostrophes_digits_are_kept() -> None:
    ctx = parse_context("""
context:
  expressions:
    power: ["turn $state:state the $device:device"]
  slots:
    state: [on, off, yes, no, true]
    device: [tv 2, kid's lamp, 100]
""")
    assert [v.spoken for v in ctx.slots["state"].values] == ["on", "off", "yes", "no", "true"]
    assert [v.value for v in ctx.slots["device"].values] == ["tv 2", "kid's lamp", "100"]


def test_synonyms_ranges_and_fixed_slots() -> None:
    ctx = parse_context(_context(
        ["set $level:level percent in the $room:room",
         {"expression": "[turn, switch] on the fan", "slots": {"device": "fan"}},
         "half $half:half"],
        slots={"level": {"range": [0, 100], "step": 10}, "room": ["kitchen", {"living room": "lounge"}],
               "half": {"range": [0, 1], "step": 0.25}}))
    assert ctx.slots["level"].range == NumberRange(0, 100, 10)  # type: ignore[arg-type]
    assert [v.value for v in ctx.slots["level"].values] == [str(10 * k) for k in range(11)]
    assert [v.value for v in ctx.slots["half"].values] == ["0", "0.25", "0.5", "0.75", "1"]
    assert ctx.slots["room"].values[1] == SlotValue("living room", "lounge")
    assert ctx.expressions["lights"][1].fixed_slots == (("device", "fan"),)
    assert ctx.slot_heads() == {"level": [str(10 * k) for k in range(11)], "room": ["kitchen", "lounge"],
                                "device": ["fan"], "half": ["0", "0.25", "0.5", "0.75", "1"]}
    assert ctx.count() == 11 * 2 + 2 + 5


def test_same_slot_name_in_exclusive_alternatives_is_allowed() -> None:
    ctx = parse_context(_context(["[$state:x, the $location:x] please"]))
    assert ctx.count() == 4
    assert ctx.slot_heads() == {"x": ["on", "off", "kitchen", "hall"]}


def test_macros_may_use_macros_and_slots() -> None:
    ctx = parse_context(_context(["@ask turn it $state:state"],
                                 macros={"ask": ["@polite", "(@polite) can you"], "polite": ["please", "kindly"]}))
    assert ctx.count() == (2 + 3) * 2


def test_duplicate_alternatives_are_folded() -> None:
    ctx = parse_context(_context(["[on, on, off] (the, the) thing"]))
    assert ctx.count() == 2 * 2


def test_load_context_hashes_the_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "coffee.yaml"
    path.write_text(COFFEE, encoding="utf-8")
    ctx = load_context(path)
    assert ctx.sha256 == hashlib.sha256(COFFEE.encode()).hexdigest()
    assert ctx.file == str(path)
    assert ctx == parse_context(COFFEE)


def test_load_context_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="cannot read the file") as info:
        load_context(tmp_path / "missing.yaml")
    assert info.value.file == str(tmp_path / "missing.yaml")
    with pytest.raises(ContextError, match="import_hassil"):
        load_context(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes("context: caf\xe9".encode("latin-1"))
    with pytest.raises(ContextError, match="not UTF-8"):
        load_context(tmp_path / "latin1.yaml")


def test_round_trip_to_yaml() -> None:
    for source in (COFFEE, _context([{"expression": "fan (on)", "slots": {"device": "fan"}},
                                     "$level:l percent"], slots={"level": {"range": [1, 2], "step": 0.5}})):
        ctx = parse_context(source)
        again = parse_context(ctx.to_yaml())
        assert again == ctx
        assert again.to_yaml() == ctx.to_yaml()


def test_the_examples_load() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    counts = {}
    for name in ("lights", "smart_home", "digits"):
        ctx = load_context(root / f"{name}.yaml")
        counts[name] = len(ctx.intents)
        assert parse_context(ctx.to_yaml()) == ctx
    assert counts == {"lights": 3, "smart_home": 10, "digits": 1}
    digits = load_context(root / "digits.yaml")
    assert digits.slot_heads() == {"digit": [str(d) for d in range(10)]}


# --- errors: each names what is wrong and where -----------------------------------------

SLOTS = {"color": ["red"], "location": ["kitchen"]}


@pytest.mark.parametrize(("expression", "column", "message"), [
    ("turn on the $colour:c", 13, "unknown slot type 'colour' (defined: color, location)"),
    ("@polit turn on", 1, "unknown macro 'polit' (defined: polite)"),
    ("[turn, switch on", 1, "'[' is never closed"),
    ("turn on]", 8, "']' has no matching '['"),
    ("[turn on) x", 9, "')' cannot close '['"),
    ("(turn (on) x", 1, "'(' is never closed"),
    ("[red, ] x", 5, "empty alternative after ','"),
    ("[, red] x", 1, "empty alternative after '['"),
    ("(a,, b) c", 3, "empty alternative after ','"),
    ("() x", 1, "empty optional '()'"),
    ("x []", 3, "empty choice '[]'"),
    ("$color:c and $color:c", 14, "slot name 'c' is used twice (also at column 1)"),
    ("($color:c) the [$location:c, x]", 16, "slot name 'c' is used twice"),
    ("(please)", 1, "can say nothing"),
    ("[(a), (b)] (c)", 1, "can say nothing"),
    ("   ", 1, "empty expression"),
    ("turn, on", 5, "only allowed inside"),
    ("turn on $color", 9, "has no name: write $color:name"),
    ("turn on $:c", 9, "malformed slot"),
    ("turn on {area}", 9, "Home Assistant template syntax"),
    ("turn (on|off)", 9, "alternatives are written [a, b]"),
    ("turn on ?", 9, "not a word"),
])
def test_expression_errors_carry_intent_expression_and_column(expression: str, column: int, message: str) -> None:
    error = _error(_context(["turn it on", expression], slots=SLOTS, macros={"polite": ["please"]}))
    assert (error.file, error.intent, error.expression, error.column) == ("ctx.yaml", "lights", 2, column)
    assert message in str(error)
    assert str(error).startswith(f"ctx.yaml: intent 'lights', expression 2, column {column}: ")


def test_slot_repeated_through_a_macro() -> None:
    error = _error(_context(["$color:c @mine"], slots=SLOTS, macros={"mine": ["my $color:c"]}))
    assert (error.intent, error.expression, error.column) == ("lights", 1, 10)
    assert "used twice" in str(error)


def test_duplicate_intent_is_reported_with_lines() -> None:
    error = _error("""context:
  expressions:
    lights:
      - "turn on"
    lights:
      - "turn off"
""")
    assert error.intent == "lights"
    assert "intent 'lights' is defined twice (lines 3 and 5)" in str(error)


def test_duplicate_keys_elsewhere() -> None:
    assert "slot type 'a' is defined twice" in str(_error(
        "context:\n  expressions: {x: [go]}\n  slots:\n    a: [b]\n    a: [c]\n"))
    assert "duplicate key 'slots' in context" in str(_error(
        "context:\n  expressions: {x: [go]}\n  slots: {}\n  slots: {}\n"))


@pytest.mark.parametrize(("source", "message"), [
    ("expressions: {x: [go]}\n", "missing 'context:' key"),
    ("language: en\nintents: {}\n", "use import_hassil"),
    ("- context\n", "expected a mapping with a 'context:' key"),
    ("context:\n  slots: {}\n", "missing 'expressions:'"),
    ("context:\n  expressions: {}\n", "no intents"),
    ("context:\n  expressions: {x: [go]}\nextra: 1\n", "unknown key 'extra' in the top level (allowed: context)"),
    ("context:\n  expressions: {x: [go]}\n  slot: {}\n", "unknown key 'slot' in context (allowed: expressions, slots"),
    ("context:\n  expressions: [go]\n", "context.expressions must be a mapping"),
    ("context:\n  expressions: {x: [go]}\n  slots: [a, b]\n", "context.slots must be a mapping"),
    ("context:\n  expressions: {x: [go]}\n  slots: {a: b}\n", "slot type 'a' must be a non-empty list"),
    ("context:\n  expressions: {x: [go]}\n  slots: {a: []}\n", "slot type 'a' must be a non-empty list"),
    ("context:\n  expressions: {x: [go]}\n  slots: {a: [TV, tv]}\n", "value 2: 'tv' is said the same way as value 1"),
    ("context:\n  expressions: {x: [go]}\n  slots: {a: [{b: c, d: e}]}\n", "value 1: a synonym is one"),
    ("context:\n  expressions: {x: [go]}\n  slots: {a: ['?']}\n", "nothing to say"),
    ("context:\n  expressions: {x: [go]}\n  slots: {a: {range: [10, 0]}}\n", "first <= last and step > 0"),
    ("context:\n  expressions: {x: [go]}\n  slots: {a: {range: [0, 10], step: 0}}\n", "step > 0"),
    ("context:\n  expressions: {x: [go]}\n  slots: {a: {range: 5}}\n", "'range' must be [first, last]"),
    ("context:\n  expressions: {x: [go]}\n  slots: {a: {range: [a, 5]}}\n", "range bound must be a number"),
    ("context:\n  expressions: {x: [go]}\n  slots: {a: {range: [0, 1000000]}}\n", "more than 100000"),
    ("context:\n  expressions: {x: [go]}\n  slots: {a: {range: [0, 5], by: 1}}\n", "unknown key 'by'"),
    ("context:\n  expressions: {x: [go]}\n  slots: {a b: [c]}\n", "slot type 'a b' is not a valid name"),
    ("context:\n  expressions: {x: [go]}\n  macros: {m: ['@n'], n: ['@m x']}\n", "macro 'm' refers to itself"),
    ("context:\n  expressions: {x: [go]}\n  macros: {m: []}\n", "macro 'm' must be a non-empty list"),
    ("context:\n  expressions: [a\n", "line 3, column 1: YAML syntax error"),
    ("context:\n  expressions: {x: [go]}\n    bad: indent\n", "line 3, column 5: YAML syntax error"),
])
def test_file_level_errors(source: str, message: str) -> None:
    error = _error(source)
    assert error.file == "ctx.yaml"
    assert message in str(error)


@pytest.mark.parametrize(("intent_body", "message"), [
    ("turn on", "expected a non-empty list of expressions"),
    ("[]", "expected a non-empty list of expressions"),
    ("[[a, b]]", "an expression must be a string, got list"),
    ("[{expression: go, say: x}]", "unknown key 'say' (allowed: expression, slots)"),
    ("[{expression: go $s:n, slots: {n: x}}]", "fixed slot 'n' is also a spoken slot"),
])
def test_intent_level_errors(intent_body: str, message: str) -> None:
    error = _error(f"context:\n  expressions:\n    x: {intent_body}\n  slots: {{s: [a]}}\n")
    assert error.intent == "x"
    assert message in str(error)


def test_error_inside_a_macro_names_macro_and_column() -> None:
    error = _error(_context(["go"], slots=SLOTS, macros={"polite": ["please", "could $you:x"]}))
    assert error.column == 7 and error.intent is None
    assert "in macro 'polite', alternative 2: unknown slot type 'you'" in str(error)


def test_booleans_in_loaded_data_are_refused_with_a_hint() -> None:
    error = _error({"context": {"expressions": {"x": ["turn $s:s"]}, "slots": {"s": [True, False]}}})
    assert "quote it" in str(error)
    assert parse_context({"context": {"expressions": {"x": ["channel $n:n"]}, "slots": {"n": [1, 2]}}}).count() == 2


def test_invalid_intent_name() -> None:
    error = _error({"context": {"expressions": {"turn on": ["go"]}}})
    assert "intent 'turn on' is not a valid name" in str(error)


def test_importable_without_numpy_or_torch() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = ("import sys; import assistant.context; "
            "bad = [m for m in ('numpy', 'torch', 'onnxruntime') if m in sys.modules]; print(bad)")
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(root), "PATH": ""}, check=True)
    assert result.stdout.strip() == "[]"
