//! The shredder: destroys a purged user's personal-data key.

use super::*;

/// Destroys the key of every purged user, so their sealed details are unreadable everywhere
/// (the log itself stays immutable).
pub(super) struct Shredder(pub(super) Context, pub(super) Standing);

impl Work for Shredder {
    fn name(&self) -> &str {
        SHREDDER
    }

    fn cadence(&self) -> Duration {
        BACKGROUND_CADENCE
    }

    fn step(&self) -> Step<'_> {
        Box::pin(async move {
            let context = &self.0;
            let batch = effect_batch(&context.store, SHREDDER, &self.1, SHREDDER_BATCH).await?;
            for stored in batch
                .events
                .iter()
                .filter(|event| event.event_type == "UserPurged")
            {
                if let DomainEvent::User(UserEvent::UserPurged { key_id, .. }) =
                    stored.decode()?.event
                {
                    context
                        .vault
                        .shred(key_id)
                        .await
                        .map_err(|error| ConsumerError::Failed(error.to_string()))?;
                    info!(%key_id, "purged user's key destroyed");
                }
            }
            commit_effects(&context.store, SHREDDER, &self.1, &batch, SHREDDER_BATCH).await
        })
    }
}
