// Boots Converse.js for dealer's browser harness and exposes its state on
// window.__harness for run.mjs (which polls it through the DevTools protocol).
//
// Configuration: window.__HARNESS_CONFIG (an object set by run.mjs before the
// page's scripts run) wins over the query string, which lets a human open
//   /page/index.html?websocket=ws://127.0.0.1:5280/xmpp-websocket&jid=alice@example.com&password=secret
// in a browser by hand. Keys: websocket, jid, password, view_mode, loglevel,
// smacks ("0" turns XEP-0198 off), omemo ("1" keeps the OMEMO plugin).

const DIST = '/node_modules/converse.js/dist/';
const MAX_FRAMES = 2000;

const query = Object.fromEntries(new URLSearchParams(location.search));
const cfg = Object.assign({}, query, window.__HARNESS_CONFIG || {});

const H = (window.__harness = {
    phase: 'loading', // loading -> initializing -> connecting -> connected -> ready | failed | disconnected
    error: null,
    jid: null,
    status: [], // connection status changes: {t, status, message}
    frames: [], // raw WebSocket traffic: {t, dir: 'in'|'out', data}
    frames_dropped: 0,
    received: [], // incoming chat messages with a body: {from, to, body, type, ...}
    sent: [], // outgoing chat messages: {to, body, msgid}
    events: [],
    t0: performance.now(),
});

const now = () => Math.round(performance.now() - H.t0);
const fail = (error) => {
    if (H.phase !== 'failed') {
        H.phase = 'failed';
        H.error = String(error);
    }
};

window.addEventListener('error', (ev) => H.events.push({ t: now(), event: 'window-error', message: String(ev.message) }));
window.addEventListener('unhandledrejection', (ev) =>
    H.events.push({ t: now(), event: 'unhandled-rejection', message: String(ev.reason?.stack || ev.reason) })
);

function record(dir, data) {
    if (H.frames.length >= MAX_FRAMES) {
        H.frames_dropped++;
        return;
    }
    H.frames.push({ t: now(), dir, data: typeof data === 'string' ? data : String(data) });
}

async function main() {
    for (const key of ['websocket', 'jid', 'password']) {
        if (!cfg[key]) throw new Error(`missing setting "${key}" (query string or window.__HARNESS_CONFIG)`);
    }
    // The ESM bundle sets window.converse and exports it as default.
    const mod = await import(DIST + 'converse.min.js');
    const converse = mod.default || window.converse;
    const { Strophe } = converse.env;
    const statusName = (n) => Object.keys(Strophe.Status).find((k) => Strophe.Status[k] === n) ?? String(n);

    converse.plugins.add('dealer-harness', {
        initialize() {
            const { api } = this._converse;
            window.__harness_api = api; // for run.mjs (chats, logout, socket state)

            // The fullscreen login screen's footer shows sponsor logos from
            // https://conversejs.org; replace the element (before Converse registers
            // its own) so that the page never even tries to load them.
            api.elements.define('converse-footer', class extends HTMLElement {});

            api.listen.on('connectionInitialized', () => {
                const conn = api.connection.get();
                // Strophe calls these for every frame once they are overridden.
                conn.rawInput = (data) => record('in', data);
                conn.rawOutput = (data) => record('out', data);
                H.events.push({ t: now(), event: 'connectionInitialized', service: conn.service });
            });

            api.listen.on('connfeedback', (fb) => {
                const status = statusName(fb.get('connection_status'));
                const message = fb.get('message') || '';
                const last = H.status[H.status.length - 1];
                if (!last || last.status !== status || last.message !== message) {
                    H.status.push({ t: now(), status, message });
                }
                if (['AUTHFAIL', 'CONNFAIL', 'ERROR'].includes(status) && !['ready', 'connected'].includes(H.phase)) {
                    fail(`${status}${message ? ': ' + message : ''}`);
                } else if (status === 'CONNECTING' && H.phase === 'initializing') {
                    H.phase = 'connecting';
                }
            });

            api.listen.on('connected', async () => {
                H.jid = api.connection.get()?.jid ?? null;
                H.phase = 'connected';
                H.events.push({ t: now(), event: 'connected', jid: H.jid });
                try {
                    await Promise.all([api.waitUntil('chatBoxesFetched'), api.waitUntil('rosterContactsFetched')]);
                    if (H.phase === 'connected') H.phase = 'ready';
                    H.events.push({ t: now(), event: 'ready' });
                } catch (e) {
                    fail(`waiting for chats/roster: ${e}`);
                }
            });

            api.listen.on('disconnected', () => {
                H.events.push({ t: now(), event: 'disconnected' });
                if (H.phase === 'connecting' || H.phase === 'initializing') {
                    fail(`disconnected before login: ${H.status.map((s) => s.status).join(' > ')}`);
                } else if (H.phase !== 'failed') {
                    H.phase = 'disconnected';
                }
            });

            api.listen.on('message', (data) => {
                const a = data?.attrs || {};
                if (!a.body && !a.message) return;
                H.received.push({
                    t: now(),
                    from: a.from,
                    to: a.to,
                    body: a.body ?? a.message,
                    type: a.type,
                    sender: a.sender,
                    is_carbon: !!a.is_carbon,
                    is_archived: !!a.is_archived,
                    is_delayed: !!a.is_delayed,
                    msgid: a.msgid,
                });
            });

            api.listen.on('sendMessage', ({ chatbox, message }) => {
                H.sent.push({ t: now(), to: chatbox?.get('jid'), body: message?.get('body'), msgid: message?.get('msgid') });
            });
        },
    });

    // Settings that matter; see README.md.
    const omemo = cfg.omemo === '1' || cfg.omemo === true;
    const settings = {
        websocket_url: cfg.websocket,
        bosh_service_url: undefined, // WebSocket only
        discover_connection_methods: false, // no https://DOMAIN/.well-known/host-meta fetch
        authentication: 'login',
        auto_login: true,
        jid: cfg.jid,
        password: cfg.password,
        auto_reconnect: false, // report failures instead of retrying
        view_mode: cfg.view_mode || 'fullscreen',
        assets_path: DIST, // emoji.json, sounds, wasm, locale chunks: all local
        i18n: 'en', // no locale chunk to fetch
        loglevel: cfg.loglevel || 'info',
        whitelisted_plugins: ['dealer-harness'],
        blacklisted_plugins: omemo ? [] : ['converse-omemo', 'converse-omemo-views'],
        allow_non_roster_messaging: true,
        allow_registration: false,
        enable_smacks: !(cfg.smacks === '0' || cfg.smacks === false),
        play_sounds: false,
        show_desktop_notifications: false,
        use_system_emojis: true, // no twemoji CDN
        fetch_url_headers: false,
        show_images_inline: false,
        embed_3rd_party_media_players: false,
        show_background: false,
        show_controlbox_by_default: true,
        clear_cache_on_logout: true,
        persistent_store: 'IndexedDB',
    };

    H.phase = 'initializing';
    await converse.initialize(settings);
}

main().catch((e) => fail(e?.stack || e));
