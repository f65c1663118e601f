"""Request texts for load tests and benchmarks: our own sentences, drawn at realistic lengths.

Text-to-speech traffic is heavy-tailed: most requests are a short reply, a notification or one
sentence; a few are whole paragraphs (articles, audiobook pages). `TextSampler` draws a target
length from a log-normal distribution (median `median` characters, log-space spread `sigma`,
clipped to [`minimum`, `maximum`]) and builds a text of about that length from the sentences and
paragraphs below, joined in a random order. The defaults (median 90, sigma 0.9) put the 90th
percentile near 290 characters and the 99th near 730.

Every sentence here was written for this project (none is taken from a corpus); they are plain
English that the frontend speaks (numbers, times and units included).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

SENTENCES: tuple[str, ...] = (
    "Hello there.",
    "Your order has shipped.",
    "Turn left in two hundred meters.",
    "The meeting starts in five minutes.",
    "Thanks for calling, how can I help?",
    "Please hold while I check that for you.",
    "Your table for four is ready.",
    "The next train leaves at seven fifteen.",
    "Battery low, please plug in the charger.",
    "Welcome back, it is good to hear from you again.",
    "Your package was left at the front door this afternoon.",
    "It will rain later today, so take an umbrella with you.",
    "The kettle clicked off, and the kitchen went quiet again.",
    "Press one to repeat this message, or two to speak to someone.",
    "We found three restaurants open near you right now.",
    "Please remember to water the tomatoes before the weekend.",
    "The library closes early on public holidays.",
    "Your appointment with the dentist is on Tuesday at ten.",
    "A light breeze moved through the orchard as the sun went down.",
    "She folded the map, looked at the sky, and chose the longer path.",
    "Traffic on the bridge is slow because of roadworks on the north side.",
    "The recipe needs two cups of flour, one egg and a pinch of salt.",
    "Good morning, here is a short summary of your calendar for today.",
    "The museum has a new exhibition about early flying machines and the people who built them.",
    "If you would like to change your delivery time, reply with a new date and we will confirm it.",
    "He kept the old radio on the shelf, even though it had not worked for years.",
    "Our support team is available every day from eight in the morning until six in the evening.",
    "The children built a small boat out of cardboard and sailed it across the pond.",
    "The temperature will drop to four degrees tonight, with a chance of frost in the valleys.",
    "Before you leave, check that the windows are closed and the lights are switched off.",
    "At the end of the street there is a bakery that sells warm bread until late at night.",
    "The update adds offline maps, faster search, and a new dark theme for the settings page.",
    "Your flight to Lisbon is on time, and boarding will begin at gate twelve in forty minutes.",
    "The river rose quickly after the storm, but the old stone bridge held firm through the night.",
    "We noticed a sign in from a new device; if this was not you, please reset your password now.",
    "On clear evenings the whole town gathers by the harbour to watch the fishing boats come home.",
    "The quarterly report shows steady growth in every region, with the strongest results in the south.",
    "Mix the paint slowly, let it rest for a minute, and then apply a thin first coat to the wall.",
    "The orchestra tuned their instruments while the audience found their seats and the lights dimmed.",
    "When the power came back, every clock in the house blinked twelve, and nobody knew the real time.",
    "The guide told us that the castle had been rebuilt three times, each time a little taller than before.",
    "Please note that the pool will be closed on Monday for cleaning, and will reopen on Tuesday morning.",
    "The new bus line connects the university, the main hospital and the central station every ten minutes.",
    "A small grey cat sat on the fence all morning, watching the birds and ignoring everyone who walked by.",
    "The farmer checked the sky, counted the clouds, and decided the hay could wait until the next day.",
    "Thank you for your patience; your call is important to us, and the next available agent will answer shortly.",
)

PARAGRAPHS: tuple[str, ...] = (
    "The lighthouse keeper climbed the narrow stairs every evening at dusk. He wiped the great lens, "
    "checked the oil, and wrote the weather in a worn leather book. Ships passed far out at sea, and "
    "none of them knew his name, but every one of them knew his light.",
    "Welcome to the second chapter. In the last part we met the three travellers at the edge of the "
    "forest. Tonight they reach the river, where an old ferryman offers to take them across, but only "
    "if one of them can answer his riddle before the moon rises over the hills.",
    "Here is your evening news summary. The city council approved the plan for a new park by the "
    "station. Train services will run a reduced timetable on Sunday because of track maintenance. "
    "And the local football team won their third match in a row, two goals to one.",
    "To reset your router, first unplug it from the wall and wait for thirty seconds. Plug it back in "
    "and wait until the status light turns green, which can take up to two minutes. If the light stays "
    "orange, press the small reset button on the back for ten seconds and try again.",
    "Our garden changed a lot this year. The apple tree we planted in spring is already taller than the "
    "fence, the herbs by the door have spread into every corner of their bed, and the pumpkins have "
    "quietly taken over the path that used to lead to the shed.",
    "Thank you for joining this training session. Over the next twenty minutes we will look at how to "
    "file an expense report, which receipts you need to keep, and how long approval usually takes. "
    "Please keep your questions until the end, when there will be time for discussion.",
    "The storm reached the coast just after midnight. Waves broke over the harbour wall, the wind bent "
    "the palm trees along the promenade, and the streets filled with water. By morning the sky was "
    "clear and blue, and people came out to sweep the sand from their doorsteps.",
    "Scientists at the observatory announced that they had found a faint new comet near the edge of the "
    "solar system. It will be visible with a small telescope for a few weeks next spring, low on the "
    "eastern horizon just before sunrise, and it will not return for several thousand years.",
    "When my grandmother was young she walked four miles to school every morning, through fields and "
    "over a wooden bridge that creaked in the wind. She said the walk taught her patience, and that "
    "the best ideas always came to her somewhere between the bridge and the school gate.",
    "This is a reminder about your upcoming trip. Your hotel check in is from three in the afternoon, "
    "breakfast is served between seven and ten, and the airport shuttle leaves from the main entrance "
    "every half hour. Please bring a photo identification and the card you used to book.",
)


@dataclass(frozen=True)
class TextLengths:
    """The target length distribution: log-normal characters, clipped."""

    median: float = 90.0
    sigma: float = 0.9
    minimum: int = 10
    maximum: int = 1000

    def __post_init__(self) -> None:
        if not (self.median > 0 and self.sigma >= 0 and 1 <= self.minimum <= self.maximum):
            raise ValueError("need median > 0, sigma >= 0 and 1 <= minimum <= maximum")

    def draw(self, rng: np.random.Generator) -> int:
        value = math.exp(rng.normal(math.log(self.median), self.sigma)) if self.sigma else self.median
        return int(min(self.maximum, max(self.minimum, round(value))))


class TextSampler:
    """Texts of realistic lengths built from `SENTENCES` and `PARAGRAPHS` (see the module doc)."""

    def __init__(self, lengths: TextLengths | None = None, seed: int | None = 0) -> None:
        self.lengths = lengths or TextLengths()
        self.rng = np.random.default_rng(seed)
        self.units = sorted(SENTENCES + PARAGRAPHS, key=len)
        self.unit_lengths = [len(u) for u in self.units]

    def compose(self, target: int) -> str:
        """A text of about `target` characters (within ~15% when the pool allows it)."""
        parts: list[str] = []
        total = 0
        slack = max(8, int(0.15 * target))
        for _ in range(64):
            room = target - total - (1 if parts else 0)
            # units that still fit (with a little slack), chosen uniformly
            n_fit = bisect.bisect_right(self.unit_lengths, room + slack)
            if n_fit == 0:
                break
            unit = self.units[int(self.rng.integers(n_fit))]
            if unit in parts:
                continue
            parts.append(unit)
            total += len(unit) + (1 if len(parts) > 1 else 0)
            if total >= target - slack:
                break
        if not parts:
            parts.append(self.units[0])
        text = " ".join(parts)
        return text[: self.lengths.maximum].rsplit(" ", 1)[0] if len(text) > self.lengths.maximum else text

    def sample(self) -> str:
        return self.compose(self.lengths.draw(self.rng))
