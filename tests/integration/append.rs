//! `Store::append` (src/append.rs), the write path's one statement per batch, on both backends:
//! it reports each event's log position, and a sequence already taken fails the whole batch
//! as a conflict, writing nothing.

use crate::support::{fresh_store, Backend};
use seatledger::store::Store;
use seatledger::write::append::{AppendError, NewEvent};

fn event(sequence: i64, n: u32) -> NewEvent {
    NewEvent {
        sequence,
        event_type: "Counted".into(),
        event_version: "1".into(),
        payload: format!(r#"{{"Counted":{{"n":{n}}}}}"#),
        metadata: r#"{"request_id":"append-test"}"#.into(),
    }
}

/// (sequence, position, payload) of one stream, in sequence order.
async fn stream(store: &Store, id: &str) -> Vec<(i64, i64, String)> {
    let sql = "SELECT sequence, position, CAST(payload AS TEXT) FROM events
                WHERE aggregate_type = 'counter' AND aggregate_id = $1 ORDER BY sequence";
    seatledger::on_pool!(store, pool => {
        sqlx::query_as(sql).bind(id).fetch_all(pool).await.unwrap()
    })
}

async fn positions_are_reported(backend: Backend) {
    let fresh = fresh_store(backend).await;
    let store = &fresh.store;
    let first = store
        .append("counter", "a", &[event(1, 10), event(2, 20), event(3, 30)])
        .await
        .unwrap();
    // Another stream in between, so that positions are not simply 1, 2, 3 … of one stream.
    store.append("counter", "b", &[event(1, 99)]).await.unwrap();
    let second = store.append("counter", "a", &[event(4, 40)]).await.unwrap();
    let logged = stream(store, "a").await;
    let positions: Vec<i64> = logged.iter().map(|(_, position, _)| *position).collect();
    assert_eq!([first, second].concat(), positions);
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{positions:?}"
    );
    let payloads: Vec<serde_json::Value> = logged
        .iter()
        .map(|(_, _, payload)| serde_json::from_str(payload).unwrap())
        .collect();
    assert_eq!(payloads[3], serde_json::json!({"Counted": {"n": 40}}));
    assert!(store.append("counter", "a", &[]).await.unwrap().is_empty());
    fresh.remove().await;
}

#[tokio::test]
async fn append_reports_each_events_log_position_on_postgres() {
    positions_are_reported(Backend::Postgres).await;
}

#[tokio::test]
async fn append_reports_each_events_log_position_on_sqlite() {
    positions_are_reported(Backend::Sqlite).await;
}

async fn taken_sequence_conflicts(backend: Backend) {
    let fresh = fresh_store(backend).await;
    let store = &fresh.store;
    store
        .append("counter", "a", &[event(1, 1), event(2, 2)])
        .await
        .unwrap();
    // Sequence 2 is taken: 3 must not land either.
    let outcome = store
        .append("counter", "a", &[event(2, 22), event(3, 33)])
        .await;
    assert!(matches!(outcome, Err(AppendError::Conflict)), "{outcome:?}");
    let logged = stream(store, "a").await;
    assert_eq!(
        logged
            .iter()
            .map(|(sequence, _, _)| *sequence)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(logged[1].2.contains("\"n\":2}"), "{logged:?}");
    fresh.remove().await;
}

#[tokio::test]
async fn a_taken_sequence_fails_the_whole_batch_as_a_conflict_on_postgres() {
    taken_sequence_conflicts(Backend::Postgres).await;
}

#[tokio::test]
async fn a_taken_sequence_fails_the_whole_batch_as_a_conflict_on_sqlite() {
    taken_sequence_conflicts(Backend::Sqlite).await;
}

/// PostgreSQL checks the `json` column: a failure that is not a taken sequence must not be
/// reported as a conflict (the executor would re-run the batch on it).
#[tokio::test]
async fn a_database_failure_is_not_mistaken_for_a_conflict_on_postgres() {
    let fresh = fresh_store(Backend::Postgres).await;
    let mut broken = event(1, 1);
    broken.payload = "{not json".into();
    let outcome = fresh.store.append("counter", "a", &[broken]).await;
    assert!(matches!(outcome, Err(AppendError::Store(_))), "{outcome:?}");
    assert!(stream(&fresh.store, "a").await.is_empty());
    fresh.remove().await;
}

/// A command's answer reports where its last event landed without asking the log again: the
/// position the append returned is the one the log holds.
async fn landed_positions(backend: Backend) {
    use aggregates::policy::FollowUp;
    use aggregates::tenant::TenantCommand;
    use aggregates::values::{DomainName, OrganisationName};
    use chrono::{TimeZone, Utc};
    let fresh = fresh_store(backend).await;
    let ledger =
        seatledger::Ledger::new(fresh.store.clone(), aggregates::CommercialRules::default());
    let mut landed = Vec::new();
    for n in 0..3 {
        let tenant_id = uuid::Uuid::new_v4();
        let command = FollowUp::Tenant {
            tenant_id,
            command: TenantCommand::CreateTenant {
                tenant_id,
                domain: DomainName::parse(&format!("t{n}.onmicrosoft.com")).unwrap(),
                name: OrganisationName::parse("Contoso").unwrap(),
                reseller_id: None,
                at: Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap(),
            },
        };
        let metadata = seatledger::write::ledger::Metadata::new();
        landed.push(ledger.dispatch(command, &metadata).await.unwrap().unwrap());
    }
    for landed in &landed {
        let sql = "SELECT position FROM events
                    WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3";
        let position: i64 = seatledger::on_pool!(&fresh.store, pool => {
            sqlx::query_scalar(sql)
                .bind(landed.aggregate_type)
                .bind(&landed.aggregate_id)
                .bind(landed.sequence as i64)
                .fetch_one(pool)
                .await
                .unwrap()
        });
        assert_eq!(landed.position, position, "{landed:?}");
    }
    drop(ledger);
    fresh.remove().await;
}

#[tokio::test]
async fn a_command_reports_the_position_its_last_event_landed_at_on_postgres() {
    landed_positions(Backend::Postgres).await;
}

#[tokio::test]
async fn a_command_reports_the_position_its_last_event_landed_at_on_sqlite() {
    landed_positions(Backend::Sqlite).await;
}
