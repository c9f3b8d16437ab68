"""The service on loopback: werkzeug's HTTP server on a thread, serving the app create_app built."""
from __future__ import annotations

import socket
import threading

import requests
from werkzeug.serving import make_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, app, port: int = 0):
        self.app = app
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def runtime(self):
        return self.app.extensions["pgx-cds"]

    def call(self, service_id: str, body, **kwargs) -> requests.Response:
        return requests.post(f"{self.url}/cds-services/{service_id}", json=body, timeout=30, **kwargs)

    def stop(self):
        self.server.shutdown()
