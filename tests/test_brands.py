"""Brand tagging: the YAML contract, the matching rules, and the one-regex matcher
checked against a slow per-term reference on generated texts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from moodwire.brands import Brand, BrandMatcher, BrandsFileError
from moodwire.settings import Settings

BRANDS_YAML = """
version: 1
brands:
  apple:
    display: Apple Inc.
    keywords: [apple, iPhone, app store]
    hashtags: ["#wwdc"]
    handles: ["@AppleSupport"]
  google:
    keywords: [google, android]
    handles: [google]
  phones:
    keywords: [iphone, pixel]
"""


@pytest.fixture
def matcher(tmp_path: Path) -> BrandMatcher:
    path = tmp_path / "brands.yaml"
    path.write_text(BRANDS_YAML)
    return BrandMatcher.load(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I love my APPLE laptop", ("apple",)),
        ("pineapple and applesauce", ()),
        ("my iphone died", ("apple", "phones")),
        ("#iPhone launch today", ("apple", "phones")),
        ("(iphone), apple's store.", ("apple", "phones")),
        ("the app   store\nis down", ("apple",)),
        ("#AppStore is down", ("apple",)),
        ("watching #WWDC", ("apple",)),
        ("wwdc without a hashtag", ()),
        ("@AppleSupport my phone", ("apple",)),
        ("AppleSupport without the at", ()),
        ("@applefan says hi", ()),
        ("@google and android", ("google",)),
        ("apple vs google vs pixel", ("apple", "google", "phones")),
        ("email me at me@apple.com", ()),
        ("x#apple is not a hashtag", ()),
        ("", ()),
        ("nothing to see here", ()),
    ],
)
def test_match_rules(matcher: BrandMatcher, text: str, expected: tuple[str, ...]) -> None:
    assert matcher.match(text) == expected


def test_brand_names_and_display(matcher: BrandMatcher) -> None:
    assert matcher.brands == ("apple", "google", "phones")
    assert matcher.display_names["apple"] == "Apple Inc."
    assert matcher.display_names["google"] == "google"


def test_bundled_demo_brands_load_and_match() -> None:
    matcher = BrandMatcher.load(None)
    assert len(matcher.brands) >= 5
    assert matcher.match("Queue at Starbucks, then a new iPhone") == ("apple", "starbucks")
    assert matcher.match("@Netflix please bring it back") == ("netflix",)


def test_settings_brands_file_overrides_bundled(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("brands:\n  acme:\n    keywords: [acme]\n")
    matcher = BrandMatcher.from_settings(Settings(brands_file=path, state_dir=tmp_path))
    assert matcher.brands == ("acme",)
    assert matcher.match("ACME rockets") == ("acme",)
    assert matcher.match("my iphone") == ()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("brands: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("version: 2\nbrands: {a: {keywords: [a]}}", "unsupported version"),
        ("brands: {}", "non-empty mapping"),
        ("brands: {'bad name': {keywords: [a]}}", "brand name"),
        ("brands: {_none: {keywords: [a]}}", "brand name"),
        ("brands: {a: {keywords: []}}", "no keywords"),
        ("brands: {a: {keywords: [1984]}}", "not a string"),
        ("brands: {a: {keywords: ['  ']}}", "empty term"),
        ("brands: {a: {handles: ['two words']}}", "not a valid handle"),
        ("brands: {a: {keyword: [x]}}", "unknown key"),
    ],
)
def test_bad_brands_files_give_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "brands.yaml"
    path.write_text(content)
    with pytest.raises(BrandsFileError, match=message):
        BrandMatcher.load(path)


def test_missing_brands_file(tmp_path: Path) -> None:
    with pytest.raises(BrandsFileError, match="cannot read brands file"):
        BrandMatcher.load(tmp_path / "absent.yaml")


# --- the one-regex matcher agrees with a slow reference ---------------------------------

_WORDS = ["ab", "abc", "b", "bc", "cab", "c d", "ab c", "x"]


def _reference(brands: list[Brand], text: str) -> tuple[str, ...]:
    """Each term on its own regex: obviously right, too slow for every post."""
    found = set()
    for brand in brands:
        pats = []
        for kw in brand.keywords:
            words = r"\s+".join(map(re.escape, kw.split(" ")))
            pats.append(rf"#?{words}")
            if " " in kw:
                pats.append("#" + re.escape(kw.replace(" ", "")))
        pats += ["#" + re.escape(tag) for tag in brand.hashtags]
        pats += ["@" + re.escape(handle) for handle in brand.handles]
        for pat in pats:
            if re.search(rf"(?<![\w@#]){pat}(?!\w)", text, re.IGNORECASE):
                found.add(brand.name)
    return tuple(sorted(found))


_terms = st.lists(st.sampled_from(_WORDS), max_size=3, unique=True).map(tuple)
_tags = st.lists(st.sampled_from([w for w in _WORDS if " " not in w]), max_size=2).map(tuple)
_brand = st.builds(
    lambda name, kw, tags, handles: Brand(name, name, kw, tags, handles or ("zz",)),
    st.sampled_from(["b1", "b2", "b3"]),
    _terms,
    _tags,
    _tags,
)
_text = st.lists(
    st.sampled_from([*_WORDS, "AB", "#", "@", " ", "  ", "\n", ".", "#ab", "@b", "abcd"]),
    max_size=12,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(_brand, min_size=1, max_size=3, unique_by=lambda b: b.name), _text)
# Found by this test: a shorter term inside a longer one, and a term starting inside one.
@example([Brand("b1", "b1", ("ab",)), Brand("b2", "b2", ("ab", "ab c"))], "ab c")
@example([Brand("b1", "b1", ("c d",)), Brand("b2", "b2", ("ab c",))], "ab c d")
def test_matcher_agrees_with_reference(brands: list[Brand], text: str) -> None:
    assert BrandMatcher(brands).match(text) == _reference(brands, text)
