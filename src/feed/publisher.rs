//! The JetStream publisher: a checkpointed consumer of the global log that publishes every
//! event, in reading order, to `<prefix>.<tenant_id|global>.<aggregate_type>.<EventType>`.
//!
//! A batch is published pipelined (every message in flight at once) and the checkpoint moves
//! only past acknowledged messages. Two headers keep the stream exact:
//! - `Nats-Msg-Id` = the event id: a re-publish within the duplicate window is dropped;
//! - `Nats-Expected-Last-Msg-Id` = the previous event's id: JetStream refuses a message whose
//!   predecessor is not the stream's last, so a message lost in flight (a broken connection)
//!   can never be overtaken by the ones after it; the stream is always a gap-free prefix of
//!   the log in its order.
//!
//! After any failure the publisher looks at the stream's last message before going on (it
//! "resyncs"): its position says how far the stream really is; the checkpoint is moved there
//! when the stream is ahead (a crash between acknowledgement and checkpoint, or re-publishes
//! older than the duplicate window) or back there when the stream lost messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use bytes::Bytes;
use tracing::{info, warn};

use super::envelope;
use super::tenancy::Tenancy;
use crate::config::NatsSettings;
use crate::log::{Checkpoint, StoredEvent};
use crate::read::ConsumerError;
use crate::store::Store;

/// The publisher's consumer name (its checkpoint and lease).
pub const PUBLISHER: &str = "jetstream-publisher";
/// Events published per batch (all in flight at once).
pub const PUBLISH_BATCH: i64 = 1_000;
/// How long a publish may wait for its acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts since this publisher started.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Messages JetStream stored.
    pub published: AtomicU64,
    /// Messages JetStream dropped as re-publishes (by `Nats-Msg-Id`).
    pub duplicates: AtomicU64,
    /// Times the publisher compared its checkpoint with the stream's last message.
    pub resyncs: AtomicU64,
    /// Batches that failed (NATS unreachable, a refused or unacknowledged message).
    pub failures: AtomicU64,
}

/// What the next message's `Nats-Expected-Last-Msg-Id` is, for a publisher at a checkpoint.
#[derive(Debug, Clone)]
enum Chain {
    /// A new connection: continue from the checkpoint's event.
    Fresh,
    /// Not known: look at the stream first.
    Unknown,
    /// The stream was just seen to end at this checkpoint; the server may not remember its
    /// last id (a restarted server), so the next message goes unchecked.
    Verified(Checkpoint),
    /// The event at this checkpoint (its id) must be the stream's last.
    After(Checkpoint, String),
}

impl Chain {
    /// The checkpoint the chain continues from, if known.
    fn at(&self) -> Option<Checkpoint> {
        match self {
            Self::Fresh | Self::Unknown => None,
            Self::Verified(at) | Self::After(at, _) => Some(*at),
        }
    }
}

struct Link {
    jetstream: jetstream::Context,
    stream: stream::Stream,
}

/// The connection, and where the stream's chain stands (kept across reconnections: after a
/// failure the next connection first looks at the stream).
struct Session {
    link: Option<Link>,
    chain: Chain,
}

/// Publishes the log to JetStream.
pub struct Publisher {
    store: Store,
    settings: NatsSettings,
    url: String,
    tenancy: Tenancy,
    session: tokio::sync::Mutex<Session>,
    stats: Arc<PublisherStats>,
}

/// Why publishing stopped.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// NATS could not be reached or refused.
    #[error("NATS at {url}: {reason}; publishing paused, the events wait in the log")]
    Nats {
        /// The server.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The stream cannot be used as configured.
    #[error("JetStream stream {stream}: {reason}")]
    Stream {
        /// The stream.
        stream: String,
        /// What is wrong.
        reason: String,
    },
}

impl From<PublishError> for ConsumerError {
    fn from(error: PublishError) -> Self {
        ConsumerError::Failed(error.to_string())
    }
}

impl Publisher {
    /// A publisher of `store`'s log to the NATS server `settings` name (which must be set).
    pub fn new(store: Store, settings: NatsSettings) -> Result<Self, PublishError> {
        let url = settings.url.clone().ok_or_else(|| PublishError::Nats {
            url: String::new(),
            reason: "no NATS URL is configured".into(),
        })?;
        validate(&settings)?;
        Ok(Self {
            tenancy: Tenancy::new(store.clone()),
            store,
            settings,
            url,
            session: tokio::sync::Mutex::new(Session {
                link: None,
                chain: Chain::Fresh,
            }),
            stats: Arc::new(PublisherStats::default()),
        })
    }

    /// The counts since start.
    pub fn stats(&self) -> Arc<PublisherStats> {
        self.stats.clone()
    }

    /// Publishes the next batch and moves the checkpoint past it; `false` when there was
    /// nothing to publish.
    pub async fn step(&self) -> Result<bool, ConsumerError> {
        self.publish_batch(true).await
    }

    /// Publishes the next batch and awaits its acknowledgements but leaves the checkpoint
    /// where it was, as a crash between the two would (tests of crash recovery).
    pub async fn step_without_checkpoint(&self) -> Result<bool, ConsumerError> {
        self.publish_batch(false).await
    }

    async fn publish_batch(&self, checkpoint: bool) -> Result<bool, ConsumerError> {
        let mut session = self.session.lock().await;
        let Session { link, chain } = &mut *session;
        if link.is_none() {
            match self.connect().await {
                Ok(connected) => *link = Some(connected),
                Err(error) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    return Err(error.into());
                }
            }
        }
        let published = self
            .publish_on(link.as_mut().expect("connected above"), chain, checkpoint)
            .await;
        if published.is_err() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            // Start over with a new connection, which makes sure the stream exists again (NATS
            // may have come back without its storage, or someone deleted the stream), and look
            // at the stream before publishing.
            *link = None;
            *chain = Chain::Unknown;
        }
        published
    }

    async fn publish_on(
        &self,
        link: &mut Link,
        chain: &mut Chain,
        checkpoint: bool,
    ) -> Result<bool, ConsumerError> {
        let mut from = self.store.checkpoint(PUBLISHER).await?;
        let stale = match &*chain {
            Chain::Unknown => false,
            Chain::Fresh => true,
            continuing => continuing.at() != Some(from),
        };
        if stale {
            // A new connection, or another instance moved the checkpoint meanwhile.
            *chain = self.chain_at(from).await?;
        }
        if matches!(chain, Chain::Unknown) {
            *chain = self.resync(&mut link.stream).await?;
            from = chain.at().unwrap_or(from);
        }
        let events = self
            .store
            .read_log(from, Checkpoint::END, PUBLISH_BATCH)
            .await?;
        if events.is_empty() {
            return Ok(false);
        }
        let mut pending = Vec::with_capacity(events.len());
        let mut expected = match &*chain {
            Chain::After(_, id) => Some(id.clone()),
            Chain::Verified(_) | Chain::Unknown | Chain::Fresh => None,
        };
        for stored in &events {
            let (subject, body) = self.message(stored).await?;
            let mut publish = jetstream::message::PublishMessage::build()
                .payload(body)
                .message_id(&stored.event_id);
            if let Some(id) = &expected {
                publish = publish.expected_last_message_id(id);
            }
            expected = Some(stored.event_id.clone());
            match link.jetstream.send_publish(subject, publish).await {
                Ok(ack) => pending.push(ack),
                Err(error) => {
                    *chain = Chain::Unknown;
                    return Err(self.nats_error(error).into());
                }
            }
        }
        let mut acknowledged = 0;
        let mut failure = None;
        for ack in pending {
            match ack.await {
                Ok(ack) => {
                    let counter = if ack.duplicate {
                        &self.stats.duplicates
                    } else {
                        &self.stats.published
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    acknowledged += 1;
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if checkpoint && acknowledged > 0 {
            let last = &events[acknowledged - 1];
            if !self
                .store
                .advance_checkpoint(PUBLISHER, from, last.checkpoint)
                .await?
            {
                *chain = Chain::Unknown;
                return Err(ConsumerError::Overtaken(PUBLISHER.to_owned()));
            }
            *chain = Chain::After(last.checkpoint, last.event_id.clone());
        }
        match failure {
            None => Ok(true),
            Some(error) => {
                *chain = Chain::Unknown;
                if matches!(error.kind(), PublishErrorKind::WrongLastMessageId) {
                    info!(
                        stream = %self.settings.stream,
                        "the stream does not end where the checkpoint is; looking at it"
                    );
                }
                Err(self.nats_error(error).into())
            }
        }
    }

    /// The subject and body of one event.
    async fn message(&self, stored: &StoredEvent) -> Result<(String, Bytes), ConsumerError> {
        let (event, tenant) = super::wrap(&self.tenancy, stored)
            .await
            .map_err(|error| ConsumerError::Failed(error.to_string()))?;
        let subject = envelope::subject(
            &self.settings.subject_prefix,
            tenant,
            &stored.aggregate_type,
            &stored.event_type,
        );
        let body =
            serde_json::to_vec(&event).map_err(|error| ConsumerError::Failed(error.to_string()))?;
        Ok((subject, Bytes::from(body)))
    }

    async fn connect(&self) -> Result<Link, PublishError> {
        let client = async_nats::ConnectOptions::new()
            .name("seatledger-publisher")
            .connection_timeout(Duration::from_secs(5))
            .connect(self.url.as_str())
            .await
            .map_err(|error| self.nats_error(error))?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .ack_timeout(ACK_TIMEOUT)
            .build(client);
        let stream = self.ensure_stream(&jetstream).await?;
        info!(url = %self.url, stream = %self.settings.stream, "publishing events to JetStream");
        Ok(Link { jetstream, stream })
    }

    /// Creates the stream, or sets the subjects, storage and duplicate window of an existing
    /// one (leaving its other settings, such as retention, as the operator chose).
    async fn ensure_stream(
        &self,
        jetstream: &jetstream::Context,
    ) -> Result<stream::Stream, PublishError> {
        let wanted_subjects = vec![format!("{}.>", self.settings.subject_prefix)];
        let window = Duration::from_secs(self.settings.duplicate_window_seconds);
        match jetstream.get_stream(&self.settings.stream).await {
            Ok(mut existing) => {
                let mut config = existing
                    .info()
                    .await
                    .map_err(|error| self.nats_error(error))?
                    .config
                    .clone();
                if config.storage != stream::StorageType::File {
                    return Err(PublishError::Stream {
                        stream: self.settings.stream.clone(),
                        reason: "exists with memory storage; events must survive a NATS restart, so \
                                 recreate it with file storage (JetStream cannot change storage in place)"
                            .into(),
                    });
                }
                if config.subjects != wanted_subjects || config.duplicate_window != window {
                    config.subjects = wanted_subjects;
                    config.duplicate_window = window;
                    jetstream.update_stream(config).await.map_err(|error| {
                        PublishError::Stream {
                            stream: self.settings.stream.clone(),
                            reason: error.to_string(),
                        }
                    })?;
                    info!(stream = %self.settings.stream, "stream settings updated");
                }
                Ok(existing)
            }
            Err(error)
                if matches!(
                    error.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref inner)
                        if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                let created = jetstream
                    .create_stream(stream::Config {
                        name: self.settings.stream.clone(),
                        subjects: wanted_subjects,
                        storage: stream::StorageType::File,
                        duplicate_window: window,
                        ..Default::default()
                    })
                    .await
                    .map_err(|error| PublishError::Stream {
                        stream: self.settings.stream.clone(),
                        reason: error.to_string(),
                    })?;
                info!(stream = %self.settings.stream, "stream created");
                Ok(created)
            }
            Err(error) => Err(self.nats_error(error)),
        }
    }

    /// Compares the checkpoint with the stream's last message and decides the next message's
    /// expected predecessor; moves the checkpoint when the stream is elsewhere.
    async fn resync(&self, stream: &mut stream::Stream) -> Result<Chain, ConsumerError> {
        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        let ours = self.store.checkpoint(PUBLISHER).await?;
        let last_sequence = stream
            .info()
            .await
            .map_err(|error| self.nats_error(error))?
            .state
            .last_sequence;
        let theirs = if last_sequence == 0 {
            // A stream that never held a message: new, or recreated after NATS lost its storage.
            if ours != Checkpoint::default() {
                warn!(stream = %self.settings.stream, from = ours.position,
                    "the stream is empty (recreated?); publishing the whole log again");
            }
            Some(Checkpoint::default())
        } else {
            match stream.get_raw_message(last_sequence).await {
                Ok(message) => self.published_checkpoint(&message.payload).await?,
                Err(error) => {
                    warn!(stream = %self.settings.stream, %error,
                        "cannot read the stream's last message; going on from the checkpoint");
                    None
                }
            }
        };
        let Some(theirs) = theirs else {
            warn!(stream = %self.settings.stream,
                "the stream's last message is not an event of this store; going on from the checkpoint");
            return Ok(Chain::Verified(ours));
        };
        if theirs != ours {
            if !self
                .store
                .advance_checkpoint(PUBLISHER, ours, theirs)
                .await?
            {
                return Err(ConsumerError::Overtaken(PUBLISHER.to_owned()));
            }
            if theirs > ours {
                info!(from = ours.position, to = theirs.position,
                    "the stream already holds events beyond the checkpoint; checkpoint moved to its end");
            } else if theirs != Checkpoint::default() {
                warn!(
                    from = ours.position,
                    to = theirs.position,
                    "the stream lost events the checkpoint had passed; publishing them again"
                );
            }
        }
        Ok(Chain::Verified(theirs))
    }

    /// The chain continuing from `checkpoint`: after its event, so that events published but
    /// not checkpointed before a crash are re-sent and dropped as duplicates; at the start of
    /// the log, unknown (the stream decides).
    async fn chain_at(&self, checkpoint: Checkpoint) -> Result<Chain, ConsumerError> {
        if checkpoint == Checkpoint::default() {
            return Ok(Chain::Unknown);
        }
        Ok(match self.store.event_at(checkpoint.position).await? {
            Some((at, id)) if at == checkpoint => Chain::After(checkpoint, id),
            _ => Chain::Unknown,
        })
    }

    /// The checkpoint of the event a published message carries, if it is one of this store's.
    async fn published_checkpoint(
        &self,
        payload: &[u8],
    ) -> Result<Option<Checkpoint>, ConsumerError> {
        #[derive(serde::Deserialize)]
        struct Published {
            id: String,
            position: i64,
        }
        let Ok(published) = serde_json::from_slice::<Published>(payload) else {
            return Ok(None);
        };
        Ok(self
            .store
            .event_at(published.position)
            .await?
            .filter(|(_, id)| *id == published.id)
            .map(|(checkpoint, _)| checkpoint))
    }

    fn nats_error(&self, error: impl std::fmt::Display) -> PublishError {
        PublishError::Nats {
            url: self.url.clone(),
            reason: error.to_string(),
        }
    }
}

/// Refuses a stream name or subject prefix NATS would reject or misread.
fn validate(settings: &NatsSettings) -> Result<(), PublishError> {
    let bad_stream = settings.stream.is_empty()
        || settings
            .stream
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
    if bad_stream {
        return Err(PublishError::Stream {
            stream: settings.stream.clone(),
            reason: "a stream name must be non-empty, without spaces or any of . * > / \\".into(),
        });
    }
    let bad_prefix = settings.subject_prefix.split('.').any(|token| {
        token.is_empty()
            || token
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '*' | '>'))
    });
    if bad_prefix {
        return Err(PublishError::Stream {
            stream: settings.stream.clone(),
            reason: format!(
                "subject prefix '{}' must be dot-separated non-empty tokens without spaces, * or >",
                settings.subject_prefix
            ),
        });
    }
    Ok(())
}
