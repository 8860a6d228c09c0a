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

    /// How far a sandbox clock is ahead of the system clock.
    pub fn offset(&self) -> Option<Duration> {
        self.sandbox
            .as_ref()
            .map(|offset| *offset.read().expect("clock lock"))
    }

    /// Takes over an offset another instance (or an earlier run) set, if it is further ahead:
    /// instances over one store share one sandbox time, which never goes backwards.
    pub fn adopt(&self, offset: Duration) {
        if let Some(current) = &self.sandbox {
            let mut current = current.write().expect("clock lock");
            if offset > *current {
                *current = offset;
            }
        }
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
        assert!(Clock::system().advance(Duration::days(1)).is_none());
        let clock = Clock::sandbox();
        let start = clock.now();
        let later = clock.advance(Duration::days(30)).unwrap();
        assert!(later - start >= Duration::days(30));
        assert!(clock.set(start).is_none());
        assert!(clock.advance(Duration::seconds(-1)).is_none());
    }
}
