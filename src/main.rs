//! The `dealer` command: run the proxy, check a config, or ask where names go.
//! Thin on purpose: everything a test needs lives in the library.

#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dealer::snapshot::Snapshot;

#[derive(Parser)]
#[command(
    name = "dealer",
    version,
    about = "XMPP-aware load-balancing proxy",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Run the proxy in the foreground with this configuration.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration: exit 0, or print every problem and exit 1.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print `NAME<TAB>BACKEND` for each name (read from stdin when none are given).
    Route {
        #[arg(long, short)]
        config: PathBuf,
        /// Add why: the range row, or the hash slot and its ranking.
        #[arg(long)]
        explain: bool,
        names: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Route {
            config,
            explain,
            names,
        }) => route(&config, explain, names),
        None => match cli.config {
            Some(config) => match run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dealer: {e:#}");
                    ExitCode::FAILURE
                }
            },
            None => {
                eprintln!("dealer: give --config FILE (or see dealer --help)");
                ExitCode::from(2)
            }
        },
    }
}

fn load(path: &Path) -> Result<Snapshot, ExitCode> {
    Snapshot::load(path, 1, &dealer::snapshot::HealthRegistry::default()).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{}: {e}", path.display());
        }
        ExitCode::FAILURE
    })
}

fn check(path: &Path) -> ExitCode {
    let snap = match load(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let c = &snap.config;
    for w in &c.warnings {
        eprintln!("{}: warning: {w}", path.display());
    }
    let (_, hard) = dealer::fdlimit::nofile();
    if let Some(w) = dealer::fdlimit::check(c.limits.max_connections, hard) {
        eprintln!("{}: warning: {w}", path.display());
    }
    println!(
        "{}: ok ({} backends, strategy {:?}, c2s mode {:?}, domains {:?})",
        path.display(),
        c.backends.len(),
        c.routing.strategy,
        c.c2s.mode,
        c.domains
    );
    for h in &c.hosts {
        println!(
            "{}: host {}: ok ({} backends, strategy {:?}, domains {:?})",
            path.display(),
            h.domain,
            h.backends.len(),
            h.routing.strategy,
            h.domains
        );
    }
    ExitCode::SUCCESS
}

fn route(path: &Path, explain: bool, names: Vec<String>) -> ExitCode {
    let snap = match load(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failed = false;
    let mut one = |name: &str| {
        let line = match snap.route_line(name, explain) {
            Ok(l) => l,
            Err(l) => {
                failed = true;
                l
            }
        };
        // A closed stdout (`| head`) is not an error worth reporting.
        let _ = out.write_all(line.as_bytes());
    };
    if names.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let name = line.trim();
            if !name.is_empty() {
                one(name);
            }
        }
    } else {
        for n in &names {
            one(n);
        }
    }
    let _ = out.flush();
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    dealer::logging::init();
    dealer::app::start(path).context("dealer")
}
