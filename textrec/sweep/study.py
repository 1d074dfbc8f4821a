"""Run a sweep on this machine: an Optuna study in a database, trials trained in-process, MLflow runs.

    result = run_sweep(load_spec("sweeps/cpu.yaml"), Path(".textrec/sweeps/cpu"), tracking_uri=uri)

- The study lives in ``storage`` (default ``sqlite:///OUT/study.db``; any SQLAlchemy URL, such as
  ``postgresql://...``), opened with ``load_if_exists``: a killed sweep started again continues the
  same study, and several workers (``workers`` processes here, or ``textrec sweep`` commands on other
  machines given the same storage) share it.
- Trials send a heartbeat; a trial whose process died (no heartbeat for three intervals) is failed
  and retried once with the same values, resuming its training from its last checkpoint in the same
  MLflow run.
- Each trial is a child MLflow run of one sweep run: its values and the whole config as params,
  per-epoch metrics, a ``textrec.trial_state`` tag (complete / pruned / failed) and, when complete,
  its ``model.pt``. The sweep run gets the best value and values, the best trial's model, and the
  study's plots (:mod:`.plots`).
- The pruner sees the trial's per-epoch validation metric through :class:`PruneOnMetric`.
- The study never trains more than its trial count, however many workers share it. Workers of one
  ``OUT`` folder take turns (a file lock) to count the study and start a trial; a trial that a worker on
  another machine started at the same moment past the count is failed unstarted as ``surplus`` and
  counts nowhere.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from textrec.io import FileLock
from textrec.sweep.spec import Param, Scalar, SweepError, SweepSpec
from textrec.training.callbacks import Callback

TAG_SWEEP = "textrec.sweep"
TAG_TRIAL = "textrec.trial"
TAG_TRIAL_STATE = "textrec.trial_state"
TAG_BEST_RUN = "textrec.best_trial_run_id"
TAG_BEST_MODEL = "textrec.best_model_uri"
STEP_SWEEP, STEP_TRIAL = "sweep", "trial"
COMPLETE, PRUNED, FAILED, SURPLUS = "complete", "pruned", "failed", "surplus"
RUN_STATUS = {COMPLETE: "FINISHED", PRUNED: "KILLED", FAILED: "FAILED"}
ATTR_RUN, ATTR_OUTCOME, ATTR_PARENT = "mlflow_run_id", "outcome", "mlflow_parent_run_id"
HEARTBEAT_S = 10


@dataclass(frozen=True)
class SweepRun:
    """What one worker needs (picklable: workers are separate processes)."""

    spec: SweepSpec
    out: Path
    storage: str
    trials: int
    tracking_uri: str = ""  # "": no MLflow
    parent_run_id: str = ""
    heartbeat_s: int = HEARTBEAT_S
    worker: int = 0
    workers: int = 1


@dataclass(frozen=True)
class SweepResult:
    study_name: str
    storage: str
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    counts: dict[str, int]
    parent_run_id: str
    out: Path


def default_storage(out: str | os.PathLike) -> str:
    return f"sqlite:///{(Path(out) / 'study.db').resolve()}"


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S):
    """The study's database, with heartbeats and one retry of a trial whose process died."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    # SQLite serialises writers: let several workers wait for each other instead of failing.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))


def make_sampler(spec: SweepSpec, seed: int):
    import optuna

    if spec.method == "grid":
        return optuna.samplers.GridSampler({p.key: p.grid() for p in spec.parameters}, seed=seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: parallel workers do not all propose next to the same running trial
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.n_startup(), constant_liar=True)


def make_pruner(spec: SweepSpec):
    import optuna

    kinds = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
             "percentile": optuna.pruners.PercentilePruner, "threshold": optuna.pruners.ThresholdPruner,
             "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
             "hyperband": optuna.pruners.HyperbandPruner}
    options = dict(spec.pruner.options)
    if spec.pruner.type == "percentile":
        options.setdefault("percentile", 50.0)
    try:
        return kinds[spec.pruner.type](**options)
    except (TypeError, ValueError) as e:
        raise SweepError(f"{spec.source}: pruner: {e}") from e


def suggest(trial, p: Param) -> Scalar:
    if p.kind in ("log_uniform", "uniform"):
        return trial.suggest_float(p.key, p.low, p.high, log=p.log)
    if p.kind == "int":
        return trial.suggest_int(p.key, int(p.low), int(p.high))
    return trial.suggest_categorical(p.key, list(p.choices))


class PruneOnMetric(Callback):
    """Reports ``metric`` to the Optuna trial after every epoch (step = the epoch, from 0) and ends the
    training with ``optuna.TrialPruned`` when the pruner says so."""

    def __init__(self, trial, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.values: list[float] = []

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
        import optuna

        value = metrics.get(self.metric)
        if value is None:
            return
        self.values.append(float(value))
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}: {self.metric} {value:.4f}")


class _Tracking:
    """The trial runs and the sweep run in MLflow; does nothing without a tracking URI."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def client(self):
        from textrec.tracking.runs import mlflow_client

        return mlflow_client(self.uri)

    def start_parent(self, spec: SweepSpec, study_name: str, existing: str) -> str:
        from textrec.tracking.runs import TAG_GIT, TAG_STEP, ensure_experiment, git_commit

        if not self.uri:
            return ""
        client = self.client()
        if existing:
            try:
                client.get_run(existing)
                client.update_run(existing, status="RUNNING")
                return existing
            except Exception:  # noqa: BLE001  (a study moved to another MLflow server: start a new run)
                pass
        exp_id = ensure_experiment(spec.experiment, tracking_uri=self.uri)
        tags = {TAG_STEP: STEP_SWEEP, TAG_SWEEP: study_name, TAG_GIT: git_commit()}
        run_id = client.create_run(exp_id, run_name=f"sweep-{study_name}", tags=tags).info.run_id
        self.log_params(run_id, {"method": spec.method, "metric": spec.metric, "trials": spec.trials,
                                 "base_config": spec.base_config.name, "pruner": spec.pruner.type,
                                 "budget_epochs": spec.budget_epochs, "budget_minutes": spec.budget_minutes,
                                 **{f"space.{p.key}": _describe(p) for p in spec.parameters}})
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param as MlflowParam

        client = self.client()
        existing = client.get_run(run_id).data.params
        new = [MlflowParam(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(new), 100):
            client.log_batch(run_id, params=new[i:i + 100])

    def start_trial(self, parent: str, study_name: str, number: int, values: Mapping[str, Scalar]) -> str:
        from textrec.tracking.runs import TAG_GIT, TAG_PARENT, TAG_STEP, git_commit

        if not self.uri:
            return ""
        client = self.client()
        exp_id = client.get_run(parent).info.experiment_id
        tags = {TAG_PARENT: parent, TAG_STEP: STEP_TRIAL, TAG_SWEEP: study_name, TAG_TRIAL: str(number),
                TAG_GIT: git_commit()}
        run_id = client.create_run(exp_id, run_name=f"trial-{number}", tags=tags).info.run_id
        self.log_params(run_id, values)
        return run_id

    def reopen(self, run_id: str) -> None:
        if self.uri and run_id:
            self.client().update_run(run_id, status="RUNNING")

    def finish_trial(self, run_id: str, state: str, *, value: float | None = None, out: Path | None = None,
                     error: str = "") -> None:
        if not (self.uri and run_id):
            return
        client = self.client()
        client.set_tag(run_id, TAG_TRIAL_STATE, state)
        if error:
            client.set_tag(run_id, "textrec.error", error[:5000])
        if value is not None:
            client.log_metric(run_id, "objective", value)
        if out is not None and (out / "model.pt").is_file():
            client.log_artifact(run_id, str(out / "model.pt"))
        client.set_terminated(run_id, status=RUN_STATUS[state])


def _describe(p: Param) -> str:
    return f"choice{list(p.choices)}" if p.kind == "choice" else f"{p.kind}[{p.low:g}, {p.high:g}]"


class SurplusTrial(Exception):
    """A trial started past the study's trial count by a worker that raced another one."""


class Objective:
    """One trial: sample values, train the config they make, return its validation metric.

    ``started`` is called once the trial exists in the study, before anything else (the worker's
    start lock is released there)."""

    def __init__(self, run: SweepRun, started: Callable[[], None] | None = None) -> None:
        self.run = run
        self.tracking = _Tracking(run.tracking_uri)
        self.started = started

    def __call__(self, trial) -> float:
        import optuna

        from textrec.training import train

        if self.started is not None:
            self.started()
        run, spec = self.run, self.run.spec
        earlier = sum(1 for t in trial.study.get_trials(deepcopy=False)
                      if t.number < trial.number and _budget_state(t) is not None)
        if earlier >= run.trials:
            trial.set_user_attr(ATTR_OUTCOME, SURPLUS)
            raise SurplusTrial(f"trial {trial.number} not trained: the study already had its {run.trials} trials "
                               "when it started (another worker started one at the same moment)")
        values = {p.key: suggest(trial, p) for p in spec.parameters}
        # A retried trial (its process died) inherits the original's user attributes: it continues the
        # original's folder (from its last checkpoint) and MLflow run.
        out = Path(trial.user_attrs.get("out_dir") or run.out / "trials" / f"trial-{trial.number:04d}")
        run_id = trial.user_attrs.get(ATTR_RUN, "")
        if run_id:
            self.tracking.reopen(run_id)
        else:
            run_id = self.tracking.start_trial(run.parent_run_id, trial.study.study_name, trial.number, values)
            trial.set_user_attr(ATTR_RUN, run_id)
        trial.set_user_attr("out_dir", str(out))
        trial.set_user_attr("worker_pid", os.getpid())
        pruning = PruneOnMetric(trial, spec.metric)
        try:
            cfg = spec.train_config(values)
            callbacks: list[Callback] = []
            if run_id:
                from textrec.tracking.callback import MlflowCallback

                callbacks.append(MlflowCallback(run_id, run.tracking_uri))
            metrics = train(cfg, out, callbacks=[*callbacks, pruning], resume="auto")
        except optuna.TrialPruned as e:
            trial.set_user_attr(ATTR_OUTCOME, PRUNED)
            self.tracking.finish_trial(run_id, PRUNED, error=str(e))
            raise
        except Exception as e:
            trial.set_user_attr(ATTR_OUTCOME, FAILED)
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:1000])
            self.tracking.finish_trial(run_id, FAILED, error=f"{type(e).__name__}: {e}")
            raise
        value = trial_value(metrics, pruning.values, spec.metric)
        trial.set_user_attr(ATTR_OUTCOME, COMPLETE)
        self.tracking.finish_trial(run_id, COMPLETE, value=value, out=out)
        return value


def trial_value(metrics: Mapping[str, Any], per_epoch: list[float], metric: str) -> float:
    """The trial's score: the final model's ``metric`` (best checkpoint, chosen decoder), else the best
    per-epoch value.

    >>> trial_value({"val_cer": 0.2}, [0.5, 0.3], "val_cer"), trial_value({}, [0.5, 0.3], "val_cer")
    (0.2, 0.3)
    """
    final = metrics.get(metric)
    if isinstance(final, int | float) and math.isfinite(final):
        return float(final)
    if per_epoch:
        return min(per_epoch)
    raise RuntimeError(f"the trial reported no {metric} (does the training config have that validation set?)")


def _budget_state(t) -> str | None:
    """Where a trial counts against the study's trial count, or None where it does not: a trial whose
    process died (failed by the heartbeat; its retry counts instead) and a surplus trial."""
    from optuna.trial import TrialState

    if t.state == TrialState.FAIL:
        return "failed" if t.user_attrs.get(ATTR_OUTCOME) == FAILED else None
    return {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.RUNNING: "running",
            TrialState.WAITING: "waiting"}.get(t.state)


def counts(study) -> dict[str, int]:
    """Trials by what became of them. ``failed`` counts trials whose training raised; a trial whose
    process died is failed by the heartbeat and retried, and counts nowhere, as does a surplus one."""
    out = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "waiting": 0}
    for t in study.get_trials(deepcopy=False):
        state = _budget_state(t)
        if state is not None:
            out[state] += 1
    out["done"] = out["complete"] + out["pruned"] + out["failed"]
    return out


def run_worker(run: SweepRun) -> None:
    """Run trials of the study until it has ``run.trials`` finished ones (complete, pruned or failed),
    waiting for trials other workers still run; stops when ``max_failed_trials`` trials failed."""
    import optuna
    from optuna.storages import fail_stale_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if run.workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // run.workers))
    storage = open_storage(run.storage, run.heartbeat_s)
    study = optuna.load_study(study_name=run.spec.name, storage=storage)
    # A fresh seed per worker and per start: a resumed random search must not repeat its first draws.
    seed = run.spec.seed + 1000 * run.worker + len(study.get_trials(deepcopy=False))
    study = optuna.load_study(study_name=run.spec.name, storage=storage, sampler=make_sampler(run.spec, seed),
                              pruner=make_pruner(run.spec))
    # Workers take turns to count the study and start a trial, so two cannot both fill its last place;
    # the objective gives the lock up once its trial exists.
    lock = FileLock(run.out / "study.lock")
    objective = Objective(run, started=lock.release)
    max_failed = run.spec.max_failed_trials
    try:
        while True:
            lock.acquire()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                fail_stale_trials(study)
            c = counts(study)
            if max_failed and c["failed"] >= max_failed:
                raise SweepError(f"sweep {run.spec.name}: {c['failed']} trials failed "
                                 f"(max_failed_trials: {max_failed}); see the trials' error attributes or "
                                 f"{run.out / 'trials'}")
            if c["done"] >= run.trials:
                return
            if c["done"] + c["running"] >= run.trials and not c["waiting"]:
                lock.release()
                time.sleep(min(2.0, run.heartbeat_s))  # the rest run elsewhere: wait for them (or their death)
                continue
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
            lock.release()  # where the trial never reached the objective
    finally:
        lock.close()


def _worker_main(run: SweepRun) -> None:  # a spawned worker process
    from textrec.progress import quiet_when_piped

    quiet_when_piped()
    run_worker(run)


def run_sweep(spec: SweepSpec, out: str | os.PathLike, *, trials: int = 0, workers: int = 1, storage: str = "",
              tracking_uri: str = "", heartbeat_s: int = HEARTBEAT_S) -> SweepResult:
    """Run (or continue) the sweep's study to ``trials`` finished trials (default: the file's) with
    ``workers`` processes; then write the summary, plots and best model (to MLflow too, with a URI)."""
    import optuna

    if workers < 1:
        raise SweepError(f"workers must be at least 1, got {workers}")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage(out)
    n = trials or spec.trials
    if spec.method == "grid" and n > spec.grid_size():
        raise SweepError(f"{spec.source}: {n} trials but the grid has only {spec.grid_size()} points")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=spec.name, storage=open_storage(url, heartbeat_s), direction="minimize",
                                load_if_exists=True)
    tracking = _Tracking(tracking_uri)
    parent = tracking.start_parent(spec, spec.name, study.user_attrs.get(ATTR_PARENT, ""))
    if parent:
        study.set_user_attr(ATTR_PARENT, parent)
    run = SweepRun(spec, out, url, n, tracking_uri, parent, heartbeat_s, 0, workers)
    try:
        if workers == 1:
            run_worker(run)
        else:
            _run_processes(run, workers)
    except BaseException:
        if parent:
            summarise(study, run, status="FAILED")
        raise
    return summarise(study, run)


def _run_processes(run: SweepRun, workers: int) -> None:
    ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
    procs = [ctx.Process(target=_worker_main, args=(replace(run, worker=i),), name=f"sweep-worker-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [f"{p.name} (exit {p.exitcode})" for p in procs if p.exitcode != 0]
    if bad:
        raise SweepError(f"sweep {run.spec.name}: worker processes failed: {', '.join(bad)}")


def _trial_rows(study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name.lower(), "outcome": t.user_attrs.get(ATTR_OUTCOME),
                     "value": t.value, "params": t.params, "epochs_reported": len(t.intermediate_values),
                     "mlflow_run_id": t.user_attrs.get(ATTR_RUN, ""), "out_dir": t.user_attrs.get("out_dir", ""),
                     "retry_of": t.system_attrs.get("failed_trial"),
                     "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
                     if t.datetime_complete and t.datetime_start else None})
    return rows


def summarise(study, run: SweepRun, status: str = "FINISHED") -> SweepResult:
    """``OUT/sweep.json`` (every trial), ``OUT/plots.html``, ``OUT/best/model.pt``; the same on the
    sweep's MLflow run with the best value and values."""
    from optuna.trial import TrialState

    from textrec.io import write_json
    from textrec.sweep.plots import write_plots

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value) if complete else None
    c = counts(study)
    rows = _trial_rows(study)
    summary = {"study": study.study_name, "storage": run.storage, "metric": run.spec.metric, "counts": c,
               "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params,
                                                  "mlflow_run_id": best.user_attrs.get(ATTR_RUN, "")},
               "trials": rows}
    write_json(run.out / "sweep.json", summary)
    plots = write_plots(study, run.out / "plots.html", run.spec.metric)
    best_model = None
    if best is not None and (Path(best.user_attrs.get("out_dir", "")) / "model.pt").is_file():
        best_model = run.out / "best" / "model.pt"
        best_model.parent.mkdir(exist_ok=True)
        shutil.copyfile(Path(best.user_attrs["out_dir"]) / "model.pt", best_model)
        (run.out / "best" / "params.json").write_text(json.dumps(best.params, indent=2) + "\n")
    if run.parent_run_id and run.tracking_uri:
        _summarise_mlflow(run, rows, c, best, best_model, plots, status)
    return SweepResult(study.study_name, run.storage, None if best is None else best.value,
                       dict(best.params) if best else {}, None if best is None else best.number, c,
                       run.parent_run_id, run.out)


def _summarise_mlflow(run: SweepRun, rows: list[dict[str, Any]], c: Mapping[str, int], best, best_model: Path | None,
                      plots: Path | None, status: str) -> None:
    client = _Tracking(run.tracking_uri).client()
    parent = run.parent_run_id
    # The last trial that used a run decides that run's end; a killed trial never retried ends FAILED.
    last_of: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["mlflow_run_id"]:
            last_of[row["mlflow_run_id"]] = row
    for run_id, row in last_of.items():
        if row["state"] == "fail" and client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, TAG_TRIAL_STATE, FAILED)
            client.set_terminated(run_id, status="FAILED")
    step = c["done"]
    for k in ("complete", "pruned", "failed"):
        client.log_metric(parent, f"trials_{k}", c[k], step=step)
    if best is not None:
        client.log_metric(parent, f"best_{run.spec.metric}", best.value, step=step)
        client.set_tag(parent, "textrec.best_trial", str(best.number))
        for k, v in best.params.items():
            client.set_tag(parent, f"textrec.best.{k}", str(v))
        best_run = best.user_attrs.get(ATTR_RUN, "")
        if best_run:
            client.set_tag(parent, TAG_BEST_RUN, best_run)
            client.set_tag(parent, TAG_BEST_MODEL, f"runs:/{best_run}/model.pt")
        if best_model is not None:
            client.log_artifacts(parent, str(best_model.parent), artifact_path="best_model")
    client.log_artifact(parent, str(run.out / "sweep.json"))
    if plots is not None:
        client.log_artifact(parent, str(plots), artifact_path="plots")
    client.set_terminated(parent, status=status)
