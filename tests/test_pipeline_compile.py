"""The compiled pipeline: the golden file is current, and the spec says what the pipeline promises
(caching per step, retries on training, GPU placement, CPU and memory on every task from pipeline
parameters, the exit handler, the component image, no installs at start)."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "pipelines" / "textrec_pipeline.yaml"
DEFAULT_IMAGE_PREFIX = "ghcr.io/textrec/textrec-component:"


def compile_to(path: Path, image: str | None = None) -> str:
    """Compile in a fresh interpreter: the component image is read from the environment at import."""
    env = {k: v for k, v in os.environ.items() if k != "TEXTREC_IMAGE"}
    if image:
        env["TEXTREC_IMAGE"] = image
    subprocess.run([sys.executable, "-m", "pipelines.textrec_pipeline", str(path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=120)
    return path.read_text()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> str:
    return compile_to(tmp_path_factory.mktemp("compile") / "pipeline.yaml")


@pytest.fixture(scope="module")
def spec(compiled) -> tuple[dict, dict]:
    pipeline, platform = yaml.safe_load_all(compiled)
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def steps(pipeline: dict) -> dict:
    """The tasks of the steps pipeline, which runs inside the exit handler."""
    return pipeline["components"]["comp-textrec-steps"]["dag"]["tasks"]


def test_golden_file_matches_a_fresh_compile(compiled):
    golden = GOLDEN.read_text()
    if compiled != golden:
        diff = "".join(list(difflib.unified_diff(golden.splitlines(True), compiled.splitlines(True),
                                                 "golden", "compiled"))[:60])
        pytest.fail(f"{GOLDEN.relative_to(REPO)} is out of date; run `make pipeline-compile`:\n{diff}")


def test_data_steps_are_cached_and_training_steps_are_not(spec):
    tasks = steps(spec[0])
    cached = {name: t.get("cachingOptions", {}).get("enableCache", False) for name, t in tasks.items()}
    assert cached["ingest-data"] and cached["synthesize-lines"] and cached["plan-training"]
    assert not cached["train-model"] and not cached["evaluate-cer"] and not cached["register-model"]


def test_training_is_retried(spec):
    retry = steps(spec[0])["train-model"]["retryPolicy"]
    assert retry["maxRetryCount"] == 2


def test_training_gets_gpus_a_gpu_node_and_tolerates_its_taint(spec):
    pipeline, k8s = spec
    resources = pipeline["deploymentSpec"]["executors"]["exec-train-model"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert "plan-training-pod_gpus" in resources["accelerator"]["resourceCount"]
    train = k8s["exec-train-model"]
    assert train["nodeSelector"]["nodeSelectorJson"]["taskOutputParameter"] == {
        "outputParameterKey": "node_selector", "producerTask": "plan-training"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in train["tolerations"]
    defaults = pipeline["root"]["inputDefinitions"]["parameters"]
    assert defaults["gpu_node_selector"]["defaultValue"] == {"nvidia.com/gpu.present": "true"}


def test_every_step_runs_the_component_image_and_installs_nothing(spec):
    executors = spec[0]["deploymentSpec"]["executors"]
    assert len(executors) >= 6
    for name, ex in executors.items():
        container = ex["container"]
        assert container["image"].startswith(DEFAULT_IMAGE_PREFIX), name
        assert "pip install" not in " ".join(container["command"]), name


def test_components_describe_themselves_from_their_docstrings(spec):
    import components

    for name in components.__all__:
        component = getattr(components, name)
        if hasattr(component, "component_spec"):
            assert len(component.component_spec.description or "") > 40, name
    assert "champion" in components.register_model.component_spec.description
    assert spec[0]["pipelineInfo"]["description"].startswith("Train, evaluate and register")


def test_textrec_image_at_compile_time_sets_every_steps_image(tmp_path):
    text = compile_to(tmp_path / "p.yaml", image="registry.example/textrec-component:abc123")
    pipeline = next(yaml.safe_load_all(text))
    images = {ex["container"]["image"] for ex in pipeline["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/textrec-component:abc123"}
    train_env = pipeline["deploymentSpec"]["executors"]["exec-train-model"]["container"]["env"]
    assert {"name": "TEXTREC_IMAGE", "value": "registry.example/textrec-component:abc123"} in train_env


def test_pipeline_outputs_the_registered_model_and_what_became_of_serving(spec):
    """On the steps pipeline, which kfp.local runs for them: KFP takes no outputs from an ExitHandler."""
    outputs = spec[0]["components"]["comp-textrec-steps"]["outputDefinitions"]["parameters"]
    assert set(outputs) == {"model_uri", "version", "promoted", "deployed", "serving"}
    assert "outputDefinitions" not in spec[0]["root"]


def test_the_deploy_step_always_runs_and_decides_from_the_gate(spec):
    """No step sits in a condition: kfp.local skipped nested dsl.If branches it could not evaluate."""
    tasks = steps(spec[0])
    assert not [name for name, t in tasks.items() if "triggerPolicy" in t or name.startswith("condition")]
    deploy = tasks["deploy-model"]["inputs"]["parameters"]
    assert deploy["promoted"]["taskOutputParameter"] == {"outputParameterKey": "promoted",
                                                         "producerTask": "register-model"}
    assert deploy["target"] == {"componentInputParameter": "serving_target"}


def test_real_val_parameter_reaches_training_evaluation_and_the_gate(spec):
    pipeline, k8s = spec
    assert pipeline["root"]["inputDefinitions"]["parameters"]["real_val"] == {
        "defaultValue": "", "isOptional": True, "parameterType": "STRING"}
    tasks = steps(pipeline)
    for task in ("train-model", "evaluate-cer"):
        assert tasks[task]["inputs"]["parameters"]["real_val"] == {"componentInputParameter": "real_val"}, task
    register = tasks["register-model"]["inputs"]["parameters"]
    for name in ("real_val_cer", "real_val_hash"):
        assert register[name]["taskOutputParameter"] == {"outputParameterKey": name, "producerTask": "evaluate-cer"}
    secrets = k8s["exec-evaluate-cer"]["secretAsEnv"]  # S3 credentials, for a real set on S3
    assert [s["secretName"] for s in secrets] == ["textrec-s3"]


# --- resources ------------------------------------------------------------------------------------

STEP_KINDS = {"exec-ingest-data": "data", "exec-synthesize-lines": "data", "exec-train-model": "train",
              "exec-evaluate-cer": "eval", "exec-register-model": "eval", "exec-plan-training": "control",
              "exec-deploy-model": "control", "exec-clean-up-run": "control"}


def placeholder(name: str) -> str:
    return f"{{{{$.inputs.parameters['pipelinechannel--{name}']}}}}"


def test_every_task_asks_for_cpu_and_memory_from_pipeline_parameters(spec):
    executors = spec[0]["deploymentSpec"]["executors"]
    assert set(executors) == set(STEP_KINDS)  # a new step must be given a kind here
    for name, kind in STEP_KINDS.items():
        resources = executors[name]["container"]["resources"]
        assert resources["resourceCpuRequest"] == placeholder(f"{kind}_cpu"), name
        assert resources["resourceCpuLimit"] == placeholder(f"{kind}_cpu_limit"), name
        assert resources["resourceMemoryRequest"] == placeholder(f"{kind}_memory"), name
        assert resources["resourceMemoryLimit"] == placeholder(f"{kind}_memory"), name


def test_resource_defaults_are_kubernetes_quantities_with_requests_within_limits(spec):
    from kubernetes.utils import parse_quantity

    from pipelines.textrec_pipeline import RESOURCES

    params = spec[0]["root"]["inputDefinitions"]["parameters"]
    for kind, r in RESOURCES.items():
        assert parse_quantity(r.cpu) <= parse_quantity(r.cpu_limit), kind
        assert parse_quantity(r.memory) >= 2**30, kind  # torch and mlflow alone take most of a GiB
        for suffix, value in (("cpu", r.cpu), ("cpu_limit", r.cpu_limit), ("memory", r.memory)):
            assert params[f"{kind}_{suffix}"] == {"defaultValue": value, "isOptional": True,
                                                  "parameterType": "STRING"}, (kind, suffix)
    assert parse_quantity(RESOURCES["train"].memory) > parse_quantity(RESOURCES["eval"].memory)


def test_resource_parameters_written_as_numbers_are_sent_as_strings():
    from pipelines import submit

    args = submit.arguments("smoke", submit.parse_params(["train_cpu=8", "eval_cpu=0.5", "train_memory=32Gi",
                                                          "epochs=3"]))
    assert (args["train_cpu"], args["eval_cpu"], args["train_memory"]) == ("8", "0.5", "32Gi")
    assert args["epochs"] == 3  # an integer parameter stays one


# --- exit handler ---------------------------------------------------------------------------------

def test_every_step_runs_inside_an_exit_handler_whose_task_sees_the_final_status(spec):
    pipeline, _ = spec
    root = pipeline["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "clean-up-run"}
    assert set(pipeline["components"]["comp-exit-handler-1"]["dag"]["tasks"]) == {"textrec-steps"}
    assert set(steps(pipeline)) == {"ingest-data", "synthesize-lines", "plan-training", "train-model",
                                    "evaluate-cer", "register-model", "deploy-model"}
    exit_task = root["clean-up-run"]
    assert exit_task["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert exit_task["dependentTasks"] == ["exit-handler-1"]
    inputs = exit_task["inputs"]["parameters"]
    assert inputs["status"] == {"taskFinalStatus": {"producerTask": "exit-handler-1"}}
    assert inputs["pipeline_run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
    for name in ("nodes", "mlflow_uri", "experiment"):
        assert inputs[name] == {"componentInputParameter": name}, name
    assert not exit_task["cachingOptions"].get("enableCache", False)


def test_the_steps_get_every_parameter_of_the_run(spec):
    """The steps pipeline is called with each of the run's parameters, none left at its own default."""
    pipeline, _ = spec
    run_params = set(pipeline["root"]["inputDefinitions"]["parameters"])
    task = pipeline["components"]["comp-exit-handler-1"]["dag"]["tasks"]["textrec-steps"]
    passed = task["inputs"]["parameters"]
    assert set(passed) == run_params
    assert all(passed[n] == {"componentInputParameter": f"pipelinechannel--{n}"} for n in run_params)
    train = steps(pipeline)["train-model"]["inputs"]["parameters"]
    assert train["pipeline_run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
