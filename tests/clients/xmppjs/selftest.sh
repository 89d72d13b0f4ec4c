#!/bin/bash
# Self-test for client.mjs against real Prosody 0.12 instances on loopback (for humans
# re-checking the harness; the Rust tests do not run this).
#
#   tests/clients/xmppjs/selftest.sh            run all cases, print "N passed, N failed"
#   tests/clients/xmppjs/selftest.sh --keep 300 set up only, print ports, stay up 300 s
#   (a Prosody that fails to start leaves its temp dir for inspection; otherwise removed)
#
# Needs (as root): apt-get install -y --no-install-recommends prosody prosody-modules
#                  (openssl for the self-signed certificate), node >= 20.10,
#                  and `npm ci` in this folder.
# Instances (each its own temp dir, config, pid; killed by pid on exit):
#   A "sasl2"  plaintext c2s + ws://, modules smacks sasl2 sasl2_bind2 websocket
#   B "legacy" plaintext c2s + ws://, no sasl2
#   C "tls"    self-signed example.com cert: STARTTLS c2s, Direct TLS c2s, wss://; no sasl2
# Users alice/bob, password "secret", domain example.com, on every instance.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
KEEP=0
if [ "${1:-}" = "--keep" ]; then KEEP=${2:-300}; fi

for bin in prosody prosodyctl node openssl; do
  command -v "$bin" >/dev/null || { echo "missing $bin" >&2; exit 2; }
done
[ -f /usr/lib/prosody/modules/mod_sasl2/mod_sasl2.lua ] || { echo "missing prosody-modules (mod_sasl2)" >&2; exit 2; }
[ -d "$HERE/node_modules/@xmpp/client" ] || { echo "run npm ci in $HERE first" >&2; exit 2; }

T=$(mktemp -d /tmp/xmppjs-selftest.XXXXXX)
PIDS=()
cleanup() {
  local p i
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for i in $(seq 1 30); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  [ -n "${KEEP_TMP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# N free loopback ports, held open together while chosen.
read -r -a PORTS <<<"$(node -e '
  const net = require("net"); const n = +process.argv[1]; const ss = []; let done = 0;
  for (let i = 0; i < n; i++) { const s = net.createServer(); ss.push(s);
    s.listen(0, "127.0.0.1", () => { if (++done === n) {
      console.log(ss.map(x => x.address().port).join(" ")); ss.forEach(x => x.close()); } }); }' 12)"
A_C2S=${PORTS[0]} A_HTTP=${PORTS[1]}
B_C2S=${PORTS[2]} B_HTTP=${PORTS[3]}
C_C2S=${PORTS[4]} C_DTLS=${PORTS[5]} C_HTTPS=${PORTS[6]}
FAKE_SOH=${PORTS[7]} FAKE_WS=${PORTS[8]}
S2S_A=${PORTS[9]} S2S_B=${PORTS[10]} S2S_C=${PORTS[11]}

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=example.com \
  -addext subjectAltName=DNS:example.com -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null \
  || { echo "openssl failed" >&2; exit 2; }

# make_instance NAME C2S_PORT S2S_PORT EXTRA_MODULES EXTRA_LINES
make_instance() {
  local name=$1 c2s=$2 s2s=$3 mods=$4 extra=$5 d="$T/$1"
  mkdir -p "$d/data" "$d/certs"
  cat >"$d/prosody.cfg.lua" <<EOF
run_as_root = true
pidfile = "$d/prosody.pid"
data_path = "$d/data"
certificates = "$d/certs"
log = { debug = "$d/prosody.log" }
c2s_interfaces = { "127.0.0.1" }
c2s_ports = { $c2s }
c2s_direct_tls_ports = { }
s2s_interfaces = { "127.0.0.1" }
s2s_ports = { $s2s }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"
modules_enabled = { "roster", "saslauth", "disco", "ping", "smacks", $mods }
$extra
VirtualHost "example.com"
EOF
  local u
  for u in alice bob; do
    prosodyctl --config "$d/prosody.cfg.lua" register "$u" example.com secret >/dev/null 2>&1 \
      || { echo "register $u on $name failed" >&2; exit 2; }
  done
  prosody --config "$d/prosody.cfg.lua" -F >"$d/stdout.log" 2>&1 &
  PIDS+=($!)
  local i
  for i in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$c2s") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "prosody $name did not start; see $d" >&2
  KEEP_TMP=1
  exit 2
}

make_instance A "$A_C2S" "$S2S_A" '"sasl2", "sasl2_bind2", "http", "websocket"' "
http_interfaces = { \"127.0.0.1\" }
http_ports = { $A_HTTP }
https_ports = { }
consider_websocket_secure = true
cross_domain_websocket = true"
make_instance B "$B_C2S" "$S2S_B" '"http", "websocket"' "
http_interfaces = { \"127.0.0.1\" }
http_ports = { $B_HTTP }
https_ports = { }
consider_websocket_secure = true
cross_domain_websocket = true"
make_instance C "$C_C2S" "$S2S_C" '"tls", "http", "websocket"' "
ssl = { certificate = \"$T/cert.pem\", key = \"$T/key.pem\" }
c2s_direct_tls_ports = { $C_DTLS }
http_ports = { }
https_interfaces = { \"127.0.0.1\" }
https_ports = { $C_HTTPS }
https_ssl = { certificate = \"$T/cert.pem\", key = \"$T/key.pem\" }
cross_domain_websocket = true"

if [ "$KEEP" != 0 ]; then
  cat <<EOF
dir=$T
A (sasl2+bind2, plain): xmpp://127.0.0.1:$A_C2S  ws://127.0.0.1:$A_HTTP/xmpp-websocket
B (legacy, plain):      xmpp://127.0.0.1:$B_C2S  ws://127.0.0.1:$B_HTTP/xmpp-websocket
C (legacy, tls):        xmpp://127.0.0.1:$C_C2S (STARTTLS)  xmpps://127.0.0.1:$C_DTLS  wss://127.0.0.1:$C_HTTPS/xmpp-websocket
users alice/bob password secret domain example.com; staying up $KEEP s (Ctrl-C ends it)
EOF
  sleep "$KEEP" &
  SLEEPPID=$!
  PIDS+=($SLEEPPID)
  wait "$SLEEPPID"
  exit 0
fi

PASS=0 FAIL=0
CLIENT=(timeout 40 node --experimental-websocket --no-warnings "$HERE/client.mjs" --domain example.com --password secret)
# check NAME JS_PREDICATE_OVER_r CLIENT_ARGS...
check() {
  local name=$1 pred=$2; shift 2
  local out
  out=$("${CLIENT[@]}" "$@" 2>"$T/last.stderr")
  if node -e 'const r = JSON.parse(process.argv[1]); process.exit(eval(process.argv[2]) ? 0 : 1)' "$out" "$pred" 2>/dev/null; then
    PASS=$((PASS + 1)); echo "PASS $name"
  else
    FAIL=$((FAIL + 1)); echo "FAIL $name: $out"; sed 's/^/    stderr: /' "$T/last.stderr" | head -5
  fi
  [ -n "${VERBOSE:-}" ] && echo "    $out"
  LAST="$out"
}

A="xmpp://127.0.0.1:$A_C2S"; B="xmpp://127.0.0.1:$B_C2S"
# (a) SASL2 + Bind2 on plaintext
check a-sasl2-default 'r.ok && r.sasl==="SASL2" && r.mechanism==="SCRAM-SHA-1" && r.bind2 && r.jid.startsWith("alice@example.com/r") && r.user_agent_sent && !r.fast_requested && r.stream_from.every(f => f===null) && !r.starttls' \
  --service "$A" --username alice --resource r --sasl2-required
check a-sasl2-plain 'r.ok && r.sasl==="SASL2" && r.mechanism==="PLAIN" && r.bind==="bind2"' \
  --service "$A" --username alice --mechanism PLAIN
check a-no-bind2 'r.ok && r.sasl==="SASL2" && !r.bind2 && r.bind==="legacy"' \
  --service "$A" --username alice --no-bind2 --mechanism PLAIN
check a-no-sasl2 'r.ok && r.sasl==="SASL" && r.bind==="legacy"' \
  --service "$A" --username alice --no-sasl2 --mechanism PLAIN
check a-bad-password '!r.ok && r.condition==="not-authorized" && r.sasl==="SASL2"' \
  --service "$A" --username alice --password wrong
# (b) legacy SASL
check b-legacy 'r.ok && r.sasl==="SASL" && r.mechanism==="SCRAM-SHA-1" && r.bind==="legacy" && r.jid==="alice@example.com/r" && r.sm' \
  --service "$B" --username alice --resource r
check b-legacy-plain 'r.ok && r.sasl==="SASL" && r.mechanism==="PLAIN"' \
  --service "$B" --username alice --mechanism PLAIN
check b-sasl2-required '!r.ok && /SASL2 required/.test(r.error)' \
  --service "$B" --username alice --sasl2-required --mechanism PLAIN
check b-bad-password '!r.ok && r.condition==="not-authorized" && r.sasl==="SASL"' \
  --service "$B" --username alice --password wrong
# TLS: STARTTLS, Direct TLS, stream header from
check c-starttls 'r.ok && r.starttls && r.secure && r.stream_from[0]===null && r.stream_from.slice(1).every(f => f==="alice@example.com") && r.mechanism==="SCRAM-SHA-1"' \
  --service "xmpp://127.0.0.1:$C_C2S" --username alice --no-tls-verify
check c-starttls-no-stream-from 'r.ok && r.starttls && r.stream_from.every(f => f===null)' \
  --service "xmpp://127.0.0.1:$C_C2S" --username alice --no-tls-verify --no-stream-from --mechanism PLAIN
check c-starttls-verify-fails '!r.ok && r.starttls' \
  --service "xmpp://127.0.0.1:$C_C2S" --username alice --login-timeout 5
check c-direct-tls 'r.ok && !r.starttls && r.secure && r.transport==="tls" && r.stream_from.every(f => f==="alice@example.com")' \
  --service "xmpps://127.0.0.1:$C_DTLS" --username alice --no-tls-verify --tls-servername example.com
# (c) WebSocket
check a-ws-login 'r.ok && r.transport==="websocket" && r.sasl==="SASL2" && r.bind2 && r.stream_from[0]==="alice@example.com"' \
  --service "ws://127.0.0.1:$A_HTTP/xmpp-websocket" --username alice
check b-ws-login 'r.ok && r.sasl==="SASL" && r.mechanism==="SCRAM-SHA-1" && r.stream_from.every(f => f==="alice@example.com")' \
  --service "ws://127.0.0.1:$B_HTTP/xmpp-websocket" --username alice
check b-ws-no-stream-from 'r.ok && r.stream_from.every(f => f===null)' \
  --service "ws://127.0.0.1:$B_HTTP/xmpp-websocket" --username alice --no-stream-from --mechanism PLAIN
check c-wss-login 'r.ok && r.sasl==="SASL" && r.secure' \
  --service "wss://127.0.0.1:$C_HTTPS/xmpp-websocket" --username alice --no-tls-verify

# Message exchange over WebSocket (A, SASL2): bob waits, alice sends.
for svc in "ws://127.0.0.1:$A_HTTP/xmpp-websocket" "$B"; do
  rm -f "$T/bob.ready"
  "${CLIENT[@]}" --service "$svc" --username bob --expect-from alice@example.com --expect-body "hi bob" \
    --timeout 10 --ready-file "$T/bob.ready" --mechanism PLAIN >"$T/bob.out" 2>"$T/bob.err" &
  BOBPID=$!
  PIDS+=($BOBPID)
  for i in $(seq 1 100); do [ -s "$T/bob.ready" ] && break; sleep 0.1; done
  check "exchange-send $svc" 'r.ok && r.sent_message' --service "$svc" --username alice --send-to bob@example.com --body "hi bob" --mechanism PLAIN
  wait "$BOBPID"
  out=$(cat "$T/bob.out")
  if node -e 'const r = JSON.parse(process.argv[1]); process.exit(r.ok && r.expected.body==="hi bob" && r.expected.from.startsWith("alice@example.com/") ? 0 : 1)' "$out"; then
    PASS=$((PASS + 1)); echo "PASS exchange-receive $svc"
  else
    FAIL=$((FAIL + 1)); echo "FAIL exchange-receive $svc: $out"
  fi
done
check json-argv 'r.ok && r.sasl==="SASL2" && r.mechanism==="PLAIN" && r.jid.startsWith("alice@example.com/")' \
  "{\"service\":\"$A\",\"domain\":\"example.com\",\"username\":\"alice\",\"password\":\"secret\",\"mechanism\":\"PLAIN\",\"sasl2_required\":true}"
check expect-timeout '!r.ok && /expected message timed out/.test(r.error)' \
  --service "$B" --username alice --expect-body never --timeout 1 --mechanism PLAIN

# Redirects: see-other-host (followed by the library) and WebSocket see-other-uri (not).
node "$HERE/fake_server.mjs" see-other-host "$FAKE_SOH" "127.0.0.1:$B_C2S" 4 60 >"$T/fake1.out" 2>"$T/fake1.err" &
PIDS+=($!)
node "$HERE/fake_server.mjs" see-other-uri "$FAKE_WS" "ws://127.0.0.1:$B_HTTP/xmpp-websocket" 4 60 >"$T/fake2.out" 2>"$T/fake2.err" &
PIDS+=($!)
for i in $(seq 1 50); do [ -s "$T/fake1.out" ] && [ -s "$T/fake2.out" ] && break; sleep 0.1; done
check see-other-host-followed "r.ok && r.redirects[0]===\"127.0.0.1:$B_C2S\" && r.redirected_to===\"xmpp://127.0.0.1:$B_C2S\" && r.sasl===\"SASL\"" \
  --service "xmpp://127.0.0.1:$FAKE_SOH" --username alice --mechanism PLAIN
check see-other-host-not-followed '!r.ok && r.condition==="see-other-host"' \
  --service "xmpp://127.0.0.1:$FAKE_SOH" --username alice --no-follow-redirect --mechanism PLAIN
check ws-see-other-uri-ignored "!r.ok && r.condition===\"see-other-uri\" && r.see_other_uri===\"ws://127.0.0.1:$B_HTTP/xmpp-websocket\"" \
  --service "ws://127.0.0.1:$FAKE_WS/xmpp-websocket" --username alice --login-timeout 3

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
