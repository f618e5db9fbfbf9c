"""The edge under the production server: ``baton api`` (gunicorn with
baton/gunicorn_conf.py). A long URL is the app's 414 in the envelope; past gunicorn's own
request-line ceiling gunicorn answers, in the same JSON envelope; a chunked body past the
limit is a 413."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT
from tests.processes import free_port


@pytest.fixture(scope="module")
def api_port(database_url: str) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        ["baton", "api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, "gunicorn exited"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/api/v1/health/live")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("gunicorn did not answer")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _request(port: int, method: str, path: str, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {}, encode_chunked=True)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def _envelope(response, data: bytes, status: int, code: str) -> dict:
    assert response.status == status, data[:300]
    assert response.getheader("Content-Type").startswith("application/json")
    error = json.loads(data)["error"]
    assert error["code"] == code and error["request_id"]
    return error


def test_long_urls_are_answered_in_the_envelope(api_port):
    # Past the app's limit (4096) and within gunicorn's: the app answers.
    response, data = _request(api_port, "GET", "/api/v1/jobs?sort=" + "x" * 6000)
    _envelope(response, data, 414, "URI_TOO_LONG")
    assert response.getheader("X-Request-ID")
    # Past gunicorn's ceiling (8190): gunicorn answers before the app, in JSON too.
    response, data = _request(api_port, "GET", "/api/v1/jobs?sort=" + "x" * 9000)
    _envelope(response, data, 414, "URI_TOO_LONG")


def test_an_oversized_chunked_body_is_a_413(api_port):
    def chunks():
        piece = b"x" * 65536
        yield b'{"name": "'
        for _ in range(20):  # 1.3 MB, past the 1 MB default
            yield piece
        yield b'"}'

    response, data = _request(
        api_port,
        "POST",
        "/api/v1/projects",
        body=chunks(),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    _envelope(response, data, 413, "PAYLOAD_TOO_LARGE")
    small, data = _request(
        api_port,
        "POST",
        "/api/v1/projects",
        body=iter([b'{"name": ', b'"p"}']),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    _envelope(small, data, 401, "AUTHENTICATION_REQUIRED")  # read whole, then auth
