//! `seatledger demo` fills a fresh store with a realistic partner, and refuses a used store.

use crate::support::{fresh_store, Backend};
use aggregates::tenant::MemberStatus;
use aggregates::user::UserStatus;
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: seatledger::config::ServeSettings,
}

#[tokio::test]
async fn demo_creates_a_reseller_three_tenants_and_a_restorable_user() {
    let fresh = fresh_store(Backend::Sqlite).await;
    let mut settings = Args::parse_from(["seatledger"]).serve;
    settings.store.database_url = fresh.url.clone();
    let (state, generated) = seatledger::start(&settings).await.unwrap();
    assert!(generated.is_some(), "a fresh store gets an admin token");
    let summary = seatledger::demo::run(&state).await.unwrap();

    assert_eq!(summary.tenants.len(), 3);
    let mut subscriptions = 0;
    let mut licensed = 0;
    for (_, tenant_id) in &summary.tenants {
        let tenant = state.ledger.tenant(*tenant_id).await.unwrap();
        assert_eq!(
            tenant.profile.as_ref().unwrap().reseller_id,
            Some(summary.reseller_id)
        );
        subscriptions += tenant.subscriptions.len();
        licensed += tenant
            .members
            .values()
            .filter(|member| member.status == MemberStatus::Active && !member.licenses.is_empty())
            .count();
        assert!(tenant.all_seats().iter().all(|seats| seats.available >= 0));
    }
    assert_eq!(subscriptions, 6);
    assert!(licensed >= 5, "{licensed}");
    let deleted = state
        .ledger
        .user(summary.deleted_user)
        .await
        .unwrap()
        .state
        .clone()
        .unwrap();
    assert!(matches!(deleted.status, UserStatus::Deleted { .. }));
    let token = state
        .tokens
        .authenticate(&summary.reseller_token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token.reseller_id, Some(summary.reseller_id));

    match seatledger::demo::run(&state).await {
        Err(error) => assert!(error.to_string().contains("fresh DATABASE_URL"), "{error}"),
        Ok(_) => panic!("a second demo on the same store must be refused"),
    }
    fresh.remove().await;
}
