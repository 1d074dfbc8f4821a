"""Data sources: what a pipeline's ``data_source`` parameter accepts, and the merged dataset."""

from __future__ import annotations

import pytest

from textrec.data.sources import parse_source, synthesize_dataset


@pytest.mark.parametrize("source", ["s3://bucket/iam", "iam:", "none:x", "emnist"])
def test_a_bad_data_source_names_itself_and_the_accepted_forms(source):
    with pytest.raises(ValueError, match=f"data_source {source!r}: expected 'none', 'emnist:<uri>' or 'iam:<uri>'"):
        parse_source(source)


@pytest.mark.parametrize(("source", "parsed"), [("none", ("none", "")), (" iam:s3://b/iam ", ("iam", "s3://b/iam")),
                                                ("emnist:https://h/e.zip", ("emnist", "https://h/e.zip"))])
def test_a_good_data_source_splits_into_kind_and_uri(source, parsed):
    assert parse_source(source) == parsed


def test_synthetic_lines_alone_make_a_dataset_with_every_split_and_one_hash(tmp_path):
    info = synthesize_dataset(40, tmp_path / "nothing-ingested", tmp_path / "lines", seed=1)
    assert info["stores"] == ["synth.h5"] and info["lines"] == sum(info["splits"].values())
    assert {"train", "val", "test", "test_unseen_font"} <= set(info["splits"])
    again = synthesize_dataset(40, tmp_path / "nothing-ingested", tmp_path / "again", seed=1)
    assert again["content_hash"] == info["content_hash"]  # same seed, same lines


def test_the_recipes_synthesis_settings_reach_the_rendered_lines(tmp_path):
    from textrec.training.job import synth_recipe

    recipe = "data:\n  synth:\n    pen_p: 1.0\n"
    synth = synth_recipe(recipe, overrides=["data.synth.elastic_p=0.5"])
    assert synth == {"pen_p": 1.0, "elastic_p": 0.5}
    plain = synthesize_dataset(30, tmp_path / "none", tmp_path / "plain", seed=2)
    penned = synthesize_dataset(30, tmp_path / "none", tmp_path / "pen", seed=2, synth=synth)
    assert penned["content_hash"] != plain["content_hash"]
    with pytest.raises(ValueError, match="pen_q"):
        synth_recipe("data:\n  synth:\n    pen_q: 1\n")
