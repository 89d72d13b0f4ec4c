//! `routing`: strategy, normalisation, the range table and its default.

use super::{Check, Names};
use crate::config::file::RawConfig;
use crate::config::*;
use crate::routing::normalise::normalise;
use crate::routing::ranges::{row_is_empty, rows_overlap};

pub(super) fn section(
    v: &mut Check,
    raw: &RawConfig,
    names: &Names<'_>,
    domains: Domains,
) -> Routing {
    let strategy = v.word(
        "routing.strategy",
        raw.routing.strategy.as_deref(),
        Strategy::Hash,
        &[("hash", Strategy::Hash), ("ranges", Strategy::Ranges)],
    );
    let normalise_as = v.word(
        "routing.normalise",
        raw.routing.normalise.as_deref(),
        Normalise::Nodeprep,
        &[
            ("nodeprep", Normalise::Nodeprep),
            ("precis", Normalise::Precis),
        ],
    );
    let mut rows = Vec::new();
    for (i, r) in raw.routing.ranges.iter().enumerate() {
        let key = format!("routing.ranges[{i}]");
        let from = v.ok(&format!("{key}.from"), bound_value(&r.from, normalise_as));
        let to = v.ok(&format!("{key}.to"), bound_value(&r.to, normalise_as));
        let backend = names.find(v, &format!("{key}.backend"), &r.backend);
        if let (Some(from), Some(to), Some(backend)) = (from, to, backend) {
            if row_is_empty(&from, &to) {
                v.err(
                    &key,
                    format!(
                        "empty row: `{}` sorts after every name that starts with `{}`",
                        r.from, r.to
                    ),
                );
            } else {
                rows.push((i, RangeRow { from, to, backend }));
            }
        }
    }
    rows.sort_by(|a, b| a.1.from.cmp(&b.1.from));
    for pair in rows.windows(2) {
        let ((ia, a), (ib, b)) = (&pair[0], &pair[1]);
        if rows_overlap(a, b) {
            let (ra, rb) = (&raw.routing.ranges[*ia], &raw.routing.ranges[*ib]);
            v.err(
                format!("routing.ranges[{}]", ia.max(ib)),
                format!(
                    "overlaps routing.ranges[{}]: `{}`-`{}` and `{}`-`{}` both cover names starting with `{}`",
                    ia.min(ib),
                    ra.from,
                    ra.to,
                    rb.from,
                    rb.to,
                    b.from
                ),
            );
        }
    }
    let default = raw
        .routing
        .default
        .as_deref()
        .and_then(|s| names.find(v, "routing.default", s));
    match strategy {
        Strategy::Ranges => {
            if raw.routing.ranges.is_empty() {
                v.err("routing.ranges", "required with `strategy: ranges`");
            }
            if raw.routing.default.is_none() {
                v.err(
                    "routing.default",
                    "required with `strategy: ranges`: the backend for names outside every row",
                );
            }
        }
        Strategy::Hash => {
            if !raw.routing.ranges.is_empty() {
                v.warnings
                    .push("routing.ranges is ignored with `strategy: hash`".to_string());
            }
        }
    }
    let redeal_on_reload = raw.routing.redeal_on_reload.unwrap_or(false);
    if redeal_on_reload && (strategy != Strategy::Hash || domains != Domains::Shared) {
        v.err(
            "routing.redeal_on_reload",
            "only with `strategy: hash` and `domains: shared`, where a user's data can follow it",
        );
    }
    Routing {
        strategy,
        normalise: normalise_as,
        ranges: rows.into_iter().map(|(_, r)| r).collect(),
        default,
        redeal_on_reload,
    }
}

/// A range bound is normalised like the names it is compared with.
fn bound_value(s: &str, how: Normalise) -> Result<String, String> {
    normalise(how, s)
        .map(|c| c.into_owned())
        .map_err(|e| format!("`{s}` is not a valid username bound ({e})"))
}
