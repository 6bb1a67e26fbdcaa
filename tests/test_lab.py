"""`make lab`: JupyterLab starts headless on notebooks/ with the project's kernel, and that kernel runs a
chapter's first cells through the Jupyter server's REST and websocket API."""
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest

from frogcore.pipeline import NOTEBOOK_DIR
from frogcore.results import REPO_ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str, data: bytes | None = None, method: str = "GET"):
    req = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


async def _execute(ws_url: str, token: str, code: str, timeout: float = 120.0) -> tuple[str, list[str]]:
    """Run ``code`` on a kernel through the server's websocket; return (status, stream/result texts)."""
    import asyncio

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {token}"}))
    msg_id = uuid.uuid4().hex
    conn.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    texts, status, idle = [], None, False
    deadline = time.monotonic() + timeout
    while not (status and idle):
        raw = await asyncio.wait_for(conn.read_message(), timeout=max(1.0, deadline - time.monotonic()))
        if raw is None:
            break
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["header"]["msg_type"], msg["content"]
        if kind == "stream":
            texts.append(content["text"])
        elif kind in ("execute_result", "display_data"):
            texts.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            texts.append(f"{content['ename']}: {content['evalue']}")
        elif kind == "execute_reply":
            status = content["status"]
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
    conn.close()
    return status, texts


@pytest.mark.slow
def test_make_lab_serves_the_notebooks_and_runs_a_chapter(tmp_path):
    import asyncio

    port, token = _free_port(), uuid.uuid4().hex
    env = {**os.environ, "FROG_RESULTS_DIR": str(tmp_path / "results"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    args = f"--port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token} --ServerApp.open_browser=False"
    proc = subprocess.Popen(["make", "-s", "lab", "EXTRAS_LAB=dev", f"LAB_ARGS={args}"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                contents = _get(f"{base}/api/contents", token)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode(errors="replace") if proc.poll() is not None else ""
                    pytest.fail(f"JupyterLab did not answer on {base}: {out[-3000:]}")
                time.sleep(0.5)
        listed = {c["name"] for c in contents["content"]}
        assert {p.name for p in NOTEBOOK_DIR.glob("*.ipynb")} <= listed  # it serves notebooks/
        specs = _get(f"{base}/api/kernelspecs", token)["kernelspecs"]
        assert specs["frog-companion"]["spec"]["display_name"] == "Python (frog-companion)"
        kernel = _get(f"{base}/api/kernels", token, json.dumps({"name": "frog-companion"}).encode(), "POST")
        nb = json.loads((NOTEBOOK_DIR / "frog_4_1.ipynb").read_text())
        code = [("".join(c["source"]), c["metadata"].get("tags", [])) for c in nb["cells"] if c["cell_type"] == "code"]
        assert "parameters" in code[0][1]
        ws = f"ws://127.0.0.1:{port}/api/kernels/{kernel['id']}/channels"
        for src in (code[0][0], 'profile = "smoke"\ndevice = "cpu"', code[1][0]):  # like papermill's injection
            status, texts = asyncio.run(_execute(ws, token, src))
            assert status == "ok", texts
        assert any("computed" in t or "loaded" in t for t in texts), texts
        assert (tmp_path / "results" / "frog_4_1" / "smoke" / "cpu" / "quality.meta.json").exists()
        assert proc.poll() is None, "the server exited while in use"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with pytest.raises(OSError):  # stopped: nothing answers any more
        _get(f"{base}/api/contents", token)
