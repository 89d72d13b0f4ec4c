//! Cost of one routing decision (normalise + lookup) with 10 and 1,000 backends, for
//! `hash` and `ranges`, and of normalisation alone. Goal: <= 100 ns a decision at
//! 1,000 backends. The `users/262144` variants cycle a quarter of a million names, so
//! the hash table's slots and the names themselves come from memory rather than from a
//! warm cache, as on a server with many users. Run: `cargo bench --bench routing`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use dealer::config::{Config, Normalise};
use dealer::routing::Router;
use dealer::routing::normalise::normalise;

fn hash_config(n: usize) -> String {
    let mut y = String::from("domain: example.com\nrouting: { strategy: hash }\nbackends:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  node{i}: {{ c2s: \"127.0.0.1:{}\", weight: {} }}\n",
            10000 + i,
            1 + i % 3
        ));
    }
    y
}

/// `n` rows splitting three-letter prefixes evenly.
fn ranges_config(n: usize) -> String {
    let code = |k: usize| -> String {
        let b = [
            b'a' + (k / 676) as u8,
            b'a' + (k / 26 % 26) as u8,
            b'a' + (k % 26) as u8,
        ];
        String::from_utf8(b.to_vec()).unwrap()
    };
    let step = 17576 / n;
    let mut y = String::from(
        "domain: example.com\nrouting:\n  strategy: ranges\n  default: node0\n  ranges:\n",
    );
    for i in 0..n {
        y.push_str(&format!(
            "    - {{ from: {}, to: {}, backend: node{i} }}\n",
            code(i * step),
            code(i * step + step - 1)
        ));
    }
    y.push_str("backends:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  node{i}: {{ c2s: \"127.0.0.1:{}\" }}\n",
            10000 + i
        ));
    }
    y
}

/// `n` distinct names (a power of two, for the benches' index mask).
fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("user{}x{}", i * 7919 % 10007, i))
        .collect()
}

fn decisions(c: &mut Criterion) {
    let few = names(1024);
    let many = names(262_144);
    for (label, yaml, names) in [
        ("hash/10", hash_config(10), &few),
        ("hash/1000", hash_config(1000), &few),
        ("hash/1000/users/262144", hash_config(1000), &many),
        ("ranges/10", ranges_config(10), &few),
        ("ranges/1000", ranges_config(1000), &few),
        ("ranges/1000/users/262144", ranges_config(1000), &many),
    ] {
        let config = Config::from_yaml(&yaml, Path::new(".")).expect("bench config is valid");
        let router = Router::new(&config.routing_spec());
        let mask = names.len() - 1;
        let mut i = 0;
        c.bench_function(&format!("route/{label}"), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                black_box(router.route(black_box(&names[i])).expect("routable"))
            })
        });
    }
}

fn normalisation(c: &mut Criterion) {
    for (label, how, name) in [
        ("nodeprep/ascii-lower", Normalise::Nodeprep, "alice.smith42"),
        ("nodeprep/ascii-mixed", Normalise::Nodeprep, "Alice.Smith42"),
        ("nodeprep/non-ascii", Normalise::Nodeprep, "Straße-Ärger"),
        ("precis/ascii-lower", Normalise::Precis, "alice.smith42"),
        ("precis/non-ascii", Normalise::Precis, "Straße-Ärger"),
    ] {
        c.bench_function(&format!("normalise/{label}"), |b| {
            b.iter(|| black_box(normalise(how, black_box(name)).expect("valid")))
        });
    }
}

fn table_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    for n in [10, 1000] {
        let config = Config::from_yaml(&hash_config(n), Path::new(".")).expect("valid");
        g.bench_function(format!("hash/{n}"), |b| {
            b.iter(|| black_box(Router::new(&config.routing_spec())))
        });
    }
    g.finish();
}

criterion_group!(benches, decisions, normalisation, table_build);
criterion_main!(benches);
