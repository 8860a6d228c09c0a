//! The service's one clock. With the sandbox clock on, it can be set and advanced (like a
//! payment provider's test clock) so that windows close and timers fire without waiting.

use std::sync::{PoisonError, RwLock};

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
        let offset = self.offset().unwrap_or_else(Duration::zero);
        Utc::now()
            .checked_add_signed(offset)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The offset the sandbox clock would have after moving forward by `by`, without moving
    /// it: a caller stores it first and adopts it after, so a failed store moves nothing.
    pub fn offset_after(&self, by: Duration) -> Result<Duration, ClockRefusal> {
        if by < Duration::zero() {
            return Err(ClockRefusal::Backwards);
        }
        let lock = self.sandbox.as_ref().ok_or(ClockRefusal::NotSandbox)?;
        let offset = *lock.read().unwrap_or_else(PoisonError::into_inner);
        offset
            .checked_add(&by)
            .filter(|moved| *moved <= MAX_AHEAD)
            .ok_or(ClockRefusal::TooFar)
    }

    /// The offset at which the sandbox clock would read `to` (see [`Clock::offset_after`]).
    pub fn offset_at(&self, to: DateTime<Utc>) -> Result<Duration, ClockRefusal> {
        let now = self.now();
        if to < now {
            return Err(ClockRefusal::Backwards);
        }
        self.offset_after(to.signed_duration_since(now))
    }

    /// Moves a sandbox clock forward by `by`, at most [`MAX_AHEAD`] past the system clock.
    pub fn advance(&self, by: Duration) -> Result<DateTime<Utc>, ClockRefusal> {
        if by < Duration::zero() {
            return Err(ClockRefusal::Backwards);
        }
        let lock = self.sandbox.as_ref().ok_or(ClockRefusal::NotSandbox)?;
        // A lock left poisoned by a panic elsewhere still holds a whole Duration: take it.
        let mut offset = lock.write().unwrap_or_else(PoisonError::into_inner);
        let moved = offset
            .checked_add(&by)
            .filter(|moved| *moved <= MAX_AHEAD)
            .ok_or(ClockRefusal::TooFar)?;
        *offset = moved;
        drop(offset);
        Ok(self.now())
    }

    /// How far a sandbox clock is ahead of the system clock.
    pub fn offset(&self) -> Option<Duration> {
        self.sandbox
            .as_ref()
            .map(|offset| *offset.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Takes over an offset another instance (or an earlier run) set, if it is further ahead:
    /// instances over one store share one sandbox time, which never goes backwards.
    pub fn adopt(&self, offset: Duration) {
        if let Some(current) = &self.sandbox {
            let mut current = current.write().unwrap_or_else(PoisonError::into_inner);
            if offset > *current && offset <= MAX_AHEAD {
                *current = offset;
            }
        }
    }

    /// Sets a sandbox clock to `to`; time never goes backwards, so an earlier instant is refused.
    pub fn set(&self, to: DateTime<Utc>) -> Result<DateTime<Utc>, ClockRefusal> {
        let now = self.now();
        if to < now {
            return Err(ClockRefusal::Backwards);
        }
        self.advance(to.signed_duration_since(now))
    }
}

/// How far the sandbox clock may run ahead of the system clock: a century covers every term,
/// window and retention the books know, and keeps every instant far from chrono's limits.
pub const MAX_AHEAD: Duration = Duration::days(100 * 366);

/// Why the clock did not move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClockRefusal {
    /// Only the sandbox clock moves.
    #[error("the clock is the system clock: start the service with --sandbox-clock")]
    NotSandbox,
    /// Time never goes backwards.
    #[error("must not be before the clock's current time: time never goes backwards")]
    Backwards,
    /// Past [`MAX_AHEAD`].
    #[error("would take the sandbox clock more than 100 years past the system clock")]
    TooFar,
}

impl crate::store::Store {
    /// The sandbox clock's stored offset, if one was ever set.
    pub async fn sandbox_offset(&self) -> Result<Option<Duration>, sqlx::Error> {
        let micros: Option<i64> = crate::on_pool!(self, pool => {
            sqlx::query_scalar("SELECT offset_micros FROM sandbox_clock WHERE id = 1")
                .fetch_optional(pool)
                .await?
        });
        Ok(micros.map(Duration::microseconds))
    }

    /// Stores the sandbox clock's offset (never moving it back).
    pub async fn save_sandbox_offset(&self, offset: Duration) -> Result<(), sqlx::Error> {
        let micros = offset.num_microseconds().unwrap_or(i64::MAX);
        crate::on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO sandbox_clock (id, offset_micros) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET offset_micros =
                     CASE WHEN excluded.offset_micros > sandbox_clock.offset_micros
                          THEN excluded.offset_micros ELSE sandbox_clock.offset_micros END",
            )
            .bind(micros)
            .execute(pool)
            .await
            .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sandbox_clock_moves_and_never_backwards() {
        assert_eq!(
            Clock::system().advance(Duration::days(1)),
            Err(ClockRefusal::NotSandbox)
        );
        let clock = Clock::sandbox();
        let start = clock.now();
        let later = clock.advance(Duration::days(30)).unwrap();
        assert!(later - start >= Duration::days(30));
        assert_eq!(clock.set(start), Err(ClockRefusal::Backwards));
        assert_eq!(
            clock.advance(Duration::seconds(-1)),
            Err(ClockRefusal::Backwards)
        );
    }

    #[test]
    fn the_sandbox_clock_refuses_to_run_past_a_century_and_keeps_working() {
        let clock = Clock::sandbox();
        assert_eq!(clock.advance(Duration::MAX), Err(ClockRefusal::TooFar));
        assert_eq!(
            clock.advance(MAX_AHEAD + Duration::seconds(1)),
            Err(ClockRefusal::TooFar)
        );
        assert_eq!(
            clock.set(DateTime::<Utc>::MAX_UTC),
            Err(ClockRefusal::TooFar)
        );
        // Refused steps leave the clock as it was, and it still moves.
        assert_eq!(clock.offset(), Some(Duration::zero()));
        assert!(clock.advance(Duration::days(365)).is_ok());
        clock.adopt(Duration::MAX);
        assert!(clock.offset().unwrap() < MAX_AHEAD);
    }
}
