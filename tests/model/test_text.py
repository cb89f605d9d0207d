"""The social-text tokenizer: one case per normalisation rule, plus the fast id path."""

from __future__ import annotations

import numpy as np
import pytest

from moodwire.model.text import MAX_TOKENS, Vocabulary, split_batch, tokenize


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("@JohnDoe thanks!", ["@user", "thanks", "!"]),
        ("see https://t.co/abc123 now", ["see", "now"]),
        ("www.example.com/x rocks", ["rocks"]),
        ("I am sooooo happy!!!!!", ["i", "am", "soo", "happy", "!!"]),
        ("#Blessed day", ["#", "blessed", "day"]),
        ("I don't like it", ["i", "don't", "like", "it"]),
        (
            "fun :) sad :( lol :D meh :-/ <3",
            ["fun", ":)", "sad", ":(", "lol", ":d", "meh", ":-/", "<3"],
        ),
        ("Tom &amp; Jerry &lt;3", ["tom", "&", "jerry", "<3"]),
        ("it\\u2019s great\\u002c ok", ["it's", "great", ",", "ok"]),
        ("haha \\ud83d\\ude02", ["haha", "lol"]),  # escaped surrogate pair -> one emoji
        ("so good 😍🏽", ["so", "good", "love"]),  # skin tone dropped
        ("crying 😭 unicorn 🦄", ["crying", "crying", "unicorn"]),  # unlisted emoji: blank
        ("“quoted” it’s…", ['"', "quoted", '"', "it's", ".."]),  # ... capped at 2
        ("Café RÉSUMÉ", ["café", "résumé"]),
        ("  two\tblank\u3000kinds  ,  ok  ", ["two", "blank", "kinds", ",", "ok"]),
        ("", []),
    ],
)
def test_tokenize(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


def test_line_breaks_inside_a_text_do_not_split_it() -> None:
    assert split_batch(["a\nb", "c\r\nd", "&#10;e"]) == [["a", "b"], ["c", "d"], ["e"]]


def test_deterministic_and_batch_independent() -> None:
    texts = ["Great game!!! #win", "@x worst. ever. http://t.co/1", "meh"]
    assert split_batch(texts) == [tokenize(t) for t in texts] == split_batch(texts)


def test_encode_ids_lengths_unknowns_and_limits() -> None:
    vocab = Vocabulary(["good", "bad", "!"])
    huge = "good " * 300_000  # 1.5 MB
    ids, lengths = vocab.encode(["good !", "", "zzz bad", huge, "\x00\ud800"])
    assert lengths.tolist() == [2, 1, 2, MAX_TOKENS, 2]
    assert len(ids) == lengths.sum()
    assert ids[:5].tolist() == [2, 4, 1, 1, 3]  # "" -> one <unk>; "zzz" -> <unk>
    assert (ids >= 0).all()


def test_encode_matches_slow_path_on_real_text(data_dir) -> None:  # type: ignore[no-untyped-def]
    from moodwire.training.data import load_split

    texts = load_split(data_dir, "test").texts[:500]
    tokens = split_batch(texts)
    vocab = Vocabulary(sorted({t for toks in tokens for t in toks}))
    ids, lengths = vocab.encode(texts)
    expected = [vocab.index[t] for toks in tokens for t in (toks[:MAX_TOKENS] or ["<unk>"])]
    assert np.array_equal(ids, expected)
    assert lengths.tolist() == [min(max(len(t), 1), MAX_TOKENS) for t in tokens]


# Most frequent first, then WordPiece units ("##" first): the layout ``build_vocab`` writes.
_SEGMENT_VOCAB = [
    "#", "the", "i", "my", "not", "love", "you", "crime", "drain", "president", "swamp", "##a",
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "hashtags", "tokens"),
    [
        ("#notmypresident", True, ["#", "not", "my", "president"]),
        ("#DrainTheSwamp!", True, ["#", "drain", "the", "swamp", "<unk>"]),
        ("#iloveyou", True, ["#", "i", "love", "you"]),  # one letter: first only
        ("#crimea", True, ["#", "crime", "##a"]),  # not "crime a": WordPiece instead
        ("notmypresident", True, ["<unk>"]),  # not a hashtag: WordPiece only
        ("#notmypresident", False, ["#", "<unk>"]),
    ],
)
def test_unknown_hashtags_split_into_known_words(
    text: str, hashtags: bool, tokens: list[str]
) -> None:
    vocab = Vocabulary(_SEGMENT_VOCAB, subwords=True, hashtags=hashtags)
    ids, _ = vocab.encode([text])
    assert [vocab.tokens[i] for i in ids] == tokens
