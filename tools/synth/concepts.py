"""The synthetic hashtag world's vocabulary: visual concepts (WordNet 3.0 nouns, checked against the
database) with their synonyms and misspellings, non-visual tags, and a seeded long tail of junk tags.
Table order is frequency rank: the generator draws concepts Zipf-like over this order.

Synonyms are lemmas of the concept's synset. A WordNet merge that maps each lemma to its first sense
(index.noun order) joins many of them (car/automobile/auto, sundown/sunset, donut/sinker, plurals by
morphy, brownbear/brown_bear) but not those whose first sense is another synset (kitty: a pool of
money; bike: motorcycle; java; burger); synonyms.tsv lists them all."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("object", "scene")

SHAPES = (
    "circle",
    "ellipse",
    "ring",
    "square",
    "triangle",
    "star",
    "cross",
    "diamond",
    "crescent",
    "hexagon",
    "bar",
    "semicircle",
    "double",
)
PATTERNS = ("solid", "stripes", "dots", "checker")
SCENES = ("beach", "sunset", "forest", "mountain", "snow", "city", "ocean", "rainbow", "night")

# name -> (hue degrees, saturation, value): far enough apart to tell at 64 px after jitter
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.0, 0.85, 0.88),
    "orange": (28.0, 0.9, 0.95),
    "yellow": (55.0, 0.85, 0.95),
    "green": (120.0, 0.7, 0.65),
    "teal": (175.0, 0.75, 0.7),
    "blue": (220.0, 0.8, 0.85),
    "purple": (275.0, 0.6, 0.72),
    "pink": (330.0, 0.5, 0.95),
    "brown": (25.0, 0.65, 0.45),
    "white": (0.0, 0.0, 0.96),
    "black": (0.0, 0.0, 0.1),
}


@dataclass(frozen=True)
class Concept:
    """One visual concept. `name` is the canonical tag and a WordNet 3.0 noun lemma; `synonyms` are
    other lemmas of the same synset (`synset`, a noun offset); `variants` are plurals, misspellings
    and slang that only a synonym list merges. Objects are drawn as `shape` in `colour` filled with
    `pattern`; scenes are a whole background layout named by `name`."""

    name: str
    kind: str
    synset: str
    synonyms: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    shape: str = ""
    colour: str = ""
    pattern: str = "solid"

    def spellings(self) -> tuple[str, ...]:
        return (self.name, *self.synonyms, *self.variants)


def _o(name, synset, synonyms, variants, shape, colour, pattern="solid") -> Concept:
    return Concept(name, "object", synset, tuple(synonyms), tuple(variants), shape, colour, pattern)


def _s(name, synset, synonyms, variants) -> Concept:
    return Concept(name, "scene", synset, tuple(synonyms), tuple(variants))


CONCEPTS: tuple[Concept, ...] = (
    _s("sunset", "15169248", ["sundown"], ["sunsets", "sunsetlover", "sunet"]),
    _o("dog", "02084071", ["domestic_dog"], ["dogs", "doggo", "dogg"], "ellipse", "brown"),
    _s("beach", "09217230", [], ["beaches", "beachlife", "beack"]),
    _o("kitten", "02122948", ["kitty"], ["kitteh", "kittten", "kittens"], "triangle", "orange", "stripes"),
    _o("flower", "11669335", ["blossom", "bloom"], ["flowers", "flowerz", "flwr"], "star", "pink"),
    _o("coffee", "07929519", ["java"], ["coffe", "cofee", "coffeetime"], "circle", "black"),
    _o("car", "02958343", ["automobile", "auto", "motorcar"], ["cars", "carr"], "square", "red"),
    _o("pizza", "07873807", ["pizza_pie"], ["pizzza", "pizzas", "pizzalover"], "triangle", "yellow", "dots"),
    _s("city", "08524735", ["metropolis", "urban_center"], ["citylife", "cityy", "citi"]),
    _o("sunglasses", "04356056", ["shades", "dark_glasses"], ["sunnies", "sunglases"], "ellipse", "black"),
    _o("bicycle", "02834778", ["bike", "cycle"], ["bicycles", "bycicle", "bicicleta"], "ring", "blue"),
    _s("night", "15167027", ["nighttime"], ["nights", "nite", "nightt"]),
    _o("donut", "07639069", ["doughnut", "sinker"], ["donuts", "doughnuts", "donutt"], "ring", "pink", "dots"),
    _o("hamburger", "07697100", ["burger", "beefburger"], ["burgers", "hamburguer"], "circle", "brown", "stripes"),
    _s("forest", "08438533", ["woods"], ["forrest", "forests", "forestt"]),
    _o("ice_cream", "07614500", ["icecream"], ["icecreams", "ice_creamm", "icescream"], "diamond", "pink"),
    _o(
        "sneaker",
        "03472535",
        ["gym_shoe", "tennis_shoe"],
        ["sneakers", "sneakerhead", "snekers"],
        "square",
        "white",
        "stripes",
    ),
    _s("mountain", "09359803", ["mount"], ["mountains", "mountian", "mountainz"]),
    _o("butterfly", "02274259", [], ["butterflies", "buterfly", "butterfy"], "star", "purple", "dots"),
    _o("cookie", "07635155", ["cooky", "biscuit"], ["cookies", "cookiee"], "circle", "brown", "dots"),
    _o("airplane", "02691156", ["aeroplane", "plane"], ["airplanes", "airplain"], "cross", "white"),
    _s("snow", "11508382", ["snowfall"], ["snowy", "snoww", "sno"]),
    _o("balloon", "02782093", [], ["balloons", "baloon", "ballon"], "ellipse", "red"),
    _o(
        "ladybug",
        "02165456",
        ["ladybird", "lady_beetle", "ladybeetle"],
        ["ladybugs", "ladybugg"],
        "circle",
        "red",
        "dots",
    ),
    _s("ocean", "09376198", [], ["oceans", "oceanview", "ocaen"]),
    _o("lighthouse", "02814860", ["beacon", "pharos"], ["lighthouses", "lightouse"], "bar", "red", "stripes"),
    _o("brown_bear", "02132136", ["bruin"], ["brownbear", "brownbears", "grizzlybear"], "hexagon", "brown"),
    _o("sailboat", "04128499", ["sailing_boat"], ["sailboats", "sailboatt", "sail_boat"], "triangle", "white"),
    _s("rainbow", "09403427", [], ["rainbows", "rainbw", "rainbowz"]),
    _o("clock", "03046257", [], ["clocks", "clok", "clockk"], "circle", "white"),
    _o("strawberry", "07745940", [], ["strawberries", "strawbery", "strawberrys"], "diamond", "red", "dots"),
    _o("lemon", "07749582", [], ["lemons", "lemmon", "limon"], "ellipse", "yellow"),
    _o("watermelon", "07756951", [], ["watermelons", "watermellon"], "crescent", "green", "stripes"),
    _o("fish", "02512053", [], ["fishes", "fishy", "fishh"], "ellipse", "teal", "stripes"),
    _o("snowman", "04251983", [], ["snowmen", "snowmann", "snow_man"], "double", "white"),
    _o("tomato", "07734017", [], ["tomatoes", "tomatos", "tomatoe"], "hexagon", "red"),
    _o("umbrella", "04507155", [], ["umbrellas", "umbrela", "umbrella_"], "semicircle", "blue", "stripes"),
    _o("guitar", "03467517", [], ["guitars", "guitarra", "gitar"], "double", "orange"),
    _o("kite", "03621473", [], ["kites", "kitee", "kiteflying"], "diamond", "yellow", "checker"),
)

# non-visual tags, most popular first (canonical forms; a few need NFKC/casefolding to meet these)
NONVISUAL: tuple[str, ...] = (
    "love",
    "instagood",
    "photooftheday",
    "tbt",
    "beautiful",
    "happy",
    "picoftheday",
    "follow",
    "me",
    "like4like",
    "instadaily",
    "friends",
    "repost",
    "nofilter",
    "fun",
    "style",
    "smile",
    "followme",
    "tagsforlikes",
    "igers",
    "amazing",
    "bestoftheday",
    "throwback",
    "weekend",
    "mood",
    "goodvibes",
    "blessed",
    "life",
    "family",
    "inspiration",
    "art",
    "instamood",
    "café",
    "amor",
    "vsco",
    "explore",
    "photography",
    "travel",
    "latergram",
    "mondaymotivation",
)

_SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ra",
    "zu",
    "ne",
    "to",
    "shi",
    "ba",
    "ve",
    "qui",
    "dor",
    "fen",
    "gal",
    "hu",
    "jin",
    "pla",
    "tro",
    "wex",
    "yo",
    "mar",
    "sun",
    "day",
    "fun",
    "nyc",
    "la",
    "bo",
    "tex",
    "ari",
)
_JUNK_SUFFIXES = ("", "", "", "2019", "2024", "_", "xo", "life", "vibes", "gram", "official", "day", "123")


def check_table() -> None:
    """Raise ValueError if the concept table breaks its own rules (run at import, costs microseconds)."""
    seen: dict[str, str] = {}
    looks: dict[tuple[str, str, str], str] = {}
    for c in CONCEPTS:
        if c.kind not in KINDS:
            raise ValueError(f"concept {c.name!r}: kind {c.kind!r} not in {KINDS}")
        if c.kind == "object":
            if c.shape not in SHAPES or c.colour not in COLOURS or c.pattern not in PATTERNS:
                raise ValueError(
                    f"concept {c.name!r}: shape/colour/pattern {c.shape!r}/{c.colour!r}/{c.pattern!r} "
                    f"must be in {SHAPES} / {tuple(COLOURS)} / {PATTERNS}"
                )
            key = (c.shape, c.colour, c.pattern)
            if key in looks:
                raise ValueError(f"concepts {looks[key]!r} and {c.name!r} look the same: {key}")
            looks[key] = c.name
        elif c.name not in SCENES:
            raise ValueError(f"scene concept {c.name!r} not in {SCENES}")
        for s in c.spellings():
            if s != s.casefold() or s.startswith("#") or " " in s:
                raise ValueError(f"spelling {s!r} of {c.name!r} is not canonical (lowercase, no '#', no spaces)")
            if s in seen:
                raise ValueError(f"spelling {s!r} belongs to both {seen[s]!r} and {c.name!r}")
            seen[s] = c.name
    clash = set(seen) & set(NONVISUAL)
    if clash:
        raise ValueError(f"non-visual tags {sorted(clash)} are also concept spellings")


def junk_tags(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct made-up hashtags (the long tail real feeds have), none a concept spelling or a non-visual tag."""
    taken = {s for c in CONCEPTS for s in c.spellings()} | set(NONVISUAL)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        k = int(rng.integers(2, 4))
        word = "".join(_SYLLABLES[i] for i in rng.integers(0, len(_SYLLABLES), k))
        word += _JUNK_SUFFIXES[int(rng.integers(0, len(_JUNK_SUFFIXES)))]
        if word not in taken and word not in seen:
            seen.add(word)
            out.append(word)
    return out


check_table()
