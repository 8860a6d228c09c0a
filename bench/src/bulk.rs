//! Builds a large store fast: the real domain decides every event, the log is written with COPY.
//!
//! Every command goes through the `aggregates` crate's own `handle` on in-memory aggregates,
//! and its process managers' follow-ups (`aggregates::policy`) run to completion exactly as
//! `src/ledger.rs` runs them: a purchase opens its subscription and the subscription reports
//! its seats back, a registration creates the user, a deletion releases its licences. Each
//! event is serialised as cqrs-es serialises it (`serde_json::to_value` of the event, its
//! `event_type()` and `event_version()`, the command's metadata as a JSON object), and rows go
//! to `events` in commit order with COPY (one transaction per chunk, so `transaction_id`
//! increases with `position` as with real commits); `recorded_at` is the command's instant.
//! Personal details are sealed by the service's own `Vault` (so `personal_keys` holds real
//! keys) and principal names fingerprinted by it. Tenants whose stream reaches 100 events get
//! the snapshot the ledger writes every 100 events: every tenant's script ends on a multiple
//! of 100 (licence toggles pad it) and that state is stored. Projections and other consumers
//! are not pre-built: the service catches up from position 0 when it starts, as after a
//! restore, and its process-manager consumer re-runs every follow-up, which must find
//! nothing left to do.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use aggregates::catalog::{offers, CatalogAggregate, CatalogCommand, Offer};
use aggregates::party::{BillingProfile, BillingProfileCommand, Reseller, ResellerCommand};
use aggregates::personal::{PersonalDetails, PrincipalFingerprint, SealedDetails};
use aggregates::policy::{self, FollowUp};
use aggregates::subscription::{Subscription, SubscriptionCommand};
use aggregates::tenant::{MemberStatus, Tenant, TenantCommand};
use aggregates::user::{User, UserCommand};
use aggregates::values::{
    Currency, DomainName, Location, OfferId, OrganisationName, PersonName, ProvisioningId,
    Quantity, Term, UserPrincipalName, UserRole,
};
use aggregates::CommercialRules;
use anyhow::{anyhow, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use futures::StreamExt;
use sqlx::postgres::PgPoolCopyExt;
use uuid::Uuid;

use crate::progress::{Counter, Ticker};

/// The prepared store holds a tenant snapshot at every multiple of this many events (the
/// newest kept). The service's own interval (`tenant_snapshot_interval` in src/ledger.rs) is
/// larger for large tenants; a cold load works from any snapshot.
pub const SNAPSHOT_EVERY: usize = 100;
/// Users per ordinary tenant.
const FILLER_USERS: usize = 8;
/// Events in an ordinary tenant's own stream (padded to it with licence changes).
const FILLER_TENANT_EVENTS: usize = 200;
/// Events an ordinary tenant causes in other streams: two subscriptions opened, one licence
/// addition, its users created and one deleted.
const FILLER_OTHER_EVENTS: usize = 2 + 1 + FILLER_USERS + 1;
/// Ordinary tenants being written at once (their commands interleave in the log).
const ACTIVE_FILLERS: usize = 32;
/// Bytes of COPY text per transaction.
const CHUNK_BYTES: usize = 16 << 20;

/// What to build.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Events in the log, roughly (the exact count is reported).
    pub events: u64,
    /// Users of the one large tenant.
    pub big_users: usize,
}

/// One ordinary tenant, as built.
#[derive(Debug, Clone)]
pub struct Filler {
    /// Its id.
    pub tenant_id: Uuid,
    /// Its active users and whether each holds Business Premium.
    pub users: Vec<(Uuid, bool)>,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct BigStore {
    /// Rows in `events`.
    pub events: i64,
    /// Users in the store.
    pub users: usize,
    /// Tenants in the store.
    pub tenants: usize,
    /// Subscriptions in the store.
    pub subscriptions: usize,
    /// Tenant snapshots written.
    pub snapshots: usize,
    /// The large tenant.
    pub big_tenant: Uuid,
    /// Its users.
    pub big_users: usize,
    /// How many of them hold Business Premium.
    pub big_licensed: u64,
    /// Its users without a licence (kept so for the latency scenario).
    pub reserved: Vec<Uuid>,
    /// Its events.
    pub big_tenant_events: usize,
    /// The ordinary tenants.
    pub fillers: Vec<Filler>,
    /// Events per type.
    pub by_type: BTreeMap<String, u64>,
    /// Time spent sealing personal details.
    pub sealing: Duration,
    /// Time spent deciding and writing the events.
    pub writing: Duration,
    /// Time spent on VACUUM ANALYZE.
    pub vacuum: Duration,
}

struct PreparedUser {
    user_id: Uuid,
    principal_domain: DomainName,
    fingerprint: PrincipalFingerprint,
    details: SealedDetails,
}

fn person(index: usize, domain: &str) -> anyhow::Result<PersonalDetails> {
    const FIRST: [&str; 8] = [
        "Megan", "Alex", "Diego", "Isaiah", "Lynne", "Adele", "Grady", "Johanna",
    ];
    const LAST: [&str; 8] = [
        "Bowen",
        "Wilber",
        "Siciliani",
        "Langer",
        "Robbins",
        "Vance",
        "Archie",
        "Lorenz",
    ];
    const PLACES: [&str; 4] = ["Seattle", "Redmond", "Milan", "London"];
    let first = FIRST[index % FIRST.len()];
    let last = LAST[(index / FIRST.len()) % LAST.len()];
    Ok(PersonalDetails {
        user_principal_name: UserPrincipalName::parse(&format!(
            "{}.{}.{index}@{domain}",
            first.to_lowercase(),
            last.to_lowercase()
        ))?,
        first_name: PersonName::parse(first)?,
        last_name: PersonName::parse(last)?,
        display_name: PersonName::parse(&format!("{first} {last}"))?,
        location: Some(Location::parse(PLACES[index % PLACES.len()])?),
    })
}

/// Seals every user's details with the service's vault (which stores each user's key).
async fn prepare_users(
    vault: &seatledger::vault::Vault,
    tenants: &[(Uuid, String, usize)],
    counter: &Counter,
) -> anyhow::Result<HashMap<Uuid, Vec<PreparedUser>>> {
    let jobs = tenants.iter().flat_map(|(tenant_id, domain, users)| {
        (0..*users).map(move |index| (*tenant_id, domain.clone(), index))
    });
    let mut sealed = futures::stream::iter(jobs)
        .map(|(tenant_id, domain, index)| async move {
            let details = person(index, &domain)?;
            let user_id = Uuid::new_v4();
            let prepared = PreparedUser {
                user_id,
                principal_domain: details.user_principal_name.domain(),
                fingerprint: vault.fingerprint(tenant_id, &details.user_principal_name),
                details: vault.seal(user_id, &details).await?,
            };
            Ok::<_, anyhow::Error>((tenant_id, index, prepared))
        })
        .buffer_unordered(32);
    let mut by_tenant: HashMap<Uuid, Vec<(usize, PreparedUser)>> = HashMap::new();
    while let Some(next) = sealed.next().await {
        let (tenant_id, index, prepared) = next?;
        by_tenant
            .entry(tenant_id)
            .or_default()
            .push((index, prepared));
        counter.add(1);
    }
    Ok(by_tenant
        .into_iter()
        .map(|(tenant_id, mut users)| {
            users.sort_by_key(|(index, _)| *index);
            (
                tenant_id,
                users.into_iter().map(|(_, prepared)| prepared).collect(),
            )
        })
        .collect())
}

/// One command of a tenant's script; instants and offers are filled in when it runs.
enum Step {
    CreateTenant {
        name: String,
    },
    Purchase {
        subscription_id: Uuid,
        offer: &'static str,
        quantity: i64,
    },
    AddLicenses {
        subscription_id: Uuid,
        count: i64,
    },
    Register(PreparedUser),
    Assign {
        user_id: Uuid,
        add: Vec<&'static str>,
    },
    /// Gives or takes Business Premium of a random active user of the toggle range.
    Toggle,
    Delete {
        user_id: Uuid,
    },
}

struct Script {
    tenant_id: Uuid,
    domain: String,
    steps: VecDeque<Step>,
    /// Users (in registration order) whose licences toggles may change.
    togglable: Vec<Uuid>,
    big: bool,
}

/// Writes COPY text of `events` rows and hands full chunks to the writer.
struct Out {
    buffer: String,
    sender: tokio::sync::mpsc::Sender<String>,
    by_type: BTreeMap<String, u64>,
    generated: Counter,
    rows: u64,
}

fn copy_escape(text: &str, into: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => into.push_str("\\\\"),
            '\n' => into.push_str("\\n"),
            '\r' => into.push_str("\\r"),
            '\t' => into.push_str("\\t"),
            other => into.push(other),
        }
    }
}

impl Out {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: usize,
        event_type: &str,
        event_version: &str,
        payload: &str,
        metadata: &str,
        at: DateTime<Utc>,
    ) {
        let buffer = &mut self.buffer;
        buffer.push_str(aggregate_type);
        buffer.push('\t');
        buffer.push_str(aggregate_id);
        let _ = write!(buffer, "\t{sequence}\t");
        buffer.push_str(event_type);
        buffer.push('\t');
        buffer.push_str(event_version);
        buffer.push('\t');
        copy_escape(payload, buffer);
        buffer.push('\t');
        copy_escape(metadata, buffer);
        buffer.push('\t');
        buffer.push_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true));
        buffer.push('\n');
        self.rows += 1;
        self.generated.add(1);
        *self.by_type.entry(event_type.to_owned()).or_default() += 1;
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.buffer.is_empty() {
            let chunk = std::mem::take(&mut self.buffer);
            // The writer only goes away when it failed; its error is reported.
            let _ = self.sender.blocking_send(chunk);
        }
    }
}

struct Held<A> {
    aggregate: A,
    sequence: usize,
}

impl<A: Default> Default for Held<A> {
    fn default() -> Self {
        Self {
            aggregate: A::default(),
            sequence: 0,
        }
    }
}

/// Runs one command on an in-memory aggregate as the ledger does: `handle` (whose event sink
/// applies each event to the aggregate), then the events numbered after the stream's last.
async fn execute<A>(
    held: &mut Held<A>,
    aggregate_id: &str,
    command: A::Command,
    services: &A::Services,
    metadata: &str,
    at: DateTime<Utc>,
    out: &mut Out,
) -> anyhow::Result<Vec<(usize, A::Event)>>
where
    A: Aggregate,
    A::Error: std::fmt::Display,
{
    let sink = EventSink::default();
    held.aggregate
        .handle(command, services, &sink)
        .await
        .map_err(|error| anyhow!("{} {aggregate_id} refused a command: {error}", A::TYPE))?;
    let mut numbered = Vec::new();
    for event in sink.collect().await {
        held.sequence += 1;
        let payload = serde_json::to_value(&event)?.to_string();
        out.push(
            A::TYPE,
            aggregate_id,
            held.sequence,
            &event.event_type(),
            &event.event_version(),
            &payload,
            metadata,
            at,
        );
        numbered.push((held.sequence, event));
    }
    Ok(numbered)
}

/// The in-memory ledger.
struct Generator {
    rules: CommercialRules,
    catalog: Held<CatalogAggregate>,
    tenants: HashMap<Uuid, Held<Tenant>>,
    subscriptions: HashMap<Uuid, Held<Subscription>>,
    users: HashMap<Uuid, Held<User>>,
    out: Out,
    token_id: String,
    snapshots: Vec<(Uuid, usize, String)>,
}

impl Generator {
    fn metadata(&self) -> String {
        let request = Uuid::new_v4().to_string();
        let metadata: HashMap<&str, &str> = HashMap::from([
            ("token_id", self.token_id.as_str()),
            ("role", "admin"),
            ("request_id", request.as_str()),
            ("correlation_id", request.as_str()),
            ("causation_id", request.as_str()),
        ]);
        serde_json::to_value(metadata)
            .expect("string metadata")
            .to_string()
    }

    fn offer(&self, id: &str) -> anyhow::Result<Offer> {
        self.catalog
            .aggregate
            .catalog
            .get(&OfferId::parse(id)?)
            .cloned()
            .with_context(|| format!("offer {id} is not in the catalog"))
    }

    /// Runs a command and every follow-up it causes, as `Ledger::dispatch` does.
    async fn dispatch(&mut self, first: FollowUp, at: DateTime<Utc>) -> anyhow::Result<()> {
        let metadata = self.metadata();
        let mut queue = VecDeque::from([first]);
        while let Some(command) = queue.pop_front() {
            match command {
                FollowUp::Tenant { tenant_id, command } => {
                    let held = self.tenants.entry(tenant_id).or_default();
                    let events = execute(
                        held,
                        &tenant_id.to_string(),
                        command,
                        &self.rules,
                        &metadata,
                        at,
                        &mut self.out,
                    )
                    .await?;
                    for (_, event) in &events {
                        queue.extend(policy::on_tenant_event(tenant_id, event));
                    }
                }
                FollowUp::Subscription {
                    subscription_id,
                    command,
                } => {
                    let held = self.subscriptions.entry(subscription_id).or_default();
                    let events = execute(
                        held,
                        &subscription_id.to_string(),
                        command,
                        &self.rules,
                        &metadata,
                        at,
                        &mut self.out,
                    )
                    .await?;
                    for (sequence, event) in &events {
                        queue.extend(policy::on_subscription_event(
                            subscription_id,
                            *sequence as u64,
                            event,
                        ));
                    }
                }
                FollowUp::User { user_id, command } => {
                    let held = self.users.entry(user_id).or_default();
                    let events = execute(
                        held,
                        &user_id.to_string(),
                        command,
                        &self.rules,
                        &metadata,
                        at,
                        &mut self.out,
                    )
                    .await?;
                    for (sequence, event) in &events {
                        queue.extend(policy::on_user_event(user_id, *sequence as u64, event));
                    }
                }
                // Timers are a projection of the same events.
                FollowUp::Schedule(_) | FollowUp::Cancel { .. } => {}
            }
        }
        Ok(())
    }

    fn tenant_sequence(&self, tenant_id: Uuid) -> usize {
        self.tenants.get(&tenant_id).map_or(0, |held| held.sequence)
    }

    /// The next command of `script`, or `None` when it is done (padded to a snapshot).
    fn next_command(
        &mut self,
        script: &mut Script,
        at: DateTime<Utc>,
        random: &mut Random,
        billing_profile_id: Uuid,
        reseller_id: Uuid,
    ) -> anyhow::Result<Option<FollowUp>> {
        let tenant_id = script.tenant_id;
        let tenant = |command| FollowUp::Tenant { tenant_id, command };
        let step = match script.steps.pop_front() {
            Some(step) => step,
            None => {
                let sequence = self.tenant_sequence(tenant_id);
                if sequence >= SNAPSHOT_EVERY && sequence % SNAPSHOT_EVERY != 0 {
                    Step::Toggle
                } else {
                    return Ok(None);
                }
            }
        };
        let premium = OfferId::parse(offers::BUSINESS_PREMIUM)?;
        Ok(Some(match step {
            Step::CreateTenant { name } => tenant(TenantCommand::CreateTenant {
                tenant_id,
                domain: DomainName::parse(&script.domain)?,
                name: OrganisationName::parse(&name)?,
                reseller_id: (!script.big).then_some(reseller_id),
                at,
            }),
            Step::Purchase {
                subscription_id,
                offer,
                quantity,
            } => tenant(TenantCommand::PurchaseSubscription {
                subscription_id,
                offer: self.offer(offer)?,
                quantity: Quantity::parse("quantity", quantity)?,
                term: Term::Monthly,
                billing_profile_id,
                trial: false,
                at,
            }),
            Step::AddLicenses {
                subscription_id,
                count,
            } => FollowUp::Subscription {
                subscription_id,
                command: SubscriptionCommand::AddLicenses {
                    count: Quantity::parse("count", count)?,
                    at,
                },
            },
            Step::Register(user) => tenant(TenantCommand::RegisterUser {
                user_id: user.user_id,
                principal_domain: user.principal_domain,
                fingerprint: user.fingerprint,
                details: user.details,
                role: UserRole::User,
                at,
            }),
            Step::Assign { user_id, add } => tenant(TenantCommand::AssignLicenses {
                user_id,
                add: add
                    .iter()
                    .map(|offer| OfferId::parse(offer))
                    .collect::<Result<_, _>>()?,
                remove: Vec::new(),
                at,
            }),
            Step::Toggle => {
                let held = &self.tenants[&tenant_id].aggregate;
                let product = self.offer(offers::BUSINESS_PREMIUM)?.provisioning_id;
                let active: Vec<Uuid> = script
                    .togglable
                    .iter()
                    .copied()
                    .filter(|user| {
                        held.members
                            .get(user)
                            .is_some_and(|member| member.status == MemberStatus::Active)
                    })
                    .collect();
                anyhow::ensure!(!active.is_empty(), "no active user to toggle");
                let user_id = active[random.below(active.len())];
                let holds = held.members[&user_id].licenses.contains(&product);
                let (add, remove) = if holds {
                    (Vec::new(), vec![premium])
                } else {
                    (vec![premium], Vec::new())
                };
                tenant(TenantCommand::AssignLicenses {
                    user_id,
                    add,
                    remove,
                    at,
                })
            }
            Step::Delete { user_id } => FollowUp::User {
                user_id,
                command: UserCommand::DeleteUser { at },
            },
        }))
    }

    /// Records the tenant's snapshot (when its stream is long enough to have one) and forgets
    /// the aggregates of a finished ordinary tenant.
    fn finish(&mut self, script: &Script, subscriptions: &[Uuid]) -> anyhow::Result<()> {
        let held = &self.tenants[&script.tenant_id];
        if held.sequence >= SNAPSHOT_EVERY {
            debug_assert_eq!(held.sequence % SNAPSHOT_EVERY, 0);
            self.snapshots.push((
                script.tenant_id,
                held.sequence,
                serde_json::to_value(&held.aggregate)?.to_string(),
            ));
        }
        if !script.big {
            for subscription in subscriptions {
                self.subscriptions.remove(subscription);
            }
            for user in &script.togglable {
                self.users.remove(user);
            }
        }
        Ok(())
    }
}

/// A small deterministic generator (xorshift64*), enough to spread commands.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// How many ordinary tenants fill the log up to `plan.events`, and how many of the large
/// tenant's users stay without a licence.
pub fn sizes(plan: &Plan) -> (usize, usize) {
    let reserved = (plan.big_users / 100).max(64).min(plan.big_users);
    let licensed = plan.big_users - reserved;
    // TenantCreated, SubscriptionPurchased + SubscriptionOpened + SubscriptionSeatsChanged,
    // two events per user, one per licensed user, up to 99 of padding; the catalog and the
    // two parties.
    let big = 4 + 2 * plan.big_users + licensed + 50 + 12;
    let per_filler = FILLER_TENANT_EVENTS + FILLER_OTHER_EVENTS;
    let remaining = (plan.events as usize).saturating_sub(big);
    (((remaining + per_filler / 2) / per_filler).max(1), reserved)
}

/// Builds the store in the migrated, empty database at `url`.
pub async fn build(scenario: &str, url: &str, plan: Plan) -> anyhow::Result<BigStore> {
    let store = seatledger::store::Store::connect(url).await?;
    store.migrate().await?;
    let seatledger::store::Store::Postgres(pool) = &store else {
        anyhow::bail!("the large store is built on PostgreSQL");
    };
    let vault = seatledger::vault::Vault::open(store.clone()).await?;
    let run = &Uuid::new_v4().simple().to_string()[..8];
    let (filler_count, reserved_count) = sizes(&plan);
    let big_tenant = Uuid::new_v4();
    let big_domain = format!("bigcorp-{run}.onmicrosoft.com");
    let mut tenants = vec![(big_tenant, big_domain.clone(), plan.big_users)];
    for index in 0..filler_count {
        tenants.push((
            Uuid::new_v4(),
            format!("tenant{index}-{run}.onmicrosoft.com"),
            FILLER_USERS,
        ));
    }

    let sealing_started = Instant::now();
    let sealed = Counter::new();
    let mut prepared = {
        let shown = sealed.clone();
        let _ticker = Ticker::start(scenario, "build store: sealing users' details", move |_| {
            shown.line("users sealed")
        });
        prepare_users(&vault, &tenants, &sealed).await?
    };
    let sealing = sealing_started.elapsed();

    // Scripts: the large tenant registers its users, licensing all but the reserved ones;
    // every ordinary tenant buys two subscriptions, registers and licenses its users, adds
    // seats, changes licences for a while, deletes a user, and pads to a snapshot.
    let mut scripts = VecDeque::new();
    let mut big_script = {
        let users = prepared.remove(&big_tenant).unwrap_or_default();
        let subscription_id = Uuid::new_v4();
        let mut steps = VecDeque::from([
            Step::CreateTenant {
                name: "Big Corp".into(),
            },
            Step::Purchase {
                subscription_id,
                offer: offers::BUSINESS_PREMIUM,
                quantity: (plan.big_users + 10_000).min(Quantity::MAX as usize) as i64,
            },
        ]);
        let licensed = plan.big_users - reserved_count;
        let mut togglable = Vec::new();
        for (index, user) in users.into_iter().enumerate() {
            let user_id = user.user_id;
            steps.push_back(Step::Register(user));
            if index < licensed {
                togglable.push(user_id);
                steps.push_back(Step::Assign {
                    user_id,
                    add: vec![offers::BUSINESS_PREMIUM],
                });
            }
        }
        Script {
            tenant_id: big_tenant,
            domain: big_domain,
            steps,
            togglable,
            big: true,
        }
    };
    let mut filler_subscriptions: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (tenant_id, domain, _) in tenants.iter().skip(1) {
        let users = prepared.remove(tenant_id).unwrap_or_default();
        let premium = Uuid::new_v4();
        let archiving = Uuid::new_v4();
        filler_subscriptions.insert(*tenant_id, vec![premium, archiving]);
        let ids: Vec<Uuid> = users.iter().map(|user| user.user_id).collect();
        let mut steps = VecDeque::from([
            Step::CreateTenant {
                name: format!("Customer {}", &domain[..domain.find('-').unwrap_or(0)]),
            },
            Step::Purchase {
                subscription_id: premium,
                offer: offers::BUSINESS_PREMIUM,
                quantity: FILLER_USERS as i64 + 4,
            },
            Step::Purchase {
                subscription_id: archiving,
                offer: offers::EXCHANGE_ONLINE_ARCHIVING,
                quantity: 2,
            },
        ]);
        steps.extend(users.into_iter().map(Step::Register));
        for (index, user_id) in ids.iter().enumerate() {
            steps.push_back(Step::Assign {
                user_id: *user_id,
                add: if index < 2 {
                    vec![offers::BUSINESS_PREMIUM, offers::EXCHANGE_ONLINE_ARCHIVING]
                } else {
                    vec![offers::BUSINESS_PREMIUM]
                },
            });
        }
        steps.push_back(Step::AddLicenses {
            subscription_id: premium,
            count: 2,
        });
        // Tenant events so far: created, 2 × (purchased, seats changed), users registered and
        // assigned, seats changed after the addition; the deletion releases one more.
        let so_far = 1 + 4 + 2 * FILLER_USERS + 1 + 1;
        let toggles = FILLER_TENANT_EVENTS.saturating_sub(so_far);
        for index in 0..toggles {
            if index == toggles / 2 {
                steps.push_back(Step::Delete {
                    user_id: *ids.last().expect("users"),
                });
            }
            steps.push_back(Step::Toggle);
        }
        scripts.push_back(Script {
            tenant_id: *tenant_id,
            domain: domain.clone(),
            steps,
            togglable: ids[..ids.len() - 1].to_vec(),
            big: false,
        });
    }
    let big_commands = big_script.steps.len() as f64;
    let filler_commands: f64 = scripts.iter().map(|s| s.steps.len() as f64 + 1.0).sum();
    let big_share = big_commands / (big_commands + filler_commands);
    let total_commands = (big_commands + filler_commands) as i64 + 3;

    let (sender, mut receiver) = tokio::sync::mpsc::channel::<String>(4);
    let copied = Counter::new();
    let generated = Counter::new();
    let writing_started = Instant::now();
    let writer = {
        let pool = pool.clone();
        let copied = copied.clone();
        tokio::spawn(async move {
            while let Some(chunk) = receiver.recv().await {
                let mut connection = pool.acquire().await?;
                let mut copy = connection
                    .copy_in_raw(
                        "COPY events (aggregate_type, aggregate_id, sequence, event_type, \
                         event_version, payload, metadata, recorded_at) FROM STDIN",
                    )
                    .await?;
                copy.send(chunk.as_bytes()).await?;
                let rows = copy.finish().await?;
                copied.add(rows);
            }
            Ok::<_, anyhow::Error>(())
        })
    };
    let ticker = {
        let (generated, copied) = (generated.clone(), copied.clone());
        Ticker::start(
            scenario,
            "build store: deciding and copying events",
            move |_| {
                format!(
                    "{}; {}",
                    generated.line("events decided"),
                    copied.line("copied")
                )
            },
        )
    };
    let out = Out {
        buffer: String::with_capacity(CHUNK_BYTES + (1 << 20)),
        sender,
        by_type: BTreeMap::new(),
        generated,
        rows: 0,
    };
    let outcome = tokio::task::spawn_blocking(move || {
        futures::executor::block_on(async move {
            let mut generator = Generator {
                rules: CommercialRules::default(),
                catalog: Held::default(),
                tenants: HashMap::new(),
                subscriptions: HashMap::new(),
                users: HashMap::new(),
                out,
                token_id: Uuid::new_v4().to_string(),
                snapshots: Vec::new(),
            };
            // Business time runs over the last two days, one tick per command.
            let span = chrono::Duration::hours(48);
            let start = Utc::now() - span - chrono::Duration::minutes(5);
            let tick = span / i32::try_from(total_commands.max(1)).unwrap_or(i32::MAX);
            let mut clock = start;
            let mut now = || {
                clock += tick;
                clock
            };
            let metadata = generator.metadata();
            let at = now();
            execute(
                &mut generator.catalog,
                aggregates::catalog::CATALOG_ID,
                CatalogCommand::SeedDefaults { at },
                &(),
                &metadata,
                at,
                &mut generator.out,
            )
            .await?;
            let reseller_id = Uuid::new_v4();
            let at = now();
            execute(
                &mut Held::<Reseller>::default(),
                &reseller_id.to_string(),
                ResellerCommand::CreateReseller {
                    reseller_id,
                    name: OrganisationName::parse("Northwind Cloud Partners")?,
                    at,
                },
                &(),
                &generator.metadata(),
                at,
                &mut generator.out,
            )
            .await?;
            let billing_profile_id = Uuid::new_v4();
            let at = now();
            execute(
                &mut Held::<BillingProfile>::default(),
                &billing_profile_id.to_string(),
                BillingProfileCommand::CreateBillingProfile {
                    billing_profile_id,
                    name: OrganisationName::parse("Northwind — USD")?,
                    currency: Currency::parse("USD")?,
                    reseller_id: Some(reseller_id),
                    at,
                },
                &(),
                &generator.metadata(),
                at,
                &mut generator.out,
            )
            .await?;

            let mut random = Random(0x5EA7_1ED6_E200_0001);
            let mut active: Vec<Script> = Vec::new();
            let mut big_done = false;
            let mut fillers = Vec::new();
            loop {
                while active.len() < ACTIVE_FILLERS {
                    match scripts.pop_front() {
                        Some(script) => active.push(script),
                        None => break,
                    }
                }
                if big_done && active.is_empty() {
                    break;
                }
                let pick_big = !big_done && (active.is_empty() || random.chance(big_share));
                if pick_big {
                    let at = now();
                    match generator.next_command(
                        &mut big_script,
                        at,
                        &mut random,
                        billing_profile_id,
                        reseller_id,
                    )? {
                        Some(command) => generator.dispatch(command, at).await?,
                        None => {
                            generator.finish(&big_script, &[])?;
                            big_done = true;
                        }
                    }
                } else {
                    let index = random.below(active.len());
                    let at = now();
                    let command = generator.next_command(
                        &mut active[index],
                        at,
                        &mut random,
                        billing_profile_id,
                        reseller_id,
                    )?;
                    match command {
                        Some(command) => generator.dispatch(command, at).await?,
                        None => {
                            let script = active.swap_remove(index);
                            let subscriptions = filler_subscriptions
                                .remove(&script.tenant_id)
                                .unwrap_or_default();
                            let tenant = &generator.tenants[&script.tenant_id].aggregate;
                            let product =
                                generator.offer(offers::BUSINESS_PREMIUM)?.provisioning_id;
                            fillers.push(Filler {
                                tenant_id: script.tenant_id,
                                users: licence_states(tenant, &script.togglable, &product),
                            });
                            generator.finish(&script, &subscriptions)?;
                            generator.tenants.remove(&script.tenant_id);
                        }
                    }
                }
            }
            generator.out.flush();
            let big = &generator.tenants[&big_tenant];
            let product = generator.offer(offers::BUSINESS_PREMIUM)?.provisioning_id;
            let reserved: Vec<Uuid> = big
                .aggregate
                .members
                .iter()
                .filter(|(_, member)| {
                    member.status == MemberStatus::Active && !member.licenses.contains(&product)
                })
                .map(|(user, _)| *user)
                .collect();
            let summary = (
                big.sequence,
                u64::from(big.aggregate.assigned.get(&product).copied().unwrap_or(0)),
                reserved,
                fillers,
                std::mem::take(&mut generator.snapshots),
                std::mem::take(&mut generator.out.by_type),
                generator.out.rows,
            );
            Ok::<_, anyhow::Error>(summary)
        })
    })
    .await?;
    // The generator's channel closed with it: the writer ends once it copied the rest.
    let written = writer.await?;
    drop(ticker);
    let (big_events, big_licensed, reserved, fillers, snapshots, by_type, rows) = outcome?;
    written?;
    let mut copy = pool
        .copy_in_raw(
            "COPY snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, part, payload) FROM STDIN",
        )
        .await?;
    let mut text = String::new();
    for (tenant_id, sequence, payload) in &snapshots {
        for (part, piece) in seatledger::write::snapshot::parts(payload).enumerate() {
            let _ = write!(
                text,
                "tenant\t{tenant_id}\t{sequence}\t{}\t{part}\t",
                sequence / SNAPSHOT_EVERY
            );
            copy_escape(piece, &mut text);
            text.push('\n');
        }
    }
    copy.send(text.as_bytes()).await?;
    copy.finish().await?;
    let writing = writing_started.elapsed();

    let vacuum_started = Instant::now();
    eprintln!("[{scenario}] build store: VACUUM ANALYZE (as autovacuum would have by now)");
    for table in ["events", "snapshots", "personal_keys"] {
        sqlx::raw_sql(&format!("VACUUM ANALYZE {table}"))
            .execute(pool)
            .await?;
    }
    let vacuum = vacuum_started.elapsed();
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(pool)
        .await?;
    anyhow::ensure!(
        events as u64 == rows,
        "{rows} events decided but {events} in the table"
    );
    pool.close().await;
    let users = plan.big_users + fillers.len() * FILLER_USERS;
    Ok(BigStore {
        events,
        users,
        tenants: 1 + fillers.len(),
        subscriptions: 1 + 2 * fillers.len(),
        snapshots: snapshots.len(),
        big_tenant,
        big_users: plan.big_users,
        big_licensed,
        reserved,
        big_tenant_events: big_events,
        fillers,
        by_type,
        sealing,
        writing,
        vacuum,
    })
}

fn licence_states(tenant: &Tenant, users: &[Uuid], product: &ProvisioningId) -> Vec<(Uuid, bool)> {
    users
        .iter()
        .filter_map(|user| {
            let member = tenant.members.get(user)?;
            (member.status == MemberStatus::Active)
                .then(|| (*user, member.licenses.contains(product)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_reads_specially() {
        let mut out = String::new();
        copy_escape("a\\b\tc\nd\re", &mut out);
        assert_eq!(out, "a\\\\b\\tc\\nd\\re");
    }

    #[test]
    fn sizes_fill_the_log() {
        let (fillers, reserved) = sizes(&Plan {
            events: 1_000_000,
            big_users: 100_000,
        });
        assert_eq!(reserved, 1_000);
        let big = 4 + 200_000 + 99_000 + 62;
        let total = big + fillers * (FILLER_TENANT_EVENTS + FILLER_OTHER_EVENTS);
        assert!((total as i64 - 1_000_000).abs() < 300, "{total}");
    }
}
