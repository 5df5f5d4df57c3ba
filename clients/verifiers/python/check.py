"""Driver for tests/api/clients.rs: reads tokens on stdin, one per line, and prints
`ok <sub>` or `invalid <reason>` for each."""

import os
import sys

from verify import WxauthVerifier

verifier = WxauthVerifier(os.environ["WXAUTH_ISSUER"], os.environ["WXAUTH_AUDIENCE"], cooldown_duration=0)
for line in sys.stdin:
    try:
        print(f"ok {verifier.verify(line.strip())['sub']}", flush=True)
    except Exception as e:  # noqa: BLE001 - the driver reports every failure the same way
        print(f"invalid {type(e).__name__}", flush=True)
