#!/usr/bin/env bash
# End-to-end check of the Converse.js browser harness against a real Prosody 0.12
# (its built-in mod_websocket), on loopback only.
#
#   bash tests/clients/browser/selftest.sh [OUTDIR]
#
# Needs: Debian packages prosody, chromium, python3-slixmpp, openssl; node 20.
# Runs `npm ci` here if node_modules is missing. Leaves screenshots and traces in
# OUTDIR (default: a new /tmp/dealer-browser-selftest.XXXX) and removes the Prosody
# temp dir. Scenarios:
#   1. ws://  alice (browser) -> bob (slixmpp), bob answers, browser expects the answer
#   2. ws://  bob (browser, waits) <- alice (browser, sends)
#   3. wss:// (self-signed certificate) alice (browser) -> bob (slixmpp)
# Every wait is bounded; only processes started here are stopped, by pid.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$(mktemp -d /tmp/dealer-browser-selftest.XXXX)}"
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/dealer-browser-prosody.XXXX)"
PY=/usr/bin/python3
DOMAIN=example.com
PIDS=()

log() { printf '[selftest] %s\n' "$*" >&2; }
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

for bin in prosody prosodyctl /usr/bin/chromium node openssl; do
    command -v "$bin" >/dev/null || { log "missing $bin (apt-get install -y --no-install-recommends prosody chromium chromium-driver python3-slixmpp openssl)"; exit 1; }
done
$PY -c 'import slixmpp' 2>/dev/null || { log "missing python3-slixmpp for $PY"; exit 1; }
if [ ! -d "$HERE/node_modules/playwright-core" ] || [ ! -d "$HERE/node_modules/converse.js" ]; then
    log "npm ci"
    (cd "$HERE" && npm ci --no-audit --no-fund >&2)
fi

# Four free loopback ports: c2s, s2s, http (ws://), https (wss://).
read -r C2S S2S HTTP HTTPS < <($PY - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks: s.close()
EOF
)

mkdir -p "$WORK/data" "$WORK/certs"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$DOMAIN" \
    -keyout "$WORK/wss.key" -out "$WORK/wss.crt" 2>/dev/null
cat > "$WORK/prosody.cfg.lua" <<EOF
run_as_root = true
pidfile = "$WORK/prosody.pid"
data_path = "$WORK/data"
certificates = "$WORK/certs"
log = { { levels = { min = "info" }, to = "file", filename = "$WORK/prosody.log" } }
admins = { }
modules_enabled = {
    "roster"; "saslauth"; "tls"; "disco"; "carbons"; "pep"; "private"; "vcard_legacy";
    "version"; "uptime"; "time"; "ping"; "blocklist"; "smacks"; "csi_simple"; "offline";
    "http"; "websocket";
}
modules_disabled = { "s2s"; "limits" }
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
c2s_interfaces = { "127.0.0.1" }
c2s_ports = { $C2S }
c2s_direct_tls_ports = { }
s2s_interfaces = { "127.0.0.1" }
s2s_ports = { $S2S }
http_interfaces = { "127.0.0.1" }
http_ports = { $HTTP }
https_interfaces = { "127.0.0.1" }
https_ports = { $HTTPS }
https_ssl = { certificate = "$WORK/wss.crt"; key = "$WORK/wss.key" }
consider_websocket_secure = true
cross_domain_websocket = true
VirtualHost "$DOMAIN"
EOF

prosody --config "$WORK/prosody.cfg.lua" -F >"$WORK/prosody.stdout" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$HTTP") 2>/dev/null && break
    sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$HTTP") 2>/dev/null || { log "prosody did not start"; cat "$WORK/prosody.log" >&2 || true; exit 1; }
prosodyctl --config "$WORK/prosody.cfg.lua" register alice "$DOMAIN" alice-pw >/dev/null
prosodyctl --config "$WORK/prosody.cfg.lua" register bob "$DOMAIN" bob-pw >/dev/null
log "prosody pid ${PIDS[0]}: c2s $C2S, ws://127.0.0.1:$HTTP/xmpp-websocket, wss://127.0.0.1:$HTTPS/xmpp-websocket"

PASSED=0; FAILED=0
check() { # name, json-file, exit-code
    if [ "$3" = 0 ] && grep -Eq '"ok": ?true' "$2"; then
        log "PASS $1"; PASSED=$((PASSED + 1))
    else
        log "FAIL $1 (exit $3): $(head -c 2000 "$2")"; FAILED=$((FAILED + 1))
    fi
}
wait_file() { # path, seconds
    local i
    for i in $(seq 1 $(( $2 * 10 ))); do [ -s "$1" ] && return 0; sleep 0.1; done
    return 1
}

# --- 1: browser alice -> slixmpp bob, bob answers --------------------------------
BODY1="hello from the browser $(date +%s)"
$PY "$HERE/selftest_peer.py" --jid "bob@$DOMAIN" --password bob-pw --port "$C2S" \
    --expect-from "alice@$DOMAIN" --expect-body "$BODY1" --reply "echo: $BODY1" \
    --ready-file "$WORK/bob1.ready" --timeout 60 >"$OUT/1-bob.json" 2>"$OUT/1-bob.stderr" &
BOB=$!; PIDS+=($BOB)
wait_file "$WORK/bob1.ready" 15 || log "slixmpp bob not ready"
set +e
node "$HERE/run.mjs" --websocket "ws://127.0.0.1:$HTTP/xmpp-websocket" --jid "alice@$DOMAIN" --password alice-pw \
    --send-to "bob@$DOMAIN" --body "$BODY1" --expect-from "bob@$DOMAIN" --expect-body "echo: $BODY1" \
    --screenshot "$OUT/1-alice.png" --trace "$OUT/1-alice.trace.json" --timeout 45 >"$OUT/1-alice.json"
RC=$?
wait "$BOB"; BRC=$?
set -e
check "1 browser->slixmpp (ws)" "$OUT/1-alice.json" "$RC"
check "1 slixmpp got it" "$OUT/1-bob.json" "$BRC"

# --- 2: browser bob waits, browser alice sends -----------------------------------
BODY2="browser to browser $(date +%s)"
node "$HERE/run.mjs" --websocket "ws://127.0.0.1:$HTTP/xmpp-websocket" --jid "bob@$DOMAIN" --password bob-pw \
    --expect-from "alice@$DOMAIN" --expect-body "$BODY2" --ready-file "$WORK/bob2.ready" \
    --screenshot "$OUT/2-bob.png" --trace "$OUT/2-bob.trace.json" --timeout 60 >"$OUT/2-bob.json" &
BOB=$!; PIDS+=($BOB)
wait_file "$WORK/bob2.ready" 40 || log "browser bob not ready"
set +e
node "$HERE/run.mjs" --websocket "ws://127.0.0.1:$HTTP/xmpp-websocket" --jid "alice@$DOMAIN" --password alice-pw \
    --send-to "bob@$DOMAIN" --body "$BODY2" --screenshot "$OUT/2-alice.png" --timeout 45 >"$OUT/2-alice.json"
RC=$?
wait "$BOB"; BRC=$?
set -e
check "2 browser alice sends" "$OUT/2-alice.json" "$RC"
check "2 browser bob receives" "$OUT/2-bob.json" "$BRC"

# --- 3: wss:// with a self-signed certificate ------------------------------------
BODY3="over wss $(date +%s)"
$PY "$HERE/selftest_peer.py" --jid "bob@$DOMAIN" --password bob-pw --port "$C2S" \
    --expect-from "alice@$DOMAIN" --expect-body "$BODY3" \
    --ready-file "$WORK/bob3.ready" --timeout 60 >"$OUT/3-bob.json" 2>"$OUT/3-bob.stderr" &
BOB=$!; PIDS+=($BOB)
wait_file "$WORK/bob3.ready" 15 || log "slixmpp bob not ready"
set +e
node "$HERE/run.mjs" --websocket "wss://127.0.0.1:$HTTPS/xmpp-websocket" --jid "alice@$DOMAIN" --password alice-pw \
    --send-to "bob@$DOMAIN" --body "$BODY3" --screenshot "$OUT/3-alice.png" --timeout 45 >"$OUT/3-alice.json"
RC=$?
wait "$BOB"; BRC=$?
set -e
check "3 browser->slixmpp (wss, self-signed)" "$OUT/3-alice.json" "$RC"
check "3 slixmpp got it" "$OUT/3-bob.json" "$BRC"

cp "$WORK/prosody.log" "$OUT/prosody.log" 2>/dev/null || true
log "outputs in $OUT"
echo "selftest: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
