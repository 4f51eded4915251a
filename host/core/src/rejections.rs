//! Rejections in the log: every refused request or record is logged with its reason, but
//! a storm of them is not a storm of lines. Per source and reason (both fixed words), the
//! first rejection of a [`WINDOW`] is logged with its detail; later ones in the window
//! are counted, and the next logged line says how many were left out.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a (source, reason) stays quiet after it was logged.
pub const WINDOW: Duration = Duration::from_secs(10);

struct Window {
    logged_at: Instant,
    suppressed: u64,
}

static SEEN: Mutex<Option<HashMap<(&'static str, &'static str), Window>>> = Mutex::new(None);

/// Logs a rejection at `source` for `reason`, unless one of the same source and reason
/// was logged less than [`WINDOW`] ago (then it is only counted). Returns whether it was
/// logged.
pub fn log(source: &'static str, reason: &'static str, detail: &dyn Display) -> bool {
    log_at(Instant::now(), source, reason, detail)
}

fn log_at(now: Instant, source: &'static str, reason: &'static str, detail: &dyn Display) -> bool {
    let suppressed = {
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        let seen = seen.get_or_insert_with(HashMap::new);
        match seen.get_mut(&(source, reason)) {
            Some(w) if now.saturating_duration_since(w.logged_at) < WINDOW => {
                w.suppressed = w.suppressed.saturating_add(1);
                return false;
            }
            Some(w) => {
                let suppressed = w.suppressed;
                *w = Window {
                    logged_at: now,
                    suppressed: 0,
                };
                suppressed
            }
            None => {
                seen.insert(
                    (source, reason),
                    Window {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                0
            }
        }
    };
    if suppressed > 0 {
        tracing::warn!(
            source,
            reason,
            suppressed,
            "rejected: {detail} ({suppressed} more like it since the last line)"
        );
    } else {
        tracing::warn!(source, reason, "rejected: {detail}");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_and_reason_per_window() {
        let t0 = Instant::now();
        assert!(log_at(t0, "test-a", "bad", &"first"));
        for _ in 0..1000 {
            assert!(!log_at(
                t0 + Duration::from_secs(1),
                "test-a",
                "bad",
                &"again"
            ));
        }
        // Another reason or source is logged on its own.
        assert!(log_at(t0, "test-a", "other", &"x"));
        assert!(log_at(t0, "test-b", "bad", &"x"));
        // After the window, the next is logged (and says how many were left out).
        assert!(log_at(
            t0 + WINDOW + Duration::from_millis(1),
            "test-a",
            "bad",
            &"later"
        ));
        let seen = SEEN.lock().unwrap();
        let w = &seen.as_ref().unwrap()[&("test-a", "bad")];
        assert_eq!(w.suppressed, 0);
    }
}
