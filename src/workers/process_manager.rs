//! The process-manager consumer: the follow-ups of the log's events, made durable.

use super::*;

/// Re-runs, from the log, the follow-up commands the process managers decide for each event.
/// The write side runs them inline already; this makes them durable: a follow-up lost to a
/// crash runs here, and one that already ran is refused or decides nothing (they are all
/// idempotent).
pub(super) struct ProcessManager(pub(super) Context, pub(super) Standing);

impl Work for ProcessManager {
    fn name(&self) -> &str {
        PROCESS_MANAGER
    }

    fn cadence(&self) -> Duration {
        BACKGROUND_CADENCE
    }

    fn step(&self) -> Step<'_> {
        Box::pin(async move {
            let context = &self.0;
            let batch = effect_batch(
                &context.store,
                PROCESS_MANAGER,
                &self.1,
                PROCESS_MANAGER_BATCH,
            )
            .await?;
            for stored in &batch.events {
                let logged = stored.decode()?;
                for follow_up in logged.follow_ups()? {
                    if matches!(follow_up, FollowUp::Schedule(_) | FollowUp::Cancel { .. }) {
                        continue;
                    }
                    let metadata = system_metadata(
                        format!(
                            "follow-up of {} at position {}",
                            stored.event_type,
                            stored.position()
                        ),
                        Some(stored),
                    );
                    match context.ledger.dispatch(follow_up, &metadata).await {
                        Ok(_) | Err(LedgerError::Domain(_)) => {}
                        Err(error) => {
                            return Err(ConsumerError::Failed(format!(
                                "follow-up of the event at position {}: {error}",
                                stored.position()
                            )))
                        }
                    }
                }
            }
            commit_effects(
                &context.store,
                PROCESS_MANAGER,
                &self.1,
                &batch,
                PROCESS_MANAGER_BATCH,
            )
            .await
        })
    }
}
