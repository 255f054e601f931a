"""Negatives for rejection: speech and sounds the model must answer with "not understood".

Four kinds (labelled ``intent: null``, ``slots: {}``):

- ``out_of_domain``: everyday sentences from other domains (weather chat, cooking,
  questions, small talk, news ...), written below.
- ``near_miss``: sentences built from the context's own words that are *not* commands of
  it: slot values alone, a command's words shuffled, the carrier verb swapped for a
  wrong one, a command cut short or missing a word, a slot value put in another slot's
  place.
- ``silence``: a low-level noise floor (-70 to -50 dBFS).
- ``noise``: colored or household noise from :mod:`distill.augment` (-35 to -12 dBFS).

Every candidate sentence is checked against the context's grammar by
:class:`CommandChecker` and dropped when it is a valid command (see its docstring for
how exact that check is).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assistant.context import Context, Sample, normalize_text, sample_sentences
from assistant.context.model import Choice, Node, Seq, Slot, Words
from assistant.errors import ConfigError

_LOGGER = logging.getLogger(__name__)

SPEECH_KINDS = ("out_of_domain", "near_miss")
"""Negative kinds that are spoken by a TTS voice."""
NONSPEECH_KINDS = ("silence", "noise")
"""Negative kinds that are generated audio, not speech."""
NEGATIVE_KINDS = SPEECH_KINDS + NONSPEECH_KINDS


@dataclass(frozen=True)
class NegativeConfig:
    """How the negatives of a corpus are split among the kinds."""

    weights: tuple[tuple[str, float], ...] = (
        ("out_of_domain", 0.35), ("near_miss", 0.35), ("silence", 0.1), ("noise", 0.2))
    """Relative share of each kind (kinds: out_of_domain, near_miss, silence, noise)."""
    silence_db: tuple[float, float] = (-70.0, -50.0)
    """Range of the noise floor level of silence clips, dBFS RMS."""
    noise_db: tuple[float, float] = (-35.0, -12.0)
    """Range of the level of noise clips, dBFS RMS."""
    duration_s: tuple[float, float] = (0.6, 3.0)
    """Range of the length of silence and noise clips, seconds."""

    def __post_init__(self) -> None:
        for kind, weight in self.weights:
            if kind not in NEGATIVE_KINDS:
                raise ConfigError(f"negative kind {kind!r} is not one of {', '.join(NEGATIVE_KINDS)}")
            if weight < 0:
                raise ConfigError(f"negative kind {kind!r}: weight must be >= 0, got {weight}")
        if not any(w > 0 for _, w in self.weights):
            raise ConfigError("negative weights: at least one kind needs a positive weight")
        for name in ("silence_db", "noise_db", "duration_s"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"negatives {name}: low {low} above high {high}")
        if self.duration_s[0] <= 0:
            raise ConfigError(f"negatives duration_s must be positive, got {self.duration_s}")

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "silence_db": list(self.silence_db),
                "noise_db": list(self.noise_db), "duration_s": list(self.duration_s)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NegativeConfig:
        default = cls()
        return cls(weights=tuple((str(k), float(v)) for k, v in dict(data.get("weights", dict(default.weights))).items()),
                   silence_db=_pair(data.get("silence_db", default.silence_db)),
                   noise_db=_pair(data.get("noise_db", default.noise_db)),
                   duration_s=_pair(data.get("duration_s", default.duration_s)))


def _pair(value: Any) -> tuple[float, float]:
    low, high = value
    return float(low), float(high)


@dataclass(frozen=True)
class Negative:
    """One planned negative: its kind, the text to speak (empty for non-speech) and its parameters."""

    kind: str
    text: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    """For silence/noise: ``source`` (colored/household), ``color`` or ``noise``, ``level_db``, ``duration_s``, ``seed``;
    for near misses: ``how`` (the generator used)."""


class CommandChecker:
    """Tells exactly whether a sentence is a command of the context (so a negative must not be it).

    The normalized words are matched against every expression's tree (phrases, choices,
    optionals, slots with all their spoken values, macros): a sentence is a command iff
    some expression can say exactly those words. Matching is on normalized words, so it
    cannot tell apart sentences that differ only in punctuation or casing (neither can a
    speech model).
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._slot_words = {name: [tuple(normalize_text(v.spoken).split()) for v in slot_type.values]
                            for name, slot_type in ctx.slots.items()}
        self._phrases: dict[str, tuple[str, ...]] = {}

    def __call__(self, text: str) -> bool:
        words = tuple(normalize_text(text).split())
        memo: dict[tuple[int, int], frozenset[int]] = {}
        for expressions in self.ctx.expressions.values():
            for expression in expressions:
                if len(words) in self._ends(expression.node, words, 0, memo):
                    return True
        return False

    def _ends(self, node: Node, words: tuple[str, ...], pos: int,
              memo: dict[tuple[int, int], frozenset[int]]) -> frozenset[int]:
        """The positions where ``node`` can stop after starting at ``pos``."""
        key = (id(node), pos)
        cached = memo.get(key)
        if cached is not None:
            return cached
        ends: set[int] = set()
        if isinstance(node, Words):
            phrase = self._phrases.get(node.text)
            if phrase is None:
                phrase = self._phrases[node.text] = tuple(normalize_text(node.text).split())
            if words[pos:pos + len(phrase)] == phrase:
                ends.add(pos + len(phrase))
        elif isinstance(node, Seq):
            current = {pos}
            for item in node.items:
                current = {e for start in current for e in self._ends(item, words, start, memo)}
                if not current:
                    break
            ends = current
        elif isinstance(node, Choice):
            if node.optional:
                ends.add(pos)
            for option in node.options:
                ends |= self._ends(option, words, pos, memo)
        elif isinstance(node, Slot):
            for value in self._slot_words[node.type]:
                if words[pos:pos + len(value)] == value:
                    ends.add(pos + len(value))
        else:
            ends |= self._ends(self.ctx.resolve(node), words, pos, memo)
        result = frozenset(ends)
        memo[key] = result
        return result


WRONG_VERBS = ("paint", "sell", "wash", "hide", "borrow", "fold", "bury", "carry", "describe", "forget",
               "photograph", "measure", "repair", "follow", "polish", "decorate", "count", "feed", "lick", "order")
"""Verbs put in place of a command's carrier verb for near misses (skipped when the context uses them)."""

_FUNCTION_WORDS = frozenset(["the", "a", "an", "to", "of", "in", "at", "for", "my", "your", "our", "please",
                             "could", "would", "you", "can", "me", "it", "and"])


def _near_miss_candidates(ctx: Context, rng: random.Random, commands: list[Sample]) -> list[tuple[str, str]]:
    """A batch of (text, how) near-miss candidates (not yet checked against the grammar)."""
    vocabulary = ctx.vocabulary()
    values = sorted({normalize_text(v.spoken) for slot_type in ctx.slots.values() for v in slot_type.values})
    verbs = [v for v in WRONG_VERBS if v not in vocabulary]
    out: list[tuple[str, str]] = []
    for sample in commands:
        words = sample.text.split()
        spoken = dict(sample.spoken)
        slot_words = {w for v in spoken.values() for w in v.split()}
        how = rng.choice(("slot_values", "shuffled", "verb_swap", "partial", "word_drop", "slot_swap"))
        if how == "slot_values" and values:
            out.append((" ".join(rng.sample(values, k=min(len(values), rng.choice((1, 1, 2))))), how))
        elif how == "shuffled" and len(words) > 2:
            shuffled = words[:]
            for _ in range(5):
                rng.shuffle(shuffled)
                if shuffled != words:
                    break
            out.append((" ".join(shuffled), how))
        elif how == "verb_swap" and verbs:
            spots = [i for i, w in enumerate(words) if w not in _FUNCTION_WORDS and w not in slot_words]
            if spots:
                i = spots[0]
                out.append((" ".join([*words[:i], rng.choice(verbs), *words[i + 1:]]), how))
        elif how == "partial" and len(words) > 1:
            k = rng.randint(1, len(words) - 1)
            out.append((" ".join(words[:k] if rng.random() < 0.6 else words[-k:]), how))
        elif how == "word_drop" and len(words) > 2:
            i = rng.randrange(len(words))
            out.append((" ".join(words[:i] + words[i + 1:]), how))
        elif how == "slot_swap" and spoken and len(values) > 1:
            said = rng.choice(sorted(spoken.values()))
            other = rng.choice([v for v in values if v != said])
            padded = f" {sample.text} "
            if f" {said} " in padded:
                out.append((padded.replace(f" {said} ", f" {other} ", 1).strip(), how))
    return out


def near_misses(ctx: Context, n: int, rng: random.Random, checker: CommandChecker | None = None) -> list[tuple[str, str]]:
    """``n`` (text, how) near misses: context words that do not form a command of the context.

    When the context is too small to yield ``n`` distinct ones, some are repeated (logged);
    none at all are returned (with a warning) only when no candidate survives the check.
    Candidates made only of function words ("the", "please") are left out.
    """
    if n <= 0:
        return []
    checker = checker or CommandChecker(ctx)
    found: dict[str, str] = {}
    for round_ in range(20):
        if len(found) >= n:
            break
        commands = sample_sentences(ctx, max(16, 2 * n), seed=rng.randrange(2**31))
        for text, how in _near_miss_candidates(ctx, rng, commands):
            text = normalize_text(text)
            if text and not set(text.split()) <= _FUNCTION_WORDS and text not in found and not checker(text):
                found[text] = how
        _LOGGER.debug("near misses: round %d, %d found", round_, len(found))
    items = list(found.items())
    rng.shuffle(items)
    if not items:
        _LOGGER.warning("could not build any near miss from this context")
        return []
    if len(items) < n:
        _LOGGER.info("only %d distinct near misses for %d wanted; repeating some", len(items), n)
        items += [rng.choice(items) for _ in range(n - len(items))]
    return items[:n]


def out_of_domain(ctx: Context, n: int, rng: random.Random, checker: CommandChecker | None = None) -> list[str]:
    """``n`` sentences from other domains (none of them a command of the context)."""
    if n <= 0:
        return []
    checker = checker or CommandChecker(ctx)
    pool = [text for text in (normalize_text(s) for s in OUT_OF_DOMAIN) if not checker(text)]
    if not pool:
        return []
    picks: list[str] = []
    while len(picks) < n:
        batch = pool[:]
        rng.shuffle(batch)
        picks.extend(batch)
    return picks[:n]


def plan_negatives(ctx: Context, n: int, rng: random.Random, config: NegativeConfig | None = None) -> list[Negative]:
    """Plan ``n`` negatives split among the kinds by ``config.weights`` (deterministic given rng)."""
    config = config or NegativeConfig()
    if n <= 0:
        return []
    kinds = [k for k, w in config.weights if w > 0]
    weights = [w for _, w in config.weights if w > 0]
    drawn = rng.choices(kinds, weights=weights, k=n)
    counts = {k: drawn.count(k) for k in kinds}
    checker = CommandChecker(ctx) if counts.get("near_miss") or counts.get("out_of_domain") else None
    plan: list[Negative] = []
    for text in out_of_domain(ctx, counts.get("out_of_domain", 0), rng, checker):
        plan.append(Negative("out_of_domain", text))
    for text, how in near_misses(ctx, counts.get("near_miss", 0), rng, checker):
        plan.append(Negative("near_miss", text, {"how": how}))
    for kind in NONSPEECH_KINDS:
        for _ in range(counts.get(kind, 0)):
            plan.append(Negative(kind, "", nonspeech_params(kind, rng, config)))
    rng.shuffle(plan)
    return plan


def nonspeech_params(kind: str, rng: random.Random, config: NegativeConfig) -> dict[str, Any]:
    """Draw the parameters of one silence or noise clip."""
    from distill.augment import HOUSEHOLD_KINDS

    duration = round(rng.uniform(*config.duration_s), 2)
    seed = rng.randrange(2**31)
    if kind == "silence":
        return {"source": "colored", "color": rng.choice(("white", "pink")),
                "level_db": round(rng.uniform(*config.silence_db), 1), "duration_s": duration, "seed": seed}
    if kind != "noise":
        raise ConfigError(f"non-speech kind {kind!r} is not one of {', '.join(NONSPEECH_KINDS)}")
    level = round(rng.uniform(*config.noise_db), 1)
    if rng.random() < 0.4:
        return {"source": "colored", "color": rng.choice(("white", "pink", "brown")), "level_db": level,
                "duration_s": duration, "seed": seed}
    return {"source": "household", "noise": rng.choice(sorted(HOUSEHOLD_KINDS)), "level_db": level,
            "duration_s": duration, "seed": seed}


def nonspeech_voice(params: Mapping[str, Any]) -> str:
    """The manifest ``voice`` of a non-speech clip: ``noise:<color or household kind>``."""
    return f"noise:{params.get('color') or params.get('noise')}"


def render_nonspeech(params: Mapping[str, Any], sample_rate: int = 16000) -> np.ndarray:
    """The audio of a silence/noise clip from its parameters (deterministic), float32."""
    from distill.augment import colored_noise, household_noise

    n = max(1, int(round(float(params["duration_s"]) * sample_rate)))
    rng = np.random.default_rng(int(params["seed"]))
    if params["source"] == "household":
        audio = household_noise(n, str(params["noise"]), rng, sample_rate=sample_rate)
    else:
        audio = colored_noise(n, str(params["color"]), rng)
    audio = np.asarray(audio, dtype=np.float64)
    rms = float(np.sqrt(np.mean(audio**2))) or 1.0
    scaled = audio / rms * 10.0 ** (float(params["level_db"]) / 20.0)
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


OUT_OF_DOMAIN: tuple[str, ...] = tuple(line.strip() for line in """
it looks like it is going to rain again this afternoon
the forecast says we will get snow by the weekend
what a lovely sunny morning it is today
I heard the storm knocked down a few trees on our street
it was so humid yesterday that I could barely sleep
do you think we need umbrellas for the walk later
the wind has been howling all night long
they say this will be the warmest summer on record
there is a thick fog over the valley this morning
the frost killed all of the tomatoes in the garden
I love the smell of the air after a thunderstorm
it is freezing outside so wear your warm coat
the sky turned bright orange at sunset
we might see a rainbow if the sun comes out
the river flooded the fields near the old bridge
the roads will be icy tomorrow morning
spring came early this year and the cherry trees are blooming
it has not rained properly in three weeks
the clouds are rolling in from the west
I can hear hail hitting the roof
preheat the oven to two hundred degrees before you start
chop the onions finely and fry them until golden
add a pinch of salt and a little black pepper
the pasta needs about nine minutes in boiling water
let the dough rest for an hour before rolling it out
I think we ran out of flour again
this soup could use a bit more garlic
whisk the eggs with the sugar until the mixture is pale
the bread came out a little too dark on the bottom
can you pass me the wooden spoon
we are having roast chicken with potatoes tonight
the recipe calls for two cups of rice
I burned the pancakes again this morning
slice the carrots into thin rounds
the cake is done when a toothpick comes out clean
simmer the sauce gently for twenty minutes
squeeze half a lemon over the fish
my grandmother made the best apple pie
I always forget to soak the beans overnight
the curry is a bit too spicy for the kids
sprinkle some fresh parsley on top before serving
do we have any butter left in the fridge
the avocados are finally ripe
stir the risotto so it does not stick to the pan
let us order pizza instead of cooking tonight
how far away is the moon
why is the sky blue during the day
who wrote the book about the white whale
how many bones are there in the human body
what is the capital city of australia
when did the first airplane fly
how do bees make honey
why do cats purr when they are happy
what is the tallest mountain in africa
how long does it take to fly to japan
who invented the telephone
how deep is the ocean at its deepest point
what language do they speak in brazil
how many legs does a spider have
why do leaves change color in autumn
what makes thunder so loud
how old is the universe
where do penguins live in the wild
what is the difference between a frog and a toad
how many players are on a soccer team
is a tomato a fruit or a vegetable
hello there how have you been
it is nice to finally meet you in person
thanks so much for coming over tonight
I am sorry I am a little late
how was your weekend at the lake
did you sleep well last night
I cannot believe how fast this year went by
congratulations on the new job
we should get coffee sometime next week
long time no see my friend
I hope you have a wonderful birthday
that was a really funny story
I will call you back in a few minutes
see you tomorrow at the usual place
have a safe trip and text me when you land
what have you been up to lately
my sister is visiting us next month
the kids had a great time at the party
I think I left my keys at the office
you look great in that sweater
the neighbors got a new puppy
I am so tired after that long drive
we need to plan the family reunion soon
he told me the funniest joke at lunch
let me know if you need any help moving
the city council voted to build a new library
officials announced a new train line to the airport
the local team won the championship last night
markets closed slightly higher on friday
scientists discovered a new species of frog in the rainforest
the museum is opening a dinosaur exhibit next month
the mayor will give a speech at noon
a new bakery opened on the corner of main street
the concert was postponed because of the weather
researchers say walking every day improves your mood
the bridge will be closed for repairs all summer
the school is raising money for new computers
the election results will be announced tomorrow
a rare comet will be visible next week
the price of coffee went up again this year
astronauts returned safely from the space station
the festival drew thousands of visitors this weekend
the old factory is being turned into apartments
a marathon runner broke the course record this morning
the zoo welcomed a baby giraffe
I need to finish this report before friday
the meeting has been moved to three o clock
can you send me the slides from yesterday
my manager wants the numbers by the end of the week
the printer on the second floor is jammed again
we hired two new engineers this month
I have a dentist appointment on tuesday
the train was twenty minutes late this morning
I forgot to reply to that email
the project deadline is coming up fast
our team lunch is on thursday
I spent all day fixing a bug in the code
the interview went better than I expected
I am working from home on mondays now
the quarterly review is next wednesday
did you see the game last night
that goal in the last minute was incredible
I started running three times a week
the tennis match lasted almost five hours
he finally learned how to ride a bike
we are going hiking in the mountains on saturday
my favorite team lost again
the swimming pool opens at seven in the morning
she won a gold medal in the relay
I want to learn how to play golf
the referee made a terrible call
our bowling team came in second place
cycling to work saves me a lot of money
the ski season starts in december
I need new running shoes
we booked a cabin by the sea for august
the flight leaves at six in the morning
don't forget to pack your passport
the hotel had a beautiful view of the harbor
I would love to visit iceland someday
the museum was closed when we got there
we got lost twice on the way to the campsite
the beach was crowded on sunday
the ferry ride took almost two hours
my suitcase is too heavy to lift
we should rent a car when we get there
the old town has such narrow streets
I bought a map at the train station
the tour guide spoke four languages
the milk is on sale at the market this week
I need to pick up some stamps at the post office
these shoes were half price
we should buy a bigger table for the dining room
the store closes at nine on weekdays
I returned the jacket because it was too small
can you grab some bananas on your way home
the new phone costs way too much
I always forget my shopping bags
the pharmacy is next to the bakery
my daughter lost her first tooth today
the baby finally slept through the night
my son wants a dog for his birthday
grandpa is teaching the kids to fish
we are painting the fence this weekend
the cat knocked a glass off the table
my brother is getting married in june
the dog keeps barking at the mailman
my parents are celebrating their anniversary
the kids built a snowman in the yard
I am reading a mystery novel about a missing painter
the movie was much better than the book
have you heard the new album from that band
I learned three chords on the guitar today
the play had a surprising ending
she paints watercolors of birds
we watched a documentary about whales
my favorite poem is about the sea
he plays the piano every evening
the library has a great collection of old maps
I am trying to learn spanish with an app
the museum has a painting that is five hundred years old
a good night's sleep is important for your health
drink plenty of water when it is hot
I have a slight headache this morning
the doctor said my knee will heal in a few weeks
I try to eat more vegetables these days
stretching before exercise helps prevent injuries
I caught a cold from my coworker
she does yoga every morning at six
my back hurts from sitting all day
the flu is going around at school
the roses need more sunlight
I planted carrots and beans in the garden
the lawn needs mowing again
the apple tree is full of fruit this year
a squirrel stole all the bird seed
we should pull the weeds before they spread
the hedge is getting too tall
the tulips came up early this spring
the compost pile is starting to smell
I found a bird nest in the bush
the battery in my watch died
my laptop is running really slow
I think the website is down
the new update changed all the menus
I dropped my phone and cracked the screen
the wifi at the cafe is terrible
I need a longer charging cable
my password expired again
the video keeps buffering
he builds robots in his garage
I wonder what dinosaurs really sounded like
if I won the lottery I would travel the world
sometimes I think about moving to the countryside
it is funny how time flies when you are busy
I would like to learn how to sail
do you believe in luck
I have always wanted to see the northern lights
life is too short to drink bad coffee
every cloud has a silver lining
the early bird catches the worm
a penny saved is a penny earned
my bank sent me a new card
I need to pay the electricity bill
taxes are due at the end of april
we are saving up for a new car
the rent is going up next year
I opened a savings account for the kids
the insurance company finally called back
interest rates went down last month
the plumber is coming on friday morning
the roof needs new shingles
we are redoing the bathroom tiles
there is a crack in the basement wall
the paint is peeling off the front door
we found an old photo album in the attic
I lost a sock in the laundry again
the couch is surprisingly comfortable
the chair in my office squeaks
the elephant is the largest land animal
octopuses have three hearts
honey never spoils if you store it well
bananas are technically berries
the great wall of china is very long
a group of crows is called a murder
light from the sun takes eight minutes to reach us
some turtles can live for over a hundred years
the human brain uses a lot of energy
sharks have been around longer than trees
one two three testing testing
um I forgot what I was going to say
hmm let me think about that for a second
oh wow look at that
yeah no that is not what I meant
okay okay I hear you
wait a minute where did I put my glasses
sorry could you repeat that
no thanks I am just looking
uh huh that makes sense
""".strip().splitlines() if line.strip())
"""A few hundred everyday sentences from other domains (no command of a smart-home context)."""
