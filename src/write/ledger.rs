//! The ledger: runs a command against its aggregate in the event store, then the process
//! managers' follow-ups it causes, to completion, and says where its events landed in the log.
//!
//! Follow-ups run inline so that a client sees their effect at once (a bought subscription is
//! open when the purchase answers); every follow-up is idempotent, so the durable consumer that
//! replays them from the log after a crash does no harm.

use std::collections::VecDeque;
use std::sync::Arc;

use aggregates::catalog::CatalogAggregate;
use aggregates::party::{BillingProfile, Reseller};
use aggregates::policy::{self, FollowUp};
use aggregates::subscription::Subscription;
use aggregates::tenant::Tenant;
use aggregates::user::User;
use aggregates::CommercialRules;
use cqrs_es::Aggregate;
use tracing::warn;

pub use super::error::{LedgerError, Metadata};
use super::executor::{Committed, Executor};
use crate::store::Store;

/// Tenants' streams grow with every user; a snapshot every this many events keeps a cold load
/// of a tenant cheap however long its history (a warm one reads only newer events).
pub const TENANT_SNAPSHOT_EVERY: usize = 500;

/// Events between two snapshots of `tenant`: [`TENANT_SNAPSHOT_EVERY`], or a quarter of its
/// users when that is more. A snapshot costs in proportion to the register (29 MB of JSON for
/// 100 000 users, serialised, sent and parsed by PostgreSQL); replaying the events since costs
/// in proportion to their number. Spacing snapshots by the register's size keeps both the
/// snapshot work per event and a cold load's replay bounded.
pub fn tenant_snapshot_interval(tenant: &Tenant) -> usize {
    TENANT_SNAPSHOT_EVERY.max(tenant.members.len() / 4)
}

/// Where the last event of a command landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    /// The aggregate type.
    pub aggregate_type: &'static str,
    /// The aggregate id.
    pub aggregate_id: String,
    /// The last event's sequence in its stream.
    pub sequence: usize,
    /// A log position at or after the last event of the command's whole chain: the last
    /// event's own, or the log's end when a follow-up found its work done by someone else.
    pub position: i64,
}

/// Every aggregate of the domain over the store.
pub struct Ledger {
    store: Store,
    commits: Arc<tokio::sync::watch::Sender<u64>>,
    tenants: Executor<Tenant>,
    subscriptions: Executor<Subscription>,
    users: Executor<User>,
    catalog: Executor<CatalogAggregate>,
    resellers: Executor<Reseller>,
    billing_profiles: Executor<BillingProfile>,
}

impl Ledger {
    /// The ledger over `store`.
    pub fn new(store: Store, rules: CommercialRules) -> Self {
        let commits = Arc::new(tokio::sync::watch::channel(0).0);
        Self {
            tenants: Executor::new(
                store.clone(),
                rules,
                Some(tenant_snapshot_interval),
                commits.clone(),
            ),
            subscriptions: Executor::new(store.clone(), rules, None, commits.clone()),
            users: Executor::new(store.clone(), rules, None, commits.clone()),
            catalog: Executor::new(store.clone(), (), None, commits.clone()),
            resellers: Executor::new(store.clone(), (), None, commits.clone()),
            billing_profiles: Executor::new(store.clone(), (), None, commits.clone()),
            store,
            commits,
        }
    }

    /// Changes whenever this instance commits events: its log consumers wait on it.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Runs `command` and, to completion, the follow-ups it causes. Returns where the last
    /// event of the whole chain landed (`None` when the command decided nothing), so that a
    /// reader waiting for that position sees the follow-ups' effects too. Only the first
    /// command's refusal is returned; a failing follow-up is logged and left to the durable
    /// process-manager consumer, which re-runs follow-ups from the log.
    #[tracing::instrument(
        name = "command",
        skip_all,
        fields(
            aggregate = aggregate_of(&command).0,
            aggregate_id = %aggregate_of(&command).1.unwrap_or_default(),
            request_id = metadata.get("request_id").map_or("", String::as_str),
        )
    )]
    pub async fn dispatch(
        &self,
        command: FollowUp,
        metadata: &Metadata,
    ) -> Result<Option<Landed>, LedgerError> {
        let mut queue = VecDeque::new();
        let mut landed = self.step(command, metadata, &mut queue).await?;
        // A follow-up that decided nothing may have found its work done by someone else: the
        // process-manager consumer (woken by this very commit) or another instance can run
        // the same follow-up first, and its event then lands after ours. Its commit is
        // visible by the time ours decides nothing, so the log's end covers it.
        let mut done_elsewhere = false;
        while let Some(next) = queue.pop_front() {
            let writes = !matches!(next, FollowUp::Schedule(_) | FollowUp::Cancel { .. });
            let description = format!("{next:?}");
            match self.step(next, metadata, &mut queue).await {
                Ok(Some(later)) => {
                    landed = Some(match landed.take() {
                        Some(earlier) if earlier.position > later.position => earlier,
                        _ => later,
                    });
                }
                Ok(None) => done_elsewhere |= writes,
                Err(error) => {
                    done_elsewhere = true;
                    warn!(%error, follow_up = %description, "follow-up did not complete; the process-manager consumer will retry it");
                }
            }
        }
        if done_elsewhere {
            if let Some(landed) = landed.as_mut() {
                // The command has committed: a store that fails now must not turn its answer
                // into an error (a client would retry a command that happened).
                match self.log_end().await {
                    Ok(end) => landed.position = landed.position.max(end),
                    Err(error) => {
                        warn!(%error, "the log's end is unknown; answering the chain's own position")
                    }
                }
            }
        }
        Ok(landed)
    }

    async fn step(
        &self,
        command: FollowUp,
        metadata: &Metadata,
        queue: &mut VecDeque<FollowUp>,
    ) -> Result<Option<Landed>, LedgerError> {
        match command {
            FollowUp::Tenant { tenant_id, command } => {
                let id = tenant_id.to_string();
                let committed = self.tenants.execute(&id, command, metadata).await?;
                for event in &committed.events {
                    queue.extend(policy::on_tenant_event(tenant_id, &event.payload));
                }
                Ok(landed(id, &committed))
            }
            FollowUp::Subscription {
                subscription_id,
                command,
            } => {
                let id = subscription_id.to_string();
                let committed = self.subscriptions.execute(&id, command, metadata).await?;
                for event in &committed.events {
                    queue.extend(policy::on_subscription_event(
                        subscription_id,
                        event.sequence as u64,
                        &event.payload,
                    ));
                }
                Ok(landed(id, &committed))
            }
            FollowUp::User { user_id, command } => {
                let id = user_id.to_string();
                let committed = self.users.execute(&id, command, metadata).await?;
                for event in &committed.events {
                    queue.extend(policy::on_user_event(
                        user_id,
                        event.sequence as u64,
                        &event.payload,
                    ));
                }
                Ok(landed(id, &committed))
            }
            // Timers are a read model: the timers projection schedules and cancels them from the
            // same events, in log order.
            FollowUp::Schedule(_) | FollowUp::Cancel { .. } => Ok(None),
        }
    }

    /// Runs a catalog command.
    pub async fn catalog(
        &self,
        command: <CatalogAggregate as Aggregate>::Command,
        metadata: &Metadata,
    ) -> Result<Option<Landed>, LedgerError> {
        let id = aggregates::catalog::CATALOG_ID.to_owned();
        let committed = self.catalog.execute(&id, command, metadata).await?;
        Ok(landed(id, &committed))
    }

    /// Runs a reseller command.
    pub async fn reseller(
        &self,
        reseller_id: uuid::Uuid,
        command: <Reseller as Aggregate>::Command,
        metadata: &Metadata,
    ) -> Result<Option<Landed>, LedgerError> {
        let id = reseller_id.to_string();
        let committed = self.resellers.execute(&id, command, metadata).await?;
        Ok(landed(id, &committed))
    }

    /// Runs a billing-profile command.
    pub async fn billing_profile(
        &self,
        billing_profile_id: uuid::Uuid,
        command: <BillingProfile as Aggregate>::Command,
        metadata: &Metadata,
    ) -> Result<Option<Landed>, LedgerError> {
        let id = billing_profile_id.to_string();
        let committed = self
            .billing_profiles
            .execute(&id, command, metadata)
            .await?;
        Ok(landed(id, &committed))
    }

    /// The current state of a tenant.
    pub async fn tenant(&self, tenant_id: uuid::Uuid) -> Result<Arc<Tenant>, LedgerError> {
        self.tenants.load(&tenant_id.to_string()).await
    }

    /// A tenant as this instance last knew it (see [`Executor::known`]): only for facts that
    /// never change once it exists, such as its reseller.
    pub async fn known_tenant(&self, tenant_id: uuid::Uuid) -> Result<Arc<Tenant>, LedgerError> {
        self.tenants.known(&tenant_id.to_string()).await
    }

    /// A user as this instance last knew it: only for facts that never change once it
    /// exists, such as its tenant.
    pub async fn known_user(&self, user_id: uuid::Uuid) -> Result<Arc<User>, LedgerError> {
        self.users.known(&user_id.to_string()).await
    }

    /// The current state of a subscription.
    pub async fn subscription(
        &self,
        subscription_id: uuid::Uuid,
    ) -> Result<Arc<Subscription>, LedgerError> {
        self.subscriptions.load(&subscription_id.to_string()).await
    }

    /// The current state of a user.
    pub async fn user(&self, user_id: uuid::Uuid) -> Result<Arc<User>, LedgerError> {
        self.users.load(&user_id.to_string()).await
    }

    /// The current state of a reseller.
    pub async fn reseller_state(
        &self,
        reseller_id: uuid::Uuid,
    ) -> Result<Arc<Reseller>, LedgerError> {
        self.resellers.load(&reseller_id.to_string()).await
    }

    /// The current state of a billing profile.
    pub async fn billing_profile_state(
        &self,
        billing_profile_id: uuid::Uuid,
    ) -> Result<Arc<BillingProfile>, LedgerError> {
        self.billing_profiles
            .load(&billing_profile_id.to_string())
            .await
    }

    /// The current catalog.
    pub async fn current_catalog(&self) -> Result<Arc<CatalogAggregate>, LedgerError> {
        self.catalog.load(aggregates::catalog::CATALOG_ID).await
    }
}

impl Ledger {
    /// The position of the newest event in the log (0 when empty).
    pub async fn log_end(&self) -> Result<i64, LedgerError> {
        self.store.log_end().await.map_err(store_error)
    }

    /// The log position a command's response reports: of its last event, or, when it decided
    /// nothing, the log's current end (what a reader must have seen to see the unchanged state).
    pub async fn position_after(&self, landed: Option<&Landed>) -> Result<i64, LedgerError> {
        match landed {
            Some(landed) => Ok(landed.position),
            None => self.log_end().await,
        }
    }
}

/// The aggregate a command addresses, for its span (never the command itself: it may carry
/// sealed personal data).
fn aggregate_of(command: &FollowUp) -> (&'static str, Option<uuid::Uuid>) {
    match command {
        FollowUp::Tenant { tenant_id, .. } => ("tenant", Some(*tenant_id)),
        FollowUp::Subscription {
            subscription_id, ..
        } => ("subscription", Some(*subscription_id)),
        FollowUp::User { user_id, .. } => ("user", Some(*user_id)),
        FollowUp::Schedule(_) | FollowUp::Cancel { .. } => ("timer", None),
    }
}

/// Where a command's last event landed, if it decided anything.
fn landed<A: Aggregate>(id: String, committed: &Committed<A>) -> Option<Landed> {
    let last = committed.events.last()?;
    Some(Landed {
        aggregate_type: A::TYPE,
        aggregate_id: id,
        sequence: last.sequence,
        position: committed.position?,
    })
}

fn store_error(error: sqlx::Error) -> LedgerError {
    LedgerError::from_store(error)
}

#[cfg(test)]
mod tests {
    use aggregates::personal::PrincipalFingerprint;
    use aggregates::tenant::{Member, MemberStatus, Tenant};

    use super::{tenant_snapshot_interval, TENANT_SNAPSHOT_EVERY};

    fn with_members(count: usize) -> Tenant {
        let mut tenant = Tenant::default();
        for n in 0..count {
            tenant.members.insert(
                uuid::Uuid::from_u128(n as u128),
                Member {
                    fingerprint: PrincipalFingerprint::parse(&format!("{n:064x}")).unwrap(),
                    status: MemberStatus::Active,
                    licenses: Default::default(),
                    reported_sequence: 0,
                },
            );
        }
        tenant
    }

    #[test]
    fn small_tenants_are_snapshotted_at_the_fixed_interval_large_ones_by_their_size() {
        assert_eq!(
            tenant_snapshot_interval(&Tenant::default()),
            TENANT_SNAPSHOT_EVERY
        );
        assert_eq!(
            tenant_snapshot_interval(&with_members(4 * TENANT_SNAPSHOT_EVERY)),
            TENANT_SNAPSHOT_EVERY
        );
        assert_eq!(tenant_snapshot_interval(&with_members(10_000)), 2_500);
    }
}
