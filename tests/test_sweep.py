"""Hyperparameter sweeps: sweep files read strictly, real Optuna studies of tiny trials tracked in a real
MLflow server on 127.0.0.1, pruning, resuming a killed sweep, workers sharing a study, and the same
sweep as a Katib Experiment (checked field by field against the v1beta1 types; submission goes to a
mocked Kubernetes API server, the only thing mocked here)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from fixtures.http_server import JsonHandler

from textrec.sweep import SweepError, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
TINY = ["data.train_lines=48", "data.val_lines=8", "data.test_lines=8", "data.unseen_font_lines=8",
        "data.batch_size=16", "loop.progress=false"]


@pytest.fixture(scope="module")
def pools(tmp_path_factory) -> Path:
    """One pool cache for the module: every trial of the same data renders it once."""
    return tmp_path_factory.mktemp("pools")


def sweep_file(tmp_path: Path, pools: Path, **changes) -> Path:
    body = {"method": "random", "metric": {"name": "val_cer", "goal": "minimize"}, "base_config": str(SMOKE),
            "overrides": [*TINY, f"data.cache_dir={pools}"],
            "parameters": {"optim.lr": {"log_uniform": [1e-3, 1e-2]}}, "trials": 2, "budget": {"epochs": 2},
            "pruner": {"type": "none"}, "name": "tiny"}
    body.update(changes)
    path = tmp_path / f"{body['name']}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def study_of(out: Path, name: str = "tiny"):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


# --------------------------------------------------------------------------------------------- sweep files

def test_the_shipped_sweep_files_load():
    cpu, smoke = load_spec(REPO / "sweeps" / "cpu.yaml"), load_spec(REPO / "sweeps" / "smoke.yaml")
    assert (cpu.method, cpu.metric, cpu.trials, cpu.budget_minutes) == ("bayes", "val_cer", 8, 4.0)
    assert [p.key for p in cpu.parameters] == ["optim.lr", "optim.warmup", "optim.weight_decay", "data.batch_size"]
    assert cpu.train_config({"optim.lr": 0.004}).optim.lr == 0.004
    assert smoke.train_config({}).loop.epochs == 2


BAD = [
    ({"methd": "random"}, "unknown key 'methd'"),
    ({"method": "anneal"}, "method: expected one of bayes, random, grid"),
    ({"parameters": {"optim.lrr": {"uniform": [0.1, 0.2]}}}, "parameters.optim.lrr: not a key of the training config"),
    ({"parameters": {"optim.lr": {"normal": [0.1, 0.2]}}}, "parameters.optim.lr: unknown distribution 'normal'"),
    ({"parameters": {"optim.lr": {"log_uniform": [0, 0.1]}}}, "needs low > 0"),
    ({"parameters": {"optim.lr": {"uniform": [0.2, 0.1]}}}, "low must be below high"),
    ({"parameters": {"loop.amp": {"choice": ["off", "maybe"]}}}, "parameters.loop.amp: 'maybe' is not a valid value"),
    ({"parameters": {"model.options.lstm_hiden": {"int": [8, 16]}}}, "parameters.model.options.lstm_hiden"),
    ({"parameters": {"loop.epochs": {"int": [1, 3]}}}, "the budget sets it already"),
    ({"metric": {"name": "real_val_cer"}}, "real_val_cer needs a real validation set"),
    ({"metric": {"name": "val_cer", "goal": "maximize"}}, "metric.goal"),
    ({"budget": {"epoch": 2}}, "budget: unknown key 'epoch'"),
    ({"pruner": {"type": "median", "patience": 2}}, "pruner.patience: not an option of the median pruner"),
    ({"pruner": {"type": "hyperbandx"}}, "pruner.type: unknown pruner"),
    ({"method": "grid"}, "a grid search needs choice or int values"),
    ({"method": "grid", "parameters": {"data.batch_size": {"choice": [8, 16]}}, "trials": 3},
     "3 trials but the grid has only 2 points"),
    ({"base_config": "configs/nope.yaml"}, "base_config: no training config at"),
    ({"overrides": ["loop.epoch=2"]}, "unknown config key 'loop.epoch'"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[m for _, m in BAD])
def test_a_bad_sweep_file_fails_naming_the_file_and_key(tmp_path, change, message):
    path = sweep_file(tmp_path, tmp_path, **change)
    with pytest.raises(SweepError) as e:
        load_spec(path)
    assert message in str(e.value)
    assert str(path) in str(e.value)


def test_a_grid_runs_every_point_when_trials_are_not_given(tmp_path):
    body = yaml.safe_load(sweep_file(tmp_path, tmp_path).read_text())
    body.update(method="grid", parameters={"data.batch_size": {"choice": [8, 16]}, "model.options.lstm_layers":
                                           {"int": [1, 2]}})
    del body["trials"]
    assert parse_spec(body).trials == 4


# ------------------------------------------------------------------------------------- studies with MLflow

def test_each_trial_is_a_child_run_and_the_sweep_run_gets_the_best(tmp_path, pools, mlflow_server):
    from mlflow import MlflowClient

    from textrec.sweep.study import run_sweep

    spec = load_spec(sweep_file(tmp_path, pools, parameters={"optim.lr": {"log_uniform": [1e-3, 1e-2]},
                                                             "data.batch_size": {"choice": [8, 16]}}))
    result = run_sweep(spec, tmp_path / "out", tracking_uri=mlflow_server.url)
    assert result.counts["complete"] == 2 and result.best_value is not None
    client = MlflowClient(mlflow_server.url)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["textrec.step"] == "sweep"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2
    study = study_of(tmp_path / "out")
    by_run = {t.user_attrs["mlflow_run_id"]: t for t in study.trials}
    for child in children:
        trial = by_run[child.info.run_id]
        assert child.data.tags["textrec.trial_state"] == "complete" and child.info.status == "FINISHED"
        assert float(child.data.params["optim.lr"]) == pytest.approx(trial.params["optim.lr"])
        assert child.data.params["data.batch_size"] == str(trial.params["data.batch_size"])
        assert child.data.params["loop.epochs"] == "2"  # the whole config travels with its values
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_cer")] == [1, 2]
        assert child.data.metrics["objective"] == pytest.approx(trial.value)
        assert "model.pt" in [a.path for a in client.list_artifacts(child.info.run_id)]
    best = min(study.trials, key=lambda t: t.value)
    assert parent.data.metrics["best_val_cer"] == pytest.approx(best.value) == pytest.approx(result.best_value)
    assert parent.data.tags["textrec.best.optim.lr"] == str(best.params["optim.lr"])
    assert parent.data.tags["textrec.best_model_uri"] == f"runs:/{best.user_attrs['mlflow_run_id']}/model.pt"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best_model", "plots", "sweep.json"} <= artifacts
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "best_model")] == \
        ["best_model/model.pt", "best_model/params.json"]
    page = (tmp_path / "out" / "plots.html").read_text()
    for title in ("Optimisation history", "Parameter importances", "Parallel coordinates"):
        assert title in page
    assert "not drawn" not in page  # two complete trials: every plot is there
    assert re.search(r"<script[^>]+src=[\"']https?://", page) is None  # plotly.js inside: opens offline
    assert page.count("plotly.js v") >= 1 and len(page) > 1_000_000


def test_a_pruner_stops_a_trial_after_its_first_epoch(tmp_path, pools, mlflow_server):
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    from textrec.sweep.study import run_sweep

    spec = load_spec(sweep_file(tmp_path, pools, trials=1, pruner={"type": "threshold", "upper": 0.01}))
    result = run_sweep(spec, tmp_path / "out", tracking_uri=mlflow_server.url)
    (trial,) = study_of(tmp_path / "out").trials
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [0]
    assert result.counts == {**result.counts, "pruned": 1, "complete": 0} and result.best_value is None
    client = MlflowClient(mlflow_server.url)
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.data.tags["textrec.trial_state"] == "pruned" and run.info.status == "KILLED"
    assert len(client.get_metric_history(run.info.run_id, "val_cer")) == 1  # one epoch of the two trained
    assert not (tmp_path / "out" / "trials" / "trial-0000" / "model.pt").exists()


# ---------------------------------------------------------------------------------- resume and workers

def _sweep_command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "textrec.cli", "sweep", "--config", str(config), "--out", str(out),
            "--mlflow-uri", "", *extra]


def test_a_killed_sweep_resumes_the_same_study_and_retries_the_killed_trial(tmp_path, pools):
    import optuna
    from optuna.trial import TrialState

    config = sweep_file(tmp_path, pools, trials=2)
    out = tmp_path / "out"
    cmd = _sweep_command(config, out, "--heartbeat", "1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        killed = None
        while killed is None:  # kill it in the middle of a trial after the first, once it has a checkpoint
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
            try:
                trials = study_of(out).trials
            except Exception:  # the study is not created yet
                trials = []
            running = [t.number for t in trials if t.number >= 1 and t.state == TrialState.RUNNING and
                       (out / "trials" / f"trial-{t.number:04d}" / "checkpoints" / "last.pt").exists()]
            killed = running[0] if running else None
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {t.number: (t.state, t.value) for t in study_of(out).trials}
    assert before[0][0] == TrialState.COMPLETE and before[killed][0] == TrialState.RUNNING

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = study_of(out).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    assert all((trials[n].state, trials[n].value) == before[n] for n in range(killed))  # kept, not rerun
    assert trials[killed].state == TrialState.FAIL  # the killed one, failed by its missing heartbeat...
    retried = [t for t in complete if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].params == trials[killed].params  # ...and run again with its values
    assert retried[0].user_attrs["out_dir"] == str(out / "trials" / f"trial-{killed:04d}")  # from its checkpoint
    assert json.loads(done.stdout[done.stdout.index("{"):done.stdout.rindex("}") + 1])["counts"]["complete"] == 2
    assert isinstance(optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}"), optuna.Study)


def test_two_workers_share_one_study(tmp_path, pools):
    from optuna.trial import TrialState

    from textrec.sweep.study import run_sweep

    spec = load_spec(sweep_file(tmp_path, pools, trials=3, budget={"epochs": 1}))
    result = run_sweep(spec, tmp_path / "out", workers=2)
    trials = study_of(tmp_path / "out").trials
    assert result.counts["complete"] == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len(trials) == 3  # neither worker ran past the study's trial count
    assert len({t.user_attrs["worker_pid"] for t in trials}) == 2
    assert len({t.params["optim.lr"] for t in trials}) == 3  # workers draw different values



def test_a_trial_started_past_the_count_elsewhere_is_failed_untrained_and_counts_nowhere(tmp_path, pools):
    import optuna
    from optuna.trial import TrialState

    from textrec.sweep.study import SURPLUS, Objective, SweepRun, counts, default_storage, open_storage

    spec = load_spec(sweep_file(tmp_path, pools, trials=1))
    out = tmp_path / "out"
    out.mkdir()
    storage = default_storage(out)
    study = optuna.create_study(study_name="tiny", storage=open_storage(storage), direction="minimize")
    with pytest.warns(UserWarning, match="Heartbeat"):  # ask() starts no heartbeat; fine for a trial never run
        elsewhere = study.ask()  # the study's one trial, started by a worker on another machine
    study.optimize(Objective(SweepRun(spec, out, storage, trials=1)), n_trials=1, catch=(Exception,))
    late = study.trials[1]
    assert late.state == TrialState.FAIL and late.user_attrs["outcome"] == SURPLUS
    assert not (out / "trials").exists()  # nothing was trained for it
    assert counts(study) == {**counts(study), "running": 1, "failed": 0, "done": 0}
    study.tell(elsewhere, 0.5)
    assert counts(study)["complete"] == 1 and counts(study)["done"] == 1


def test_a_worker_starts_no_trial_while_another_holds_the_start_lock(tmp_path, pools):
    from optuna.trial import TrialState

    from textrec.io import FileLock

    out = tmp_path / "out"
    out.mkdir()
    lock = FileLock(out / "study.lock")
    lock.acquire()
    proc = subprocess.Popen(_sweep_command(sweep_file(tmp_path, pools, trials=1, budget={"epochs": 1}), out),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "study.db").exists():  # the sweep has created its study and reached the lock
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.1)
        time.sleep(10)  # time enough to start a trial, had the worker not waited
        assert proc.poll() is None and study_of(out).trials == []
    finally:
        lock.close()
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    assert [t.state for t in study_of(out).trials] == [TrialState.COMPLETE]

# -------------------------------------------------------------------------------------------------- Katib

# The Experiment's fields, from Katib's v1beta1 Go types (pkg/apis/controller/experiments/v1beta1 and
# common/v1beta1): a key not listed at its place is a field Katib does not have.
KATIB_FIELDS = {
    "": {"apiVersion", "kind", "metadata", "spec"},
    "metadata": {"name", "namespace", "labels", "annotations"},
    "spec": {"parameters", "objective", "algorithm", "earlyStopping", "trialTemplate", "parallelTrialCount",
             "maxTrialCount", "maxFailedTrialCount", "metricsCollectorSpec", "nasConfig", "resumePolicy"},
    "spec.objective": {"type", "goal", "objectiveMetricName", "additionalMetricNames", "metricStrategies"},
    "spec.objective.metricStrategies[]": {"name", "value"},
    "spec.algorithm": {"algorithmName", "algorithmSettings"},
    "spec.algorithm.algorithmSettings[]": {"name", "value"},
    "spec.earlyStopping": {"algorithmName", "algorithmSettings"},
    "spec.earlyStopping.algorithmSettings[]": {"name", "value"},
    "spec.parameters[]": {"name", "parameterType", "feasibleSpace"},
    "spec.parameters[].feasibleSpace": {"max", "min", "list", "step", "distribution"},
    "spec.metricsCollectorSpec": {"source", "collector"},
    "spec.metricsCollectorSpec.collector": {"kind", "customCollector"},
    "spec.trialTemplate": {"retain", "trialSpec", "configMap", "trialParameters", "primaryPodLabels",
                           "successCondition", "failureCondition", "primaryContainerName"},
    "spec.trialTemplate.trialParameters[]": {"name", "description", "reference"},
}
STRING_LEAVES = ("feasibleSpace", "algorithmSettings[]", "metricStrategies[]", "trialParameters[]")


def check_katib_fields(node, path: str = "") -> None:
    if path == "spec.trialTemplate.trialSpec" or path.startswith("metadata.") or path.endswith("[].feasibleSpace.list"):
        return
    if isinstance(node, list):
        for item in node:
            check_katib_fields(item, f"{path}[]")
        return
    if not isinstance(node, dict):
        return
    allowed = KATIB_FIELDS.get(path)
    assert allowed is not None, f"{path}: Katib has no such object"
    assert set(node) <= allowed, f"{path}: fields Katib does not know: {set(node) - allowed}"
    for key, value in node.items():
        if path.endswith(STRING_LEAVES) and key != "list":
            assert isinstance(value, str), f"{path}.{key} must be a string, got {value!r}"
        check_katib_fields(value, f"{path}.{key}" if path else key)


@pytest.mark.parametrize(("method", "algorithm"), [("bayes", "bayesianoptimization"), ("random", "random"),
                                                   ("grid", "grid")])
def test_each_method_renders_a_katib_experiment_with_only_v1beta1_fields(tmp_path, method, algorithm):
    from textrec.sweep.katib import experiment

    params = {"data.batch_size": {"int": [4, 8]}, "model.options.channels": {"choice": [[8, 16, 24, 32],
                                                                                      [16, 32, 48, 64]]}}
    if method != "grid":
        params.update({"optim.lr": {"log_uniform": [1e-4, 1e-2]}, "optim.warmup": {"uniform": [0.0, 0.3]}})
    spec = load_spec(sweep_file(tmp_path, tmp_path, method=method, parameters=params, trials=6,
                                parallel_trials=2, pruner={"type": "median", "n_startup_trials": 2}))
    m = experiment(spec, image="registry.local/textrec-component:test")
    check_katib_fields(m)
    s = m["spec"]
    assert (m["apiVersion"], m["kind"]) == ("kubeflow.org/v1beta1", "Experiment")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", m["metadata"]["name"])
    assert s["objective"] == {"type": "minimize", "objectiveMetricName": "val_cer",
                              "metricStrategies": [{"name": "val_cer", "value": "min"}]}
    assert s["algorithm"]["algorithmName"] == algorithm
    assert (s["parallelTrialCount"], s["maxTrialCount"], s["maxFailedTrialCount"]) == (2, 6, 3)
    space = {p["name"]: p for p in s["parameters"]}
    assert space["data-batch-size"] == {"name": "data-batch-size", "parameterType": "int",
                                        "feasibleSpace": {"min": "4", "max": "8"}}
    assert space["model-options-channels"]["feasibleSpace"]["list"] == ["[8,16,24,32]", "[16,32,48,64]"]
    if method != "grid":
        assert space["optim-lr"]["feasibleSpace"] == {"min": "0.0001", "max": "0.01", "distribution": "logUniform"}
        assert space["optim-warmup"]["feasibleSpace"]["distribution"] == "uniform"
    assert s["earlyStopping"] == {"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "2"}, {"name": "start_step", "value": "1"}]}
    assert s["metricsCollectorSpec"] == {"collector": {"kind": "StdOut"}}
    # Every trial parameter points at a search parameter and is used in the Job; nothing else is used.
    template = s["trialTemplate"]
    job = template["trialSpec"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["name"] == template["primaryContainerName"]
    assert container["image"] == "registry.local/textrec-component:test"
    names = {t["name"]: t["reference"] for t in template["trialParameters"]}
    assert set(names.values()) == set(space)
    used = set(re.findall(r"\$\{trialParameters\.([^}]+)\}", json.dumps(job)))
    assert used == set(names)
    assert all(" " not in arg for arg in container["command"])  # Katib wraps the command in a shell
    # The config the trial reads, plus its values, is a config the project loads.
    env = {e["name"]: e["value"] for e in container["env"]}
    from textrec.training import load_config

    base = yaml.safe_load(env["TEXTREC_TRIAL_CONFIG"])
    args = [a.replace("${trialParameters.dataBatchSize}", "8")
             .replace("${trialParameters.modelOptionsChannels}", "[16,32,48,64]")
             .replace("${trialParameters.optimLr}", "0.001").replace("${trialParameters.optimWarmup}", "0.2")
            for a in container["command"][5:]]
    cfg = load_config(base, args)
    assert (cfg.data.batch_size, cfg.model.options["channels"], cfg.loop.epochs) == (8, [16, 32, 48, 64], 2)


def test_the_trial_prints_the_lines_katibs_stdout_collector_reads(tmp_path, pools, monkeypatch, capsys):
    from textrec.sweep import katib, trial

    spec = load_spec(sweep_file(tmp_path, pools))
    monkeypatch.setenv(trial.CONFIG_ENV, katib.trial_config_yaml(spec))
    assert trial.main(["--metric=val_cer", f"--out={tmp_path / 'trial'}", "optim.lr=0.004"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "val_cer" in line]
    assert len(lines) == 3  # two epochs and the final model
    pattern = re.compile(katib.STDOUT_PATTERN)
    values = []
    for line in lines:
        (match,) = pattern.findall(line)
        assert match[0] == "val_cer"
        values.append(float(match[1]))
    metrics = json.loads((tmp_path / "trial" / "metrics.json").read_text())
    assert values[-1] == pytest.approx(metrics["val_cer"], abs=1e-6)
    assert trial.metric_line("val_cer", 3e-7) == "val_cer=0.000000"  # never an exponent the pattern misses


def test_the_katib_default_image_is_the_component_image(monkeypatch):
    import importlib

    import components.image
    from textrec.sweep.katib import default_image

    monkeypatch.delenv("TEXTREC_IMAGE", raising=False)
    assert default_image() == importlib.reload(components.image).COMPONENT_IMAGE
    monkeypatch.setenv("TEXTREC_IMAGE", "r.local/x:1")
    assert default_image() == importlib.reload(components.image).COMPONENT_IMAGE == "r.local/x:1"
    monkeypatch.delenv("TEXTREC_IMAGE")
    importlib.reload(components.image)


class FakeKubernetes:
    """A mocked Kubernetes API server (the only mock in this file): stores created custom objects."""

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}

    def handler(self):
        api = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = f"{self.path}/{body['metadata']['name']}"
                if key in api.objects:
                    return self.reply_json(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
                api.objects[key] = body
                self.reply_json(201, body)

        return Handler


@pytest.fixture
def fake_kubernetes() -> Iterator[tuple[FakeKubernetes, object]]:
    from kubernetes import client

    fake = FakeKubernetes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake, client.ApiClient(config)
    finally:
        server.shutdown()
        server.server_close()


def test_sweep_run_creates_the_experiment_once_and_dry_run_prints_it(tmp_path, fake_kubernetes, capsys):
    from cluster.katib import main
    from textrec.sweep.katib import experiment

    fake, api = fake_kubernetes
    config = sweep_file(tmp_path, tmp_path, katib={"namespace": "hpo", "image": "r.local/t:1"})
    assert main(["--config", str(config), "--dry-run"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == experiment(load_spec(config)) and not fake.objects
    assert main(["--config", str(config)], api=api) == 0
    assert "created Experiment hpo/textrec-tiny" in capsys.readouterr().out
    assert fake.objects == {"/apis/kubeflow.org/v1beta1/namespaces/hpo/experiments/textrec-tiny": printed}
    assert main(["--config", str(config)], api=api) == 1
    assert "exists already" in capsys.readouterr().err
