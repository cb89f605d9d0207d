"""Every post gets a language; posts the English model does not read are stored and
counted with their language, never given an English sentiment."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest
from sqlalchemy import text

from moodwire.db.engine import make_engine
from moodwire.db.unscored import unscored_counts
from moodwire.language import UNDETERMINED, LanguageIdentifier, is_scored, normalise
from moodwire.records import Post, PostChange
from moodwire.settings import Settings
from moodwire.status import collect
from support.pipeline import (
    Worker,
    assert_aggregates_exact,
    committed_total,
    count_scores,
    post_key,
    produce,
    serving_version,
    tag_of,
    wait_until,
)

AT = datetime(2009, 5, 11, 3, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("en", "en"),
        ("en-US", "en"),
        ("pt_BR", "pt"),
        ("ZH-Hant", "zh"),
        ("", None),
        (None, None),
        ("x", None),
        ("zxx", None),
        ("toolongtag", None),
        ("12", None),
    ],
)
def test_a_source_tag_is_its_primary_subtag(tag: str | None, code: str | None) -> None:
    assert normalise(tag) == code


@pytest.mark.parametrize(
    ("sentence", "code"),
    [
        ("I really love the new camera on this phone, best purchase this year", "en"),
        ("Ich bin wirklich sehr enttäuscht von diesem Laden und dem Service", "de"),
        ("Je suis vraiment déçu par ce magasin, le service est nul", "fr"),
        ("Estoy muy contento con mi nuevo teléfono, funciona muy bien", "es"),
        ("この新しい携帯電話はとても使いやすいです", "ja"),
    ],
)
def test_the_identifier_names_the_language_of_a_sentence(sentence: str, code: str) -> None:
    assert LanguageIdentifier().identify(sentence) == code


@pytest.mark.parametrize("unsure", ["", "   ", "#ad #nike", "lol", "\U0001f600\U0001f600"])
def test_what_it_cannot_tell_is_undetermined_and_still_scored(unsure: str) -> None:
    assert LanguageIdentifier().identify(unsure) == UNDETERMINED
    assert is_scored(UNDETERMINED, frozenset({"en"}))
    assert not is_scored("fr", frozenset({"en"}))


def test_text_that_is_not_valid_unicode_gets_a_language_not_an_error() -> None:
    assert LanguageIdentifier().identify("this is broken \ud800 english text here") == "en"


def test_a_source_tag_wins_over_the_identifier_and_edits_get_one_too() -> None:
    ident = LanguageIdentifier()
    french_but_tagged = Post(
        id="1", source="s", text="ce produit est nul", created_at=AT, lang="en-GB"
    )
    assert ident.assign(french_but_tagged).lang == "en"
    untagged = Post(id="2", source="s", text="ce produit est vraiment nul et cher", created_at=AT)
    assert ident.assign(untagged).lang == "fr"
    edit = PostChange(op="update", source="s", id="2", at=AT, post=untagged)
    changed = ident.assign_any(edit)
    assert isinstance(changed, PostChange) and changed.post is not None
    assert changed.post.lang == "fr"
    delete = PostChange(op="delete", source="s", id="2", at=AT)
    assert ident.assign_any(delete) is delete


def _posts(tag: str) -> list[dict[str, object]]:
    def post(i: int, body: str, lang: str | None = None) -> dict[str, object]:
        return {
            "id": f"lang{i}",
            "source": f"bluesky.{tag}" if i % 2 else f"mastodon.{tag}",
            "text": body,
            "created_at": f"2009-05-11T03:{i:02d}:00+00:00",
            **({"lang": lang} if lang else {}),
        }

    return [
        post(0, "my new iphone is wonderful, the camera is amazing"),
        post(1, "the train was late again this morning, so annoying", "en-US"),
        post(2, "lol"),
        post(3, "L'iPhone est vraiment trop cher cette année, quelle déception", "fr"),
        post(4, "Mon nouvel iPhone est génial, je l'adore", "fr"),
        post(5, "Ich finde das neue iPhone wirklich sehr enttäuschend und teuer"),
        post(6, "新しい iPhone はとても使いやすいです。カメラが素晴らしい"),
        post(7, "what a lovely sunny day in the park with friends"),
    ]


def test_posts_the_model_does_not_read_are_stored_and_counted_not_scored(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    tag = tag_of(settings)
    posts = _posts(tag)
    version = serving_version()
    worker = spawn_worker()
    produce(settings, [(post_key(p), orjson.dumps(p)) for p in posts])
    # The same posts again at new offsets (a replayed feed): nothing is counted twice.
    produce(settings, [(post_key(p), orjson.dumps(p)) for p in posts])
    engine = make_engine(settings)

    def stored() -> dict[str, str | None]:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT source_id, lang FROM posts WHERE source LIKE :s"), {"s": f"%.{tag}"}
            ).all()
        return {str(r[0]): r[1] for r in rows}

    def unscored() -> dict[str, dict[str, int]]:
        with engine.connect() as conn:
            return unscored_counts(conn, source_like=f"%.{tag}")

    try:
        # Wait for the second copy's offsets too: the committed offset reaches the end of
        # both copies only once the worker has written both.
        def done() -> bool:
            return (
                len(stored()) == len(posts)
                and count_scores(settings, version) == 4
                and sum(unscored().get("*", {}).values()) == 4
                and committed_total(settings) >= 2 * len(posts)
            )

        try:
            wait_until(done, timeout=120, what="posts stored, scored and committed")
        except AssertionError as exc:
            state = (stored(), count_scores(settings, version), unscored())
            raise AssertionError(
                f"{exc}: {state} {committed_total(settings)}\n{worker.tail()}"
            ) from exc
        assert stored() == {
            "lang0": "en",
            "lang1": "en",
            "lang2": UNDETERMINED,
            "lang3": "fr",
            "lang4": "fr",
            "lang5": "de",
            "lang6": "ja",
            "lang7": "en",
        }
        with engine.connect() as conn:
            scored_ids = set(
                conn.execute(
                    text(
                        "SELECT source_id FROM scores WHERE source LIKE :s AND model_version = :v"
                    ),
                    {"s": f"%.{tag}", "v": version},
                ).scalars()
            )
        assert scored_ids == {"lang0", "lang1", "lang2", "lang7"}
        assert unscored() == {
            "*": {"fr": 2, "de": 1, "ja": 1},
            "apple": {"fr": 2, "de": 1, "ja": 1},
        }
        # The sentiment aggregates count the scored posts only, each once.
        assert_aggregates_exact(settings, version, expected_posts=4)
        figures = collect(settings)
        assert figures["unscored_for_language"]["apple"]["fr"] >= 2
    finally:
        engine.dispose()
