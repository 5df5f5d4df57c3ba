"""A webhook receiver for wxauth, standard library only: it checks `Wxauth-Signature`,
refuses deliveries signed more than 5 minutes ago (replays), and handles each event once
(wxauth delivers at least once: a delivery whose answer was lost comes again).

    WXAUTH_WEBHOOK_SECRET='the secret of [[webhooks]]' python3 receiver.py 8090

It prints `listening <port>`, then `event <id> <kind>` for each new event. Answer 2xx only
once the event is handled: anything else, or no answer within 10 s, is retried.
"""

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECS = 300


def verify(header: str, body: bytes, secret: str, now: float | None = None) -> bool:
    """Whether `header` (`t=<unix seconds>,v1=<hex>`) signs `body` with `secret`, recently."""
    timestamp, signatures = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or abs((now or time.time()) - timestamp) > TOLERANCE_SECS:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    # Constant time: a receiver must not tell a forger how much of a signature was right.
    return any(hmac.compare_digest(expected, s) for s in signatures)


SECRET = os.environ.get("WXAUTH_WEBHOOK_SECRET", "")
seen: set[str] = set()  # a real receiver keeps this in its database, with the work it did


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not verify(self.headers.get("Wxauth-Signature", ""), body, SECRET):
            self.send_response(400)
            self.end_headers()
            return
        event = json.loads(body)
        if event["id"] not in seen:
            seen.add(event["id"])
            print(f"event {event['id']} {event['kind']}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8090), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()
