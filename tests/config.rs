//! Every example in `conf/` loads; every file in `tests/data/invalid/` is rejected with
//! a message naming the key its first line (`# expect: …`) says.

use std::path::{Path, PathBuf};

use dealer::config::{C2sMode, Config, Domains, Strategy};
use dealer::snapshot::Snapshot;

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_in_conf_loads() {
    let files = yaml_files("conf");
    assert!(files.len() >= 3, "conf/ holds the examples");
    for f in &files {
        if let Err(e) = Snapshot::load(f, 1, &Default::default()) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn examples_cover_the_three_roles() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let fwd = Config::load(&conf.join("front-forward-hash.yaml")).unwrap();
    assert_eq!(
        (fwd.c2s.mode, fwd.routing.strategy, fwd.self_backend),
        (C2sMode::Forward, Strategy::Hash, None)
    );
    let red = Config::load(&conf.join("front-redirect-ranges.yaml")).unwrap();
    assert_eq!(
        (red.c2s.mode, red.routing.strategy, red.self_backend),
        (C2sMode::Redirect, Strategy::Ranges, None)
    );
    let guard = Config::load(&conf.join("guard.yaml")).unwrap();
    assert_eq!(guard.self_backend, guard.backend_id("node2"));
    assert_eq!(fwd.domains, Domains::Shared);
    let masked = Config::load(&conf.join("masked.yaml")).unwrap();
    assert_eq!(masked.domains, Domains::Masked);
    assert!(!masked.listen.s2s_internal.is_empty());
    let gateway = Config::load(&conf.join("s2s-gateway.yaml")).unwrap();
    assert!(!gateway.listen.s2s.is_empty() && !gateway.listen.s2s_internal.is_empty());
    assert_eq!(gateway.domains, Domains::Shared);
    let hosts = Config::load(&conf.join("domains.yaml")).unwrap();
    assert_eq!(hosts.hosts.len(), 1);
    assert_eq!(hosts.hosts[0].domains, Domains::Masked);
    let services = Config::load(&conf.join("services.yaml")).unwrap();
    assert_eq!(services.services.len(), 1);
    for c in [&fwd, &red, &guard, &masked, &gateway, &services, &hosts] {
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
}

/// A backend that hosts a service is dealt no users, whatever the name, and the
/// certificate check warns about a service domain it does not cover.
#[test]
fn service_backends_are_dealt_no_users() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let snap = Snapshot::load(&conf.join("services.yaml"), 1, &Default::default()).unwrap();
    let muc = snap.config.backend_id("muc").unwrap();
    let mut dealt = [0usize; 3];
    for i in 0..3000 {
        dealt[snap.router.route(&format!("user{i}")).unwrap().backend] += 1;
    }
    assert_eq!(dealt[muc], 0, "{dealt:?}");
    assert!(
        dealt.iter().filter(|&&n| n > 1000).count() == 2,
        "{dealt:?}"
    );
    assert!(
        snap.config.warnings.is_empty(),
        "{:?}",
        snap.config.warnings
    );

    let text = std::fs::read_to_string(conf.join("services.yaml"))
        .unwrap()
        .replace("conference.example.com: {", "chat.other.org: {");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.yaml");
    std::fs::write(&path, text).unwrap();
    for f in ["example.com.crt", "example.com.key"] {
        std::fs::copy(conf.join(f), dir.path().join(f)).unwrap();
    }
    let snap = Snapshot::load(&path, 1, &Default::default()).unwrap();
    assert!(
        snap.config
            .warnings
            .iter()
            .any(|w| w.contains("does not cover the service domain chat.other.org")),
        "{:?}",
        snap.config.warnings
    );
}

#[test]
fn every_invalid_file_is_rejected_naming_its_key() {
    let files = yaml_files("tests/data/invalid");
    assert!(files.len() >= 8);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: …`", f.display()));
        match Config::load(f) {
            Ok(_) => panic!("{}: accepted, expected `{expect}`", f.display()),
            Err(errors) => {
                let all = errors.to_string();
                assert!(
                    errors.0.iter().any(|e| e.to_string().contains(expect)),
                    "{}: expected `{expect}`, got `{all}`",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn validation_collects_every_error() {
    let yaml = r#"
domain: "bad domain@"
c2s: { mode: sideways, mechanisms: [CRAM-MD5] }
routing:
  strategy: ranges
  normalise: lowercase
  ranges:
    - { from: a, to: g, backend: nope }
backends:
  node1: { c2s: "not-an-address", weight: 0 }
limits: { max_depth: 1, handshake_timeout: 0s }
health: { interval: 1s, timeout: 5s }
"#;
    let errors = Config::from_yaml(yaml, Path::new(".")).unwrap_err();
    let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "domain",
        "c2s.mode",
        "c2s.mechanisms[0]",
        "routing.normalise",
        "routing.ranges[0].backend",
        "routing.default",
        "backends.node1.c2s",
        "backends.node1.weight",
        "limits.max_depth",
        "limits.handshake_timeout",
        "health.timeout",
    ] {
        assert!(keys.contains(&key), "missing {key} in {keys:?}");
    }
}

#[test]
fn typed_values() {
    let yaml = r#"
domain: Example.COM
listen:
  c2s: ["[::1]:5222", {addr: "127.0.0.1:5322", starttls: off, proxy_protocol: true}]
  http: "127.0.0.1:9090"
c2s: { mode: redirect, starttls: optional }
routing:
  strategy: ranges
  ranges:
    - { from: H, to: L, backend: b }
    - { from: A, to: G, backend: a }
  default: a
backends:
  b: { c2s: "127.0.0.1:2", redirect: "[::1]:5222" }
  a: { c2s: "127.0.0.1:1", redirect: "xmpp1.example.com:5222", weight: 3 }
limits: { handshake_timeout: 1m, max_connections: 100 }
tls: { cert: conf/example.com.crt, key: conf/example.com.key }
"#;
    let c = Config::from_yaml(yaml, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert_eq!(c.domain, "example.com");
    assert_eq!(c.listen.c2s[0].addr, "[::1]:5222".parse().unwrap());
    assert_eq!(c.listen.c2s[0].starttls, dealer::config::StartTls::Optional);
    assert_eq!(c.listen.c2s[1].starttls, dealer::config::StartTls::Off);
    assert!(c.listen.c2s[1].proxy_protocol);
    // Backends are sorted by name; range bounds are normalised and sorted.
    assert_eq!(c.backends[0].name, "a");
    assert_eq!(c.backends[0].weight, 3);
    assert_eq!(c.routing.ranges[0].from, "a");
    assert_eq!(c.routing.ranges[0].backend, 0);
    assert_eq!(
        c.backends[1].redirect.as_ref().unwrap().to_string(),
        "[::1]:5222"
    );
    assert_eq!(
        c.limits.handshake_timeout,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(
        c.limits.max_connections,
        dealer::config::MaxConnections::Fixed(100)
    );
}

/// A backend's address may be a host name: it is looked up when the config loads, and
/// the system resolver's first answer is the address dealer connects to.
#[test]
fn a_backend_address_may_be_a_host_name() {
    use std::net::ToSocketAddrs;
    let yaml = "domain: example.com\nbackends:\n  node1: { c2s: \"LocalHost:15222\", s2s: \"localhost:15269\" }\n";
    let c = Config::from_yaml(yaml, Path::new(".")).unwrap();
    let first = |port: u16| ("localhost", port).to_socket_addrs().unwrap().next();
    assert_eq!(c.backends[0].c2s, first(15222));
    assert_eq!(c.backends[0].s2s, first(15269));
}
