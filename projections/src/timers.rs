//! Durable timers: a deadline per deleted user (its purge), per subscription term (its expiry)
//! and per grace period (its disabling). The process managers of `aggregates::policy` decide
//! them from events; this projection keeps what they decided, sorted by deadline, for the
//! scheduler. A restore cancels a purge the same way: by an event.

use aggregates::policy::{FollowUp, Timer};

use crate::{instant_key, LoggedEvent, Projection, ProjectionError, RowSet};

/// The projection's name.
pub const NAME: &str = "timers";
/// Kind of a timer's row.
pub const TIMER: &str = "timer";

/// The row key of the timer with `timer_key`.
pub fn row_key(timer_key: &str) -> String {
    let mut key = String::with_capacity(TIMER.len() + 1 + timer_key.len());
    key.push_str(TIMER);
    key.push('/');
    key.push_str(timer_key);
    key
}

/// The timers projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timers;

impl Projection for Timers {
    fn name(&self) -> &'static str {
        NAME
    }

    fn keys(&self, _event: &LoggedEvent) -> Vec<String> {
        Vec::new()
    }

    fn apply(&self, event: &LoggedEvent, rows: &mut RowSet) -> Result<(), ProjectionError> {
        for follow_up in event.follow_ups()? {
            match follow_up {
                FollowUp::Schedule(timer) => save(rows, timer),
                FollowUp::Cancel { key } => rows.delete(&row_key(&key)),
                FollowUp::Tenant { .. } | FollowUp::Subscription { .. } | FollowUp::User { .. } => {
                }
            }
        }
        Ok(())
    }
}

fn save(rows: &mut RowSet, timer: Timer) {
    rows.store(
        row_key(&timer.key),
        TIMER,
        String::new(),
        instant_key(timer.due_at),
        timer,
    );
}
