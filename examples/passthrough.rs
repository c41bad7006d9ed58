//! Airlock with nothing plugged into its inspection seam: the same listeners, client login,
//! upstream sessions and relay as `airlock serve`, but no classification, policy, masking or
//! audit. The end-to-end benchmark (`benches/e2e.sh`, target `passthrough`) runs it beside
//! Airlock with the same config, so that the difference is what the policy costs.
//!
//! Not for use in front of a real database: it enforces nothing.
//!
//! ```text
//! cargo run --release --example passthrough -- airlock.toml
//! ```

use airlock::app::{Inspectors, init_logging, serve_with};
use airlock::config::Config;

fn main() -> anyhow::Result<()> {
    init_logging();
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: passthrough CONFIG");
        std::process::exit(2);
    };
    tracing::warn!("pass-through: no policy, masking or audit (a benchmark's floor)");
    serve_with(Config::load(path.as_ref())?, Inspectors::none())
}
