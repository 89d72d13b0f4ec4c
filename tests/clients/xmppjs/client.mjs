#!/usr/bin/env node
// Real-client driver for dealer's integration tests, built on @xmpp/client 0.14.0
// (xmpp.js). One process = one account: connect, log in, optionally send and/or wait
// for a chat message, close, print ONE JSON line on stdout, exit.
//
// Install once:   cd tests/clients/xmppjs && npm ci        (node >= 20.10)
// Run (TCP):      node client.mjs --service xmpp://127.0.0.1:5222 --domain example.com \
//                      --username alice --password secret
// Run (WebSocket, node 20 needs the flag for the global WebSocket):
//                 node --experimental-websocket client.mjs --service ws://127.0.0.1:5280/xmpp-websocket ...
//   (without the flag the script re-runs itself once with it).
//
// Options: flags (--name value, --name=value, boolean flags alone), and/or JSON objects
// as arguments whose keys are the same names without dashes, in dash-, snake_ or
// camelCase, e.g. '{"service":"xmpp://…","username":"alice","noTlsVerify":true}';
// later arguments override earlier ones. Booleans in JSON: true/false.
//   --service URI          xmpp://HOST:PORT   TCP; STARTTLS is used whenever the server offers it
//                          xmpps://HOST:PORT  Direct TLS (XEP-0368)
//                          ws://HOST:PORT/PATH, wss://HOST:PORT/PATH   RFC 7395 WebSocket
//   --domain D             stream 'to' and JID domain (required)
//   --username U --password P
//   --resource R           legacy bind: <resource>R</resource>; Bind2: <tag>R</tag> (the
//                          server then makes the resource, e.g. R~xyz)
//   --mechanism M          only use SASL mechanism M (PLAIN, SCRAM-SHA-1, ...). Default is
//                          the library's choice: first offered of SCRAM-SHA-1, PLAIN on a
//                          "secure" connection, else the first offered that is not PLAIN.
//   --no-tls-verify        accept any server certificate (sets NODE_TLS_REJECT_UNAUTHORIZED=0
//                          in this process; covers STARTTLS, xmpps:// and wss://)
//   --tls-servername NAME  SNI / certificate name for xmpps:// (default: none for an IP
//                          literal; STARTTLS always uses --domain)
//   --no-stream-from       do not put from='user@domain' in stream headers (the library adds
//                          it whenever the connection counts as secure, RFC 6120 §4.7.1)
//   --sasl2-required       fail unless the login used SASL2 (XEP-0388)
//   --no-sasl2             hide <authentication xmlns='urn:xmpp:sasl:2'> from the library
//                          (forces legacy SASL)
//   --no-bind2             hide the Bind2 inline feature from the library
//   --no-sm                hide XEP-0198 <sm xmlns='urn:xmpp:sm:3'/> from the library
//   --no-follow-redirect   treat <see-other-host/> as a failure (the library follows it by default)
//   --max-redirects N      give up after N see-other-host redirects (default 3)
//   --user-agent-software S  add <software>S</software> to SASL2 <user-agent/>
//   --no-presence          do not send initial <presence/> after login
//   --send-to JID --body TEXT [--send-type chat]   send one message after login
//   --expect-from JID --expect-body TEXT           wait for a matching message; a bare
//                          JID matches any resource; either key may be omitted
//   --timeout S            bound for --expect-* (default 10)
//   --login-timeout S      bound for connect+login (default 10)
//   --hold S               stay online S seconds after everything else (default 0)
//   --ready-file PATH      write the bound JID to PATH once online (for peer processes);
//                          "@@online JID" is also written to stderr at that moment
//   --trace                add every raw chunk sent/received to the output ("trace")
//   --debug                log status changes and every element in/out to stderr
//
// Output (stdout, exactly one JSON line; stderr has "@@online JID" and maybe warnings):
//   ok, error, condition (SASL/stream error condition, or "see-other-uri"), error_text
//   jid               bound full JID (with Bind2 the server picks the resource from --resource)
//   sasl              "SASL2" | "SASL" | null;  mechanism: "PLAIN" | "SCRAM-SHA-1" | ...
//   bind              "bind2" | "legacy";  bind2: true when <success/> carried <bound/>
//   bind2_requested, sasl2_request (the <authenticate/> XML), user_agent_sent, fast_requested
//   legacy_bind_after_bind2  the library also sent an RFC 6120 bind iq after Bind2 (see below)
//   sm                XEP-0198 enabled;  secure: library's isSecure();  starttls: used
//   transport         "tcp" | "tls" | "websocket"
//   stream_headers    every stream header / <open/> sent, raw;  stream_from: their 'from' or null
//   offered           {starttls, sasl:[..], sasl2:[..], bind2, fast, sm} as last advertised
//   stream_error, see_other_host, redirects (see-other-host texts followed), redirected_to
//   see_other_uri     from a WebSocket <close/>, which the library does not follow
//   sent_message, received:[{from,to,type,id,body,error?}], expected (the matching message)
//   errors_after_login  errors the library emitted once online (they do not fail the run)
//   closed_cleanly, elapsed_ms, trace (with --trace)
// Exit code 0 on ok, 1 on failure, 2 on bad usage.

import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_SASL2 = "urn:xmpp:sasl:2";
const NS_BIND2 = "urn:xmpp:bind:0";
const NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_FAST = "urn:xmpp:fast:0";
const NS_SM = "urn:xmpp:sm:3";
const NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_STREAMS = "http://etherx.jabber.org/streams";

const BOOL_FLAGS = new Set([
  "no-tls-verify",
  "no-stream-from",
  "sasl2-required",
  "no-sasl2",
  "no-bind2",
  "no-follow-redirect",
  "no-presence",
  "no-sm",
  "trace",
  "debug",
]);

function usage(msg) {
  process.stdout.write(JSON.stringify({ ok: false, error: `usage: ${msg}` }) + "\n");
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.trim().startsWith("{")) {
      // A JSON object: its keys are option names (camelCase, snake_case or dash-case).
      let obj;
      try {
        obj = JSON.parse(a);
      } catch (e) {
        usage(`bad JSON argument: ${e.message}`);
      }
      for (const [k, v] of Object.entries(obj)) {
        opts[k.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()).replace(/_/g, "-")] = v;
      }
      continue;
    }
    if (!a.startsWith("--")) usage(`unexpected argument ${a}`);
    const eq = a.indexOf("=");
    if (eq > 0) {
      opts[a.slice(2, eq)] = a.slice(eq + 1);
    } else if (BOOL_FLAGS.has(a.slice(2))) {
      opts[a.slice(2)] = true;
    } else {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      opts[a.slice(2)] = argv[++i];
    }
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const KNOWN = new Set([
  ...BOOL_FLAGS,
  "service", "domain", "username", "password", "resource", "mechanism",
  "tls-servername", "max-redirects", "user-agent-software", "send-to", "body",
  "send-type", "expect-from", "expect-body", "timeout", "login-timeout", "hold",
  "ready-file",
]);
for (const k of Object.keys(opts)) if (!KNOWN.has(k)) usage(`unknown option --${k}`);
if (!opts.service) usage("--service is required");
// A bare domain would make the library look up SRV records (@xmpp/resolve): never here.
if (!/^(xmpp|xmpps|ws|wss):\/\//.test(opts.service)) usage("--service must be xmpp://, xmpps://, ws:// or wss://");
if (!opts.domain) usage("--domain is required");
const flag = (k) => opts[k] === true || opts[k] === "true" || opts[k] === "1" || opts[k] === 1;
const num = (k, d) => {
  if (opts[k] === undefined) return d;
  const n = Number(opts[k]);
  if (!Number.isFinite(n) || n < 0) usage(`--${k} must be a number`);
  return n;
};

// node 20: the global WebSocket exists only with --experimental-websocket. Re-run once.
if (/^wss?:/.test(opts.service) && typeof globalThis.WebSocket === "undefined") {
  if (process.env.XMPPJS_CLIENT_REEXEC) usage("no global WebSocket even with --experimental-websocket");
  const r = spawnSync(
    process.execPath,
    ["--experimental-websocket", "--no-warnings", fileURLToPath(import.meta.url), ...process.argv.slice(2)],
    { stdio: "inherit", env: { ...process.env, XMPPJS_CLIENT_REEXEC: "1" }, timeout: 120_000 },
  );
  process.exit(r.status ?? 1);
}

if (flag("no-tls-verify")) process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

const { client, xml } = await import("@xmpp/client");

const t0 = Date.now();
const loginTimeout = num("login-timeout", 10) * 1000;
const expectTimeout = num("timeout", 10) * 1000;
const hold = num("hold", 0) * 1000;
const maxRedirects = num("max-redirects", 3);

const result = {
  ok: false,
  jid: null,
  sasl: null,
  mechanism: null,
  bind: null,
  bind2: false,
  sm: false,
  secure: null,
  starttls: false,
  transport: null,
  stream_headers: [],
  stream_from: [],
  offered: { starttls: false, sasl: null, sasl2: null, bind2: false, fast: false, sm: false },
  user_agent_sent: false,
  fast_requested: false,
  redirects: [],
  sent_message: false,
  received: [],
};
const trace = flag("trace") ? [] : null;
if (trace) result.trace = trace;

let finished = false;
function finish(ok, err) {
  if (finished) return;
  finished = true;
  result.ok = ok;
  if (!ok) {
    result.error = err ? `${err.name || "Error"}: ${err.message || err.condition || String(err)}` : "unknown error";
    if (err?.condition) result.condition = err.condition;
    if (err?.text) result.error_text = err.text;
    if (result.see_other_uri && !result.jid) {
      // The library has no RFC 7395 see-other-uri support: it just sees the stream end.
      result.error = `server closed the WebSocket stream with see-other-uri=${result.see_other_uri} (not followed by the library; then ${result.error})`;
      result.condition = "see-other-uri";
    }
  }
  result.elapsed_ms = Date.now() - t0;
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(ok ? 0 : 1));
  // Fallback if the write callback never fires.
  setTimeout(() => process.exit(ok ? 0 : 1), 500).unref();
}

// Hard cap for the whole run, whatever the library does.
const hardCap = loginTimeout + expectTimeout + hold + 8000;
setTimeout(() => finish(false, new Error(`hard timeout after ${hardCap} ms`)), hardCap).unref();

const xmpp = client({
  service: opts.service,
  domain: opts.domain,
  username: opts.username,
  password: opts.password,
  resource: opts.resource,
  credentials: onAuthenticate,
});
// No automatic reconnect: one process = one attempt (see-other-host is handled below).
xmpp.reconnect.stop();

const transportName = (svc) =>
  /^wss?:/.test(svc) ? "websocket" : /^xmpps:/.test(svc) ? "tls" : "tcp";
result.transport = transportName(opts.service);

// --- credentials / mechanism choice ------------------------------------------------
function userAgent() {
  // Same as the library's default (an id only), optionally with <software/>.
  return xml(
    "user-agent",
    { id: globalThis.crypto.randomUUID() },
    opts["user-agent-software"] ? xml("software", {}, opts["user-agent-software"]) : undefined,
  );
}

async function onAuthenticate(authenticate, mechanisms, fast, entity) {
  let mechanism;
  if (opts.mechanism) {
    mechanism = mechanisms.find((m) => m.toUpperCase() === String(opts.mechanism).toUpperCase());
    if (!mechanism) {
      throw new Error(`mechanism ${opts.mechanism} not offered (usable: ${mechanisms.join(",")})`);
    }
  } else if (entity.isSecure()) {
    mechanism = mechanisms[0];
  } else {
    mechanism = mechanisms.find((m) => m !== "PLAIN");
    if (!mechanism) {
      throw new Error(
        `no mechanism the library accepts on an insecure connection (usable: ${mechanisms.join(",")}); try --mechanism PLAIN`,
      );
    }
  }
  const credentials = { username: opts.username, password: opts.password };
  credentials.token = await fast?.fetch();
  await authenticate(credentials, mechanism, userAgent());
}

// --- stream header 'from' -----------------------------------------------------------
// Client.prototype.header() adds from=<bare JID> when isSecure(); bypass it on request.
if (flag("no-stream-from")) {
  xmpp.header = function header(headerElement, ...args) {
    delete headerElement.attrs.from;
    return this.Transport.prototype.header(headerElement, ...args);
  };
}

// --- TLS servername for xmpps:// ------------------------------------------------------
if (opts["tls-servername"]) {
  xmpp.socketParameters = function socketParameters(service) {
    const p = this.Transport.prototype.socketParameters(service);
    if (p && typeof p === "object" && /^xmpps:/.test(service)) p.servername = opts["tls-servername"];
    return p;
  };
}

// --- raw observation -----------------------------------------------------------------
const origWrite = xmpp.write.bind(xmpp);
xmpp.write = async function write(str) {
  const s = String(str);
  if (/^(<\?xml[^>]*>)?\s*<(stream:stream|open)\b/.test(s)) {
    result.stream_headers.push(s);
    const m = /\sfrom=(['"])([^'"]*)\1/.exec(s.replace(/<\?xml[^>]*>/, ""));
    result.stream_from.push(m ? m[2] : null);
  }
  trace?.push({ dir: "out", data: s });
  return origWrite(s);
};
const origOnData = xmpp._onData.bind(xmpp);
xmpp._onData = function onData(data) {
  trace?.push({ dir: "in", data: data.toString("utf8") });
  return origOnData(data);
};
xmpp.on("send", (el) => {
  if (el.is("authenticate", NS_SASL2)) {
    result.sasl = "SASL2";
    result.mechanism = el.attrs.mechanism;
    result.user_agent_sent = !!el.getChild("user-agent");
    result.bind2_requested = !!el.getChild("bind", NS_BIND2);
    result.fast_requested = !!el.getChild("request-token", NS_FAST) || !!el.getChild("fast", NS_FAST);
    result.sasl2_request = el.toString();
  } else if (el.is("auth", NS_SASL)) {
    result.sasl = "SASL";
    result.mechanism = el.attrs.mechanism;
  } else if (el.name === "iq" && el.getChild("bind", NS_BIND)) {
    // After a Bind2 login, Prosody 0.12 + mod_sasl2 (2023-02) still advertises <bind/> in
    // the stream features it sends after <success/>, and the library binds again.
    if (result.bind === "bind2") result.legacy_bind_after_bind2 = true;
    else result.bind = "legacy";
  } else if (el.is("starttls", NS_TLS)) {
    result.starttls = true;
  }
});

// --- incoming: features, SASL2 success, messages ---------------------------------------
const origOnElement = xmpp._onElement.bind(xmpp);
xmpp._onElement = function onElement(el) {
  if (el.is("features", NS_STREAMS)) {
    if (el.getChild("starttls", NS_TLS)) result.offered.starttls = true;
    const mechs = el.getChild("mechanisms", NS_SASL);
    if (mechs) result.offered.sasl = mechs.getChildren("mechanism").map((m) => m.text());
    const auth = el.getChild("authentication", NS_SASL2);
    if (auth) {
      result.offered.sasl2 = auth.getChildren("mechanism").map((m) => m.text());
      const inline = auth.getChild("inline");
      result.offered.bind2 = !!inline?.getChild("bind", NS_BIND2);
      result.offered.fast = !!inline?.getChild("fast", NS_FAST);
      if (inline?.getChild("bind", NS_BIND2) && flag("no-bind2")) {
        inline.children = inline.children.filter((c) => !(c.is && c.is("bind", NS_BIND2)));
      }
      if (flag("no-sasl2")) el.children = el.children.filter((c) => c !== auth);
    }
    if (el.getChild("sm", NS_SM)) {
      result.offered.sm = true;
      if (flag("no-sm")) el.children = el.children.filter((c) => !(c.is && c.is("sm", NS_SM)));
    }
  } else if (el.is("success", NS_SASL2)) {
    if (el.getChild("bound", NS_BIND2)) {
      result.bind = "bind2";
      result.bind2 = true;
    }
  } else if (el.is("error", NS_STREAMS)) {
    const cond = el.children.find((c) => c.name && c.attrs?.xmlns === "urn:ietf:params:xml:ns:xmpp-streams");
    if (cond) {
      result.stream_error = cond.name;
      if (cond.name === "see-other-host") result.see_other_host = cond.text();
    }
  }
  return origOnElement(el);
};
// The library follows <see-other-host/> itself (Connection._onSeeOtherHost: waits for the
// disconnect, then connect()+open() to "<same scheme>//HOST:PORT"); bound or refuse it.
const libOnSeeOtherHost = xmpp._onSeeOtherHost.bind(xmpp);
xmpp._onSeeOtherHost = async function onSeeOtherHost(error) {
  const target = error.element.getChildText("see-other-host");
  if (flag("no-follow-redirect") || result.redirects.length >= maxRedirects) {
    const e = new Error(`see-other-host ${target} (not followed)`);
    e.name = "StreamError";
    e.condition = "see-other-host";
    e.text = target;
    xmpp.emit("error", e);
    return;
  }
  result.redirects.push(target);
  return libOnSeeOtherHost(error);
};

const received = [];
let expectResolve = null;
function matches(m) {
  if (opts["expect-body"] !== undefined && m.body !== String(opts["expect-body"])) return false;
  if (opts["expect-from"] !== undefined) {
    const want = String(opts["expect-from"]);
    if (!m.from) return false;
    if (want.includes("/")) return m.from === want;
    return m.from.split("/")[0] === want;
  }
  return true;
}
xmpp.on("stanza", (st) => {
  if (st.name !== "message") return;
  const body = st.getChildText("body");
  const m = { from: st.attrs.from ?? null, to: st.attrs.to ?? null, type: st.attrs.type ?? null, id: st.attrs.id ?? null, body };
  if (st.attrs.type === "error") {
    const e = st.getChild("error");
    m.error = e?.children.find((c) => c.name && c.name !== "text")?.name ?? "unknown";
  }
  received.push(m);
  result.received = received;
  if (expectResolve && body !== null && matches(m)) expectResolve(m);
});

const errors = [];
let isOnline = false;
xmpp.on("error", (err) => {
  errors.push(err);
  // Errors after login do not fail the run; they are reported.
  if (isOnline) {
    result.errors_after_login ??= [];
    result.errors_after_login.push(`${err.name || "Error"}: ${err.condition || err.message}`);
  }
});
if (flag("debug")) {
  xmpp.on("status", (s) => process.stderr.write(`status ${s}\n`));
  xmpp.on("element", (el) => process.stderr.write(`IN  ${el}\n`));
  xmpp.on("send", (el) => process.stderr.write(`OUT ${el}\n`));
}

// Capture WebSocket <close see-other-uri> (the framed parser emits <close/> as 'end',
// never as an element).
const origAttachParser = xmpp._attachParser.bind(xmpp);
xmpp._attachParser = function attachParser(parser) {
  parser.on("end", (el) => {
    if (el?.attrs?.["see-other-uri"]) result.see_other_uri = el.attrs["see-other-uri"];
  });
  return origAttachParser(parser);
};
xmpp.on("connecting", (svc) => {
  if (svc && svc !== opts.service) result.redirected_to = svc;
});

function withTimeout(promise, ms, what) {
  let id;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      id = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(id));
}

async function main() {
  const online = withTimeout(xmpp.start(), loginTimeout, "login");
  await online;
  isOnline = true;
  result.jid = xmpp.jid?.toString() ?? null;
  result.secure = xmpp.isSecure();
  // xmpp.js 0.14 race: it resets its inbound counter when it processes <enabled/>, which
  // happens after any stanza that arrived in the same TCP chunk was already counted and
  // acked; its next <a/> then goes backwards and Prosody ends the stream
  // (undefined-condition). So send nothing until <enabled/> was handled (bounded).
  const sm = xmpp.streamManagement;
  for (let i = 0; i < 100 && sm && !sm.enabled; i++) {
    if (i >= 5 && !sm.enableSent) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  result.sm = !!sm?.enabled;
  if (flag("sasl2-required") && result.sasl !== "SASL2") {
    throw new Error(`login used ${result.sasl}, SASL2 required`);
  }
  if (!flag("no-presence")) await xmpp.send(xml("presence"));
  if (opts["ready-file"]) writeFileSync(opts["ready-file"], result.jid + "\n");
  process.stderr.write(`@@online ${result.jid}\n`);

  let expected = null;
  if (opts["expect-from"] !== undefined || opts["expect-body"] !== undefined) {
    expected = new Promise((resolve) => {
      expectResolve = resolve;
      const already = received.find((m) => m.body !== null && matches(m));
      if (already) resolve(already);
    });
  }
  if (opts["send-to"]) {
    await xmpp.send(
      xml(
        "message",
        { to: opts["send-to"], type: opts["send-type"] || "chat", id: `xmppjs-${Date.now()}` },
        xml("body", {}, String(opts.body ?? "")),
      ),
    );
    result.sent_message = true;
  }
  if (expected) {
    result.expected = await withTimeout(expected, expectTimeout, "expected message");
  }
  if (hold) await new Promise((r) => setTimeout(r, hold));
  result.sm = !!xmpp.streamManagement?.enabled;
  try {
    await withTimeout(xmpp.stop(), 3000, "stop");
    result.closed_cleanly = true;
  } catch {
    result.closed_cleanly = false;
  }
}

main().then(
  () => finish(true),
  (err) => finish(false, errors.find((e) => e.condition) || err),
);
