//! What the consumers that act on events share: their metadata, where they stand, and a batch of effects committed with the checkpoint.

use super::*;

/// The metadata of the service's own commands.
pub(super) fn system_metadata(reason: String, cause: Option<&StoredEvent>) -> Metadata {
    let mut metadata = Metadata::from([
        ("role".to_owned(), "system".to_owned()),
        ("reason".to_owned(), reason),
    ]);
    if let Some(event) = cause {
        metadata.insert("causation_id".into(), event.event_id.clone());
        if let Ok(serde_json::Value::Object(caused_by)) =
            serde_json::from_str::<serde_json::Value>(&event.metadata)
        {
            if let Some(serde_json::Value::String(correlation)) = caused_by.get("correlation_id") {
                metadata.insert("correlation_id".into(), correlation.clone());
            }
        }
    }
    metadata
}

/// Where a consumer's last batch left its checkpoint, while this instance holds it: the next
/// step starts there instead of asking the store (one round trip less per batch). The
/// checkpoint's compare-and-set still decides; a remembered checkpoint it refuses is only out
/// of date, and the consumer looks again from what the store says.
#[derive(Default)]
pub(super) struct Standing(std::sync::Mutex<Option<Checkpoint>>);

impl Standing {
    pub(super) fn take(&self) -> Option<Checkpoint> {
        self.0.lock().expect("checkpoint lock").take()
    }

    pub(super) fn keep(&self, checkpoint: Option<Checkpoint>) {
        *self.0.lock().expect("checkpoint lock") = checkpoint;
    }
}

/// A batch for a consumer that is not a projection: its effects are idempotent, so it applies
/// them first and moves its checkpoint after.
pub(super) struct EffectBatch {
    from: Checkpoint,
    remembered: bool,
    pub(super) events: Vec<StoredEvent>,
}

pub(super) async fn effect_batch(
    store: &Store,
    consumer: &str,
    standing: &Standing,
    limit: i64,
) -> Result<EffectBatch, ConsumerError> {
    let remembered = standing.take();
    let from = match remembered {
        Some(from) => from,
        None => store.checkpoint(consumer).await?,
    };
    let events = store.read_log(from, Checkpoint::END, limit).await?;
    Ok(EffectBatch {
        from,
        remembered: remembered.is_some(),
        events,
    })
}

/// Moves the checkpoint past the batch whose effects are done; what the step found.
pub(super) async fn commit_effects(
    store: &Store,
    consumer: &str,
    standing: &Standing,
    batch: &EffectBatch,
    limit: i64,
) -> Result<Stepped, ConsumerError> {
    let Some(last) = batch.events.last() else {
        standing.keep(Some(batch.from));
        return Ok(Stepped::Nothing);
    };
    if store
        .advance_checkpoint(consumer, batch.from, last.checkpoint)
        .await?
    {
        standing.keep(Some(last.checkpoint));
        Ok(Stepped::of_batch(batch.events.len(), limit))
    } else if batch.remembered {
        // Out of date: the effects ran again harmlessly; look again from the store.
        Ok(Stepped::Full)
    } else {
        Err(ConsumerError::Overtaken(consumer.to_owned()))
    }
}
