"""The Open Inference Protocol v2 server for real: a tiny model served by ``python -m serving.oip`` on
127.0.0.1 (a free port, key auth on), real HTTP requests, good and bad, one server for the module."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests
from fixtures.handler_context import FakeContext
from fixtures.net import free_port
from fixtures.serving import line_png, make_model_pt, noise_png

from serving.cli import _parser
from serving.handler import TextrecHandler
from serving.oip import OipConfig
from serving.oip_process import OipServerProcess, infer_request
from serving.torchserve import ServeError
from textrec.recognizer import Recognizer
from textrec.tracking import MODEL_NAME

VERSION = "3"
# Small limits, so that "too large" inputs stay small; the handler below gets the same ones.
LIMITS = {"max_image_bytes": 50_000, "max_pixels": 200_000}
CONFIG = {**LIMITS, "max_images": 4, "max_request_bytes": 1_000_000}
INFER = f"/v2/models/{MODEL_NAME}/infer"


@dataclass
class Served:
    server: OipServerProcess
    model_pt: Path

    def post(self, body: bytes | None = None, *, json_body: object = None, path: str = INFER,
             headers: dict | None = None) -> requests.Response:
        return self.server.request("POST", path, data=body, json=json_body, headers=headers or {})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("oip")
    model_pt = make_model_pt(root / "model.pt")
    server = OipServerProcess(OipConfig(port=free_port(), **CONFIG), root / "work")
    server.start(model_pt, VERSION)
    try:
        server.wait_ready()
        yield Served(server, model_pt)
    finally:
        server.stop()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def tensor(data: list, *, name: str = "image", datatype: str = "BYTES", shape: list | None = None) -> dict:
    return {"name": name, "datatype": datatype, "shape": [len(data)] if shape is None else shape, "data": data}


def assert_still_answers(served: Served) -> None:
    assert served.server.predict(line_png(9))["version"] == VERSION


# --- good requests ------------------------------------------------------------------------------


def test_lines_get_the_in_process_text_and_confidence_and_the_version(served: Served) -> None:
    images = [line_png(1), line_png(2, width=220), line_png(3, fmt="JPEG"), line_png(4, width=90)]
    answer = served.server.infer(images)
    expected = Recognizer.load(served.model_pt).recognise(images)
    assert answer["model_name"] == MODEL_NAME and answer["model_version"] == VERSION
    out = {o["name"]: o for o in answer["outputs"]}
    assert out["text"]["datatype"] == "BYTES" and out["confidence"]["datatype"] == "FP32"
    assert out["text"]["shape"] == out["confidence"]["shape"] == [len(images)]
    assert out["text"]["data"] == [r.text for r in expected]
    assert any(out["text"]["data"]), "the tiny model should read something"
    assert out["confidence"]["data"] == pytest.approx([r.confidence for r in expected], abs=1e-5)


def test_one_line_alone_reads_as_in_a_batch(served: Served) -> None:
    images = [line_png(5), line_png(6, width=300)]
    together = served.server.infer(images)["outputs"][0]["data"]
    assert [served.server.predict(im)["text"] for im in images] == together


def test_only_the_asked_outputs_come_back_and_the_request_id_is_echoed(served: Served) -> None:
    body = {**infer_request([line_png(1)]), "id": "req-42", "outputs": [{"name": "confidence"}]}
    r = served.post(json_body=body)
    assert r.status_code == 200, r.text
    assert [o["name"] for o in r.json()["outputs"]] == ["confidence"] and r.json()["id"] == "req-42"


def test_a_versioned_path_and_a_data_url_are_accepted(served: Served) -> None:
    body = {"inputs": [tensor([f"data:image/png;base64,{b64(line_png(1))}"])]}
    r = served.post(json_body=body, path=f"/v2/models/{MODEL_NAME}/versions/{VERSION}/infer")
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == served.server.infer([line_png(1)])["outputs"][0]["data"]


# --- bad requests -------------------------------------------------------------------------------


def _truncated() -> bytes:
    png = line_png(4, width=400)
    return png[: len(png) // 2]


# Bad images: the same checks as the TorchServe handler, so the same statuses (checked below).
BAD_IMAGES = {
    "empty": (b"", 400, "empty"),
    "not an image": (b"hello, this is text and no picture", 415, "not a known image format"),
    "truncated png": (_truncated(), 400, "truncated"),
    "too many bytes": (noise_png(300), 413, "bytes"),
    "too many pixels": (line_png(5, width=6000), 413, "pixels"),
    "unsupported format": (line_png(6, fmt="TIFF"), 415, "TIFF"),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_a_bad_image_gets_4xx_naming_its_element_and_the_server_answers_after(served: Served, name: str) -> None:
    image, status, words = BAD_IMAGES[name]
    r = served.post(json_body={"inputs": [tensor([b64(line_png(1)), b64(image)])]})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words.lower() in error.lower() and "element 1" in error
    assert_still_answers(served)


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_a_bad_image_gets_the_status_the_torchserve_handler_gives(served: Served, name: str) -> None:
    image, _, _ = BAD_IMAGES[name]
    handler = TextrecHandler()
    handler.initialize(FakeContext(served.model_pt.parent, handler_options=LIMITS))
    ctx = FakeContext(Path("."))
    handler.handle([{"body": image}], ctx)
    r = served.post(json_body={"inputs": [tensor([b64(image)])]})
    assert r.status_code == ctx.statuses[0][0]


BAD_REQUESTS = {
    "malformed json": (b'{"inputs": [', 400, "not valid JSON"),
    "empty body": (b"", 400, "empty"),
    "not an object": (json.dumps([1, 2]).encode(), 400, "JSON object"),
    "no inputs": (json.dumps({"outputs": []}).encode(), 400, '"inputs"'),
    "unknown tensor": (json.dumps({"inputs": [tensor([b64(line_png(1))], name="pixels")]}).encode(), 400, "pixels"),
    "two tensors": (json.dumps({"inputs": [tensor([b64(line_png(1))]), tensor([b64(line_png(2))])]}).encode(),
                    400, "one input"),
    "wrong datatype": (json.dumps({"inputs": [tensor([1.0, 2.0], datatype="FP32")]}).encode(), 400, "datatype"),
    "no data": (json.dumps({"inputs": [tensor([])]}).encode(), 400, "no data"),
    "shape mismatch": (json.dumps({"inputs": [tensor([b64(line_png(1))], shape=[2])]}).encode(), 400, "shape"),
    "element not a string": (json.dumps({"inputs": [tensor([17])]}).encode(), 400, "base64 string"),
    "bad base64": (json.dumps({"inputs": [tensor(["@@not base64@@"])]}).encode(), 400, "base64"),
    "too many images": (json.dumps({"inputs": [tensor([b64(line_png(1))] * 5)]}).encode(), 413, "at most 4"),
    "body too large": (json.dumps({"inputs": [tensor(["A" * 1_200_000])]}).encode(), 413, "bytes"),
    "unknown output": (json.dumps({**infer_request([line_png(1)]), "outputs": [{"name": "boxes"}]}).encode(),
                       400, "boxes"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_a_bad_request_gets_4xx_json_naming_the_problem_and_the_server_answers_after(served: Served,
                                                                                      name: str) -> None:
    body, status, words = BAD_REQUESTS[name]
    r = served.post(body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words.lower() in r.json()["error"].lower()
    assert_still_answers(served)


@pytest.mark.parametrize("path", ["/v2/models/nope/infer", f"/v2/models/{MODEL_NAME}/versions/99/infer"])
def test_an_unknown_model_or_version_is_404_naming_what_is_served(served: Served, path: str) -> None:
    r = served.post(json_body=infer_request([line_png(1)]), path=path)
    assert r.status_code == 404 and MODEL_NAME in r.json()["error"]
    assert_still_answers(served)


# --- auth, health, process ----------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "wrong"}])
@pytest.mark.parametrize("path", ["/v2/health/ready", INFER])
def test_a_missing_or_wrong_token_is_401(served: Served, headers: dict, path: str) -> None:
    method = "POST" if path == INFER else "GET"
    r = requests.request(method, served.server.url + path, headers=headers,
                         json=infer_request([line_png(1)]), timeout=30)
    assert r.status_code == 401 and "key_file.json" in r.json()["error"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_the_key_file_is_private_and_its_key_works(served: Served) -> None:
    assert stat.S_IMODE(served.server.key_file.stat().st_mode) == 0o600
    r = requests.get(served.server.url + "/v2/health/live",
                     headers={"Authorization": f"Bearer {served.server.token()}"}, timeout=30)
    assert r.status_code == 200 and r.json() == {"live": True}


def test_ready_and_metadata_endpoints(served: Served) -> None:
    get = lambda path: served.server.request("GET", path)  # noqa: E731
    assert get("/v2/health/ready").json() == {"ready": True}
    assert get(f"/v2/models/{MODEL_NAME}/ready").json() == {"name": MODEL_NAME, "version": VERSION, "ready": True}
    assert get(f"/v2/models/{MODEL_NAME}/versions/{VERSION}/ready").status_code == 200
    assert get("/v2/models/nope/ready").status_code == 404
    meta = get(f"/v2/models/{MODEL_NAME}").json()
    assert meta["versions"] == [VERSION] and meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"] for o in meta["outputs"]} == {"text", "confidence"}
    assert get("/v2/no/such/path").json()["error"].startswith("GET /v2/no/such/path")


def test_the_server_listens_on_loopback_only(served: Served) -> None:
    assert OipConfig().host == "127.0.0.1"
    pid = served.server.pid()
    assert pid is not None
    listening = [c.laddr for c in psutil.Process(pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert listening and {a.ip for a in listening} == {"127.0.0.1"}


def test_a_second_start_in_the_same_folder_is_refused(served: Served) -> None:
    with pytest.raises(ServeError, match="already running"):
        served.server.start(served.model_pt, VERSION)
    assert_still_answers(served)


def test_a_model_that_does_not_load_fails_start_with_the_log(tmp_path: Path) -> None:
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"not a model")
    server = OipServerProcess(OipConfig(port=free_port()), tmp_path / "work")
    with pytest.raises(ServeError, match="exited") as e:
        server.start(broken, "1", timeout=60)
    assert "server.log" in str(e.value) and server.pid() is None


def test_the_cli_takes_a_runtime_defaulting_to_torchserve() -> None:
    assert _parser().parse_args(["serve"]).runtime == "torchserve"
    assert _parser().parse_args(["serve", "--runtime", "kserve"]).runtime == "kserve"
    assert _parser().parse_args(["stop", "--runtime", "kserve"]).runtime == "kserve"
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--runtime", "triton"])


# --- promotion: a deploy swaps the running server's version -------------------------------------


def test_a_deploy_swaps_the_running_oip_server_with_no_failed_request(tmp_path: Path) -> None:
    import threading
    from collections import Counter

    from serving.deploy import deploy_model

    serve_dir = tmp_path / "serve"  # no TorchServe here: the deploy finds the OIP server in serve/oip
    server = OipServerProcess(OipConfig(port=free_port()), serve_dir / "oip")
    server.start(make_model_pt(tmp_path / "v1" / "model.pt"), "1")
    v2 = make_model_pt(tmp_path / "v2" / "model.pt", seed=1)
    stop, results = threading.Event(), []

    def hammer() -> None:
        while not stop.is_set():
            try:
                results.append(("ok", server.predict(line_png(len(results) % 7))["version"]))
            except (ServeError, requests.RequestException) as e:  # a refused or dropped request fails
                results.append((f"{type(e).__name__}: {e}"[:300], None))

    try:
        server.wait_ready()
        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            while len(results) < 5:
                threading.Event().wait(0.05)
            result = deploy_model(str(v2), version="2", workdir=serve_dir)
            seen = len(results)
            while len(results) < seen + 5:
                threading.Event().wait(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert result.changed and (result.version, result.previous) == ("2", "1"), result
        assert result.models == (MODEL_NAME,)
        assert Counter(code for code, _ in results).keys() == {"ok"}, [r for r in results if r[0] != "ok"][:3]
        versions = [v for _, v in results]
        assert versions[0] == "1" and versions[-1] == "2"
        assert versions == sorted(versions), "once a request got version 2, none may get 1 again"
        state = json.loads((serve_dir / "oip" / "server.json").read_text())
        assert state["version"] == "2" and Path(state["model_path"]).parent == serve_dir / "oip" / "models" / "2"
        assert server.served() == {"name": MODEL_NAME, "version": "2", "state": "READY"}

        again = deploy_model(str(v2), version="2", workdir=serve_dir)
        assert not again.changed and "already serves" in again.reason

        broken = tmp_path / "broken" / "model.pt"
        broken.parent.mkdir()
        broken.write_bytes(b"no model at all")
        with pytest.raises(ServeError, match="version 3 was not served.*did not load.*still serving version 2"):
            deploy_model(str(broken), version="3", workdir=serve_dir)
        assert server.predict(line_png(1))["version"] == "2"
        assert json.loads((serve_dir / "oip" / "server.json").read_text())["version"] == "2"  # put back
        r = requests.post(f"{server.url}/v2/repository/models/{MODEL_NAME}/load", timeout=10)
        assert r.status_code == 401  # the repository endpoints need the key like every other
    finally:
        server.stop()


def test_a_deploy_with_no_local_server_names_both_runtimes(tmp_path: Path) -> None:
    from serving.deploy import deploy_model

    with pytest.raises(ServeError, match="no TorchServe from .* and no OIP server from .* is running"):
        deploy_model(str(make_model_pt(tmp_path / "model.pt")), version="1", workdir=tmp_path / "serve")
    with pytest.raises(ServeError, match="no OIP server from"):
        deploy_model(str(tmp_path / "model.pt"), version="1", workdir=tmp_path / "serve", runtime="kserve")


def test_textrec_predict_speaks_v2_to_the_oip_server(served: Served, tmp_path: Path, capsys) -> None:
    from textrec.cli import main

    image = tmp_path / "line.png"
    image.write_bytes(line_png(5))
    args = ["predict", "--endpoint", served.server.url, "--protocol", "v2", "--token-file", str(served.server.key_file)]
    assert main([*args, "--json", str(image)]) == 0
    answer = json.loads(capsys.readouterr().out)
    expected = Recognizer.load(served.model_pt).recognise([line_png(5)])[0]
    assert answer["text"] == expected.text and answer["version"] == VERSION
    assert main([*args, "--page", str(image)]) == 1  # the OIP server reads no pages: said, not sent
    assert "no page model" in capsys.readouterr().err
