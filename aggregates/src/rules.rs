//! The commercial rules' numbers, as data: the service configures them, tests vary them.

use chrono::Duration;
use serde::{Deserialize, Serialize};

/// Microsoft's commercial numbers that the domain rules depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommercialRules {
    /// How long after a purchase, renewal, conversion or addition its seats may be removed
    /// (168 hours today; it was 72 hours when the rule began).
    pub cancellation_window: Duration,
    /// How long a deleted user stays restorable before it is purged.
    pub restore_window: Duration,
    /// How long a trial runs.
    pub trial_length: Duration,
    /// How many seats a trial holds.
    pub trial_seats: u32,
    /// How long an expired subscription keeps working (its seats count as "warning").
    pub grace_period: Duration,
}

impl Default for CommercialRules {
    fn default() -> Self {
        Self {
            cancellation_window: Duration::hours(168),
            restore_window: Duration::days(30),
            trial_length: Duration::days(30),
            trial_seats: 25,
            grace_period: Duration::days(30),
        }
    }
}

impl CommercialRules {
    /// The rules with another cancellation window, e.g. the historical 72 hours.
    pub fn with_cancellation_window(self, window: Duration) -> Self {
        Self {
            cancellation_window: window,
            ..self
        }
    }
}
