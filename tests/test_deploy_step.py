"""The pipeline's deploy step decides from the gate's outputs (the end-to-end path with a running
TorchServe is in tests/test_promotion_serving.py)."""

from __future__ import annotations

import pytest
from fixtures.models import tiny_model_artifact

from serving.deploy import deploy_step
from serving.torchserve import ServeError


def test_a_model_the_gate_refused_is_not_served_and_the_step_says_so():
    r = deploy_step("models:/textrec-line/7", promoted=False, target="local")
    assert not r.changed and "not promoted" in r.reason and "models:/textrec-line/7" in r.reason


def test_serving_target_none_registers_only():
    r = deploy_step("models:/textrec-line/7", promoted=True, target="none")
    assert not r.changed and "'none'" in r.reason


def test_an_unknown_serving_target_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="'cluster', 'local' or 'none', got 'kserve'"):
        deploy_step("models:/textrec-line/7", promoted=True, target="kserve")


def test_a_promoted_model_with_no_local_server_fails_loudly(tmp_path, monkeypatch):
    model = tiny_model_artifact(tmp_path / "model.pt")
    monkeypatch.chdir(tmp_path)  # no .textrec/serve here: nothing is serving
    with pytest.raises(ServeError, match="no local server to deploy to"):
        deploy_step(str(model), promoted=True, target="local")
