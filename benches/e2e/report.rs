//! The results of a run, per relay and round, and the table of ratios: one markdown
//! table per family, dealer beside each HAProxy variant. A relay's cell is the median
//! of its per-round figures; a ratio cell is the median of the per-round ratios, with
//! their spread (min–max) over the rounds. Goals are judged on the median ratio of
//! dealer to the best HAProxy of the family in each round (the highest rate, the
//! lowest CPU, latency or memory). With `--baseline`, an A/B table per family sets
//! dealer beside another build of it, never judged. Also `Log`, where every line the
//! bench prints goes.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::Family;
use super::load::{Counted, Idle};

/// Where the bench's lines go: stderr (progress) or stdout (the report), and in a full
/// run also a results file.
pub struct Log {
    file: Option<(File, PathBuf)>,
}

impl Log {
    /// Lines go to the terminal only, or also to `path` (created afresh).
    pub fn new(path: Option<PathBuf>) -> Log {
        Log {
            file: path.map(|p| {
                let f = File::create(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                (f, p)
            }),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(_, p)| p.as_path())
    }

    /// A progress line: stderr, and the file.
    pub fn line(&self, text: impl AsRef<str>) {
        eprintln!("{}", text.as_ref());
        self.append(text.as_ref());
    }

    /// A line of the report: stdout, and the file.
    pub fn out(&self, text: impl AsRef<str>) {
        println!("{}", text.as_ref());
        self.append(text.as_ref());
    }

    fn append(&self, text: &str) {
        if let Some((mut f, p)) = self.file.as_ref().map(|(f, p)| (f, p)) {
            writeln!(f, "{text}").unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}

/// What one relay did in one round.
#[derive(Default)]
pub struct Round {
    /// Logins `login_conc` at a time (TLS clients: full handshakes).
    pub login: Counted,
    /// Plaintext logins `login_conc_high` at a time.
    pub login_high: Counted,
    /// TLS logins whose clients keep tickets and offer one on reconnecting.
    pub resumed: Counted,
    /// One login at a time: each one's time (ns), free and pinned to one CPU.
    pub login_times: Vec<u64>,
    pub login_times_pinned: Vec<u64>,
    pub login_latency: Counted,
    pub stanzas: Counted,
    /// Round-trip times (ns), free and pinned to one CPU.
    pub rtt: Vec<u64>,
    pub rtt_pinned: Vec<u64>,
    pub latency: Counted,
}

/// Everything measured for one relay: a `Round` per round, and idle memory (measured
/// once, before the rounds).
#[derive(Default)]
pub struct Results {
    pub rounds: Vec<Round>,
    pub idle: Idle,
}

impl Results {
    /// The round being measured.
    pub fn round(&mut self) -> &mut Round {
        self.rounds.last_mut().expect("a round started")
    }

    fn counted(&self) -> impl Iterator<Item = &Counted> {
        self.rounds.iter().flat_map(|r| {
            [
                &r.login,
                &r.login_high,
                &r.resumed,
                &r.login_latency,
                &r.stanzas,
                &r.latency,
            ]
        })
    }

    pub fn errors(&self) -> u64 {
        self.counted().map(|c| c.errors).sum::<u64>() + self.idle.errors
    }

    pub fn first_error(&self) -> Option<&str> {
        self.counted()
            .find_map(|c| c.first_error.as_deref())
            .or(self.idle.first_error.as_deref())
    }

    /// The stanza phases of all rounds together.
    fn stanzas(&self) -> Counted {
        let mut all = Counted::default();
        for r in &self.rounds {
            all.add(&r.stanzas);
        }
        all
    }
}

fn rate(c: &Counted) -> Option<f64> {
    (c.count > 0 && c.secs > 0.0).then(|| c.count as f64 / c.secs)
}

/// CPU per counted item, in `unit`s of a second (1e6: µs).
fn cpu_per(c: &Counted, unit: f64) -> Option<f64> {
    (c.count > 0).then(|| c.cpu / c.count as f64 * unit)
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

/// The median of the figures that were measured.
fn median_of(v: &[Option<f64>]) -> Option<f64> {
    median(&v.iter().copied().flatten().collect::<Vec<_>>())
}

/// The median of `v` (the mean of the middle two for an even count).
fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

/// A figure of a round, or of the whole run (idle memory).
#[derive(Clone, Copy)]
enum Fig {
    Round(fn(&Round) -> Option<f64>),
    Once(fn(&Results) -> Option<f64>),
}

impl Fig {
    /// The figure per round (one value for `Once`).
    fn values(self, r: &Results) -> Vec<Option<f64>> {
        match self {
            Fig::Round(f) => r.rounds.iter().map(f).collect(),
            Fig::Once(f) => vec![f(r)],
        }
    }
}

/// Which way is better: the best HAProxy is the highest rate, the lowest cost.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

/// What the issue asks of a figure.
#[derive(Clone, Copy)]
enum Goal {
    None,
    /// dealer ÷ the best HAProxy of the family ≥ k (rates) or ≤ k (costs).
    Ratio(f64),
    /// dealer ≤ an absolute value.
    Below(f64, &'static str),
}

struct Row {
    name: String,
    fig: Fig,
    better: Better,
    goal: Goal,
    /// Whether dealer ÷ HAProxy means anything (not for a share).
    ratios: bool,
}

fn row(name: impl Into<String>, fig: Fig, better: Better, goal: Goal) -> Row {
    Row {
        name: name.into(),
        fig,
        better,
        goal,
        ratios: true,
    }
}

/// The login concurrencies of the plan, for the row names.
pub struct Conc {
    pub low: usize,
    pub high: usize,
}

fn rows(family: Family, conc: &Conc) -> Vec<Row> {
    use Better::{Higher, Lower};
    let plain = family == Family::Plain;
    let mut v = Vec::new();
    if plain {
        v.extend([
            row(
                format!("logins/s, {} at a time", conc.low),
                Fig::Round(|r| rate(&r.login)),
                Higher,
                Goal::Ratio(1.0),
            ),
            row(
                format!("relay CPU per login, µs, {} at a time", conc.low),
                Fig::Round(|r| cpu_per(&r.login, 1e6)),
                Lower,
                Goal::Ratio(1.0),
            ),
            row(
                format!("logins/s, {} at a time", conc.high),
                Fig::Round(|r| rate(&r.login_high)),
                Higher,
                Goal::Ratio(1.0),
            ),
            row(
                format!("relay CPU per login, µs, {} at a time", conc.high),
                Fig::Round(|r| cpu_per(&r.login_high, 1e6)),
                Lower,
                Goal::Ratio(1.0),
            ),
        ]);
    } else {
        v.extend([
            row(
                "TLS logins/s, full handshakes",
                Fig::Round(|r| rate(&r.login)),
                Higher,
                Goal::None,
            ),
            row(
                "relay CPU per login, µs, full handshakes",
                Fig::Round(|r| cpu_per(&r.login, 1e6)),
                Lower,
                Goal::Ratio(1.0),
            ),
            row(
                "TLS logins/s, resumed",
                Fig::Round(|r| rate(&r.resumed)),
                Higher,
                Goal::None,
            ),
            row(
                "relay CPU per login, µs, resumed",
                Fig::Round(|r| cpu_per(&r.resumed, 1e6)),
                Lower,
                Goal::None,
            ),
            Row {
                ratios: false,
                ..row(
                    "handshakes that resumed, %",
                    Fig::Round(|r| {
                        (r.resumed.count > 0)
                            .then(|| 100.0 * r.resumed.resumed as f64 / r.resumed.count as f64)
                    }),
                    Higher,
                    Goal::None,
                )
            },
        ]);
    }
    v.extend([
        row(
            "login p50 (one at a time), µs",
            Fig::Round(|r| quantile_us(&r.login_times, 0.50)),
            Lower,
            Goal::Ratio(1.0),
        ),
        row(
            "login p99 (one at a time), µs",
            Fig::Round(|r| quantile_us(&r.login_times, 0.99)),
            Lower,
            Goal::Ratio(1.0),
        ),
        row(
            "login p50 (one at a time), one CPU, µs",
            Fig::Round(|r| quantile_us(&r.login_times_pinned, 0.50)),
            Lower,
            Goal::Ratio(1.0),
        ),
        row(
            "login p99 (one at a time), one CPU, µs",
            Fig::Round(|r| quantile_us(&r.login_times_pinned, 0.99)),
            Lower,
            Goal::Ratio(1.0),
        ),
        row(
            "stanzas/s relayed",
            Fig::Round(|r| rate(&r.stanzas)),
            Higher,
            Goal::None,
        ),
        row(
            "MB/s relayed",
            Fig::Round(|r| rate(&r.stanzas).map(|s| s * super::client::STANZA_BYTES as f64 / 1e6)),
            Higher,
            Goal::None,
        ),
        row(
            "relay CPU per stanza, ns",
            Fig::Round(|r| cpu_per(&r.stanzas, 1e9)),
            Lower,
            Goal::Ratio(1.0),
        ),
        row(
            "round trip p50, µs",
            Fig::Round(|r| quantile_us(&r.rtt, 0.50)),
            Lower,
            Goal::None,
        ),
        row(
            "round trip p99, µs",
            Fig::Round(|r| quantile_us(&r.rtt, 0.99)),
            Lower,
            Goal::Ratio(1.0),
        ),
        row(
            "round trip p50, one CPU, µs",
            Fig::Round(|r| quantile_us(&r.rtt_pinned, 0.50)),
            Lower,
            Goal::None,
        ),
        row(
            "round trip p99, one CPU, µs",
            Fig::Round(|r| quantile_us(&r.rtt_pinned, 0.99)),
            Lower,
            Goal::Ratio(1.0),
        ),
        row(
            "RSS per idle connection, KiB",
            Fig::Once(|r| r.idle.per_session_kib()),
            Lower,
            if plain {
                Goal::Ratio(1.0)
            } else {
                Goal::Below(32.0, "32 KiB")
            },
        ),
    ]);
    v
}

fn num(x: Option<f64>) -> String {
    match x {
        None => "—".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

/// Ratios over rounds: their median, min and max.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

impl Spread {
    fn of(v: &[f64]) -> Option<Spread> {
        Some(Spread {
            median: median(v)?,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: v.len(),
        })
    }

    fn text(&self) -> String {
        if self.n > 1 {
            format!("{:.2}× ({:.2}–{:.2})", self.median, self.min, self.max)
        } else {
            format!("{:.2}×", self.median)
        }
    }
}

/// dealer's figure ÷ another's, round by round (rounds where both were measured).
fn ratios(d: &[Option<f64>], o: &[Option<f64>]) -> Vec<f64> {
    d.iter()
        .zip(o)
        .filter_map(|(d, o)| Some(d.as_ref()? / o.as_ref()?))
        .collect()
}

/// The reference relay's column (`e2e/pump.rs`): dealer's byte relay with no XMPP in
/// front. Shown with its ratio, never one of the HAProxies goals are judged against.
pub const REFERENCE: &str = "relay only";

/// The column of the other build of dealer (`--baseline`): compared with dealer alone,
/// in the A/B table, never in the table of ratios nor among the HAProxies.
pub const BASELINE: &str = "dealer baseline";

fn family_name(family: Family) -> &'static str {
    match family {
        Family::Plain => "plaintext clients",
        Family::Tls => "TLS clients",
    }
}

/// One markdown table (the first column is dealer, the others HAProxy variants and the
/// reference relay) and, when `judge` (a full run), a line per goal for the summary.
pub fn table(
    family: Family,
    cols: &[(&str, &Results)],
    conc: &Conc,
    judge: bool,
) -> (String, Vec<String>) {
    let (dealer, others) = cols.split_first().expect("dealer and at least one HAProxy");
    let family_name = family_name(family);
    let judged = |o: &&(&str, &Results)| o.0 != REFERENCE;
    let best_col = others.iter().filter(judged).count() > 1;
    let mut out = format!(
        "| {family_name} | {} |",
        cols.iter().map(|c| c.0).collect::<Vec<_>>().join(" | ")
    );
    for o in others {
        out.push_str(&format!(" {} ÷ {} |", dealer.0, o.0));
    }
    if best_col {
        out.push_str(&format!(" {} ÷ best HAProxy |", dealer.0));
    }
    out.push_str(" goal |\n|---|");
    for _ in 0..cols.len() + others.len() + usize::from(best_col) {
        out.push_str("---:|");
    }
    out.push_str("---|\n");
    let mut verdicts = Vec::new();
    for row in rows(family, conc) {
        let d = row.fig.values(dealer.1);
        let o: Vec<Vec<Option<f64>>> = others.iter().map(|o| row.fig.values(o.1)).collect();
        let haproxies: Vec<&Vec<Option<f64>>> = others
            .iter()
            .zip(&o)
            .filter(|(c, _)| judged(c))
            .map(|(_, v)| v)
            .collect();
        out.push_str(&format!("| {} |", row.name));
        for c in cols {
            out.push_str(&format!(" {} |", num(median_of(&row.fig.values(c.1)))));
        }
        let dash = |s: Option<&Spread>| s.map_or("—".to_owned(), Spread::text);
        for o in &o {
            let s = row.ratios.then(|| Spread::of(&ratios(&d, o))).flatten();
            out.push_str(&format!(" {} |", dash(s.as_ref())));
        }
        // The best HAProxy of each round.
        let best: Vec<Option<f64>> = (0..d.len())
            .map(|i| {
                let each = haproxies.iter().filter_map(|o| o.get(i).copied().flatten());
                match row.better {
                    Better::Higher => each.max_by(f64::total_cmp),
                    Better::Lower => each.min_by(f64::total_cmp),
                }
            })
            .collect();
        let vs_best = row.ratios.then(|| Spread::of(&ratios(&d, &best))).flatten();
        if best_col {
            out.push_str(&format!(" {} |", dash(vs_best.as_ref())));
        }
        let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
        let (cell, summary) = match row.goal {
            _ if !judge => ("(smoke)".to_owned(), None),
            Goal::None => ("—".to_owned(), None),
            Goal::Ratio(k) => {
                let bound = match row.better {
                    Better::Higher => format!("≥ {k:.1}× best HAProxy"),
                    Better::Lower => format!("≤ {k:.1}× best HAProxy"),
                };
                match &vs_best {
                    Some(s) => {
                        let ok = match row.better {
                            Better::Higher => s.median >= k,
                            Better::Lower => s.median <= k,
                        };
                        let cell = format!("{bound}: {}", verdict(ok));
                        let over = match row.fig {
                            Fig::Once(_) => "measured once".to_owned(),
                            Fig::Round(_) => format!("median (min–max) of {} rounds", s.n),
                        };
                        let line = format!(
                            "{family_name}, {}: dealer ÷ best HAProxy {} ({over}); {cell}",
                            row.name,
                            s.text(),
                        );
                        (cell, Some(line))
                    }
                    None => (format!("{bound}: not measured"), None),
                }
            }
            Goal::Below(v, text) => match median_of(&d) {
                Some(m) => {
                    let cell = format!("≤ {text}: {}", verdict(m <= v));
                    let line = format!(
                        "{family_name}, {}: dealer {}; {cell}",
                        row.name,
                        num(Some(m))
                    );
                    (cell, Some(line))
                }
                None => (format!("≤ {text}: not measured"), None),
            },
        };
        out.push_str(&format!(" {cell} |\n"));
        verdicts.extend(summary);
    }
    (out, verdicts)
}

/// The A/B table of a family: each figure of dealer and of the baseline (their
/// medians over the rounds), and dealer ÷ the baseline, the median of the per-round
/// ratios (min–max). No goal: two builds are compared with each other, and goals are
/// judged against HAProxy in `table` alone.
pub fn ab_table(family: Family, dealer: &Results, baseline: &Results, conc: &Conc) -> String {
    let mut out = format!(
        "| A/B, {} | dealer | {BASELINE} | dealer ÷ {BASELINE} |\n|---|---:|---:|---:|\n",
        family_name(family)
    );
    for row in rows(family, conc) {
        let (d, b) = (row.fig.values(dealer), row.fig.values(baseline));
        let s = row.ratios.then(|| Spread::of(&ratios(&d, &b))).flatten();
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            row.name,
            num(median_of(&d)),
            num(median_of(&b)),
            s.as_ref().map_or("—".to_owned(), Spread::text)
        ));
    }
    out
}

/// Where the CPU went while stanzas flowed (all rounds): relay, sink and load
/// generator, each as a share of one CPU over the phase.
pub fn cpu_shares(cols: &[(&str, &Results)]) -> String {
    cols.iter()
        .filter_map(|(name, r)| {
            let s = r.stanzas();
            (s.secs > 0.0).then(|| {
                format!(
                    "{name}: relay {:.0}%, sink {:.0}%, load generator {:.0}%",
                    100.0 * s.cpu / s.secs,
                    100.0 * s.sink_cpu / s.secs,
                    100.0 * s.gen_cpu / s.secs
                )
            })
        })
        .collect::<Vec<_>>()
        .join("; ")
}
