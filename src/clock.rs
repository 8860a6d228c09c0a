//! The service's one clock. With the sandbox clock on, it can be set and advanced (like a
//! payment provider's test clock) so that windows close and timers fire without waiting.

use std::sync::RwLock;

use chrono::{DateTime, Duration, Utc};

/// The service's clock.
#[derive(Debug)]
pub struct Clock {
    /// `Some(offset)` when the sandbox clock is on: now = system now + offset.
    sandbox: Option<RwLock<Duration>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { sandbox: None }
    }

    /// A settable clock that starts at the system time.
    pub fn sandbox() -> Self {
        Self {
            sandbox: Some(RwLock::new(Duration::zero())),
        }
    }

    /// Whether the clock can be set.
    pub fn is_sandbox(&self) -> bool {
        self.sandbox.is_some()
    }

    /// The current instant.
    pub fn now(&self) -> DateTime<Utc> {
        let offset = self
            .sandbox
            .as_ref()
            .map(|offset| *offset.read().expect("clock lock"))
            .unwrap_or_else(Duration::zero);
        Utc::now() + offset
    }

    /// Moves a sandbox clock forward; `None` for the system clock or a negative step.
    pub fn advance(&self, by: Duration) -> Option<DateTime<Utc>> {
        if by < Duration::zero() {
            return None;
        }
        let mut offset = self.sandbox.as_ref()?.write().expect("clock lock");
        *offset += by;
        drop(offset);
        Some(self.now())
    }

    /// Sets a sandbox clock to `to`; time never goes backwards, so an earlier instant is refused.
    pub fn set(&self, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let now = self.now();
        if to < now {
            return None;
        }
        self.advance(to - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sandbox_clock_moves_and_never_backwards() {
        assert!(Clock::system().advance(Duration::days(1)).is_none());
        let clock = Clock::sandbox();
        let start = clock.now();
        let later = clock.advance(Duration::days(30)).unwrap();
        assert!(later - start >= Duration::days(30));
        assert!(clock.set(start).is_none());
        assert!(clock.advance(Duration::seconds(-1)).is_none());
    }
}
