//! The JetStream publisher, as a background worker.

use super::*;

/// Publishes the log to JetStream. During a NATS outage it retries often (the outage is
/// usually short and the backlog grows meanwhile), never more than every few seconds.
pub(super) struct PublisherWork(pub(super) Arc<Publisher>);

impl Work for PublisherWork {
    fn name(&self) -> &str {
        PUBLISHER
    }

    fn max_backoff(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn step(&self) -> Step<'_> {
        Box::pin(async move {
            // A step that published anything looks again at once (its batches are large).
            Ok(if self.0.step().await? {
                Stepped::Full
            } else {
                Stepped::Nothing
            })
        })
    }
}
