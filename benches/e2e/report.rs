//! The results of a run, per relay, and the table of ratios: one markdown table per
//! family, dealer beside each HAProxy variant, with the goals judged against
//! the best HAProxy of the family (the lowest CPU, latency or memory).

use super::Family;
use super::load::{Counted, Idle};

/// Everything measured for one relay over all rounds.
#[derive(Default)]
pub struct Results {
    pub login: Counted,
    pub stanzas: Counted,
    /// Round-trip times (ns), all rounds pooled.
    pub rtt: Vec<u64>,
    pub rtt_pinned: Vec<u64>,
    pub latency: Counted,
    pub idle: Idle,
}

impl Results {
    pub fn logins_per_sec(&self) -> Option<f64> {
        rate(self.login.count, self.login.secs)
    }

    pub fn cpu_per_login_us(&self) -> Option<f64> {
        per(self.login.cpu, self.login.count).map(|s| s * 1e6)
    }

    pub fn stanzas_per_sec(&self) -> Option<f64> {
        rate(self.stanzas.count, self.stanzas.secs)
    }

    pub fn mb_per_sec(&self) -> Option<f64> {
        self.stanzas_per_sec()
            .map(|r| r * super::client::STANZA_BYTES as f64 / 1e6)
    }

    pub fn cpu_per_stanza_ns(&self) -> Option<f64> {
        per(self.stanzas.cpu, self.stanzas.count).map(|s| s * 1e9)
    }

    pub fn errors(&self) -> u64 {
        self.login.errors + self.stanzas.errors + self.latency.errors + self.idle.errors
    }

    pub fn first_error(&self) -> Option<&str> {
        [
            &self.login.first_error,
            &self.stanzas.first_error,
            &self.latency.first_error,
            &self.idle.first_error,
        ]
        .into_iter()
        .find_map(|e| e.as_deref())
    }
}

fn rate(count: u64, secs: f64) -> Option<f64> {
    (count > 0 && secs > 0.0).then(|| count as f64 / secs)
}

fn per(cpu: f64, count: u64) -> Option<f64> {
    (count > 0).then(|| cpu / count as f64)
}

/// The `q` quantile (0..1) of `v` in microseconds.
pub fn quantile_us(v: &[u64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let i = ((q * s.len() as f64) as usize).min(s.len() - 1);
    Some(s[i] as f64 / 1e3)
}

/// What the issue asks of a figure.
#[derive(Clone, Copy)]
enum Goal {
    None,
    /// dealer ≤ k × the best (lowest) HAProxy of the family.
    AtMost(f64),
    /// dealer ≤ an absolute value.
    Below(f64, &'static str),
}

type Figure = fn(&Results) -> Option<f64>;

fn rows(family: Family) -> Vec<(&'static str, Figure, Goal)> {
    let plain = family == Family::Plain;
    vec![
        ("logins/s", Results::logins_per_sec, Goal::None),
        (
            "relay CPU per login, µs",
            Results::cpu_per_login_us,
            if plain { Goal::AtMost(1.1) } else { Goal::None },
        ),
        ("stanzas/s relayed", Results::stanzas_per_sec, Goal::None),
        ("MB/s relayed", Results::mb_per_sec, Goal::None),
        (
            "relay CPU per stanza, ns",
            Results::cpu_per_stanza_ns,
            Goal::AtMost(1.0),
        ),
        (
            "round trip p50, µs",
            |r| quantile_us(&r.rtt, 0.50),
            Goal::None,
        ),
        (
            "round trip p99, µs",
            |r| quantile_us(&r.rtt, 0.99),
            Goal::AtMost(1.0),
        ),
        (
            "round trip p50, one CPU, µs",
            |r| quantile_us(&r.rtt_pinned, 0.50),
            Goal::None,
        ),
        (
            "round trip p99, one CPU, µs",
            |r| quantile_us(&r.rtt_pinned, 0.99),
            Goal::AtMost(1.0),
        ),
        (
            "RSS per idle connection, KiB",
            |r| r.idle.per_session_kib(),
            if plain {
                Goal::AtMost(1.0)
            } else {
                Goal::Below(32.0, "32 KiB")
            },
        ),
    ]
}

fn num(x: Option<f64>) -> String {
    match x {
        None => "—".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

/// One markdown table: the first column is dealer, the others HAProxy variants. Goals
/// are judged only when `judge` (a full run).
pub fn table(family: Family, cols: &[(&str, &Results)], judge: bool) -> String {
    let (dealer, others) = cols.split_first().expect("dealer and at least one HAProxy");
    let mut out = String::new();
    out.push_str(&format!(
        "| {} | {} |",
        match family {
            Family::Plain => "plaintext clients",
            Family::Tls => "TLS clients",
        },
        cols.iter().map(|c| c.0).collect::<Vec<_>>().join(" | ")
    ));
    for o in others {
        out.push_str(&format!(" {} ÷ {} |", dealer.0, o.0));
    }
    out.push_str(" goal |\n|---|");
    for _ in 0..cols.len() + others.len() {
        out.push_str("---:|");
    }
    out.push_str("---|\n");
    for (name, f, goal) in rows(family) {
        let d = f(dealer.1);
        out.push_str(&format!("| {name} |"));
        for c in cols {
            out.push_str(&format!(" {} |", num(f(c.1))));
        }
        for o in others {
            let ratio = d.zip(f(o.1)).map(|(a, b)| a / b);
            out.push_str(&format!(
                " {} |",
                ratio.map_or("—".into(), |r| format!("{r:.2}×"))
            ));
        }
        let best = others
            .iter()
            .filter_map(|o| f(o.1))
            .min_by(|a, b| a.total_cmp(b));
        let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
        let g = match goal {
            _ if !judge => "(smoke)".to_owned(),
            Goal::None => "—".to_owned(),
            Goal::AtMost(k) => match d.zip(best) {
                Some((d, b)) => {
                    let bound = if k == 1.0 {
                        "≤ best HAProxy".to_owned()
                    } else {
                        format!("≤ {k}× best HAProxy")
                    };
                    format!("{bound}: {}", verdict(d <= k * b))
                }
                None => "not measured".into(),
            },
            Goal::Below(v, text) => match d {
                Some(d) => format!("≤ {text}: {}", verdict(d <= v)),
                None => "not measured".into(),
            },
        };
        out.push_str(&format!(" {g} |\n"));
    }
    out
}

/// Where the CPU went while stanzas flowed: relay, sink and load generator, each as a
/// share of one CPU over the phase.
pub fn cpu_shares(cols: &[(&str, &Results)]) -> String {
    cols.iter()
        .filter(|c| c.1.stanzas.secs > 0.0)
        .map(|(name, r)| {
            let s = &r.stanzas;
            format!(
                "{name}: relay {:.0}%, sink {:.0}%, load generator {:.0}%",
                100.0 * s.cpu / s.secs,
                100.0 * s.sink_cpu / s.secs,
                100.0 * s.gen_cpu / s.secs
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
