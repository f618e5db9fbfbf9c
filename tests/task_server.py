"""A Task Master written for the tests: the REST contract of docs/task-servers.md on
127.0.0.1, with behaviour chosen by the submitted description."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RESULT_USAGE = {"prompt_tokens": 10, "completion_tokens": 20, "cost": "0.0042"}


class TaskServer:
    """Behaviours (a word in the description): ``finish`` (queued, running, then completed
    on the third poll), ``fail`` (failed on the first poll), ``never`` (running until
    cancelled), ``reject`` (submit answers 500), ``broken`` (every status poll answers 500).
    """

    def __init__(self, key: str, offers_cancel: bool = True) -> None:
        self.key, self.offers_cancel = key, offers_cancel
        self.tasks: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                server._handle(self, "POST", body)

            def do_GET(self) -> None:  # noqa: N802
                server._handle(self, "GET", None)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def paths(self, method: str) -> list[str]:
        with self.lock:
            return [p for m, p, _ in self.requests if m == method]

    def _handle(self, handler: Any, method: str, body: Any) -> None:
        path = handler.path
        auth = handler.headers.get("Authorization")
        with self.lock:
            self.requests.append((method, path, auth))
        if auth != f"Bearer {self.key}":
            return handler._answer(401, {"error": "bad key"})
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["tasks"]:
            description = body.get("description", "")
            if "reject" in description:
                return handler._answer(500, {"error": "submit failed"})
            behaviour = next(
                (b for b in ("finish", "fail", "never", "broken") if b in description), "finish"
            )
            task_id = uuid.uuid4().hex
            with self.lock:
                self.tasks[task_id] = {"behaviour": behaviour, "polls": 0, "body": body,
                                       "status": "queued"}  # fmt: skip
            return handler._answer(202, {"id": task_id, "status": "queued"})
        task = self.tasks.get(parts[1]) if len(parts) >= 2 and parts[0] == "tasks" else None
        if task is None:
            return handler._answer(404, {"error": "no such task"})
        if method == "POST" and parts[2:] == ["cancel"]:
            if not self.offers_cancel:
                return handler._answer(405, {"error": "cancel is not supported"})
            task["status"] = "cancelled"
            return handler._answer(200, {"id": parts[1], "status": "cancelled"})
        if method == "GET" and len(parts) == 2:
            task["polls"] += 1
            behaviour = task["behaviour"]
            if behaviour == "broken":
                return handler._answer(500, {"error": "database down"})
            if task["status"] != "cancelled":
                if behaviour == "finish":
                    task["status"] = ["queued", "running", "completed"][min(task["polls"] - 1, 2)]
                elif behaviour == "fail":
                    task["status"] = "failed"
                else:
                    task["status"] = "running"
            body = {"id": parts[1], "status": task["status"], "progress": 50}
            if task["status"] == "failed":
                body["error"] = "the generator crashed"
            return handler._answer(200, body)
        if method == "GET" and parts[2:] == ["result"] and task["status"] == "completed":
            return handler._answer(
                200,
                {
                    "output": f"Task Master did: {task['body']['description']}",
                    "usage": RESULT_USAGE,
                    "model": "taskmaster/v1",
                },
            )
        return handler._answer(404, {"error": "no such route"})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
