"""A tiny model server for endpoint replicas (standard library only, so any python3 runs it).

It listens on $PORT (the fabric gives each replica on a `local` pool a free port), answers
`GET /healthz` once loaded, and `POST /predict` (or GET) with a toy sentiment score of the text it is
sent, after $COMPUTE_MS milliseconds of simulated model time (default 20). `$LOAD_MS` simulates
loading the model before the readiness probe passes (default 200).

    PORT=8080 python3 examples/model_server.py
    curl -d 'what a lovely day' http://127.0.0.1:8080/predict
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POSITIVE = {"good", "great", "lovely", "love", "excellent", "happy", "nice", "fast"}
NEGATIVE = {"bad", "awful", "terrible", "hate", "slow", "sad", "broken", "wrong"}
READY = threading.Event()


def score(text: str) -> dict[str, object]:
    words = [w.strip(".,!?").lower() for w in text.split()]
    value = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
    label = "positive" if value > 0 else "negative" if value < 0 else "neutral"
    return {"label": label, "score": value, "words": len(words)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the gateway reuses its connections
    disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stall)

    def _answer(self, code: int, body: dict[str, object]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path.startswith("/healthz"):
            self._answer(200 if READY.is_set() else 503, {"ready": READY.is_set()})
            return
        self._predict(self.path.partition("?text=")[2].replace("+", " "))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._predict(self.rfile.read(length).decode(errors="replace"))

    def _predict(self, text: str) -> None:
        time.sleep(float(os.environ.get("COMPUTE_MS", "20")) / 1000)
        self._answer(200, {**score(text), "replica": os.environ.get("FABRIC_WORKLOAD_ID", "local")})

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"model server on 127.0.0.1:{port}", flush=True)

    def load() -> None:
        time.sleep(float(os.environ.get("LOAD_MS", "200")) / 1000)
        READY.set()
        print("model loaded: ready", flush=True)

    threading.Thread(target=load, daemon=True).start()
    server.serve_forever()
    print("stopped", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
