"""Population-based training: a real population of four tiny members, two rounds, a real MLflow server.

The members are real training processes (``python -m textrec.sweep.pbt member``) resuming real
checkpoints; the checks read those checkpoints and the MLflow runs back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from textrec.data.download import sha256_of
from textrec.sweep.pbt import (
    STEP_MEMBER,
    TAG_BEST_MEMBER,
    TAG_BEST_RUN,
    TAG_EXPLOIT,
    TAG_LINEAGE,
    TAG_MEMBER,
    PbtSpecError,
    ancestry,
    katib_experiment,
    load_spec,
    run_pbt,
)
from textrec.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "pbt-smoke.yaml"


@pytest.fixture(scope="module")
def population(mlflow_server, tmp_path_factory):
    """One PBT run of sweeps/pbt-smoke.yaml (4 members, 2 rounds), tracked in the session's MLflow."""
    out = tmp_path_factory.mktemp("pbt")
    spec = load_spec(SMOKE)
    result = run_pbt(spec, out, tracking_uri=mlflow_server.url,
                     overrides=[f"data.cache_dir={tmp_path_factory.mktemp('pools')}"])
    state = json.loads((out / "pbt.json").read_text())
    return spec, result, state, out, mlflow_server.url


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _member_dir(out: Path, i: int) -> Path:
    return out / "members" / f"m{i}"


def test_the_worst_quarter_copies_a_better_members_checkpoint(population):
    spec, result, state, out, _ = population
    events = state["events"]
    assert spec.population == 4 and spec.n_exploit == 1
    assert len(events) == 1, "one loser per round in a population of four, one exploit round"
    e = events[0]
    round1 = {m["member"]: m for m in state["rounds"][0]["members"]}
    ranked = sorted(round1.values(), key=lambda m: m["metric"])
    assert e["member"] == ranked[-1]["member"], "the worst member is the one replaced"
    assert e["from_member"] == ranked[0]["member"], "it copies the best (the top quarter is one member)"
    assert e["from_metric"] < e["metric"] == round1[e["member"]]["metric"]
    # What the loser resumed round 2 from is, byte for byte, the winner's checkpoint at copy time.
    loser, winner = _member_dir(out, e["member"]), _member_dir(out, e["from_member"])
    assert sha256_of(loser / "round-1.pt") == e["checkpoint_sha256"] == sha256_of(winner / "round-1.pt")
    lw, ww = _weights(loser / "round-1.pt"), _weights(winner / "round-1.pt")
    assert lw.keys() == ww.keys() and all(torch.equal(lw[k], ww[k]) for k in lw)
    # ... and it did train round 2 from there: its history starts with the winner's first epoch.
    last = load_checkpoint(loser / "checkpoints" / "last.pt")
    assert last["epoch"] == 2
    assert last["history"][0] == load_checkpoint(winner / "round-1.pt")["history"][0]
    assert not all(torch.equal(last["model"][k], lw[k]) for k in lw), "round 2 changed the copied weights"


def test_explored_hyperparameters_stay_in_bounds_and_the_resumed_optimiser_uses_them(population):
    spec, result, state, out, _ = population
    e = state["events"][0]
    by_key = {hp.key: hp for hp in spec.hyperparameters}
    for key, value in e["hparams"].items():
        hp = by_key[key]
        assert hp.bounds[0] <= value <= hp.bounds[1]
        assert any(math.isclose(value, hp.clip(e["from_hparams"][key] * f)) for f in hp.factors), \
            f"{key}: {value} is the winner's {e['from_hparams'][key]} times one of {hp.factors}"
    loser = _member_dir(out, e["member"])
    last = load_checkpoint(loser / "checkpoints" / "last.pt")
    lr, noise = e["hparams"]["optim.lr"], e["hparams"]["stem.noise"]
    assert lr != e["from_hparams"]["optim.lr"]
    # The schedule is constant in the smoke spec: the optimiser's LR is exactly the explored optim.lr.
    assert [g["lr"] for g in last["optimizer"]["param_groups"]] == [pytest.approx(lr)]
    assert last["scheduler"]["base_lrs"] == [pytest.approx(lr)]
    assert json.loads((loser / "round-2.json").read_text())["lr"] == pytest.approx(lr)
    assert last["config"]["optim"]["lr"] == pytest.approx(lr) and last["config"]["stem"]["noise"] == pytest.approx(noise)
    for m in state["rounds"][0]["members"] + state["rounds"][1]["members"]:
        for key, value in m["hparams"].items():
            assert by_key[key].bounds[0] <= value <= by_key[key].bounds[1]


def test_lineage_params_and_metrics_are_in_mlflow(population):
    from textrec.tracking import TAG_PARENT, mlflow_client

    spec, result, state, out, uri = population
    client = mlflow_client(uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`{TAG_PARENT}` = '{result.parent_run_id}'")
    assert len(children) == spec.population and all(c.data.tags["textrec.step"] == STEP_MEMBER for c in children)
    runs = {int(c.data.tags[TAG_MEMBER]): c for c in children}
    e = state["events"][0]
    # Lineage as MLflow has it: the exploit tag names the member, round, run and checkpoint copied.
    tag = json.loads(runs[e["member"]].data.tags[f"{TAG_EXPLOIT}.r1"])
    assert tag["from_member"] == e["from_member"] and tag["from_run_id"] == runs[e["from_member"]].info.run_id
    assert tag["checkpoint_sha256"] == e["checkpoint_sha256"]
    assert runs[e["member"]].data.params["r2.exploit_from"] == f"m{e['from_member']}@r1"
    assert json.loads(runs[e["member"]].data.tags[TAG_LINEAGE])[0]["from_member"] == e["from_member"]
    events = [{"round": int(k.rsplit(".r", 1)[1]), "member": i, **json.loads(v)}
              for i, run in runs.items() for k, v in run.data.tags.items() if k.startswith(f"{TAG_EXPLOIT}.r")]
    for i in runs:  # each member's ancestry rebuilt from MLflow alone equals the controller's
        assert ancestry(events, i, spec.rounds) == ancestry(state["events"], i, spec.rounds)
    assert ancestry(events, e["member"], 2) == [{"member": e["member"], "first_round": 2, "last_round": 2},
                                                {"member": e["from_member"], "first_round": 1, "last_round": 1}]
    # Hyperparameters per round as params and metrics; training metrics per epoch from the callback.
    for i, run in runs.items():
        for r, record in enumerate(state["rounds"], start=1):
            hp = next(m for m in record["members"] if m["member"] == i)["hparams"]
            assert float(run.data.params[f"r{r}.optim.lr"]) == pytest.approx(hp["optim.lr"])
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_cer")] == [1, 2]
        assert len(client.get_metric_history(run.info.run_id, "hp.optim.lr")) == 2
    # The best member's model, on its run and on the parent.
    best = runs[result.best]
    assert parent.data.tags[TAG_BEST_MEMBER] == str(result.best) and parent.data.tags[TAG_BEST_RUN] == best.info.run_id
    for rid in (best.info.run_id, result.parent_run_id):
        assert {a.path for a in client.list_artifacts(rid, "model")} >= {"model/model.pt", "model/metrics.json"}
    assert (out / "model.pt").is_file() and "val_cer" in json.loads((out / "metrics.json").read_text())


def _write(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"populaton": 4}, "unknown keys ['populaton']"),
    ({"rounds": None}, "rounds is required"),
    ({"population": 1}, "population must be an integer >= 2"),
    ({"base_config": "configs/nope.yaml"}, "no such training config"),
    ({"metric": "real_val_cer"}, "needs a real validation set"),
    ({"metric": "accuracy"}, "metric must be one of"),
    ({"direction": "down"}, "direction must be one of"),
    ({"exploit_fraction": 0.7}, "exploit_fraction must be in (0, 0.5]"),
    ({"interval": {"minutes": 3}}, "interval must be an integer (epochs) or one of"),
    ({"hyperparameters": {"model.options.dropout": {"bounds": [0, 0.5]}}}, "cannot change under a checkpoint"),
    ({"hyperparameters": {"data.synth.pen_p": {"bounds": [0, 0.5]}}}, "data.synth.* only with data.mode=online"),
    ({"hyperparameters": {"optim.lr": {"bounds": [0.01, 0.001]}}}, "optim.lr.bounds must have low < high"),
    ({"hyperparameters": {"optim.lr": {"factors": [0.8, 1.2]}}}, "optim.lr.bounds is required"),
    ({"hyperparameters": {"optim.lr": {"bounds": [0.001, 0.01], "init": [0.0001, 0.01]}}}, "must lie inside bounds"),
    ({"hyperparameters": {"optim.lr": {"bounds": [0.001, 0.01], "factor": 2}}}, "unknown keys ['factor']"),
    ({"overrides": ["loop.epoch=3"]}, "unknown config key 'loop.epoch'"),
])
def test_a_bad_spec_fails_naming_the_file_and_key(tmp_path, changes, message):
    path = _write(tmp_path, **changes)
    with pytest.raises(PbtSpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_the_shipped_specs_parse():
    cpu = load_spec(ROOT / "sweeps" / "pbt.yaml")
    assert cpu.population == 4 and cpu.n_exploit == 1 and cpu.metric == "val_cer"
    assert {hp.key for hp in cpu.hyperparameters} >= {"optim.lr", "stem.slant"}
    assert load_spec(SMOKE, population=6).population == 6


def test_the_katib_experiment_is_pbt_with_the_specs_settings(tmp_path):
    from textrec.config import from_dict
    from textrec.training.config import TrainConfig

    spec = load_spec(SMOKE, population=5)
    exp = katib_experiment(spec, image="registry.local/textrec-component:1", namespace="ml")
    s = exp["spec"]
    assert exp["kind"] == "Experiment" and exp["apiVersion"] == "kubeflow.org/v1beta1"
    assert s["algorithm"]["algorithmName"] == "pbt"
    settings = {x["name"]: x["value"] for x in s["algorithm"]["algorithmSettings"]}
    assert settings == {"suggestion_trial_dir": "/var/log/katib/checkpoints", "n_population": "5",
                        "truncation_threshold": "0.25"}
    assert s["maxTrialCount"] == 5 * spec.rounds and s["resumePolicy"] == "FromVolume"
    assert s["objective"] == {"type": "minimize", "objectiveMetricName": "train_loss"}
    params = {p["name"]: p for p in s["parameters"]}
    assert float(params["optim_lr"]["feasibleSpace"]["min"]) == 0.0005
    assert float(params["optim_lr"]["feasibleSpace"]["max"]) == 0.02
    template = s["trialTemplate"]
    assert {t["reference"] for t in template["trialParameters"]} == set(params)
    container = template["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == template["primaryContainerName"] and container["image"].endswith(":1")
    cmd = container["command"]
    assert cmd[:5] == ["python", "-m", "textrec.sweep.pbt", "member", "--config-yaml"]
    assert "optim.lr=${trialParameters.optim_lr}" in cmd and cmd[cmd.index("--out") + 1] == settings["suggestion_trial_dir"]
    from_dict(TrainConfig, yaml.safe_load(cmd[5]))  # the trial's config is a valid training config
    with pytest.raises(ValueError, match="n_population >= 5"):
        katib_experiment(load_spec(SMOKE), image="x")


def test_textrec_pbt_writes_the_katib_experiment(tmp_path, capsys):
    from textrec.cli import main

    target = tmp_path / "experiment.yaml"
    assert main(["pbt", "--config", str(SMOKE), "--population", "6", "--katib", str(target)]) == 0
    exp = yaml.safe_load(target.read_text())
    assert {x["name"]: x["value"] for x in exp["spec"]["algorithm"]["algorithmSettings"]}["n_population"] == "6"
    assert main(["pbt", "--config", str(_write(tmp_path, direction="up")), "--katib", "-"]) == 1
    assert "direction must be one of" in capsys.readouterr().err
