//! The `preauth` harness without libFuzzer (`cargo +nightly test --release` in fuzz/,
//! or `cargo test`): every file of `corpus/preauth/` (or of the files and folders
//! named after `--`) once, then, for `PREAUTH_SECS`
//! seconds (5 by default), inputs made from them by simple byte-level mutations and
//! splices, from a fixed seed (`PREAUTH_SEED`). A violation panics with the transcript,
//! as under libFuzzer; the input is also written to `artifacts/preauth-replay-crash`.

#[path = "preauth/backend.rs"]
mod backend;
#[path = "preauth/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"\0",
    b"<message to='nora@example.com'><body>x</body></message>",
    b"<presence/>",
    b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
    b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    b"<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    b"<next xmlns='urn:xmpp:sasl:2' task='HOTP-EXAMPLE'/>",
    b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>",
    b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AG5vcmEAcGFzcw==</auth>",
    b"<query xmlns='jabber:iq:register'><username>bob</username><password>x</password></query>",
    b"<query xmlns='jabber:iq:auth'><username>alice</username><password>x</password><resource>r</resource></query>",
    b"</stream:stream>",
];

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            2 if at < v.len() => v[at] = rng.next() as u8,
            3 => {
                // Splice in a piece of another input.
                let o = &corpus[rng.below(corpus.len())];
                let a = rng.below(o.len() + 1);
                let b = (a + rng.below(200)).min(o.len());
                v.splice(at..at, o[a..b].iter().copied());
            }
            4 => {
                // Another backend script.
                if let Some(nl) = v.iter().position(|b| *b == b'\n') {
                    let steps = b"stopufcnSAXYPFChrRqzwemEgk.";
                    let n = rng.below(6);
                    let script: Vec<u8> = (0..n).map(|_| steps[rng.below(steps.len())]).collect();
                    v.splice(1.min(nl)..nl, script);
                }
            }
            _ => v.insert(at.min(v.len()), 0),
        }
    }
    v.truncate(4096);
    v
}

fn main() {
    std::panic::set_hook({
        let default = std::panic::take_hook();
        Box::new(move |info| {
            default(info);
            std::process::abort();
        })
    });
    // Files or folders named on the command line (`-- PATH…`), else the seed corpus.
    let mut args: Vec<std::path::PathBuf> = std::env::args_os()
        .skip(1)
        .filter(|a| !a.to_string_lossy().starts_with('-'))
        .map(Into::into)
        .collect();
    if args.is_empty() {
        args.push(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/preauth").into());
    }
    let mut files = Vec::new();
    for a in &args {
        if a.is_dir() {
            let mut v: Vec<_> = std::fs::read_dir(a)
                .unwrap_or_else(|e| panic!("{}: {e}", a.display()))
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            v.sort();
            files.extend(v);
        } else {
            files.push(a.clone());
        }
    }
    let corpus: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!corpus.is_empty(), "no inputs in {args:?}");
    let crash = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/artifacts/preauth-replay-crash"
    );
    let run = |data: &[u8]| {
        let _ = std::fs::create_dir_all(std::path::Path::new(crash).parent().unwrap());
        let _ = std::fs::write(crash, data);
        harness::run_one(data);
    };
    let t = Instant::now();
    for (p, data) in files.iter().zip(&corpus) {
        let one = Instant::now();
        run(data);
        println!("{}: ok ({} ms)", p.display(), one.elapsed().as_millis());
    }
    println!(
        "corpus: {} inputs in {} ms",
        corpus.len(),
        t.elapsed().as_millis()
    );
    let secs: u64 = std::env::var("PREAUTH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("PREAUTH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Rng(seed | 1);
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < Duration::from_secs(secs) {
        let input = mutate(&mut rng, &corpus);
        run(&input);
        n += 1;
    }
    let _ = std::fs::remove_file(crash);
    println!(
        "mutations: {n} inputs in {:.1} s ({:.0}/s), no violation",
        t.elapsed().as_secs_f64(),
        n as f64 / t.elapsed().as_secs_f64().max(1e-9)
    );
}
