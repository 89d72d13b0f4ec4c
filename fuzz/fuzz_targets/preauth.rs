//! Fuzz target for the pre-authentication state machine, fed whole client transcripts:
//! a real dealer runs in-process in front of two scripted fake backends, and the
//! backends check that dealer never hands over a session whose backend did not report
//! success — nothing but the authentication exchange reaches a backend before a
//! success the protocol defines as one (no stanza, no restart), no identity it does
//! not own, no incomplete or digest iq:auth `set`. See `preauth/harness.rs` for the
//! input format and `preauth/backend.rs` for the oracle.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "preauth/backend.rs"]
mod backend;
#[path = "preauth/harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| {
    harness::run_one(data);
});
