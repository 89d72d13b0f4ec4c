#!/usr/bin/env node
// Headless-browser XMPP client for dealer's integration tests: Converse.js in
// Debian's Chromium, driven through playwright-core over the DevTools protocol.
//
// Usage (see README.md; `node run.mjs --help`):
//   node run.mjs --websocket ws://127.0.0.1:5280/xmpp-websocket \
//       --jid alice@example.com --password secret \
//       [--send-to bob@example.com --body "hello from the browser"] \
//       [--expect-from bob@example.com] [--expect-body "text"] \
//       [--screenshot /tmp/out.png] [--trace /tmp/frames.json] [--timeout 30]
//
// Prints exactly ONE JSON line on stdout:
//   {"ok":true,"jid":"alice@example.com/converse.js-123","sent":true,"received":[...],"screenshot":"...",...}
// and exits 0, or {"ok":false,"error":"...","console":[...],...} and exits 1
// (2 for bad usage). Nothing else is written to stdout.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const T0 = Date.now();
const PROFILE_PREFIX = 'dealer-chromium-';

const USAGE = `usage: node run.mjs --websocket URL --jid JID --password PW [options]

  --websocket URL      ws:// or wss:// XMPP WebSocket endpoint (RFC 7395); loopback hosts only
  --jid JID            account to log in with (a resource is added by Converse if none given)
  --password PW        its password
  --send-to JID        open a chat with JID and send --body by typing it into the chat box + Enter
  --body TEXT          message to send (required with --send-to)
  --send-mode ui|api   'ui' (default) types into the textarea; 'api' calls chatbox.sendMessage()
  --expect-from JID    wait for an incoming chat message from JID (bare JID matches any resource)
  --expect-body TEXT   wait for an incoming message with exactly this body (combinable with --expect-from)
  --hold SECONDS       stay logged in this long after sending/receiving (default 0)
  --screenshot PATH    save a PNG of the chat (also attempted on failure)
  --trace PATH         write the WebSocket frames, status changes and events as JSON
  --ready-file PATH    write the full JID to PATH once logged in (to start a peer after this client)
  --timeout SECONDS    overall limit for the run (default 30)
  --view-mode MODE     Converse view_mode: fullscreen (default) | overlayed ('embedded' needs a host element)
  --no-smacks          set enable_smacks: false (no XEP-0198)
  --omemo              keep Converse's OMEMO plugins (off by default: fewer PEP round trips)
  --no-logout          close the browser without logging out (abrupt WebSocket close)
  --chromium PATH      browser binary (default $CHROMIUM or /usr/bin/chromium)
  --net-log PATH       let Chromium write its network log (JSON) there, to audit what it reaches for
  --help
`;

// ---------------------------------------------------------------------------
// output

let emitted = false;
function emit(obj, code) {
    if (emitted) return;
    emitted = true;
    obj.elapsed_ms = Date.now() - T0;
    process.stdout.write(JSON.stringify(obj) + '\n');
    process.exitCode = code;
}

function usage(msg) {
    if (msg) process.stderr.write(`run.mjs: ${msg}\n`);
    process.stderr.write(USAGE);
    emit({ ok: false, error: `usage: ${msg || 'help'}` }, 2);
    process.exit(2);
}

// ---------------------------------------------------------------------------
// arguments

let args;
try {
    args = parseArgs({
        options: {
            websocket: { type: 'string' },
            jid: { type: 'string' },
            password: { type: 'string' },
            'send-to': { type: 'string' },
            body: { type: 'string' },
            'send-mode': { type: 'string', default: 'ui' },
            'expect-from': { type: 'string' },
            'expect-body': { type: 'string' },
            hold: { type: 'string', default: '0' },
            screenshot: { type: 'string' },
            trace: { type: 'string' },
            'ready-file': { type: 'string' },
            timeout: { type: 'string', default: '30' },
            'view-mode': { type: 'string', default: 'fullscreen' },
            'no-smacks': { type: 'boolean', default: false },
            omemo: { type: 'boolean', default: false },
            'no-logout': { type: 'boolean', default: false },
            chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
            'net-log': { type: 'string' },
            help: { type: 'boolean', default: false },
        },
        strict: true,
        allowPositionals: false,
    }).values;
} catch (e) {
    usage(e.message);
}
if (args.help) {
    process.stdout.write(USAGE);
    process.exit(0);
}
for (const k of ['websocket', 'jid', 'password']) if (!args[k]) usage(`--${k} is required`);
if (!!args['send-to'] !== (args.body !== undefined)) usage('--send-to and --body go together');
if (!['ui', 'api'].includes(args['send-mode'])) usage('--send-mode must be ui or api');
if (!['fullscreen', 'overlayed'].includes(args['view-mode'])) usage('--view-mode must be fullscreen or overlayed');
const timeoutS = Number(args.timeout);
const holdS = Number(args.hold);
if (!(timeoutS > 0 && timeoutS <= 600)) usage('--timeout must be in (0, 600]');
if (!(holdS >= 0 && holdS < timeoutS)) usage('--hold must be >= 0 and below --timeout');

let wsUrl;
try {
    wsUrl = new URL(args.websocket);
} catch {
    usage('--websocket is not a URL');
}
if (!['ws:', 'wss:'].includes(wsUrl.protocol)) usage('--websocket must be ws:// or wss://');
function isLoopback(host) {
    const h = host.replace(/^\[|\]$/g, '');
    if (h === 'localhost' || h === '::1') return true;
    return net.isIPv4(h) && h.startsWith('127.');
}
if (!isLoopback(wsUrl.hostname)) usage('--websocket must point at a loopback address (127.0.0.0/8, ::1, localhost)');

const deadline = T0 + timeoutS * 1000;
const remaining = (min = 1) => Math.max(min, deadline - Date.now());
const bare = (jid) => String(jid || '').split('/')[0].toLowerCase();
const sameJid = (got, want) => (want.includes('/') ? String(got).toLowerCase() === want.toLowerCase() : bare(got) === bare(want));

// ---------------------------------------------------------------------------
// tiny static server: only the page and Converse's dist folder

const MIME = {
    '.html': 'text/html; charset=utf-8',
    '.js': 'text/javascript; charset=utf-8',
    '.mjs': 'text/javascript; charset=utf-8',
    '.css': 'text/css; charset=utf-8',
    '.json': 'application/json',
    '.map': 'application/json',
    '.wasm': 'application/wasm',
    '.svg': 'image/svg+xml',
    '.png': 'image/png',
    '.jpg': 'image/jpeg',
    '.gif': 'image/gif',
    '.ico': 'image/x-icon',
    '.woff': 'font/woff',
    '.woff2': 'font/woff2',
    '.ttf': 'font/ttf',
    '.eot': 'application/vnd.ms-fontobject',
    '.mp3': 'audio/mpeg',
    '.ogg': 'audio/ogg',
    '.po': 'text/plain; charset=utf-8',
};
const SERVED = [path.join(HERE, 'page') + path.sep, path.join(HERE, 'node_modules', 'converse.js', 'dist') + path.sep];
const served = []; // request log (path + status), for the trace

// WebSockets may go to any port on 127.0.0.1, localhost and the given host, so that
// Converse can follow a <close see-other-uri='...'/> redirect to another loopback
// listener. CSP host sources cannot name an IPv6 literal: with one, fall back to the
// bare schemes (the loopback check above and --host-resolver-rules still hold).
function connectSrc() {
    if (wsUrl.hostname.startsWith('[')) return 'ws: wss:';
    const hosts = new Set(['127.0.0.1', 'localhost', wsUrl.hostname]);
    return [...hosts].flatMap((h) => [`ws://${h}:*`, `wss://${h}:*`]).join(' ');
}

// CSP: only this origin for everything but WebSockets (see connectSrc).
const CSP = [
    "default-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "media-src 'self' data: blob:",
    `connect-src 'self' ${connectSrc()}`,
    "worker-src 'self' blob:",
    "frame-src 'none'",
    "object-src 'none'",
].join('; ');

function startServer() {
    const server = http.createServer((req, res) => {
        let rel;
        try {
            rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
        } catch {
            rel = '/';
        }
        if (rel === '/' || rel === '/index.html') rel = '/page/index.html';
        const file = path.normalize(path.join(HERE, rel));
        const ok = req.method === 'GET' && SERVED.some((dir) => file.startsWith(dir));
        fs.stat(file, (err, st) => {
            if (!ok || err || !st.isFile()) {
                served.push(`${rel} 404`);
                res.writeHead(404, { 'Content-Type': 'text/plain' });
                res.end('not found\n');
                return;
            }
            served.push(`${rel} 200`);
            res.writeHead(200, {
                'Content-Type': MIME[path.extname(file)] || 'application/octet-stream',
                'Content-Length': st.size,
                'Cache-Control': 'no-store',
                'Content-Security-Policy': CSP,
            });
            fs.createReadStream(file).pipe(res);
        });
    });
    return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve(server));
    });
}

// ---------------------------------------------------------------------------
// main

const consoleLines = [];
const blocked = [];
let context, server, profileDir, page;

function pushConsole(line) {
    consoleLines.push(line.length > 600 ? line.slice(0, 600) + '…' : line);
    if (consoleLines.length > 400) consoleLines.splice(0, consoleLines.length - 400);
}

async function harness() {
    return page.evaluate(() => {
        const { frames, ...rest } = window.__harness || {};
        return { ...rest, frames_count: frames?.length ?? 0 };
    });
}

async function frames() {
    return page.evaluate(() => window.__harness?.frames ?? []);
}

function xmlEscape(s) {
    return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

async function waitPhase() {
    await page.waitForFunction(
        () => ['ready', 'failed', 'disconnected'].includes(window.__harness?.phase),
        null,
        { timeout: remaining(), polling: 50 }
    );
    const h = await harness();
    if (h.phase !== 'ready') throw new Error(`login did not complete: ${h.error || h.phase}`);
    return h;
}

async function openChat(jid) {
    // The same path as clicking an xmpp link inside Converse: its router
    // listens for #converse/chat?jid=... and opens (or focuses) the chat.
    await page.evaluate((j) => {
        location.hash = '#converse/chat?jid=' + j;
    }, jid);
    const sel = `converse-chat[jid="${bare(jid)}"] textarea.chat-textarea`;
    const ta = page.locator(sel);
    await ta.waitFor({ state: 'visible', timeout: Math.min(remaining(), 10000) });
    return ta;
}

async function sendMessage(to, body) {
    const ta = await openChat(to);
    const before = (await frames()).length;
    if (args['send-mode'] === 'ui') {
        await ta.click({ timeout: remaining() });
        await ta.pressSequentially(body, { timeout: remaining() });
        await ta.press('Enter', { timeout: remaining() });
    } else {
        await page.evaluate(
            async ({ to, body }) => {
                const api = window.__harness_api;
                const chat = await api.chats.get(to, {}, true);
                await chat.sendMessage({ body });
            },
            { to: bare(to), body }
        );
    }
    // The message left the client: Converse's sendMessage event fired and a
    // <message> frame carrying the body went out on the WebSocket.
    const esc = xmlEscape(body);
    await page.waitForFunction(
        ({ before, body, esc }) => {
            const h = window.__harness;
            const sent = h.sent.some((m) => m.body === body);
            const wire = h.frames.slice(before).some((f) => f.dir === 'out' && f.data.includes('<message') && (f.data.includes(esc) || f.data.includes(body)));
            return sent && wire;
        },
        { before, body, esc },
        { timeout: remaining(), polling: 50 }
    );
    // ... and the socket has flushed it to the kernel.
    await page
        .waitForFunction(() => (window.__harness_api?.connection.get()?._proto?.socket?.bufferedAmount ?? 0) === 0, null, {
            timeout: Math.min(remaining(), 5000),
            polling: 20,
        })
        .catch(() => {});
    // The message is shown in the chat.
    await page
        .locator(`converse-chat[jid="${bare(to)}"] .chat-msg__text`, { hasText: body })
        .first()
        .waitFor({ state: 'visible', timeout: Math.min(remaining(), 5000) });
}

async function expectMessage(from, body) {
    await page.waitForFunction(
        ({ from, body }) => {
            const b = (j) => String(j || '').split('/')[0].toLowerCase();
            return window.__harness.received.some(
                (m) =>
                    m.sender !== 'me' &&
                    (from === null || (from.includes('/') ? String(m.from).toLowerCase() === from.toLowerCase() : b(m.from) === b(from))) &&
                    (body === null || String(m.body).trim() === body.trim())
            );
        },
        { from: from ?? null, body: body ?? null },
        { timeout: remaining(), polling: 50 }
    );
    const h = await harness();
    return h.received.find(
        (m) => m.sender !== 'me' && (from == null || sameJid(m.from, from)) && (body == null || String(m.body).trim() === body.trim())
    );
}

function summarize(fr) {
    const out = fr.filter((f) => f.dir === 'out').map((f) => f.data);
    const inn = fr.filter((f) => f.dir === 'in').map((f) => f.data);
    const open = out.find((d) => d.startsWith('<open'));
    const auth = out.map((d) => d.match(/<auth [^>]*mechanism=["']([^"']+)["']/)).find(Boolean);
    const offered = [...new Set(inn.flatMap((d) => [...d.matchAll(/<mechanism>([^<]+)<\/mechanism>/g)].map((m) => m[1])))];
    return {
        open: open ?? null,
        sasl_offered: offered,
        sasl_mechanism: auth ? auth[1] : null,
        sasl2: out.some((d) => d.includes('urn:xmpp:sasl:2')),
        smacks_enabled: inn.some((d) => /<enabled[\s>]/.test(d) && d.includes('urn:xmpp:sm:3')),
        frames_in: inn.length,
        frames_out: out.length,
    };
}

async function screenshot(file, ms = Math.min(remaining(), 10000)) {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    await page.screenshot({ path: file, timeout: ms });
    return path.resolve(file);
}

async function writeTrace(file) {
    if (!file || !page) return;
    try {
        const h = await page.evaluate(() => window.__harness);
        fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
        fs.writeFileSync(file, JSON.stringify({ ...h, served, blocked, console: consoleLines }, null, 1));
    } catch (e) {
        process.stderr.write(`run.mjs: could not write trace: ${e.message}\n`);
    }
}

// Resolves after `ms` at the latest, without keeping the process alive.
function bounded(promise, ms) {
    let timer;
    const limit = new Promise((r) => {
        timer = setTimeout(r, ms);
        timer.unref();
    });
    return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

let cleaning = null;
function cleanup() {
    cleaning ??= (async () => {
        if (context) await bounded(context.close().catch(() => {}), 8000);
        if (server) {
            server.closeAllConnections?.();
            await bounded(new Promise((r) => server.close(() => r())), 2000);
        }
        if (profileDir) {
            try {
                fs.rmSync(profileDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
            } catch (e) {
                process.stderr.write(`run.mjs: could not remove ${profileDir}: ${e.message}\n`);
            }
        }
    })();
    return cleaning;
}

// Profiles left behind by runs that were SIGKILLed (Chromium itself exits when
// its DevTools pipe closes). Only ones older than an hour: runs last <= 600 s.
function sweepStaleProfiles() {
    try {
        for (const name of fs.readdirSync(os.tmpdir())) {
            if (!name.startsWith(PROFILE_PREFIX)) continue;
            const dir = path.join(os.tmpdir(), name);
            if (Date.now() - fs.statSync(dir).mtimeMs > 3600_000) fs.rmSync(dir, { recursive: true, force: true });
        }
    } catch {}
}

async function main() {
    server = await startServer();
    const base = `http://127.0.0.1:${server.address().port}`;

    sweepStaleProfiles();
    profileDir = fs.mkdtempSync(path.join(os.tmpdir(), PROFILE_PREFIX));
    context = await chromium.launchPersistentContext(profileDir, {
        executablePath: args.chromium,
        headless: true,
        chromiumSandbox: false,
        args: [
            '--headless',
            '--no-sandbox', // we are root
            '--disable-gpu',
            '--disable-quic',
            '--no-first-run',
            '--no-default-browser-check',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync',
            '--disable-domain-reliability',
            '--disable-breakpad',
            '--disable-client-side-phishing-detection',
            '--disable-default-apps',
            '--disable-dev-shm-usage',
            '--password-store=basic',
            '--ignore-certificate-errors', // self-signed wss:// in tests
            // Every name other than loopback fails to resolve inside the browser.
            '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE ::1',
            ...(args['net-log'] ? [`--log-net-log=${path.resolve(args['net-log'])}`] : []),
        ],
        ignoreHTTPSErrors: true,
        handleSIGINT: false, // our own handlers below report and clean up
        handleSIGTERM: false,
        handleSIGHUP: false,
        viewport: { width: 1280, height: 800 },
        serviceWorkers: 'block',
        acceptDownloads: false,
        timeout: remaining(),
    });

    // Defence in depth: any request that is not to our own loopback server is aborted.
    await context.route('**/*', (route) => {
        const url = route.request().url();
        if (url.startsWith(base + '/') || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
        blocked.push(url.slice(0, 200));
        return route.abort('blockedbyclient');
    });

    page = context.pages()[0] || (await context.newPage());
    page.on('console', (m) => pushConsole(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => pushConsole(`[pageerror] ${e.message}`));
    page.on('requestfailed', (r) => {
        const why = r.failure()?.errorText ?? '';
        pushConsole(`[requestfailed] ${r.url().slice(0, 200)} ${why}`);
        if (/csp/i.test(why)) blocked.push(`csp: ${r.url().slice(0, 200)}`);
    });

    await page.addInitScript((cfg) => {
        window.__HARNESS_CONFIG = cfg;
    }, {
        websocket: args.websocket,
        jid: args.jid,
        password: args.password,
        view_mode: args['view-mode'],
        smacks: !args['no-smacks'],
        omemo: args.omemo,
    });

    await page.goto(`${base}/page/index.html`, { timeout: remaining(), waitUntil: 'load' });
    const h0 = await waitPhase();
    const t_login = Date.now() - T0;
    if (args['ready-file']) {
        fs.writeFileSync(args['ready-file'] + '.tmp', `${h0.jid}\n`);
        fs.renameSync(args['ready-file'] + '.tmp', args['ready-file']);
    }

    let sent = false;
    if (args['send-to']) {
        await sendMessage(args['send-to'], args.body);
        sent = true;
    }
    let matched = null;
    if (args['expect-from'] || args['expect-body'] !== undefined) {
        matched = await expectMessage(args['expect-from'], args['expect-body']);
    }

    if (holdS > 0) await new Promise((r) => setTimeout(r, Math.min(holdS * 1000, remaining())));

    // Show the conversation that matters in the screenshot.
    let shot = null;
    if (args.screenshot) {
        const peer = args['send-to'] || args['expect-from'] || matched?.from;
        if (peer && !args['send-to']) {
            await openChat(peer).catch(() => {});
            if (matched)
                await page
                    .locator(`converse-chat[jid="${bare(peer)}"] .chat-msg__text`, { hasText: matched.body })
                    .first()
                    .waitFor({ state: 'visible', timeout: Math.min(remaining(), 5000) })
                    .catch(() => {});
        }
        await page.waitForTimeout(Math.min(300, remaining())); // let the last render settle
        shot = await screenshot(args.screenshot);
    }

    const h = await harness();
    const fr = await frames();
    await writeTrace(args.trace);

    const result = {
        ok: true,
        jid: h.jid || h0.jid,
        sent,
        received: h.received.map(({ from, to, body, type, is_delayed, is_carbon }) => ({ from, to, body, type, is_delayed, is_carbon })),
        matched: matched ? { from: matched.from, body: matched.body } : null,
        screenshot: shot,
        login_ms: t_login,
        ...summarize(fr),
        status: h.status.map((s) => s.status),
        blocked,
    };

    if (!args['no-logout']) {
        await Promise.race([
            page.evaluate(() => window.__harness_api?.user.logout()).catch(() => {}),
            new Promise((r) => setTimeout(r, Math.min(3000, remaining()))),
        ]);
    }
    return result;
}

// Hard stop: if anything hangs past the deadline, report, clean up and leave
// (Playwright also kills the browser it launched when this process exits).
const watchdog = setTimeout(() => {
    emit({ ok: false, error: `hard timeout after ${timeoutS + 5}s`, console: consoleLines.slice(-40), blocked }, 1);
    bounded(cleanup(), 4000).then(() => process.exit(1));
}, (timeoutS + 5) * 1000);
watchdog.unref();

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(sig, async () => {
        emit({ ok: false, error: `killed by ${sig}`, console: consoleLines.slice(-40), blocked }, 1);
        await bounded(cleanup(), 10000);
        process.exit(1);
    });
}

try {
    const result = await main();
    emit(result, 0);
} catch (e) {
    const fail = { ok: false, error: String(e?.message || e).split('\n').slice(0, 6).join('\n') };
    if (page) {
        // The deadline may have passed: give each post-mortem step a few seconds.
        try {
            const h = await bounded(harness(), 3000);
            Object.assign(fail, { phase: h.phase, harness_error: h.error, jid: h.jid, status: h.status, events: h.events.slice(-20), received: h.received });
            Object.assign(fail, summarize(await bounded(frames(), 3000)));
        } catch {}
        if (args.screenshot) fail.screenshot = await screenshot(args.screenshot, 3000).catch(() => null);
        await bounded(writeTrace(args.trace), 3000);
    }
    fail.console = consoleLines.slice(-40);
    fail.blocked = blocked;
    emit(fail, 1);
} finally {
    await cleanup();
    clearTimeout(watchdog);
}
