"""Phrase banks for the demo feed, written for moodwire (no real posts are used).

Templates take ``{b}`` (a brand mention), ``{c}`` (a second brand), ``{t}`` (a time
phrase) and ``{e}`` (an ending); the generator fills them and roughens the result
(casing, hashtags, links) so the feed reads like social media, not like a template.
"""

from __future__ import annotations

POSITIVE = (
    "just got the new {b} and honestly it's great{e}",
    "{b} support fixed my issue in five minutes. impressed{e}",
    "ok {b} you win, this update is really good{e}",
    "loving {b} {t}{e}",
    "{b} never lets me down{e}",
    "shoutout to {b} for the smooth checkout{e}",
    "can't believe how fast {b} shipped this{e}",
    "{b} made my morning so much better{e}",
    "new {b} feature is exactly what I needed{e}",
    "best decision this year: switching to {b}{e}",
    "{b} just works. that's all I want{e}",
    "the {b} team really listened to feedback{e}",
    "wow {b} nailed the design this time{e}",
    "{b} > {c} and it's not even close{e}",
    "happy with {b} {t}, no complaints at all{e}",
    "thank you {b}! saved my day{e}",
    "{b} customer service is top notch{e}",
    "5 stars for {b}, would recommend{e}",
)

NEUTRAL = (
    "anyone know if {b} is open {t}?",
    "thinking about trying {b}, any thoughts?",
    "{b} announced something {t}, reading about it now",
    "is {b} the same as last year or did they change it",
    "heading to {b} {t}",
    "{b} or {c}? trying to decide",
    "what time does the {b} event start",
    "just saw a {b} ad {t}",
    "does {b} ship internationally?",
    "my friend works at {b}, says it's busy {t}",
    "reading the {b} release notes",
    "{b} price list for this month",
    "switching from {c} to {b}, we'll see how it goes",
    "comparing {b} with {c} for work",
    "{b} has a new logo apparently",
    "waiting in line at {b}",
)

NEGATIVE = (
    "{b} why is everything so slow {t}{e}",
    "really disappointed with {b} this time{e}",
    "{b} charged me twice and nobody answers{e}",
    "the new {b} update broke everything{e}",
    "never buying from {b} again{e}",
    "{b} support has kept me on hold for an hour{e}",
    "worst experience with {b} {t}{e}",
    "{b} lost my order. again{e}",
    "ugh {b} keeps crashing{e}",
    "{b} is getting worse every year{e}",
    "so done with {b}{e}",
    "{b} raised prices and made it worse{e}",
    "why does {b} make this so hard{e}",
    "{c} was better than {b} honestly{e}",
    "terrible service at {b} {t}{e}",
    "{b} ruined my weekend{e}",
)

# A spike: an outage-like burst of complaints about one brand.
SPIKE = (
    "is {b} down for everyone?{e}",
    "{b} outage again?? can't log in{e}",
    "{b} is down and I have a deadline{e}",
    "{b} not working {t}{e}",
    "anyone else getting errors from {b}{e}",
    "{b} went down in the middle of my payment{e}",
    "{b} status page says fine but nothing loads{e}",
    "great, {b} is broken again{e}",
    "{b} down. no updates. nothing{e}",
    "{b} app won't even open{e}",
)

# Posts that mention no brand at all (kept and counted under no brand).
UNBRANDED = (
    "what a day {t}",
    "coffee first, then everything else",
    "can't sleep again",
    "this weather is unreal {t}",
    "finally friday",
    "the traffic {t} is ridiculous",
    "good morning everyone",
    "new week, new me",
    "watching the game {t}",
    "my cat knocked over my plant again",
)

TIMES = (
    "today",
    "tonight",
    "this morning",
    "right now",
    "this week",
    "again",
    "since yesterday",
    "after the update",
)

ENDINGS_BY_MOOD = {
    "positive": ("", "", "!", "!!", " :)", " <3", " 🙌", " 😍", " love it", " #happy"),
    "neutral": ("", "", ".", "", "?"),
    "negative": ("", "", "!", "...", " :(", " 😡", " smh", " ugh", " #fail", " 🙄"),
}

HASHTAGS = ("#monday", "#tech", "#weekend", "#life", "#news", "#mood", "#help")

NAME_PARTS = (
    "sam",
    "alex",
    "jo",
    "max",
    "kim",
    "lee",
    "pat",
    "rio",
    "ash",
    "dana",
    "eli",
    "noor",
    "ravi",
    "mia",
    "tom",
    "zoe",
    "ivan",
    "lena",
    "omar",
    "yuki",
)
NAME_SUFFIXES = ("", "_", "x", "official", "tweets", "writes", "dev", "art")
