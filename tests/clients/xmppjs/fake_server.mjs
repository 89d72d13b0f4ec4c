#!/usr/bin/env node
// Minimal fake XMPP endpoints for selftest.sh: checks how @xmpp/client reacts to
// redirects. Loopback only, bounded: serves at most --max-conns connections, exits
// after --lifetime seconds.
//
//   node fake_server.mjs see-other-host PORT TARGET   (TCP: answers the stream header with
//        <stream:error><see-other-host>TARGET</see-other-host></stream:error>)
//   node fake_server.mjs see-other-uri PORT URI       (WebSocket: answers <open/> with
//        <close xmlns='urn:ietf:params:xml:ns:xmpp-framing' see-other-uri='URI'/>)
// Prints "listening PORT" on stdout when ready and, on stderr, each chunk received.
import net from "node:net";
import { createHash } from "node:crypto";

const [mode, portArg, target, ...rest] = process.argv.slice(2);
const maxConns = Number(rest[0] ?? 4);
const lifetime = Number(rest[1] ?? 30);
if (!["see-other-host", "see-other-uri"].includes(mode) || !portArg || !target) {
  console.error("usage: fake_server.mjs see-other-host|see-other-uri PORT TARGET [MAXCONNS] [LIFETIME_S]");
  process.exit(2);
}
setTimeout(() => process.exit(0), lifetime * 1000).unref();

let conns = 0;
const log = (s) => process.stderr.write(`fake<- ${s}\n`);

function tcpSeeOtherHost(sock) {
  let buf = "";
  sock.setEncoding("utf8");
  sock.on("data", (d) => {
    buf += d;
    log(d);
    if (!/<stream:stream[^>]*>/.test(buf)) return;
    const m = /\sto=(['"])([^'"]*)\1/.exec(buf);
    sock.end(
      `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' ` +
        `version='1.0' id='fake' from='${m ? m[2] : "example.com"}'>` +
        `<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>${target}</see-other-host>` +
        `</stream:error></stream:stream>`,
    );
  });
  sock.on("error", () => {});
}

// RFC 6455 just enough: handshake, unmasking client text frames, unmasked server frames.
function wsFrame(text, opcode = 0x1) {
  const payload = Buffer.from(text, "utf8");
  let header;
  if (payload.length < 126) header = Buffer.from([0x80 | opcode, payload.length]);
  else {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode;
    header[1] = 126;
    header.writeUInt16BE(payload.length, 2);
  }
  return Buffer.concat([header, payload]);
}

function wsSeeOtherUri(sock) {
  let buf = Buffer.alloc(0);
  let upgraded = false;
  sock.on("data", (d) => {
    buf = Buffer.concat([buf, d]);
    if (!upgraded) {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = buf.subarray(0, end).toString("latin1");
      log(head.replace(/\r\n/g, " | "));
      buf = buf.subarray(end + 4);
      const key = /sec-websocket-key:\s*(\S+)/i.exec(head)?.[1] ?? "";
      const accept = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
      sock.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n`,
      );
      upgraded = true;
    }
    // Parse complete client frames (always masked, small).
    while (buf.length >= 2) {
      const opcode = buf[0] & 0x0f;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        sock.destroy();
        return;
      }
      if (buf.length < off + 4 + len) return;
      const mask = buf.subarray(off, off + 4);
      const data = Buffer.from(buf.subarray(off + 4, off + 4 + len));
      for (let i = 0; i < data.length; i++) data[i] ^= mask[i % 4];
      buf = buf.subarray(off + 4 + len);
      if (opcode === 0x8) {
        sock.end(wsFrame("", 0x8));
        return;
      }
      const text = data.toString("utf8");
      log(text);
      if (/<open\b/.test(text)) {
        sock.write(
          wsFrame(
            `<close xmlns='urn:ietf:params:xml:ns:xmpp-framing' see-other-uri='${target}'/>`,
          ),
        );
        // Then a WebSocket close frame (status 1000) and FIN, like a real server would.
        setTimeout(() => sock.end(Buffer.from([0x88, 0x02, 0x03, 0xe8])), 50);
      }
    }
  });
  sock.on("error", () => {});
}

const server = net.createServer((sock) => {
  conns += 1;
  if (conns >= maxConns) server.close();
  (mode === "see-other-host" ? tcpSeeOtherHost : wsSeeOtherUri)(sock);
  setTimeout(() => sock.destroy(), 10_000).unref();
});
server.listen(Number(portArg), "127.0.0.1", () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
server.on("close", () => setTimeout(() => process.exit(0), 200).unref());
