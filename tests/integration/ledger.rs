//! The write side over both real backends: commands land in the log with a global position,
//! an event id and an instant; follow-ups run to completion; the timers projection schedules
//! from the log.

use crate::support::{fresh_store, Backend};
use aggregates::catalog::{default_catalog, offers};
use aggregates::personal::{PrincipalFingerprint, SealedDetails};
use aggregates::policy::FollowUp;
use aggregates::subscription::SubscriptionStatus;
use aggregates::tenant::TenantCommand;
use aggregates::user::{UserCommand, UserStatus};
use aggregates::values::{
    DomainName, OfferId, OrganisationName, ProvisioningId, Quantity, Term, UserRole,
};
use aggregates::CommercialRules;
use chrono::{TimeZone, Utc};
use seatledger::store::Store;
use seatledger::write::ledger::Metadata;
use seatledger::Ledger;
use uuid::Uuid;

async fn log_columns(store: &Store) -> Vec<(i64, String, String)> {
    match store {
        Store::Postgres(pool) => sqlx::query_as::<_, (i64, Uuid, chrono::DateTime<Utc>)>(
            "SELECT position, event_id, recorded_at FROM events ORDER BY position",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(position, id, at)| (position, id.to_string(), at.to_rfc3339()))
        .collect(),
        Store::Sqlite(pool) => sqlx::query_as::<_, (i64, String, String)>(
            "SELECT position, event_id, recorded_at FROM events ORDER BY position",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
    }
}

/// The timers projection, caught up with the log: the keys of the timers it holds.
async fn timer_keys(store: &Store) -> Vec<String> {
    use seatledger::log::Checkpoint;
    use seatledger::read::{ProjectionRunner, Table};
    let runner = ProjectionRunner::new(
        std::sync::Arc::new(projections::timers::Timers),
        Table::Live,
    );
    store.ensure_checkpoint(runner.consumer()).await.unwrap();
    while runner
        .step(store, 100, Checkpoint::END)
        .await
        .unwrap()
        .is_some()
    {}
    seatledger::read::scoped_docs(
        store,
        projections::timers::NAME,
        projections::timers::TIMER,
        "",
    )
    .await
    .unwrap()
    .into_iter()
    .map(|(row_key, _)| row_key.trim_start_matches("timer/").to_owned())
    .collect()
}

async fn purchase_assign_delete(backend: Backend) {
    let fresh = fresh_store(backend).await;
    let any = Ledger::new(fresh.store.clone(), CommercialRules::default());
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
    let (tenant_id, subscription_id, user_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let bp = default_catalog()
        .get(&OfferId::parse(offers::BUSINESS_PREMIUM).unwrap())
        .unwrap()
        .clone();
    let metadata = Metadata::from([("request_id".to_owned(), "test".to_owned())]);
    {
        let ledger = &any;
        let tenant = |command| FollowUp::Tenant { tenant_id, command };
        let created = ledger
            .dispatch(
                tenant(TenantCommand::CreateTenant {
                    tenant_id,
                    domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
                    name: OrganisationName::parse("Contoso").unwrap(),
                    reseller_id: None,
                    at,
                }),
                &metadata,
            )
            .await
            .unwrap()
            .expect("tenant created");
        let purchased = ledger
            .dispatch(
                tenant(TenantCommand::PurchaseSubscription {
                    subscription_id,
                    offer: bp.clone(),
                    quantity: Quantity::parse("quantity", 2).unwrap(),
                    term: Term::Monthly,
                    billing_profile_id: Uuid::new_v4(),
                    trial: false,
                    at,
                }),
                &metadata,
            )
            .await
            .unwrap()
            .expect("purchase recorded");
        assert!(purchased.position > created.position);

        // The purchase's follow-up opened the subscription aggregate.
        let subscription = ledger.subscription(subscription_id).await.unwrap();
        let state = subscription
            .state
            .clone()
            .expect("opened by the process manager");
        assert_eq!(
            (state.quantity, state.status),
            (2, SubscriptionStatus::Active)
        );

        ledger
            .dispatch(
                tenant(TenantCommand::RegisterUser {
                    user_id,
                    principal_domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
                    fingerprint: PrincipalFingerprint::parse(&"ab".repeat(32)).unwrap(),
                    details: SealedDetails {
                        key_id: user_id,
                        ciphertext: "c2VhbGVk".into(),
                    },
                    role: UserRole::User,
                    at,
                }),
                &metadata,
            )
            .await
            .unwrap();
        ledger
            .dispatch(
                tenant(TenantCommand::AssignLicenses {
                    user_id,
                    add: vec![bp.id],
                    remove: vec![],
                    at,
                }),
                &metadata,
            )
            .await
            .unwrap();
        let product = ProvisioningId::parse("O365_BUSINESS_PREMIUM").unwrap();
        assert_eq!(
            ledger
                .tenant(tenant_id)
                .await
                .unwrap()
                .seats(&product)
                .available,
            1
        );

        // Deleting the user releases its seat and schedules its purge, durably.
        ledger
            .dispatch(
                FollowUp::User {
                    user_id,
                    command: UserCommand::DeleteUser { at },
                },
                &metadata,
            )
            .await
            .unwrap();
        assert_eq!(
            ledger
                .tenant(tenant_id)
                .await
                .unwrap()
                .seats(&product)
                .available,
            2
        );
        let user = ledger.user(user_id).await.unwrap().state.clone().unwrap();
        assert!(matches!(user.status, UserStatus::Deleted { .. }));
        assert_eq!(
            timer_keys(&fresh.store).await,
            vec![format!("purge-user/{user_id}")]
        );

        // A refusal comes back as the domain's error and writes nothing.
        let before = log_columns(&fresh.store).await.len();
        let refused = ledger
            .dispatch(
                tenant(TenantCommand::AssignLicenses {
                    user_id,
                    add: vec![bp.id],
                    remove: vec![],
                    at,
                }),
                &metadata,
            )
            .await
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            format!("user {user_id} is deleted, not active")
        );
        assert_eq!(log_columns(&fresh.store).await.len(), before);
    };

    // Every event has a strictly increasing position, a distinct id and a recording instant.
    let rows = log_columns(&fresh.store).await;
    assert!(rows.len() >= 8, "{rows:?}");
    assert!(
        rows.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "{rows:?}"
    );
    let mut ids: Vec<&String> = rows.iter().map(|row| &row.1).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), rows.len());
    assert!(rows
        .iter()
        .all(|row| Uuid::parse_str(&row.1).is_ok() && !row.2.is_empty()));
    drop(any);
    fresh.remove().await;
}

#[tokio::test]
async fn commands_and_follow_ups_land_in_the_postgres_log() {
    purchase_assign_delete(Backend::Postgres).await;
}

#[tokio::test]
async fn commands_and_follow_ups_land_in_the_sqlite_log() {
    purchase_assign_delete(Backend::Sqlite).await;
}

#[tokio::test]
async fn long_tenant_streams_are_loaded_from_snapshots_on_postgres() {
    const USERS: u32 = seatledger::write::ledger::TENANT_SNAPSHOT_EVERY as u32 + 50;
    let fresh = fresh_store(Backend::Postgres).await;
    let any = Ledger::new(fresh.store.clone(), CommercialRules::default());
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
    let tenant_id = Uuid::new_v4();
    let metadata = Metadata::new();
    {
        let ledger = &any;
        ledger
            .dispatch(
                FollowUp::Tenant {
                    tenant_id,
                    command: TenantCommand::CreateTenant {
                        tenant_id,
                        domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
                        name: OrganisationName::parse("Contoso").unwrap(),
                        reseller_id: None,
                        at,
                    },
                },
                &metadata,
            )
            .await
            .unwrap();
        for n in 0..USERS {
            let user_id = Uuid::new_v4();
            ledger
                .dispatch(
                    FollowUp::Tenant {
                        tenant_id,
                        command: TenantCommand::RegisterUser {
                            user_id,
                            principal_domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
                            fingerprint: PrincipalFingerprint::parse(&format!("{n:064x}")).unwrap(),
                            details: SealedDetails {
                                key_id: user_id,
                                ciphertext: "c2VhbGVk".into(),
                            },
                            role: UserRole::User,
                            at,
                        },
                    },
                    &metadata,
                )
                .await
                .unwrap();
        }
        assert_eq!(
            ledger.tenant(tenant_id).await.unwrap().members.len(),
            USERS as usize
        );
    };
    let Store::Postgres(pool) = &fresh.store else {
        unreachable!()
    };
    // Snapshots are written in the background once the batch has answered.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let last_sequence: i64 = loop {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT last_sequence FROM snapshots WHERE aggregate_type = 'tenant' AND aggregate_id = $1",
        )
        .bind(tenant_id.to_string())
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some(found) = found {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot of the tenant was written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // A load reads the snapshot and at most the events since it, not the whole stream.
    assert_eq!(
        last_sequence,
        seatledger::write::ledger::TENANT_SNAPSHOT_EVERY as i64,
        "one snapshot, at the first multiple of the interval, of {} events",
        USERS + 1
    );
    drop(any);
    // A ledger that has never seen the tenant loads it from the snapshot and the events after
    // it, and the snapshot is the state the events make.
    let cold = Ledger::new(fresh.store.clone(), CommercialRules::default());
    let loaded = cold.tenant(tenant_id).await.unwrap();
    assert_eq!(loaded.members.len(), USERS as usize);
    let (history,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM events WHERE aggregate_type = 'tenant' AND aggregate_id = $1",
    )
    .bind(tenant_id.to_string())
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(history, i64::from(USERS) + 1);
    let mut replayed = aggregates::tenant::Tenant::default();
    for (payload,) in sqlx::query_as::<_, (serde_json::Value,)>(
        "SELECT payload FROM events WHERE aggregate_type = 'tenant' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(tenant_id.to_string())
    .fetch_all(pool)
    .await
    .unwrap()
    {
        cqrs_es::Aggregate::apply(&mut replayed, serde_json::from_value(payload).unwrap());
    }
    assert_eq!(
        *loaded, replayed,
        "snapshot + later events = the whole history"
    );
    drop(cold);
    fresh.remove().await;
}

/// A cold load reads an aggregate's stream a page at a time (1 000 events): a stream longer
/// than a page is applied whole, its last page included.
async fn a_stream_longer_than_a_page_loads_whole(backend: Backend) {
    const PAIRS: usize = 550;
    let fresh = fresh_store(backend).await;
    let any = Ledger::new(fresh.store.clone(), CommercialRules::default());
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
    let tenant_id = Uuid::new_v4();
    let user_id = Uuid::new_v4();
    let metadata = Metadata::new();
    {
        let ledger = &any;
        ledger
            .dispatch(
                FollowUp::Tenant {
                    tenant_id,
                    command: TenantCommand::CreateTenant {
                        tenant_id,
                        domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
                        name: OrganisationName::parse("Contoso").unwrap(),
                        reseller_id: None,
                        at,
                    },
                },
                &metadata,
            )
            .await
            .unwrap();
        ledger
            .dispatch(
                FollowUp::Tenant {
                    tenant_id,
                    command: TenantCommand::RegisterUser {
                        user_id,
                        principal_domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
                        fingerprint: PrincipalFingerprint::parse(&format!("{:064x}", 7)).unwrap(),
                        details: SealedDetails {
                            key_id: user_id,
                            ciphertext: "c2VhbGVk".into(),
                        },
                        role: UserRole::User,
                        at,
                    },
                },
                &metadata,
            )
            .await
            .unwrap();
        for _ in 0..PAIRS {
            for command in [
                UserCommand::DeleteUser { at },
                UserCommand::RestoreUser { at },
            ] {
                ledger
                    .dispatch(FollowUp::User { user_id, command }, &metadata)
                    .await
                    .unwrap();
            }
        }
    };
    let history = fresh
        .store
        .history("user", &user_id.to_string())
        .await
        .unwrap();
    assert!(
        history.len() > 1_000,
        "the user's stream holds {} events, not more than a page",
        history.len()
    );
    let last_of_first_page = &history[999];
    assert_eq!(
        last_of_first_page.event_type, "UserDeleted",
        "{backend:?}: a load that stopped after one page would see a deleted user"
    );
    // Another instance, which has never seen the user, loads it cold.
    let cold = Ledger::new(fresh.store.clone(), CommercialRules::default());
    {
        let ledger = &cold;
        let user = ledger.user(user_id).await.unwrap();
        let status = &user.state.as_ref().expect("the user exists").status;
        assert!(
            matches!(status, UserStatus::Active),
            "{backend:?}: the user's last event restored it, yet it loads as {status:?}"
        );
    };
    fresh.remove().await;
}

#[tokio::test]
async fn a_stream_longer_than_a_page_loads_whole_on_postgres() {
    a_stream_longer_than_a_page_loads_whole(Backend::Postgres).await;
}

#[tokio::test]
async fn a_stream_longer_than_a_page_loads_whole_on_sqlite() {
    a_stream_longer_than_a_page_loads_whole(Backend::Sqlite).await;
}
