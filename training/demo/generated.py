"""Generated English sentences for the demo corpus: text coverage for the GPT.

The written sentence set (`sentences_en.txt`) has a few hundred sentences, and a GPT that maps
phones to semantic tokens learns that mapping from the distinct texts it sees: with a few
hundred it memorises them instead. This module writes thousands more, deterministically, from
small templates and word lists of our own. They are plain, grammatical, and varied in length
and sound; they are spoken only by the base model's training voices (`train_generated.list`),
never by a held-out speaker, and none equals a written sentence.
"""

from __future__ import annotations

import random
import re

from training.demo.sentences import Sentence

GENERATED_PREFIX = "g"  # sentence ids g00001, g00002, ...
CATEGORY = "generated"

# fmt: off
_NAMES = (
    "Anna", "Boris", "Carmen", "Derek", "Elena", "Felix", "Grace", "Hugo", "Irene", "Jonas",
    "Kenji", "Laura", "Marcus", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Simon", "Tara",
    "Umar", "Vera", "Walter", "Yusuf", "Zoe", "Martha", "Patrick", "Lucy", "Victor", "Helen",
    "Agnes", "Bernard", "Chloe", "Dmitri", "Esther", "Fiona", "Gordon", "Hannah", "Ivan", "Judith",
    "Keith", "Leona", "Mateo", "Nora", "Otto", "Pauline", "Ruben", "Sofia", "Theo", "Ursula",
)
_PEOPLE = (
    "the baker", "the nurse", "my neighbour", "the pilot", "our teacher", "the farmer",
    "a young student", "the old fisherman", "the mayor", "my cousin", "the engineer",
    "the librarian", "a tired waiter", "the gardener", "the driver", "her brother",
    "the singer", "his grandmother", "the plumber", "a quiet stranger", "the chef",
    "the doctor", "the shopkeeper", "the painter", "the coach", "our landlord",
    "the fireman", "a clever girl", "the carpenter", "my aunt", "the postman", "the guard",
    "the tailor", "a lonely sailor", "the jeweller", "the butcher", "our pharmacist", "the janitor",
    "the photographer", "a polite boy", "the captain", "the dentist", "the architect", "the judge",
)
_THINGS = (
    "the blue bicycle", "a wooden chair", "the heavy suitcase", "an old radio", "the garden gate",
    "a paper map", "the silver spoon", "a bag of apples", "the broken clock", "a warm blanket",
    "the kitchen window", "a box of candles", "the red notebook", "a loaf of bread", "the camera",
    "a pair of boots", "the wet umbrella", "a basket of plums", "the yellow kite", "the violin",
    "a jar of honey", "the small lamp", "a bundle of letters", "the leather wallet", "a cup of tea",
    "the brass key", "a stack of plates", "the fishing rod", "a bottle of milk", "the green scarf",
    "the purple envelope", "a copper kettle", "the velvet cushion", "a crate of oranges", "the torch",
    "a set of keys", "the sketchbook", "a wheelbarrow", "the thermometer", "a glass vase",
    "the telescope", "a roll of tape", "the cardboard box", "a sack of potatoes", "the hammer",
    "a pocket knife", "the chess board", "a jigsaw puzzle", "the saucepan", "a feather pillow",
    "the microphone", "a bouquet of tulips", "the wristwatch", "a parcel", "the guitar",
)
_PLACES = (
    "the station", "the harbour", "the library", "the market", "the hospital", "the bakery",
    "the museum", "the village", "the stadium", "the river bank", "the school yard",
    "the post office", "the airport", "the mountain hut", "the cinema", "the farm",
    "the office", "the beach", "the park", "the bridge", "the hotel lobby", "the workshop",
    "the bus depot", "the laundry", "the orchard", "the gym", "the chapel", "the garage",
    "the pharmacy", "the zoo", "the canal", "the greenhouse", "the theatre", "the courthouse",
    "the dentist's office", "the ferry terminal", "the car park", "the bookshop", "the castle",
    "the swimming pool", "the fire station", "the lighthouse", "the vineyard", "the campsite",
)
_TIMES = (
    "this morning", "last night", "on Monday", "on Friday evening", "after lunch", "before dawn",
    "every Sunday", "in the spring", "yesterday afternoon", "at noon", "late in the evening",
    "during the storm", "in September", "at half past seven", "twice a week", "all winter",
    "on Tuesday", "on Wednesday night", "on Thursday", "at midnight", "in August", "in January",
    "at sunrise", "around six o'clock", "the day before", "a week ago", "after the meeting",
    "since March", "during the holidays", "at dusk",
)
_PAST_VERBS = (
    "carried", "painted", "repaired", "found", "dropped", "washed", "borrowed", "sold", "packed",
    "opened", "moved", "cleaned", "lost", "bought", "returned", "checked", "wrapped", "hid",
    "lifted", "measured", "ordered", "counted", "delivered", "polished",
    "fixed", "stole", "dragged", "shipped", "weighed", "rescued", "tested", "inspected", "unlocked",
    "folded", "painted over", "traded", "pushed", "collected", "buried", "stored", "admired",
    "photographed", "swapped", "labelled",
)
_PRESENT_VERBS = (
    "carries", "paints", "repairs", "finds", "washes", "borrows", "sells", "packs", "opens",
    "moves", "cleans", "buys", "checks", "wraps", "lifts", "orders", "counts", "delivers",
    "fixes", "drags", "ships", "weighs", "tests", "inspects", "unlocks", "folds", "trades",
    "pushes", "collects", "stores", "labels", "polishes", "admires",
)
_ACTIVITIES = (
    "walked to", "drove to", "waited at", "arrived at", "ran past", "looked around",
    "stayed near", "cycled to", "hurried out of", "sat outside", "worked at", "met a friend at",
    "jogged past", "strolled through", "queued at", "camped near", "shouted across",
    "searched", "phoned from", "hid behind", "wandered around", "slept at",
)
_ADJECTIVES = (
    "quiet", "crowded", "cold", "bright", "narrow", "noisy", "empty", "warm", "muddy", "clean",
    "busy", "dusty", "peaceful", "windy", "dark", "sunny", "strange", "lovely", "huge", "tiny",
    "gloomy", "shiny", "chilly", "spacious", "cosy", "smoky", "silent", "humid", "frozen", "freshly painted",
    "damp", "charming", "rough", "elegant", "flooded", "ancient",
)
_ADVERBS = (
    "slowly", "carefully", "quickly", "quietly", "happily", "nervously", "gently", "suddenly",
    "patiently", "proudly", "loudly", "calmly",
    "eagerly", "awkwardly", "politely", "boldly", "silently", "cheerfully", "clumsily", "firmly",
)
_WEATHER = (
    "it started to rain", "the wind picked up", "the sun came out", "the fog rolled in",
    "it began to snow", "the sky turned grey", "thunder rumbled in the distance",
    "the air grew warm", "a cold breeze blew", "the clouds cleared",
    "hail hit the roof", "the river flooded", "the temperature dropped", "a rainbow appeared",
    "the moon rose", "the lights went out", "the bells rang",
)
_FEELINGS = ("glad", "surprised", "worried", "relieved", "curious", "annoyed", "sure", "sorry")
_NUMBERS = (
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "fifteen", "twenty", "thirty", "forty", "fifty", "a hundred",
    "delighted", "puzzled", "thankful", "upset", "convinced", "afraid",
    "thirteen", "sixteen", "eighteen", "twenty five", "sixty", "seventy", "ninety", "two hundred",
)
_UNITS = (
    "minutes", "hours", "days", "weeks", "miles", "pages", "people", "boxes", "songs", "steps",
    "metres", "bottles", "tickets", "letters", "photos", "coins",
)
_TEMPLATES = (
    "{name} {past} {thing} {time}.",
    "{Person} {past} {thing} at {place}.",
    "{name} {activity} {place} {time}.",
    "{Person} {adverb} {past} {thing}.",
    "{Time}, {name} {activity} {place}.",
    "The {adjective} {place_noun} was {adjective2} {time}.",
    "Why did {person} leave {thing} at {place}?",
    "Did {name} really wait {number} {unit} at {place}?",
    "{name} {present} {thing} {frequency}.",
    "We were {feeling} that {person} {past} {thing}.",
    "{Person} said the trip took {number} {unit}.",
    "When {weather}, {name} {activity} {place}.",
    "{name} and {name2} {past} {thing} together.",
    "After {weather}, the {place_noun} felt {adjective}.",
    "Please ask {person} to bring {thing} to {place}.",
    "{name} could not find {thing}, so {person} {past} it {adverb}.",
    "How many {unit} did {person} count at {place}?",
    "{Person} wanted to know where {name} {past} {thing}.",
    "Nobody expected {name} to be so {feeling} {time}.",
    "If {weather}, we will meet at {place} instead.",
    "{name} {adverb} showed {person} {thing}.",
    "Without {thing}, {name} {activity} {place}.",
    "Which {place_noun} did {name} mean, the {adjective} one?",
    "{Person} kept {thing} at {place} for {number} {unit}.",
    "There were {number} {unit} between {place} and {place2}.",
    "Is {thing} still at {place}, or did {name} take it?",
    "{Person} {adverb} {activity} {place} and {past} {thing}.",
    "I think {name} {past} {thing} {time}, but nobody is sure.",
)
_FREQUENCIES = ("every day", "once a month", "on weekends", "most mornings", "now and then", "each year")
# fmt: on


def _fill(template: str, rng: random.Random) -> str:
    name, name2 = rng.sample(_NAMES, 2)
    place, place2 = rng.sample(_PLACES, 2)
    adjective, adjective2 = rng.sample(_ADJECTIVES, 2)
    person = rng.choice(_PEOPLE)
    time = rng.choice(_TIMES)
    slots = {
        "name": name,
        "name2": name2,
        "person": person,
        "Person": person[0].upper() + person[1:],
        "thing": rng.choice(_THINGS),
        "place": place,
        "place2": place2,
        "place_noun": place.removeprefix("the "),
        "time": time,
        "Time": time[0].upper() + time[1:],
        "past": rng.choice(_PAST_VERBS),
        "present": rng.choice(_PRESENT_VERBS),
        "activity": rng.choice(_ACTIVITIES),
        "adjective": adjective,
        "adjective2": adjective2,
        "adverb": rng.choice(_ADVERBS),
        "weather": rng.choice(_WEATHER),
        "feeling": rng.choice(_FEELINGS),
        "number": rng.choice(_NUMBERS),
        "unit": rng.choice(_UNITS),
        "frequency": rng.choice(_FREQUENCIES),
    }
    return template.format(**slots)


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z ]", "", text.lower()).strip()


def generate_sentences(count: int, *, seed: int, exclude: list[Sentence] | tuple[()] = ()) -> list[Sentence]:
    """`count` distinct generated English sentences (ids g00001...), the same for the same seed.

    Sentences whose words equal one in `exclude` (the written sentences) are skipped, so a
    generated sentence can never be one of the held-out evaluation sentences.
    """
    if count < 0:
        raise ValueError("the number of generated sentences must be >= 0")
    rng = random.Random(f"tritone-demo-generated:{seed}")
    taken = {_normalise(s.text) for s in exclude}
    out: list[Sentence] = []
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise ValueError(f"the templates give fewer than {count} distinct sentences")
        text = _fill(rng.choice(_TEMPLATES), rng)
        key = _normalise(text)
        if key in taken:
            continue
        taken.add(key)
        out.append(Sentence(f"{GENERATED_PREFIX}{len(out) + 1:05d}", "en", CATEGORY, text))
    return out
