#!/usr/bin/python3
"""Peer for selftest.sh: a slixmpp client (Debian python3-slixmpp 1.8) that logs in
over plain TCP c2s, waits for a chat message, optionally answers it, prints one
JSON line and exits (0 when the expected message arrived, 1 otherwise).

Run with /usr/bin/python3 (the pyenv python3 on PATH cannot see Debian packages).

  selftest_peer.py --jid bob@example.com --password pw --host 127.0.0.1 --port 5222 \
      --expect-from alice@example.com --expect-body "hello" [--reply "echo: hello"] \
      [--ready-file PATH] [--timeout 30]
"""
import argparse
import asyncio
import json
import os
import sys
import time

import slixmpp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jid", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--expect-from")
    ap.add_argument("--expect-body")
    ap.add_argument("--reply")
    ap.add_argument("--ready-file")
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()

    t0 = time.monotonic()
    result = {"ok": False, "jid": None, "received": [], "replied": False, "error": None}
    loop = asyncio.get_event_loop()
    done = asyncio.Event()

    xmpp = slixmpp.ClientXMPP(a.jid, a.password)
    xmpp.plugin["feature_mechanisms"].unencrypted_plain = True
    xmpp.register_plugin("xep_0030")
    xmpp.register_plugin("xep_0199")

    async def on_start(_event):
        xmpp.send_presence()
        try:
            await xmpp.get_roster(timeout=5)
        except Exception:  # roster is not needed for the test
            pass
        result["jid"] = str(xmpp.boundjid)
        if a.ready_file:
            with open(a.ready_file + ".tmp", "w") as f:
                f.write(str(xmpp.boundjid) + "\n")
            os.replace(a.ready_file + ".tmp", a.ready_file)

    def on_message(msg):
        if msg["type"] not in ("chat", "normal") or not msg["body"]:
            return
        frm = str(msg["from"])
        result["received"].append({"from": frm, "body": msg["body"]})
        if a.expect_from and msg["from"].bare.lower() != a.expect_from.split("/")[0].lower():
            return
        if a.expect_body is not None and msg["body"].strip() != a.expect_body.strip():
            return
        result["ok"] = True
        if a.reply is not None:
            xmpp.send_message(mto=msg["from"], mbody=a.reply, mtype="chat")
            result["replied"] = True
        # leave a moment for the reply to be written before disconnecting
        loop.call_later(0.3, done.set)

    def on_failed_auth(_event):
        result["error"] = "authentication failed"
        done.set()

    xmpp.add_event_handler("session_start", on_start)
    xmpp.add_event_handler("message", on_message)
    xmpp.add_event_handler("failed_auth", on_failed_auth)

    xmpp.connect(address=(a.host, a.port), use_ssl=False, disable_starttls=True)

    async def run():
        try:
            await asyncio.wait_for(done.wait(), timeout=a.timeout)
        except asyncio.TimeoutError:
            result["error"] = result["error"] or f"timeout after {a.timeout}s"
        xmpp.disconnect(wait=1.0)
        await asyncio.sleep(0.2)

    loop.run_until_complete(run())
    result["elapsed_ms"] = int((time.monotonic() - t0) * 1000)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
