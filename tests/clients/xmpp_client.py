#!/usr/bin/python3
"""Real-client driver for dealer's integration tests, built on slixmpp 1.8.3.

Role: the Rust tests (tests/common/client.rs) run this script with /usr/bin/python3,
write one JSON job on stdin and read one JSON object from stdout. Importing slixmpp
costs ~0.2 s, so a job may batch many steps:

    {"steps": [JOB, JOB, ...]}        -> {"ok": all steps ok, "results": [RESULT, ...]}
    {"parallel": [JOB, JOB, ...]}     -> the same, the jobs run at once (a burst of logins)
    JOB                               -> RESULT

A JOB is one of

  login    {"op": "login", "jid", "password", "host": "127.0.0.1", "port": 5222,
            "tls": "none"|"starttls"|"optional"|"direct", "mechanism": "PLAIN"|...|null,
            "follow_redirect": false, "resource": null, "sni": null, "timeout": 10,
            "ca": null (a PEM certificate to verify the server's against)}
           -> LOGIN = {"ok", "bound_jid", "error", "sasl_failure", "stream_error",
                       "stream_error_text", "see_other_host", "redirects", "mechanisms",
                       "starttls_offered", "encrypted", "elapsed_ms"}
  session  {"op": "session", "accounts": [ACCOUNT, ...], "actions": [ACTION, ...]}
           ACCOUNT = the login fields plus "presence": true (send initial presence after
           login), "connect": true (false: log in later with a "login" action)
           -> {"ok", "accounts": [LOGIN, ...], "actions": [{"ok", "action", ...}, ...],
               "raw": [every byte each account received, after TLS, as text]}

ACTIONs (accounts are referred to by their index in "accounts"):

  {"from": i, "send_message_to": JID, "body": "hi", "type": "chat", "id": null}
  {"expect_message": {"to": i, "from": JID, "body": ..., "type": ..., "error": ..,
                      "timeout": 5}}      every key but "to" optional; a "from" without
                                          a resource matches any resource
  {"expect_no_message": {"to": i, "from": ..., "timeout": 1}}
  {"from": i, "subscribe": JID}           presence type=subscribe
  {"from": i, "approve": JID}             presence type=subscribed
  {"from": i, "presence": {"type": null, "to": null, "status": null, "payload": XML}}
  {"expect_presence": {"to": i, "from": JID, "type": "subscribe", "timeout": 5}}
  {"from": i, "get_roster": true, "timeout": 5}   -> "items": {jid: {"subscription", "ask"}}
  {"from": i, "iq": {"type": "get", "to": JID, "payload": "<query xmlns='...'/>"},
   "timeout": 5}                          -> "type", "error", "xml"
  {"from": i, "disconnect": true}
  {"expect_disconnect": {"account": i, "timeout": 5}}   -> "stream_error"
  {"login": i}                            (re)connect account i -> "login": LOGIN
  {"mark": "name"}                        writes "@@mark name" on stderr at once
  {"sleep": seconds}

Every wait is bounded; the job as a whole is cut at the top-level "job_timeout"
(default 50 s, below the Rust side's 60 s). "debug": true logs slixmpp to stderr. The script always prints exactly one JSON object; it exits 0 unless
the driver itself is broken (then 2, with "driver_error").

Network: the driver never asks DNS. It connects only to the "host" given (an IP literal
or "localhost"), or to the IP:port of a followed see-other-host.

see-other-host: stock slixmpp 1.8.3 (BaseXMPP._handle_stream_error) parses the target
into self.address and calls reconnect(); reconnect() calls ClientXMPP.connect() with no
address, which resets the address to (JID domain, 5222) and turns SRV lookup back on,
so the client goes through DNS for the JID's domain and never reaches the target. The
driver overrides that handler: with "follow_redirect": false it reports the target in
"see_other_host" and stops; with true it reconnects to exactly that host:port (at most
5 times) and lists the hops in "redirects".
"""

import asyncio
import ipaddress
import json
import logging
import os
import ssl
import sys
import time
import traceback

# The script directory comes first on sys.path; nothing in it may shadow a stdlib name.
from slixmpp import ClientXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

MAX_TIMEOUT = 60.0
MAX_REDIRECTS = 5

# slixmpp 1.8.3 connect() arguments for each "tls" mode. "starttls" is additionally
# enforced by Client._handle_stream_features: 1.8.3 accepts force_starttls but never
# checks it.
TLS_MODES = {
    "none": dict(use_ssl=False, force_starttls=False, disable_starttls=True),
    "starttls": dict(use_ssl=False, force_starttls=True, disable_starttls=False),
    "optional": dict(use_ssl=False, force_starttls=None, disable_starttls=False),
    "direct": dict(use_ssl=True, force_starttls=False, disable_starttls=True),
}


class JobError(Exception):
    """A malformed job: reported in the result, not a driver bug."""


def bounded(value, default):
    """A timeout from the job, clamped so no wait can outlive the Rust side's limit."""
    if value is None:
        return default
    return max(0.0, min(float(value), MAX_TIMEOUT))


def literal_host(host):
    """The IP literal to connect to; refuses names so that no DNS query is ever made."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise JobError(f"host must be an IP literal or localhost, got {host!r}")
    return host.strip("[]")


def parse_host_port(text):
    """`host:port`, `[v6]:port` or `host` (port 5222), as RFC 6120 4.9.3.19 allows."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    return host, int(port) if port else 5222


class Client(ClientXMPP):
    """One account's connection, recording everything the tests ask about."""

    def __init__(self, acct, raw_sink=None):
        # Every byte received (after TLS), for tests that inspect what reached the client.
        self.raw_sink = raw_sink if raw_sink is not None else bytearray()
        for key in ("jid", "password", "host", "port"):
            if key not in acct:
                raise JobError(f"account is missing {key!r}")
        jid = acct["jid"]
        if acct.get("resource"):
            jid = f"{jid}/{acct['resource']}"
        super().__init__(jid, acct["password"], sasl_mech=acct.get("mechanism"))
        self.acct = acct
        self.tls = acct.get("tls", "none")
        if self.tls not in TLS_MODES:
            raise JobError(f"unknown tls mode {self.tls!r}")
        self.target = (literal_host(acct["host"]), int(acct["port"]))
        self.follow_redirect = bool(acct.get("follow_redirect", False))

        # Loopback test servers offer PLAIN without TLS on purpose.
        self["feature_mechanisms"].unencrypted_plain = True
        # Tests only: backends and dealer present self-signed certificates, so the
        # client must not verify them. Never do this outside a test.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        if acct.get("ca"):
            # Unless the job gives the certificate to trust: then the server's must
            # chain to it and name the JID's domain (or the job's "sni").
            self.ssl_context = ssl.create_default_context(cafile=acct["ca"])
        # Subscription requests are answered by explicit "approve" actions only.
        self.auto_authorize = None
        self.auto_subscribe = False
        self.whitespace_keepalive = False

        self.messages = []
        self.presences = []
        self.inbox_changed = asyncio.Event()
        self.register_handler(
            Callback("driver message", MatchXPath("{jabber:client}message"), self._record_message)
        )
        self.register_handler(
            Callback("driver presence", MatchXPath("{jabber:client}presence"), self._record_presence)
        )
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.add_event_handler("failed_all_auth", self._on_failed_all_auth)
        self.add_event_handler("connection_failed", self._on_connection_failed)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("connected", self._on_connected)
        self.reset_login_state()

    # ---- login bookkeeping -------------------------------------------------------

    def reset_login_state(self):
        self.outcome = asyncio.get_running_loop().create_future()
        self.connected_now = False
        self.redirect_pending = False
        self.error = None
        self.sasl_failure = None
        self.stream_error = None
        self.stream_error_text = None
        self.see_other_host = None
        self.redirects = []
        self.mechanisms = None
        self.starttls_offered = None
        self.started = time.monotonic()
        self.elapsed_ms = None
        self.stream_closed = asyncio.Event()

    def finish(self, ok, error=None):
        if not self.outcome.done():
            if error and not self.error:
                self.error = error
            self.elapsed_ms = int((time.monotonic() - self.started) * 1000)
            self.outcome.set_result(ok)

    def encrypted(self):
        return isinstance(self.socket, (ssl.SSLSocket, ssl.SSLObject)) or (
            "starttls" in self.features
        )

    def login_result(self):
        ok = self.outcome.done() and self.outcome.result()
        return {
            "ok": bool(ok),
            "bound_jid": str(self.boundjid) if ok else None,
            "error": None if ok else (self.error or "no outcome"),
            "sasl_failure": self.sasl_failure,
            "stream_error": self.stream_error,
            "stream_error_text": self.stream_error_text,
            "see_other_host": self.see_other_host,
            "redirects": self.redirects,
            "mechanisms": self.mechanisms,
            "starttls_offered": self.starttls_offered,
            "encrypted": bool(ok and self.encrypted()),
            "elapsed_ms": self.elapsed_ms,
        }

    def start_connect(self, address=None):
        host, port = address or self.target
        # SNI and the TLS server name: the JID's domain unless the job names another.
        # XMLStream.connect keeps default_domain when the address is an IP literal.
        self.default_domain = self.acct.get("sni") or self.boundjid.domain
        self.connect(address=(host, port), **TLS_MODES[self.tls])

    async def login(self, timeout):
        self.reset_login_state()
        self.start_connect()
        try:
            # shield: the outcome future must survive the timeout to be read afterwards.
            await asyncio.wait_for(asyncio.shield(self.outcome), timeout)
        except asyncio.TimeoutError:
            self.finish(False, f"no session within {timeout} s")
            self.cancel_connection_attempt()
            self.abort()
        return self.login_result()

    async def close(self, wait=2.0):
        """End the stream politely, bounded; abort if the server does not answer."""
        if self.transport is None:
            self.cancel_connection_attempt()
        else:
            self.disconnect(wait=wait)
            try:
                await asyncio.wait_for(self.stream_closed.wait(), wait + 1.0)
            except asyncio.TimeoutError:
                self.abort()
        # The outgoing-filter task would otherwise be reported as "destroyed but
        # pending" on stderr; connect() starts a new one if the account logs in again.
        if self._run_out_filters is not None and not self._run_out_filters.done():
            self._run_out_filters.cancel()

    # ---- slixmpp overrides -------------------------------------------------------

    def data_received(self, data):
        self.raw_sink.extend(data)
        super().data_received(data)

    async def get_dns_records(self, domain, port=None):
        # Never ask DNS: the address from the job (or a followed redirect) is the only
        # place this client may connect to. Stock 1.8.3 sends A/AAAA queries to the
        # system resolver before every connect, even to an IP literal (it asks for the
        # empty name, default_domain being unset), and after see-other-host it asks for
        # the JID's domain.
        host, port = self.address
        return [(host, host, port)]

    async def _handle_stream_features(self, features):
        names = set(features["features"])
        if "mechanisms" in names:
            self.mechanisms = list(features["mechanisms"])
        if "starttls" in names:
            self.starttls_offered = True
        elif self.starttls_offered is None:
            self.starttls_offered = False
        if (
            self.tls == "starttls"
            and not self.encrypted()
            and "starttls" not in names
            and not self.outcome.done()
        ):
            # Refuse to send credentials in clear when the test asked for STARTTLS.
            self.finish(False, "server offered no starttls")
            self.abort()
            return True
        return await super()._handle_stream_features(features)

    def _handle_stream_error(self, error):
        # Replaces BaseXMPP._handle_stream_error (see the module docstring).
        self.event("stream_error", error)
        self.stream_error = error["condition"] or None
        self.stream_error_text = error["text"] or None
        if error["condition"] != "see-other-host":
            self.finish(False, f"stream error: {error['condition']}")
            return
        target = error["see_other_host"] or None
        self.see_other_host = target
        if not self.follow_redirect or not target:
            self.finish(False, "stream error: see-other-host")
            return
        if len(self.redirects) >= MAX_REDIRECTS:
            self.finish(False, "too many see-other-host redirects")
            return
        try:
            host, port = parse_host_port(target)
            address = (literal_host(host), port)
        except (JobError, ValueError) as e:
            self.finish(False, f"unusable see-other-host {target!r}: {e}")
            return
        self.redirects.append(target)
        self.redirect_pending = True

        def follow(_event):
            self.start_connect(address)

        self.add_event_handler("disconnected", follow, disposable=True)
        self.disconnect(wait=1.0)

    # ---- events ------------------------------------------------------------------

    def _on_connected(self, _event):
        self.connected_now = True
        self.redirect_pending = False
        self.stream_error = None
        self.stream_error_text = None
        self.see_other_host = None
        self.stream_closed = asyncio.Event()

    def _on_session_start(self, _event):
        self.finish(True)

    def _on_failed_auth(self, failure):
        self.sasl_failure = failure["condition"] or "unknown"

    def _on_failed_all_auth(self, _event):
        if self.sasl_failure:
            self.finish(False, f"authentication failed: {self.sasl_failure}")
        else:
            offered = self.mechanisms
            self.finish(False, f"no usable SASL mechanism among {offered}")

    def _on_connection_failed(self, error):
        # Stop slixmpp's endless back-off loop: one refused connect is the answer.
        self.cancel_connection_attempt()
        self.finish(False, f"connection failed: {error}")

    def _on_disconnected(self, reason):
        self.connected_now = False
        self.stream_closed.set()
        if not self.redirect_pending:
            self.finish(False, f"disconnected before session start: {reason}")
        self.inbox_changed.set()

    def _record_message(self, msg):
        entry = {
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "type": msg["type"],
            "body": msg["body"],
            "id": msg["id"] or None,
            "error": msg["error"]["condition"] if msg["type"] == "error" else None,
        }
        self.messages.append(entry)
        self.inbox_changed.set()

    def _record_presence(self, pres):
        entry = {
            "from": str(pres["from"]),
            "to": str(pres["to"]),
            "type": pres["type"],
            "status": pres["status"] or None,
        }
        self.presences.append(entry)
        self.inbox_changed.set()


# ---- matching and waiting ----------------------------------------------------------


def jid_matches(expected, actual):
    """A bare expected JID matches any resource; a full one must match exactly."""
    if expected is None:
        return True
    if "/" in expected:
        return expected == actual
    return actual.split("/", 1)[0] == expected


def entry_matches(spec, entry):
    if not jid_matches(spec.get("from"), entry["from"]):
        return False
    for key in ("body", "type", "error", "status"):
        if key in spec and spec[key] is not None and spec[key] != entry.get(key):
            return False
    return True


async def wait_for_entry(client, inbox_name, spec, timeout):
    """Remove and return the first entry in the inbox matching spec, or None."""
    deadline = time.monotonic() + timeout
    while True:
        inbox = getattr(client, inbox_name)
        for i, entry in enumerate(inbox):
            if entry_matches(spec, entry):
                return inbox.pop(i)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        client.inbox_changed.clear()
        try:
            await asyncio.wait_for(client.inbox_changed.wait(), remaining)
        except asyncio.TimeoutError:
            pass


# ---- ops ---------------------------------------------------------------------------


async def op_login(job):
    client = Client(job)
    result = await client.login(bounded(job.get("timeout"), 10.0))
    await client.close()
    return result


async def send_initial_presence(client, timeout):
    """Roster, then available presence; waits for the server's echo so that later
    messages to the bare JID find an available resource."""
    try:
        await client.get_roster(timeout=timeout)
    except (IqError, IqTimeout):
        pass
    client.send_presence()
    me = str(client.boundjid)
    await wait_for_entry(client, "presences", {"from": me}, timeout)


class Session:
    def __init__(self, job):
        accounts = job.get("accounts")
        if not isinstance(accounts, list) or not accounts:
            raise JobError("session needs a non-empty accounts list")
        self.raw = [bytearray() for _ in accounts]
        self.clients = [Client(a, self.raw[i]) for i, a in enumerate(accounts)]
        self.logins = [None] * len(self.clients)

    def client(self, index, need_connected=True):
        if not isinstance(index, int) or not 0 <= index < len(self.clients):
            raise JobError(f"no account {index!r}")
        c = self.clients[index]
        if need_connected and not (c.outcome.done() and c.outcome.result() and c.connected_now):
            raise JobError(f"account {index} is not logged in")
        return c

    async def login(self, index):
        old = self.client(index, need_connected=False)
        if old.transport is not None:
            await old.close()
        # A fresh client per login: a slixmpp 1.8.3 ClientXMPP reused after a disconnect
        # authenticates but never finishes binding. The new one starts with empty inboxes.
        c = Client(old.acct, self.raw[index]) if self.logins[index] is not None else old
        self.clients[index] = c
        result = await c.login(bounded(c.acct.get("timeout"), 10.0))
        if result["ok"] and c.acct.get("presence", True):
            await send_initial_presence(c, 5.0)
        self.logins[index] = result
        return result

    async def run_action(self, action):
        timeout_default = 5.0
        if "send_message_to" in action:
            c = self.client(action.get("from"))
            msg = c.make_message(
                mto=action["send_message_to"],
                mbody=action.get("body"),
                mtype=action.get("type", "chat"),
            )
            if action.get("id"):
                msg["id"] = action["id"]
            msg.send()
            return {"ok": True, "action": "send_message"}
        if "expect_message" in action or "expect_no_message" in action:
            negative = "expect_no_message" in action
            spec = action["expect_no_message" if negative else "expect_message"]
            c = self.client(spec.get("to"), need_connected=False)
            timeout = bounded(spec.get("timeout"), 1.0 if negative else timeout_default)
            found = await wait_for_entry(c, "messages", spec, timeout)
            if negative:
                return {"ok": found is None, "action": "expect_no_message", "message": found}
            return {
                "ok": found is not None,
                "action": "expect_message",
                "message": found,
                "unmatched": None if found else list(c.messages),
            }
        if "subscribe" in action or "approve" in action:
            kind = "subscribe" if "subscribe" in action else "subscribed"
            c = self.client(action.get("from"))
            c.send_presence(pto=action["subscribe" if kind == "subscribe" else "approve"], ptype=kind)
            return {"ok": True, "action": kind}
        if "presence" in action:
            c = self.client(action.get("from"))
            p = action["presence"] or {}
            pres = c.make_presence(pto=p.get("to"), ptype=p.get("type"), pstatus=p.get("status"))
            if p.get("payload"):
                # Raw XML inside the presence (a MUC join's <x/>).
                try:
                    pres.append(ET.fromstring(p["payload"]))
                except ET.ParseError as e:
                    raise JobError(f"presence payload is not XML: {e}")
            pres.send()
            return {"ok": True, "action": "presence"}
        if "expect_presence" in action:
            spec = action["expect_presence"]
            c = self.client(spec.get("to"), need_connected=False)
            found = await wait_for_entry(
                c, "presences", spec, bounded(spec.get("timeout"), timeout_default)
            )
            return {
                "ok": found is not None,
                "action": "expect_presence",
                "presence": found,
                "unmatched": None if found else list(c.presences),
            }
        if "get_roster" in action:
            c = self.client(action.get("from"))
            # Not ClientXMPP.get_roster: it sends the cached roster version, and a server
            # whose roster has not changed since then answers with no items at all.
            request = c.Iq()
            request["type"] = "get"
            request.enable("roster")
            try:
                iq = await request.send(timeout=bounded(action.get("timeout"), timeout_default))
            except IqError as e:
                return {"ok": False, "action": "get_roster", "error": e.iq["error"]["condition"]}
            except IqTimeout:
                return {"ok": False, "action": "get_roster", "error": "timeout"}
            items = {
                str(j): {"subscription": item["subscription"], "ask": item["ask"] or None}
                for j, item in iq["roster"]["items"].items()
            }
            return {"ok": True, "action": "get_roster", "items": items}
        if "iq" in action:
            c = self.client(action.get("from"))
            spec = action["iq"]
            iq = c.Iq()
            iq["type"] = spec.get("type", "get")
            if spec.get("to"):
                iq["to"] = spec["to"]
            if spec.get("payload"):
                try:
                    iq.append(ET.fromstring(spec["payload"]))
                except ET.ParseError as e:
                    raise JobError(f"iq payload is not XML: {e}")
            try:
                resp = await iq.send(timeout=bounded(action.get("timeout"), timeout_default))
            except IqError as e:
                return {
                    "ok": False,
                    "action": "iq",
                    "type": "error",
                    "error": e.iq["error"]["condition"],
                    "xml": str(e.iq),
                }
            except IqTimeout:
                return {"ok": False, "action": "iq", "type": None, "error": "timeout"}
            return {"ok": True, "action": "iq", "type": resp["type"], "error": None, "xml": str(resp)}
        if "disconnect" in action:
            c = self.client(action.get("from"), need_connected=False)
            await c.close()
            return {"ok": True, "action": "disconnect"}
        if "expect_disconnect" in action:
            spec = action["expect_disconnect"]
            c = self.client(spec.get("account"), need_connected=False)
            try:
                await asyncio.wait_for(
                    c.stream_closed.wait(), bounded(spec.get("timeout"), timeout_default)
                )
                ok = True
            except asyncio.TimeoutError:
                ok = False
            return {"ok": ok, "action": "expect_disconnect", "stream_error": c.stream_error}
        if "login" in action:
            result = await self.login(action["login"])
            return {"ok": result["ok"], "action": "login", "login": result}
        if "mark" in action:
            # Read by ClientProcess::wait_mark on the Rust side, which may then act
            # (kill a backend, ...) while this session goes on.
            sys.stderr.write(f"@@mark {action['mark']}\n")
            sys.stderr.flush()
            return {"ok": True, "action": "mark"}
        if "sleep" in action:
            await asyncio.sleep(bounded(action["sleep"], 0.0))
            return {"ok": True, "action": "sleep"}
        raise JobError(f"unknown action {sorted(action)}")

    async def run(self, actions):
        for i, c in enumerate(self.clients):
            if c.acct.get("connect", True):
                await self.login(i)
        results = []
        for action in actions:
            try:
                results.append(await self.run_action(action))
            except JobError as e:
                results.append({"ok": False, "action": None, "error": str(e)})
        for c in self.clients:
            await c.close()
        # An account the job never connected is reported but does not fail the session.
        ok = all(r["ok"] for r in self.logins if r is not None) and all(r["ok"] for r in results)
        logins = [r or {"ok": False, "error": "never connected"} for r in self.logins]
        raw = [r.decode("utf-8", "replace") for r in self.raw]
        return {"ok": ok, "accounts": logins, "actions": results, "raw": raw}


async def op_session(job):
    return await Session(job).run(job.get("actions", []))


async def run_job(job):
    if not isinstance(job, dict):
        raise JobError("a job is a JSON object")
    if "steps" in job:
        results = []
        for step in job["steps"]:
            try:
                results.append(await run_job(step))
            except JobError as e:
                results.append({"ok": False, "error": str(e)})
        return {"ok": all(r.get("ok") for r in results), "results": results}
    if "parallel" in job:
        # All at once on one event loop: a burst of logins, as a busy server sees them.
        answers = await asyncio.gather(*(run_job(j) for j in job["parallel"]), return_exceptions=True)
        results = []
        for a in answers:
            if isinstance(a, JobError):
                results.append({"ok": False, "error": str(a)})
            elif isinstance(a, BaseException):
                raise a
            else:
                results.append(a)
        return {"ok": all(r.get("ok") for r in results), "results": results}
    op = job.get("op")
    if op == "login":
        return await op_login(job)
    if op == "session":
        return await op_session(job)
    raise JobError(f"unknown op {op!r}")


async def main_async(job):
    limit = bounded(job.get("job_timeout"), 50.0) if isinstance(job, dict) else 50.0
    try:
        return await asyncio.wait_for(run_job(job), limit)
    except asyncio.TimeoutError:
        return {"ok": False, "error": f"job did not finish within {limit} s"}
    except JobError as e:
        return {"ok": False, "error": str(e)}


def emit(obj, code):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
    # os._exit: slixmpp may leave callbacks scheduled; the answer is out, nothing else
    # should run or block the exit.
    os._exit(code)


def main():
    try:
        job = json.loads(sys.stdin.read())
    except ValueError as e:
        emit({"ok": False, "error": f"job is not JSON: {e}"}, 0)
    debug = isinstance(job, dict) and job.get("debug")
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = asyncio.run(main_async(job))
    except Exception:
        emit({"ok": False, "driver_error": traceback.format_exc()}, 2)
    emit(result, 0)


if __name__ == "__main__":
    main()
