//! Shared by the e2e and s2s benches (each includes it with `#[path]`): what machine a
//! run is on (the head of its results file), where that file goes, and the CPU time of
//! a process with nanosecond resolution.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Lines describing this machine: CPU model and count, memory, kernel, and the commit
/// the bench was built from.
pub fn describe() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let commit = commit();
    vec![
        format!(
            "machine: {model}, {cpus} CPUs, {:.1} GiB memory",
            mem_kib as f64 / 1048576.0
        ),
        format!("kernel: Linux {}", kernel.trim()),
        format!(
            "dealer: built from commit {} (plus any uncommitted changes)",
            commit.as_deref().unwrap_or("unknown")
        ),
    ]
}

/// The first line a command prints (stdout, or stderr if stdout is empty).
pub fn first_line(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    let text = if o.stdout.is_empty() {
        o.stderr
    } else {
        o.stdout
    };
    let text = String::from_utf8_lossy(&text);
    text.lines().next().map(|l| l.trim().to_owned())
}

/// `benches/results/<bench>-<YYYY-MM-DD>-<commit>.txt` (UTC date; without the commit
/// outside a git checkout), creating the directory.
pub fn results_path(bench: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    // The commit too, so a second run on the same day (of other code) keeps the first.
    match commit() {
        Some(c) => dir.join(format!("{bench}-{}-{c}.txt", today())),
        None => dir.join(format!("{bench}-{}.txt", today())),
    }
}

/// The short hash of the checked-out commit, if this is a git checkout.
fn commit() -> Option<String> {
    first_line(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    )
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = (secs / 86_400) as i64 + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// CPU time process `pid` has used so far, in seconds: the first field of
/// `/proc/PID/task/*/schedstat` (nanoseconds on a CPU) summed over its threads. A
/// thread that exits drops out of the sum; the processes the benches measure keep
/// their threads for the whole run. Where schedstat cannot be read (a kernel without
/// `CONFIG_SCHEDSTATS`), utime + stime from `/proc/PID/stat`, in clock ticks (10 ms).
pub fn cpu_of(pid: u32) -> f64 {
    static SCHEDSTAT: OnceLock<bool> = OnceLock::new();
    if *SCHEDSTAT.get_or_init(|| schedstat_ns(std::process::id()).is_some()) {
        let ns = schedstat_ns(pid)
            .unwrap_or_else(|| panic!("/proc/{pid}/task/*/schedstat is unreadable"));
        ns as f64 / 1e9
    } else {
        stat_secs(pid)
    }
}

fn schedstat_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        // A thread that exited between the listing and the read: skip it.
        let Ok(text) = std::fs::read_to_string(task.ok()?.path().join("schedstat")) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        threads += 1;
    }
    (threads > 0).then_some(total)
}

fn stat_secs(pid: u32) -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    let ticks_per_sec = *TICKS.get_or_init(|| {
        first_line("getconf", &["CLK_TCK"])
            .and_then(|s| s.parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the command name (which may hold spaces), from field 3 (state) on:
    // utime is field 14, stime field 15.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    ticks as f64 / ticks_per_sec
}
