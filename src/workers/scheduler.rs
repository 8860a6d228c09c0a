//! The timer scheduler: fires due timers on the service's clock.

use super::*;

/// Fires timers whose deadline the service's clock has reached, once per deadline: a fired
/// timer is recorded with its outcome; the action itself is idempotent, so a crash between
/// firing and recording fires it again harmlessly.
pub(super) struct Scheduler(pub(super) Context);

impl Work for Scheduler {
    fn name(&self) -> &str {
        SCHEDULER
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(200)
    }

    fn wakes_on_commits(&self) -> bool {
        false
    }

    fn step(&self) -> Step<'_> {
        Box::pin(async move {
            let context = &self.0;
            if context.clock.is_sandbox() {
                if let Some(offset) = context.store.sandbox_offset().await? {
                    context.clock.adopt(offset);
                }
            }
            let now = context.clock.now();
            let due = due_timers(
                &context.store,
                &projections::instant_key(now),
                DUE_TIMERS_BATCH,
            )
            .await?;
            for (row_key, due_at, doc) in &due {
                let timer: Timer = projections::rows::decode(row_key, doc)?;
                let metadata =
                    system_metadata(format!("timer {} due at {due_at}", timer.key), None);
                let outcome = match context
                    .ledger
                    .dispatch(timer.action.follow_up(now), &metadata)
                    .await
                {
                    Ok(_) => "fired".to_owned(),
                    Err(LedgerError::Domain(refusal)) => {
                        format!("nothing to do: {}", refusal.code())
                    }
                    Err(error) => {
                        return Err(ConsumerError::Failed(format!(
                            "timer {}: {error}",
                            timer.key
                        )))
                    }
                };
                info!(timer = %timer.key, %due_at, %outcome, "timer fired");
                record_firing(&context.store, row_key, due_at, &outcome, now).await?;
            }
            // Timers fire by the clock; due ones left over are taken at once.
            Ok(Stepped::of_batch(due.len(), DUE_TIMERS_BATCH))
        })
    }
}

/// Timers due at `now` not fired for their current deadline: (row key, deadline, timer).
pub(super) async fn due_timers(
    store: &Store,
    now: &str,
    limit: i64,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    crate::on_pool!(store, pool => {
        sqlx::query_as(
            "SELECT m.row_key, m.sort_key, m.doc FROM read_models m
              WHERE m.projection = $1 AND m.kind = $2 AND m.sort_key <= $3
                AND NOT EXISTS (SELECT 1 FROM timer_firings f
                                 WHERE f.timer_key = m.row_key AND f.due_at = m.sort_key)
              ORDER BY m.sort_key
              LIMIT $4",
        )
        .bind(projections::timers::NAME)
        .bind(projections::timers::TIMER)
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
}

pub(super) async fn record_firing(
    store: &Store,
    row_key: &str,
    due_at: &str,
    outcome: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    crate::on_pool!(store, pool => {
        sqlx::query(
            "INSERT INTO timer_firings (timer_key, due_at, outcome, fired_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (timer_key, due_at) DO NOTHING",
        )
        .bind(row_key)
        .bind(due_at)
        .bind(outcome)
        .bind(projections::instant_key(now))
        .execute(pool)
        .await
        .map(drop)
    })
}
