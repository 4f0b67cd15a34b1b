"""The ECS agent's task scale-in protection endpoint, as a task reaches it at ECS_AGENT_URI.

`PUT ${ECS_AGENT_URI}/task-protection/v1/state` with `{"ProtectionEnabled": bool, "ExpiresInMinutes": N}`.
The agent makes the `ecs:UpdateTaskProtection` call with the task role's credentials: the endpoint
allows it when the task role's statements do, and answers AccessDenied as the agent relays it
otherwise. Every request is recorded for the checks.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rehearse.iam import Call, allowed

PROTECTION_PATH = "/task-protection/v1/state"


@dataclass
class AgentTask:
    arn: str
    statements: list[dict[str, Any]]
    requests: list[tuple[dict[str, Any], bool]] = field(default_factory=list)

    def calls(self) -> list[Call]:
        return [Call("ecs:UpdateTaskProtection", self.arn) for _ in self.requests[:1]]


class Agent:
    """One endpoint for every task; each task's URI carries its id."""

    def __init__(self) -> None:
        self.tasks: dict[str, AgentTask] = {}
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                task_id, _, path = self.path.lstrip("/").partition("/")
                task = agent.tasks.get(task_id)
                if task is None or f"/{path}" != PROTECTION_PATH:
                    self._answer(404, {"error": {"Code": "NotFound", "Message": self.path}})
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                except ValueError:
                    self._answer(400, {"error": {"Arn": task.arn, "Code": "InvalidParameterException"}})
                    return
                ok = allowed(task.statements, Call("ecs:UpdateTaskProtection", task.arn))
                task.requests.append((body, ok))
                if not ok:
                    message = f"not authorized to perform: ecs:UpdateTaskProtection on resource: {task.arn}"
                    self._answer(
                        400, {"error": {"Arn": task.arn, "Code": "AccessDeniedException", "Message": message}}
                    )
                    return
                minutes = int(body.get("ExpiresInMinutes", 120))
                expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
                protection = {"ProtectionEnabled": bool(body.get("ProtectionEnabled")), "TaskArn": task.arn}
                if protection["ProtectionEnabled"]:
                    protection["ExpirationDate"] = expires.isoformat()
                self._answer(200, {"protection": protection})

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def register(self, task_id: str, arn: str, statements: list[dict[str, Any]]) -> str:
        """The ECS_AGENT_URI of a task."""
        self.tasks[task_id] = AgentTask(arn=arn, statements=statements)
        return f"http://127.0.0.1:{self.server.server_address[1]}/{task_id}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
