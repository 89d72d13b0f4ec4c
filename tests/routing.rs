//! Routing properties that must hold for operators to trust dealer: golden vectors that
//! pin the hash and the normalisers, balance by weight, minimal disruption when the
//! backend set changes, and the range table's boundary rule.

use std::path::Path;

use dealer::config::Config;
use dealer::routing::Router;

const NAMES: usize = 1_000_000;

fn data(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/golden")
        .join(file)
}

fn router_from_file(file: &str) -> Router {
    Router::new(
        &Config::load(&data(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .routing_spec(),
    )
}

fn router_from_yaml(yaml: &str) -> (Config, Router) {
    let c = Config::from_yaml(yaml, Path::new(".")).expect("valid test config");
    let r = Router::new(&c.routing_spec());
    (c, r)
}

fn hash_config(weights: &[(&str, u32)]) -> String {
    let mut y = String::from("domain: example.com\nrouting: { strategy: hash }\nbackends:\n");
    for (i, (name, w)) in weights.iter().enumerate() {
        y.push_str(&format!(
            "  {name}: {{ c2s: \"127.0.0.1:{}\", weight: {w} }}\n",
            10000 + i
        ));
    }
    y
}

/// Backend name for each of `n` generated names.
fn assign(c: &Config, r: &Router, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let d = r.route(&format!("user{i}")).expect("ascii names route");
            c.backends[d.backend].name.clone()
        })
        .collect()
}

#[test]
fn golden_vectors() {
    let routers = [
        router_from_file("hash.yaml"),
        router_from_file("hash-precis.yaml"),
        router_from_file("ranges.yaml"),
    ];
    let text = std::fs::read_to_string(data("golden.tsv")).unwrap();
    let mut checked = 0;
    let mut non_ascii = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "bad golden line {line:?}");
        let name = cols[0];
        for (router, want) in routers.iter().zip(&cols[1..]) {
            let got = match router.route(name) {
                Ok(d) => router.backend_name(d.backend).to_string(),
                Err(_) => "-".to_string(),
            };
            assert_eq!(&got, want, "{name:?}: the routing function changed");
        }
        checked += 1;
        non_ascii += usize::from(!name.is_ascii());
    }
    assert_eq!(checked, 1000);
    assert!(
        non_ascii >= 300,
        "the golden list must exercise non-ASCII names"
    );
}

#[test]
fn balance_by_weight() {
    let weights = [("b1", 1), ("b2", 1), ("b3", 1), ("b4", 2), ("b5", 3)];
    let (c, r) = router_from_yaml(&hash_config(&weights));
    let total: u32 = weights.iter().map(|w| w.1).sum();
    let got = assign(&c, &r, NAMES);
    for (name, w) in weights {
        let share = got.iter().filter(|b| *b == name).count() as f64 / NAMES as f64;
        let want = w as f64 / total as f64;
        let rel = (share - want).abs() / want;
        assert!(
            rel <= 0.03,
            "{name}: share {share:.4}, weight share {want:.4} ({:.2}% off)",
            rel * 100.0
        );
    }
}

#[test]
fn adding_a_backend_moves_only_its_share_to_it() {
    let before = [("b1", 1), ("b2", 1), ("b3", 1), ("b4", 2), ("b5", 3)];
    let mut after = before.to_vec();
    after.push(("b6", 1));
    let (c1, r1) = router_from_yaml(&hash_config(&before));
    let (c2, r2) = router_from_yaml(&hash_config(&after));
    let a = assign(&c1, &r1, NAMES);
    let b = assign(&c2, &r2, NAMES);
    let mut moved = 0;
    for (x, y) in a.iter().zip(&b) {
        if x != y {
            assert_eq!(
                y, "b6",
                "a name moved from {x} to {y}, not to the new backend"
            );
            moved += 1;
        }
    }
    let expected = NAMES as f64 / 9.0;
    let ratio = moved as f64 / expected;
    assert!(
        (0.8..=1.2).contains(&ratio),
        "moved {moved}, expected about {expected:.0} (ratio {ratio:.3})"
    );
}

#[test]
fn removing_a_backend_moves_only_its_names() {
    let before = [("b1", 1), ("b2", 1), ("b3", 1), ("b4", 2), ("b5", 3)];
    let after: Vec<_> = before.iter().copied().filter(|b| b.0 != "b4").collect();
    let (c1, r1) = router_from_yaml(&hash_config(&before));
    let (c2, r2) = router_from_yaml(&hash_config(&after));
    let a = assign(&c1, &r1, NAMES);
    let b = assign(&c2, &r2, NAMES);
    let mut moved = 0;
    for (x, y) in a.iter().zip(&b) {
        if x != y {
            assert_eq!(x, "b4", "a name of {x} moved although {x} stayed");
            moved += 1;
        } else {
            assert_ne!(x, "b4");
        }
    }
    assert!(moved > NAMES / 5, "b4 held about 2/8 of the names");
}

#[test]
fn down_backend_falls_through_to_the_next_hash_choice() {
    let weights = [("b1", 1), ("b2", 1), ("b3", 1)];
    let (c, r) = router_from_yaml(&hash_config(&weights));
    let down = c.backend_id("b2").unwrap();
    for i in 0..10_000 {
        let name = format!("user{i}");
        let all = r.route(&name).unwrap();
        let some = r.route_with(&name, |id| id != down).unwrap();
        if all.backend != down {
            assert_eq!(
                all.backend, some.backend,
                "{name} moved though its owner is up"
            );
        } else {
            assert_ne!(some.backend, down);
        }
    }
}

#[test]
fn ranges_boundaries_case_folding_and_default() {
    let yaml = r#"
domain: example.com
routing:
  strategy: ranges
  ranges:
    - { from: a, to: g, backend: node1 }
    - { from: h, to: l, backend: node2 }
    - { from: m, to: z, backend: node3 }
  default: node4
backends:
  node1: { c2s: "127.0.0.1:1" }
  node2: { c2s: "127.0.0.1:2" }
  node3: { c2s: "127.0.0.1:3" }
  node4: { c2s: "127.0.0.1:4" }
"#;
    let (c, r) = router_from_yaml(yaml);
    let cases = [
        ("alice", "node1"),
        ("Alice", "node1"),
        ("gus", "node1"),
        ("GZZZ", "node1"),
        ("g", "node1"),
        ("h", "node2"),
        ("Heidi", "node2"),
        ("lzzzz", "node2"),
        ("m", "node3"),
        ("Zoe", "node3"),
        ("zzzz", "node3"),
        ("0day", "node4"),
        ("_x", "node4"),
        ("日本語", "node4"),
        ("Ärger", "node4"),
        ("Ｈｅｉｄｉ", "node2"), // fullwidth folds to heidi under nodeprep
    ];
    for (name, want) in cases {
        let d = r.route(name).unwrap();
        assert_eq!(c.backends[d.backend].name, want, "{name}");
    }
    // Straße and strasse are one account under nodeprep, and land together.
    assert_eq!(r.route("Straße").unwrap(), r.route("strasse").unwrap());
}

#[test]
fn precis_keeps_sharp_s_distinct() {
    let yaml = r#"
domain: example.com
routing:
  strategy: ranges
  normalise: precis
  ranges:
    - { from: "strasse", to: "strasse", backend: node1 }
    - { from: "straße", to: "straße", backend: node2 }
  default: node3
backends:
  node1: { c2s: "127.0.0.1:1" }
  node2: { c2s: "127.0.0.1:2" }
  node3: { c2s: "127.0.0.1:3" }
"#;
    let (c, r) = router_from_yaml(yaml);
    let name = |n: &str| c.backends[r.route(n).unwrap().backend].name.clone();
    assert_eq!(name("STRASSE"), "node1");
    assert_eq!(name("Straße"), "node2");
}
