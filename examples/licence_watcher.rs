//! licence_watcher: a downstream service's view of seatledger's event feed on NATS JetStream.
//!
//! It reads the `SEATLEDGER` stream through a durable pull consumer with explicit
//! acknowledgements, so that it resumes where it stopped after a restart, and prints one line
//! per licence change: seats bought, added, removed, suspended or cancelled on subscriptions;
//! licences assigned, released and reinstated on users; users deleted, restored and purged.
//! Every other event is acknowledged and ignored.
//!
//! It deliberately does not link seatledger: like any downstream service it knows only the
//! envelope and the event schemas documented in `docs/events.md`, through serde structs of its
//! own that name just the fields it uses (unknown fields are ignored, so additions to an event
//! do not break it).
//!
//! ```sh
//! cargo run --example licence_watcher                      # everything, from the start
//! cargo run --example licence_watcher -- --filter 'seatledger.<tenant_id>.>'
//! cargo run --example licence_watcher -- --help
//! ```

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use clap::Parser;
use futures::StreamExt;
use serde::Deserialize;

/// Prints seatledger's licence changes from its JetStream feed.
#[derive(Debug, Parser)]
#[command(name = "licence_watcher")]
struct Args {
    /// The NATS server.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,

    /// The stream seatledger publishes to.
    #[arg(long, env = "SEATLEDGER_NATS_STREAM", default_value = "SEATLEDGER")]
    stream: String,

    /// The durable consumer's name: the server remembers how far it has read, so a restarted
    /// watcher resumes there. Another name starts from the beginning of the stream.
    #[arg(
        long,
        env = "LICENCE_WATCHER_DURABLE",
        default_value = "licence-watcher"
    )]
    durable: String,

    /// Which subjects to read: `<prefix>.<tenant_id|global>.<aggregate_type>.<EventType>`.
    #[arg(long, env = "LICENCE_WATCHER_FILTER", default_value = "seatledger.>")]
    filter: String,

    /// How many recent event ids to remember for deduplication.
    #[arg(long, default_value_t = 10_000)]
    remember: usize,

    /// Exit after this many seconds without a message (default: run until Ctrl-C).
    #[arg(long)]
    exit_when_idle: Option<u64>,
}

/// The CloudEvents envelope, as far as this watcher needs it.
#[derive(Debug, Deserialize)]
struct Envelope {
    id: String,
    /// `seatledger.<aggregate_type>.<EventType>.v<version>`.
    #[serde(rename = "type")]
    event_type: String,
    /// The aggregate's id (a subscription, user or tenant id).
    subject: String,
    /// When the event was recorded.
    time: String,
    #[serde(default)]
    tenantid: Option<String>,
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct Offer {
    provisioning_id: String,
}

/// A subscription's seats after a change.
#[derive(Debug, Deserialize)]
struct Seats {
    offer: Offer,
    quantity: u32,
    /// enabled, warning, suspended or inactive.
    state: String,
}

#[derive(Debug, Deserialize)]
struct Opened {
    offer: Offer,
    quantity: u32,
    term: String,
    #[serde(default)]
    trial: bool,
}

#[derive(Debug, Deserialize)]
struct SeatCount {
    count: u32,
    seats: Seats,
}

#[derive(Debug, Deserialize)]
struct SeatsChanged {
    seats: Seats,
}

#[derive(Debug, Deserialize)]
struct Assigned {
    user_id: String,
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Released {
    user_id: String,
    released: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Reinstated {
    user_id: String,
    reinstated: Vec<String>,
    #[serde(default)]
    over_assigned: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Migrated {
    from_product: String,
    to_product: String,
    users: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Deleted {
    restorable_until: String,
}

/// Deduplication by event id with bounded memory.
///
/// The stream itself holds each event once (seatledger sets `Nats-Msg-Id`, and JetStream
/// drops re-publishes), so a duplicate reaches a consumer only as a *redelivery*: a message
/// whose acknowledgement was lost or came after `ack_wait`. Those are recent — at most
/// `max_ack_pending` messages are ever unacknowledged at once — so remembering the last N ids,
/// N well above `max_ack_pending`, catches every one of them, in memory that does not grow
/// with the number of tenants, users or subscriptions.
///
/// The alternative, the last `streamsequence` seen per `subject` (events of one aggregate
/// arrive in that order), is exact and would also reveal a gap, but it keeps one entry per
/// aggregate that ever existed: right for a service that stores it in its own database, in
/// the same transaction as its side effects, too much for a process that keeps it in memory.
/// (In-memory ids are lost on restart: a message printed but not yet acknowledged when the
/// watcher stopped is printed once more. A printout tolerates that; side effects would not.)
struct RecentIds {
    order: VecDeque<String>,
    known: HashSet<String>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::with_capacity(capacity),
            known: HashSet::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    /// Whether `id` is new; remembers it (forgetting the oldest when full).
    fn first_time(&mut self, id: &str) -> bool {
        if self.known.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.known.remove(&oldest);
            }
        }
        self.order.push_back(id.to_owned());
        self.known.insert(id.to_owned());
        true
    }
}

fn seats(count: u32) -> String {
    if count == 1 {
        "1 seat".to_owned()
    } else {
        format!("{count} seats")
    }
}

fn list(products: &[String]) -> String {
    if products.is_empty() {
        "nothing".to_owned()
    } else {
        products.join(", ")
    }
}

/// The line describing a licence change, `None` for an event that changes no licence.
fn describe(event: &Envelope) -> Result<Option<String>, serde_json::Error> {
    let mut parts = event.event_type.split('.');
    let (Some("seatledger"), Some(aggregate), Some(name), Some(version), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Ok(None);
    };
    if version != "v1" {
        // A new version may change the meaning of fields: do not guess.
        eprintln!("skipping {} (this watcher knows v1 only)", event.event_type);
        return Ok(None);
    }
    let data = || event.data.clone();
    let subject = &event.subject;
    let what = match (aggregate, name) {
        ("subscription", "SubscriptionOpened") => {
            let opened: Opened = serde_json::from_value(data())?;
            format!(
                "subscription {subject}: bought {} of {} ({}{})",
                seats(opened.quantity),
                opened.offer.provisioning_id,
                opened.term,
                if opened.trial { ", trial" } else { "" }
            )
        }
        ("subscription", "LicensesAdded") => {
            let added: SeatCount = serde_json::from_value(data())?;
            format!(
                "subscription {subject}: +{} of {}, now {}",
                seats(added.count),
                added.seats.offer.provisioning_id,
                added.seats.quantity
            )
        }
        ("subscription", "LicensesRemoved") => {
            let removed: SeatCount = serde_json::from_value(data())?;
            format!(
                "subscription {subject}: -{} of {}, now {}",
                seats(removed.count),
                removed.seats.offer.provisioning_id,
                removed.seats.quantity
            )
        }
        (
            "subscription",
            "SubscriptionSuspended"
            | "SubscriptionReactivated"
            | "SubscriptionCancelled"
            | "SubscriptionExpired"
            | "SubscriptionDisabled"
            | "SubscriptionUpgraded",
        ) => {
            let changed: SeatsChanged = serde_json::from_value(data())?;
            let verb = name.trim_start_matches("Subscription").to_ascii_lowercase();
            format!(
                "subscription {subject}: {verb}, {} of {} now {}",
                seats(changed.seats.quantity),
                changed.seats.offer.provisioning_id,
                changed.seats.state
            )
        }
        ("tenant", "LicensesAssigned") => {
            let assigned: Assigned = serde_json::from_value(data())?;
            let mut change = Vec::new();
            if !assigned.added.is_empty() {
                change.push(format!("assigned {}", list(&assigned.added)));
            }
            if !assigned.removed.is_empty() {
                change.push(format!("unassigned {}", list(&assigned.removed)));
            }
            format!("user {}: {}", assigned.user_id, change.join("; "))
        }
        ("tenant", "UserLicensesReleased") => {
            let released: Released = serde_json::from_value(data())?;
            format!(
                "user {}: released {} to the pool (user deleted)",
                released.user_id,
                list(&released.released)
            )
        }
        ("tenant", "UserLicensesReinstated") => {
            let reinstated: Reinstated = serde_json::from_value(data())?;
            let mut line = format!(
                "user {}: reinstated {} (user restored)",
                reinstated.user_id,
                list(&reinstated.reinstated)
            );
            if !reinstated.over_assigned.is_empty() {
                line.push_str(&format!(
                    ", OVER-ASSIGNED: {}",
                    list(&reinstated.over_assigned)
                ));
            }
            line
        }
        ("tenant", "LicensesMigrated") => {
            let migrated: Migrated = serde_json::from_value(data())?;
            format!(
                "{} users moved from {} to {} after an upgrade",
                migrated.users.len(),
                migrated.from_product,
                migrated.to_product
            )
        }
        ("user", "UserDeleted") => {
            let deleted: Deleted = serde_json::from_value(data())?;
            format!(
                "user {subject}: deleted, restorable until {}",
                deleted.restorable_until
            )
        }
        ("user", "UserRestored") => format!("user {subject}: restored"),
        ("user", "UserPurged") => format!("user {subject}: purged for good"),
        _ => return Ok(None),
    };
    let tenant = event.tenantid.as_deref().unwrap_or("-");
    Ok(Some(format!("{} tenant {tenant} {what}", event.time)))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match watch(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("licence_watcher: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn watch(args: Args) -> anyhow::Result<()> {
    let client = async_nats::ConnectOptions::new()
        .name("licence-watcher")
        .connect(args.nats_url.as_str())
        .await
        .map_err(|error| anyhow::anyhow!("cannot connect to NATS at {}: {error}", args.nats_url))?;
    let context = jetstream::new(client);
    let stream = context.get_stream(&args.stream).await.map_err(|error| {
        anyhow::anyhow!(
            "no stream {} at {} ({error}); seatledger creates it when it runs with NATS_URL",
            args.stream,
            args.nats_url
        )
    })?;
    // Created on the first run; later runs find it (and its position) by name.
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &args.durable,
            consumer::pull::Config {
                durable_name: Some(args.durable.clone()),
                description: Some("licence changes, printed".into()),
                filter_subject: args.filter.clone(),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 1_000,
                ..Default::default()
            },
        )
        .await?;
    eprintln!(
        "watching {} on stream {} at {} as {}",
        args.filter, args.stream, args.nats_url, args.durable
    );

    let mut recent = RecentIds::new(args.remember);
    let mut messages = consumer.messages().await?;
    loop {
        let next = async {
            match args.exit_when_idle {
                Some(seconds) => {
                    tokio::time::timeout(Duration::from_secs(seconds), messages.next())
                        .await
                        .ok()
                }
                None => Some(messages.next().await),
            }
        };
        let message = tokio::select! {
            next = next => match next {
                None => {
                    eprintln!("idle for {} s; exiting", args.exit_when_idle.unwrap_or_default());
                    return Ok(());
                }
                Some(None) => return Ok(()),
                Some(Some(Err(error))) => {
                    // Missed heartbeats, a reconnect…: the stream of messages goes on.
                    eprintln!("consumer: {error}");
                    continue;
                }
                Some(Some(Ok(message))) => message,
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match serde_json::from_slice::<Envelope>(&message.payload) {
            Ok(event) => {
                if recent.first_time(&event.id) {
                    match describe(&event) {
                        Ok(Some(line)) => println!("{line}"),
                        Ok(None) => {}
                        Err(error) => eprintln!(
                            "cannot read {} {} ({error}); skipped",
                            event.event_type, event.id
                        ),
                    }
                }
                // Acknowledged once handled (or recognised as handled before): JetStream
                // redelivers what is not acknowledged within ack_wait.
                if let Err(error) = message.ack().await {
                    eprintln!("cannot acknowledge {}: {error}", event.id);
                }
            }
            Err(error) => {
                // Not an envelope: no redelivery will make it one.
                eprintln!("not a seatledger envelope on {} ({error})", message.subject);
                if let Err(error) = message.ack_with(AckKind::Term).await {
                    eprintln!("cannot terminate the message: {error}");
                }
            }
        }
    }
}
