//! The licence projection folded from tenant events agrees with the tenant aggregate's own pool.

use aggregates::catalog::{default_catalog, offers, Offer};
use aggregates::personal::{PrincipalFingerprint, SealedDetails};
use aggregates::tenant::{SeatSnapshot, SeatState, Tenant, TenantEvent};
use aggregates::values::{DomainName, OfferId, OrganisationName, ProvisioningId, Term, UserRole};
use chrono::{TimeZone, Utc};
use cqrs_es::Aggregate;
use projections::licenses::{availability_in, Licenses};
use projections::{DomainEvent, LoggedEvent, Projection, RowSet};
use uuid::Uuid;

fn offer(id: &str) -> Offer {
    default_catalog()
        .get(&OfferId::parse(id).unwrap())
        .unwrap()
        .clone()
}

fn sku(raw: &str) -> ProvisioningId {
    ProvisioningId::parse(raw).unwrap()
}

#[test]
fn rows_pool_subscriptions_per_product_and_show_over_assignment() {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let (tenant_id, sub_a, sub_b, alice, bob) = (
        Uuid::from_u128(1),
        Uuid::from_u128(10),
        Uuid::from_u128(11),
        Uuid::from_u128(100),
        Uuid::from_u128(101),
    );
    let purchase = |subscription_id, quantity| TenantEvent::SubscriptionPurchased {
        subscription_id,
        offer: offer(offers::BUSINESS_PREMIUM),
        quantity,
        term: Term::Monthly,
        billing_profile_id: Uuid::from_u128(2),
        trial: false,
        at,
    };
    let register = |user_id: Uuid, n: u8| TenantEvent::UserRegistered {
        user_id,
        fingerprint: PrincipalFingerprint::parse(&format!("{n:02x}").repeat(32)).unwrap(),
        details: SealedDetails {
            key_id: user_id,
            ciphertext: "c2VhbGVk".into(),
        },
        role: UserRole::User,
        at,
    };
    let assign = |user_id| TenantEvent::LicensesAssigned {
        user_id,
        added: vec![sku("O365_BUSINESS_PREMIUM")],
        removed: vec![],
        at,
    };
    let events = [
        TenantEvent::TenantCreated {
            tenant_id,
            domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
            name: OrganisationName::parse("Contoso").unwrap(),
            reseller_id: None,
            at,
        },
        purchase(sub_a, 1),
        purchase(sub_b, 1),
        register(alice, 1),
        register(bob, 2),
        assign(alice),
        assign(bob),
        // One subscription is suspended: its seat stops counting as assignable.
        TenantEvent::SubscriptionSeatsChanged {
            subscription_id: sub_b,
            source_sequence: 2,
            previous_product: sku("O365_BUSINESS_PREMIUM"),
            seats: SeatSnapshot {
                tenant_id,
                offer: offer(offers::BUSINESS_PREMIUM),
                quantity: 1,
                state: SeatState::Suspended,
            },
            at,
        },
    ];
    let mut rows = RowSet::complete();
    let mut tenant = Tenant::default();
    for (sequence, event) in events.iter().enumerate() {
        let logged = LoggedEvent {
            position: sequence as i64 + 1,
            aggregate_type: "tenant".into(),
            aggregate_id: tenant_id.to_string(),
            sequence: sequence as i64 + 1,
            event: DomainEvent::Tenant(event.clone()),
        };
        Licenses.apply(&logged, &mut rows).unwrap();
        tenant.apply(event.clone());
    }
    let rows = availability_in(&rows, tenant_id).unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.product_name, "Office 365 Business Premium");
    assert_eq!(row.subscription_ids.len(), 2);
    assert_eq!(
        (row.enabled, row.suspended, row.assigned, row.available),
        (1, 1, 2, -1)
    );
    assert!(row.over_assigned);
    let pool = tenant.seats(&row.sku);
    assert_eq!(
        (
            pool.enabled,
            pool.warning,
            pool.suspended,
            pool.assigned,
            pool.available
        ),
        (
            row.enabled,
            row.warning,
            row.suspended,
            row.assigned,
            row.available
        )
    );
}
