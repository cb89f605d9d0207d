"""Social-text tokenizer: normalise a whole batch at once, then split it with one regex.

Speed matters more than anywhere else here: this runs on every post, and per-post Python
loops cost more than the GRU itself. So each batch is joined into one string and every
normalisation step is a compiled regex (or ``str`` method) over that one string; per-text
work is limited to the rare texts that carry ``\\uXXXX`` escapes or HTML entities.

Choices (the model card explains them with numbers):
- lower-cased words, apostrophe contractions kept whole (``don't``, ``can't``): the GRU sees
  negation as its own token and carries it forward;
- ``@handle`` -> ``@user`` and URLs dropped, exactly as in TweetEval's training text;
- ``#tag`` -> ``#`` + ``tag`` so the word itself carries its sentiment;
- elongations capped at two repeats (``sooo`` -> ``soo``, ``!!!!`` -> ``!!``);
- common emoticons are single tokens; emoji are mapped to a word of the same sentiment
  (TweetEval's training text has no emoji at all, so a learned emoji vector could not exist);
- ``\\uXXXX`` escapes (as in the SemEval files) and HTML entities are decoded first.
"""

from __future__ import annotations

import functools
import html
import math
import re
from collections.abc import Iterable, Sequence
from itertools import repeat

import numpy as np
import numpy.typing as npt

PAD, UNK = "<pad>", "<unk>"
# Longer posts are cut before tokenizing: sentiment sits early, and a 1 MB text must not
# cost more than a tweet.
MAX_CHARS = 1000
MAX_TOKENS = 96

_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
_SURROGATES = re.compile("[\ud800-\udfff]")
_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"(?:https?://|www\.)\S*")
_ELONGATION = re.compile(r"(.)\1{2,}")
# Words first: they are most tokens, and the order of alternatives is the cost per token.
# The leading ` *+` eats the blank before a token inside the same match; without it every
# blank is a failed match of all the alternatives (findall: 25% slower). The group is the
# token, so findall returns it without the blank.
_TOKEN = re.compile(
    r" *+("
    r"[^\W_]+(?:'[a-z]+)?"
    r"|\n"
    r"|@user"
    r"|<3"
    r"|[:;=][-o^']?[()\[\]dpo3/\\|*$@]+(?![a-z])"
    r"|!+|\?+|\.+"
    r"|[^\w\s]"
    r")"
)

# Emoji and typographic characters -> text the vocabulary knows. Skin tones and variation
# selectors are dropped. Unlisted emoji become a blank (not <unk>: they carry no learned
# meaning either way, and a blank keeps neighbouring words intact).
_CHAR_MAP: dict[str, str] = {
    "\u2019": "'",
    "\u2018": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2026": " ... ",
    "\u2013": " - ",
    "\u2014": " - ",
    "\xa0": " ",
    "\ufe0f": "",
    "\u200d": "",
    "\U0001f602": " lol ",
    "\U0001f923": " lol ",
    "\U0001f606": " lol ",
    "\U0001f605": " haha ",
    "\U0001f604": " happy ",
    "\U0001f603": " happy ",
    "\U0001f600": " happy ",
    "\U0001f601": " happy ",
    "\U0001f60a": " happy ",
    "\u263a": " happy ",
    "\U0001f642": " :) ",
    "\U0001f60d": " love ",
    "\U0001f618": " love ",
    "\U0001f970": " love ",
    "\u2764": " love ",
    "\U0001f495": " love ",
    "\U0001f496": " love ",
    "\U0001f497": " love ",
    "\U0001f499": " love ",
    "\U0001f49a": " love ",
    "\U0001f49b": " love ",
    "\U0001f49c": " love ",
    "\U0001f5a4": " love ",
    "\U0001f493": " love ",
    "\U0001f49e": " love ",
    "\U0001f498": " love ",
    "\u2665": " love ",
    "\U0001f44d": " good ",
    "\U0001f44c": " good ",
    "\U0001f44f": " great ",
    "\U0001f64c": " great ",
    "\U0001f389": " congrats ",
    "\U0001f38a": " congrats ",
    "\U0001f525": " awesome ",
    "\U0001f4af": " awesome ",
    "\u2728": " great ",
    "\U0001f60e": " cool ",
    "\U0001f64f": " thanks ",
    "\U0001f917": " hug ",
    "\U0001f609": " ;) ",
    "\U0001f61c": " :p ",
    "\U0001f61d": " :p ",
    "\U0001f61b": " :p ",
    "\U0001f607": " happy ",
    "\U0001f973": " congrats ",
    "\U0001f62d": " crying ",
    "\U0001f622": " sad ",
    "\U0001f61e": " sad ",
    "\U0001f614": " sad ",
    "\U0001f625": " sad ",
    "\U0001f61f": " sad ",
    "\U0001f641": " :( ",
    "\u2639": " :( ",
    "\U0001f494": " heartbroken ",
    "\U0001f629": " ugh ",
    "\U0001f62b": " ugh ",
    "\U0001f644": " ugh ",
    "\U0001f612": " ugh ",
    "\U0001f611": " ugh ",
    "\U0001f610": " meh ",
    "\U0001f615": " :/ ",
    "\U0001f621": " angry ",
    "\U0001f620": " angry ",
    "\U0001f92c": " angry ",
    "\U0001f624": " angry ",
    "\U0001f44e": " bad ",
    "\U0001f480": " dead ",
    "\U0001f631": " scared ",
    "\U0001f628": " scared ",
    "\U0001f630": " worried ",
    "\U0001f633": " embarrassed ",
    "\U0001f914": " hmm ",
    "\U0001f922": " sick ",
    "\U0001f92e": " sick ",
    "\U0001f637": " sick ",
    "\U0001f634": " tired ",
    "\U0001f62a": " tired ",
    "\U0001f648": " oops ",
}
for _cp in range(0x1F3FB, 0x1F400):  # skin-tone modifiers
    _CHAR_MAP[chr(_cp)] = ""
_CHAR_TABLE = {ord(k): v for k, v in _CHAR_MAP.items()}
# A class of runs, not of single characters: a big character class tested at every
# position of the blob costs ~7 us a post, a run of non-ASCII costs one callback.
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf]")


def _decode_escape(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 16))


def _map_chars(match: re.Match[str]) -> str:
    return _EMOJI.sub(" ", match.group().translate(_CHAR_TABLE))


def _clean_one(text: str) -> str:
    """Per-text fixes that only a few texts need; the common case costs two ``in`` tests."""
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS]
    if "\\u" in text:
        text = _ESCAPE.sub(_decode_escape, text)
        # "\ud83d\ude02" arrives as two escapes: pair them up into one emoji.
        if _SURROGATES.search(text):
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if "&" in text:
        text = html.unescape(text)
    if "\n" in text or "\r" in text:
        text = text.replace("\n", " ").replace("\r", " ")
    return text


def normalise_batch(texts: Sequence[str]) -> str:
    """All texts as one normalised string, one text per line."""
    blob = "\n".join([_clean_one(t) for t in texts]).lower()
    if not blob.isascii():
        blob = _NON_ASCII.sub(_map_chars, blob)
    if "@" in blob:
        blob = _MENTION.sub("@user", blob)
    if "http" in blob or "www." in blob:
        blob = _URL.sub(" ", blob)
    return blob


def split_batch(texts: Sequence[str]) -> list[list[str]]:
    """Tokens of each text (slow path, for vocabulary building and tests)."""
    if not texts:
        return []
    out: list[list[str]] = [[]]
    for token in _TOKEN.findall(normalise_batch(texts)):
        if token == "\n":
            out.append([])
        else:
            out[-1].append(collapse(token))
    return out


def collapse(token: str) -> str:
    """Elongations capped at two repeats: ``sooooo`` -> ``soo``, ``!!!!`` -> ``!!``."""
    return _ELONGATION.sub(r"\1\1", token) if len(token) > 2 else token


def tokenize(text: str) -> list[str]:
    return split_batch([text])[0]


# Hashtag segmentation (``Vocabulary.segment``): the longest word tried, the price of each
# word, and the frequency ranks a word must be within (short words: much more common).
_SEGMENT_LONGEST = 20
_SEGMENT_PRICE = 3.0
_SEGMENT_RANK = 20_000
_SHORT_RANK = 150


class Vocabulary:
    """Token <-> id. Id 0 pads, id 1 is every unknown token; ``encode`` is the fast path.

    With ``subwords``, a word missing from the vocabulary is not lost: it is split
    greedily into the longest known pieces (WordPiece style: ``##`` marks a piece that
    continues a word), so a new name or misspelling still reads as something.

    With ``hashtags`` too, an unknown hashtag is first split into known words
    (``#notmypresident`` -> ``not my president``; see ``segment``), since hashtags run
    words together and new ones appear with every news cycle.
    """

    _CACHE_LIMIT = 200_000

    def __init__(
        self, tokens: Iterable[str], subwords: bool = False, hashtags: bool = False
    ) -> None:
        words = [PAD, UNK, *(t for t in tokens if t not in (PAD, UNK, "\n"))]
        self.tokens: list[str] = words
        self.index: dict[str, int] = {t: i for i, t in enumerate(words)}
        if len(self.index) != len(words):
            raise ValueError("duplicate tokens in vocabulary")
        self.subwords = subwords
        self.hashtags = hashtags
        # The line break is the text separator inside a batch; -1 marks it in the id stream.
        self._lookup = dict(self.index)
        self._lookup["\n"] = -1
        self._pieces_cache: dict[str, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self.tokens)

    @functools.cached_property
    def _word_costs(self) -> list[float]:
        """log(rank + 10) of each word entry, for ``segment`` (made on its first use). The
        word entries come first, most frequent first, and WordPiece units after them ("##"
        units sort first): a word's index is its frequency rank."""
        words = next((i for i, t in enumerate(self.tokens) if t.startswith("##")), len(self))
        costs: list[float] = np.log(np.arange(words) + 10.0).tolist()
        return costs

    def segment(self, word: str) -> tuple[int, ...] | None:
        """The likeliest split of ``word`` into two or more known words, or None.

        Each word costs log(its frequency rank + 10) + a fixed price, so few, common
        words win (a unigram model with Zipf's law standing in for counts). Only words
        among the first ``_SEGMENT_RANK`` may take part, words of one or two letters only
        among the first ``_SHORT_RANK``, and a one-letter word ("i", "a") only first:
        without these rules names fall apart into syllables ("crimea" -> "crime a")."""
        n = len(word)
        if n < 4 or n > 40:
            return None
        index, cost = self.index, self._word_costs
        words = min(len(cost), _SEGMENT_RANK)
        best = [0.0] + [math.inf] * n
        back = [0] * (n + 1)
        for end in range(1, n + 1):
            for start in range(max(0, end - _SEGMENT_LONGEST), end):
                if best[start] == math.inf or (end - start == 1 and start > 0):
                    continue
                rank = index.get(word[start:end], words)
                if rank >= words or rank < 2 or (end - start <= 2 and rank >= _SHORT_RANK):
                    continue
                total = best[start] + cost[rank] + _SEGMENT_PRICE
                if total < best[end]:
                    best[end], back[end] = total, start
        if best[n] == math.inf or back[n] == 0:
            return None
        parts, end = [], n
        while end > 0:
            parts.append(index[word[back[end] : end]])
            end = back[end]
        return tuple(reversed(parts))

    def pieces(self, word: str, hashtag: bool = False) -> tuple[int, ...]:
        """Greedy longest-match split of an unknown word; ``(<unk>,)`` when impossible.
        An unknown ``hashtag`` is split into words first, where ``hashtags`` is on."""
        hashtag = hashtag and self.hashtags
        key = "#" + word if hashtag else word
        cached = self._pieces_cache.get(key)
        if cached is not None:
            return cached
        if len(self._pieces_cache) >= self._CACHE_LIMIT:
            self._pieces_cache.clear()
        # Elongations are collapsed here, on the few unknown tokens, not on every text.
        short = collapse(word)
        known = self.index.get(short)
        if known is not None or not self.subwords:
            result: tuple[int, ...] = (known if known is not None else 1,)
            self._pieces_cache[key] = result
            return result
        if hashtag:
            words = self.segment(short)
            if words is not None:
                self._pieces_cache[key] = words
                return words
        word = short
        index, out, start, n = self.index, [], 0, len(word)
        while start < n and n <= 40:
            for end in range(n, start, -1):
                unit = word[start:end] if start == 0 else "##" + word[start:end]
                found = index.get(unit)
                if found is not None:
                    out.append(found)
                    start = end
                    break
            else:
                break
        result = tuple(out) if out and start == n else (1,)
        self._pieces_cache[key] = result
        return result

    def encode(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Ids of all texts, concatenated, and each text's token count.

        Every text gets at least one token (``<unk>`` for an empty text) and at most
        ``MAX_TOKENS``, so the model always has something to read.
        """
        if len(texts) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        get = self._lookup.get
        tokens = _TOKEN.findall(normalise_batch(texts))
        # map() over dict.get runs in C; a generator expression here was a fifth of encode.
        ids = np.fromiter(
            map(get, tokens, repeat(-2, len(tokens))), dtype=np.int64, count=len(tokens)
        )
        unknown = np.flatnonzero(ids == -2)
        if len(unknown):
            ids = self._expand_unknown(ids, unknown, tokens)
        breaks = np.flatnonzero(ids < 0)
        starts = np.concatenate(([0], breaks + 1))
        ends = np.concatenate((breaks, [len(ids)]))
        lengths = ends - starts
        if lengths.min() == 0 or lengths.max() > MAX_TOKENS:
            return self._ragged_fix(ids, starts, np.minimum(lengths, MAX_TOKENS))
        return ids[ids >= 0], lengths

    def _expand_unknown(
        self, ids: npt.NDArray[np.int64], unknown: npt.NDArray[np.int64], tokens: list[str]
    ) -> npt.NDArray[np.int64]:
        split = [self.pieces(tokens[i], i > 0 and tokens[i - 1] == "#") for i in unknown]
        if not self.subwords:
            ids[unknown] = [p[0] for p in split]
            return ids
        counts = np.ones(len(ids), dtype=np.int64)
        counts[unknown] = [len(p) for p in split]
        out = np.repeat(ids, counts)
        out[np.repeat(ids == -2, counts)] = np.fromiter(
            (i for p in split for i in p), dtype=np.int64, count=int(counts[unknown].sum())
        )
        return out

    @staticmethod
    def _ragged_fix(
        ids: npt.NDArray[np.int64], starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        pieces = [
            ids[s : s + k] if k else np.ones(1, np.int64)
            for s, k in zip(starts, lengths, strict=True)
        ]
        return np.concatenate(pieces), np.maximum(lengths, 1)
