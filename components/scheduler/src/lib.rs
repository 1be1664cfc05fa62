//! The `scheduler` component: periodic jobs, run by Spin's cron trigger
//! (`[[trigger.cron]]`, the `fermyon:spin-cron@2.0.0` world in `wit/cron`).
//!
//! It owns no database. A job is work on some domain's data, so the job's
//! code and state live in that domain's component and database; the scheduler
//! only calls the component's internal job endpoint over plain HTTP at the
//! app's address (`app_url`; Spin's cron trigger cannot chain), with its own
//! service token, which only job endpoints accept. Least privilege: the
//! scheduler can reach `app_url` and nothing else, and its token can run
//! jobs and nothing else.

// Natively only the unit tests use the code; the entry point is wasm-only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod jobs;

/// The cron world's bindings; `wit-bindgen` generates `unsafe` glue, confined here.
#[allow(unsafe_code, missing_docs, clippy::crate_in_macro_def)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/cron",
        world: "spin-cron",
        runtime_path: "::spin_sdk::wit_bindgen::rt",
        pub_export_macro: true,
        default_bindings_module: "crate::bindings",
    });
}

use bindings::{Error, Guest, Metadata};

struct Scheduler;

impl Guest for Scheduler {
    fn handle_cron_event(metadata: Metadata) -> Result<(), Error> {
        jobs::run_due(metadata.timestamp).map_err(Error::Other)
    }
}

/// Export glue for the cron world (wasm32 only: natively the unit tests run without it).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::Scheduler;
    crate::bindings::export!(Scheduler);
}
