"""The splits read from ../shared/data: devtest is held out from train and val."""

from __future__ import annotations

from pathlib import Path

import pytest

from moodwire.training import data


def test_devtest_is_formatted_like_tweeteval_and_disjoint_from_train_and_val(
    data_dir: Path,
) -> None:
    devtest = data.load_split(data_dir, "devtest")
    seen = set(data.load_split(data_dir, "train").texts) | set(
        data.load_split(data_dir, "val").texts
    )
    assert 1900 < len(devtest) <= 2000
    assert set(devtest.labels) == {0, 1, 2}
    assert not seen & set(devtest.texts)
    assert len(set(devtest.texts)) == len(devtest)
    words = [w for t in devtest.texts for w in t.split(" ")]
    assert all(t.endswith(" ") for t in devtest.texts)
    assert not [w for w in words if w.startswith("http")]
    assert all(w == "@user" for w in words if w.startswith(("@", '"@')))


def test_the_format_rule_rebuilds_train_and_val_from_their_source(data_dir: Path) -> None:
    """The rule that rebuilt train: the 2016 dev file's tweets are found there verbatim."""
    seen = set(data.load_split(data_dir, "train").texts) | set(
        data.load_split(data_dir, "val").texts
    )
    path = data_dir / data.SEMEVAL / "twitter-2016dev-A.txt"
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").split("\n")]
    texts = [data.tweeteval_format("\t".join(r[2:])) for r in rows if len(r) >= 3]
    found = sum(t in seen for t in texts)
    assert found > 0.99 * len(texts), (found, len(texts))


def test_splits_combine_in_order(data_dir: Path) -> None:
    both = data.load_splits(data_dir, ("val", "devtest"))
    val, devtest = data.load_split(data_dir, "val"), data.load_split(data_dir, "devtest")
    assert both.texts == val.texts + devtest.texts
    assert both.labels == val.labels + devtest.labels
    with pytest.raises(ValueError, match="unknown split"):
        data.load_split(data_dir, "bogus")


def test_cli_refuses_to_select_on_test(data_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from moodwire.cli.app import app

    args = ["model", "train", "--data", str(data_dir), "--out", str(tmp_path / "m")]
    result = CliRunner().invoke(app, [*args, "--select", "test"])
    assert result.exit_code == 2 and "use val or devtest" in result.output
