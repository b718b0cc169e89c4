"""A stand-in for a llama.cpp server built for another CPU: ``/v1/models`` works, a completion kills it.

Run as ``python crashing_server.py PORT MODE``.  MODE ``crash`` dies with SIGSEGV on the first chat
completion (as the native llama.cpp build does on an AMX CPU); ``ok`` answers completions with a
minimal OpenAI-shaped reply (so a test can kill it later and check the fixture notices).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    """GET /v1/models and POST /v1/chat/completions, nothing else."""

    mode = "crash"

    def _send(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "smollm2-135m", "object": "model"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.mode == "crash":
            print("load_tensors: CPU_REPACK model buffer size = 1.0 MiB (amx repack)", flush=True)
            os.kill(os.getpid(), signal.SIGSEGV)
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "yes"}}]}
        self._send(200, reply)

    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> None:
    """Serve on 127.0.0.1:PORT until killed."""
    port, mode = int(sys.argv[1]), sys.argv[2]
    Handler.mode = mode
    print(f"stand-in server on {port}, mode {mode}", flush=True)
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
