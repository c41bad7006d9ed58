//! The floor under any statement-judging inspector, for the end-to-end benchmark: Airlock's
//! relay with an inspector that is shown what the guard is shown (every statement, every
//! answer, every reply) and does nothing with it, or (`AIRLOCK_FLOOR=shape`) only takes each
//! simple Query's shape and looks it up in a small table of the thread's, as the guard's fast
//! path does first. `benches/e2e.sh` runs it as target `floor`:
//!
//! ```text
//! FLOOR=shape TARGETS_ONLY="airlock passthrough floor" CONCURRENT=1 WORKLOADS_ONLY=tpcb \
//!     benches/e2e.sh
//! ```
//!
//! Not for use in front of a real database: it enforces nothing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use airlock::app::{Inspectors, init_logging, serve_with};
use airlock::config::Config;
use airlock::inspect::{Inspector, InspectorFactory, Interest, NoInspection, SessionInfo, Verdict};
use airlock::protocol::pg::frontend::FrontendMessage;

thread_local! {
    /// The shapes the thread's sessions sent, with a flag standing for a decision (hashed
    /// with foldhash, as the guard's own table is).
    static SEEN: RefCell<HashMap<Vec<u8>, bool, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
    static SHAPE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

struct Floor {
    shapes: bool,
}

impl Inspector for Floor {
    fn interest(&self) -> Interest {
        Interest {
            statements: true,
            rows: true,
            replies: true,
            outcomes: false,
            records: false,
        }
    }

    fn frontend(&mut self, message: &FrontendMessage<'_>) -> Verdict {
        if let (true, FrontendMessage::Query { sql }) = (self.shapes, message) {
            SHAPE.with_borrow_mut(|shape| {
                if airlock::sql::shape::shape_into(sql, shape).is_some() {
                    // One lookup, as the guard's remembered decision is; a new shape is
                    // kept while the table is small.
                    SEEN.with_borrow_mut(|seen| {
                        if seen.get(shape.as_slice()).is_none() && seen.len() < 4096 {
                            seen.insert(shape.clone(), true);
                        }
                    });
                }
            });
        }
        Verdict::Forward
    }
}

struct Floors {
    shapes: bool,
}

impl InspectorFactory for Floors {
    fn for_session(&self, _session: &SessionInfo) -> Box<dyn Inspector> {
        Box::new(Floor {
            shapes: self.shapes,
        })
    }
}

fn main() -> anyhow::Result<()> {
    init_logging();
    // `serve --config PATH` (as the benchmark starts an airlock baseline) or just `PATH`.
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let path = match args.as_slice() {
        [path] => path.clone(),
        [serve, flag, path] if serve == "serve" && flag == "--config" => path.clone(),
        _ => {
            eprintln!("usage: seam_floor [serve --config] CONFIG");
            std::process::exit(2);
        }
    };
    let shapes = std::env::var("AIRLOCK_FLOOR").is_ok_and(|v| v == "shape");
    tracing::warn!(
        shapes,
        "seam floor: no policy, masking or audit (a benchmark's floor)"
    );
    let inspectors = Inspectors {
        postgres: Arc::new(Floors { shapes }),
        mysql: Arc::new(NoInspection),
        audit: None,
    };
    serve_with(Config::load(path.as_ref())?, inspectors)
}
