//! Given/when/then tests of the subscription aggregate: every command's events and refusals,
//! the batches with their cancellation windows, trials, upgrades, renewal, expiry and the
//! parent-chain rule for add-ons.

use aggregates::catalog::{default_catalog, offers, Offer};
use aggregates::subscription::{
    BatchDraw, Subscription, SubscriptionCommand, SubscriptionEvent, SuspensionReason,
};
use aggregates::tenant::{SeatSnapshot, SeatState, Tenant, TenantEvent};
use aggregates::values::{DomainName, OfferId, OrganisationName, Quantity, Term, UnitPrice};
use aggregates::{CommercialRules, DomainError, Entity};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use uuid::Uuid;

const SUBSCRIPTION: Uuid = Uuid::from_u128(1);
const TENANT: Uuid = Uuid::from_u128(2);
const PROFILE: Uuid = Uuid::from_u128(3);
const OTHER_PROFILE: Uuid = Uuid::from_u128(4);
const PARENT_SUBSCRIPTION: Uuid = Uuid::from_u128(90);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn utc(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, hour, minute, second)
        .unwrap()
}

/// Midnight of a day in January 2026.
fn jan(day: u32) -> DateTime<Utc> {
    utc(2026, 1, day, 0, 0, 0)
}

/// Midnight of a day in February 2026.
fn feb(day: u32) -> DateTime<Utc> {
    utc(2026, 2, day, 0, 0, 0)
}

fn offer(id: &str) -> Offer {
    default_catalog()
        .get(&OfferId::parse(id).unwrap())
        .expect("offer in the default catalog")
        .clone()
}

fn e1() -> Offer {
    offer(offers::ENTERPRISE_E1)
}

fn e3() -> Offer {
    offer(offers::ENTERPRISE_E3)
}

fn business_premium() -> Offer {
    offer(offers::BUSINESS_PREMIUM)
}

fn phone_system() -> Offer {
    offer(offers::PHONE_SYSTEM)
}

fn usd(amount: &str) -> UnitPrice {
    UnitPrice::parse(amount, "USD").unwrap()
}

fn qty(n: u32) -> Quantity {
    Quantity::parse("count", i64::from(n)).unwrap()
}

fn framework() -> TestFramework<Subscription> {
    TestFramework::with(CommercialRules::default())
}

fn framework_72h() -> TestFramework<Subscription> {
    TestFramework::with(CommercialRules::default().with_cancellation_window(Duration::hours(72)))
}

fn snapshot(offer: &Offer, quantity: u32, state: SeatState) -> SeatSnapshot {
    SeatSnapshot {
        tenant_id: TENANT,
        offer: offer.clone(),
        quantity,
        state,
    }
}

/// A paid monthly subscription opened on 2026-01-01 (renews 2026-02-01, window until 01-08).
fn opened(offer: &Offer, quantity: u32) -> SubscriptionEvent {
    SubscriptionEvent::SubscriptionOpened {
        subscription_id: SUBSCRIPTION,
        tenant_id: TENANT,
        offer: offer.clone(),
        quantity,
        term: Term::Monthly,
        billing_profile_id: PROFILE,
        trial: false,
        trial_ends_at: None,
        renews_at: feb(1),
        refundable_until: jan(8),
        at: jan(1),
    }
}

/// A 25-seat monthly trial opened on 2026-01-01 (ends 2026-01-31).
fn opened_trial(offer: &Offer) -> SubscriptionEvent {
    SubscriptionEvent::SubscriptionOpened {
        subscription_id: SUBSCRIPTION,
        tenant_id: TENANT,
        offer: offer.clone(),
        quantity: 25,
        term: Term::Monthly,
        billing_profile_id: PROFILE,
        trial: true,
        trial_ends_at: Some(jan(31)),
        renews_at: jan(31),
        refundable_until: jan(8),
        at: jan(1),
    }
}

fn added(
    offer: &Offer,
    count: u32,
    batch: u32,
    quantity_after: u32,
    at: DateTime<Utc>,
    refundable_until: DateTime<Utc>,
) -> SubscriptionEvent {
    SubscriptionEvent::LicensesAdded {
        count,
        batch,
        refundable_until,
        unit_price: offer.unit_price.clone(),
        seats: snapshot(offer, quantity_after, SeatState::Enabled),
        at,
    }
}

fn removed(
    offer: &Offer,
    unit_price: &str,
    drawn: &[(u32, u32)],
    quantity_after: u32,
    at: DateTime<Utc>,
) -> SubscriptionEvent {
    SubscriptionEvent::LicensesRemoved {
        count: drawn.iter().map(|(_, seats)| seats).sum(),
        drawn: drawn
            .iter()
            .map(|&(batch, seats)| BatchDraw { batch, seats })
            .collect(),
        unit_price: usd(unit_price),
        seats: snapshot(offer, quantity_after, SeatState::Enabled),
        at,
    }
}

fn suspended(offer: &Offer, quantity: u32, at: DateTime<Utc>) -> SubscriptionEvent {
    SubscriptionEvent::SubscriptionSuspended {
        reason: SuspensionReason::Requested,
        seats: snapshot(offer, quantity, SeatState::Suspended),
        at,
    }
}

fn orphaned(offer: &Offer, quantity: u32, at: DateTime<Utc>) -> SubscriptionEvent {
    SubscriptionEvent::SubscriptionSuspended {
        reason: SuspensionReason::ParentEnded {
            parent_subscription_id: PARENT_SUBSCRIPTION,
        },
        seats: snapshot(offer, quantity, SeatState::Suspended),
        at,
    }
}

fn expired(
    offer: &Offer,
    quantity: u32,
    at: DateTime<Utc>,
    grace_ends_at: DateTime<Utc>,
) -> SubscriptionEvent {
    SubscriptionEvent::SubscriptionExpired {
        grace_ends_at,
        seats: snapshot(offer, quantity, SeatState::Warning),
        at,
    }
}

fn cancelled(offer: &Offer, quantity: u32, at: DateTime<Utc>) -> SubscriptionEvent {
    SubscriptionEvent::SubscriptionCancelled {
        seats: snapshot(offer, quantity, SeatState::Inactive),
        at,
    }
}

fn disabled(offer: &Offer, quantity: u32, at: DateTime<Utc>) -> SubscriptionEvent {
    SubscriptionEvent::SubscriptionDisabled {
        seats: snapshot(offer, quantity, SeatState::Inactive),
        at,
    }
}

fn renewed(
    offer: &Offer,
    quantity: u32,
    at: DateTime<Utc>,
    renews_at: DateTime<Utc>,
    refundable_until: DateTime<Utc>,
) -> SubscriptionEvent {
    SubscriptionEvent::SubscriptionRenewed {
        renews_at,
        refundable_until,
        seats: snapshot(offer, quantity, SeatState::Enabled),
        at,
    }
}

fn converted(
    offer: &Offer,
    quantity: u32,
    at: DateTime<Utc>,
    refundable_until: DateTime<Utc>,
    renews_at: DateTime<Utc>,
) -> SubscriptionEvent {
    SubscriptionEvent::TrialConverted {
        refundable_until,
        renews_at,
        seats: snapshot(offer, quantity, SeatState::Enabled),
        at,
    }
}

fn upgraded(from: &Offer, to: &Offer, quantity: u32, at: DateTime<Utc>) -> SubscriptionEvent {
    SubscriptionEvent::SubscriptionUpgraded {
        from: from.clone(),
        seats: snapshot(to, quantity, SeatState::Enabled),
        at,
    }
}

fn add(count: u32, at: DateTime<Utc>) -> SubscriptionCommand {
    SubscriptionCommand::AddLicenses {
        count: qty(count),
        at,
    }
}

fn remove(count: u32, at: DateTime<Utc>) -> SubscriptionCommand {
    SubscriptionCommand::RemoveLicenses {
        count: qty(count),
        at,
    }
}

fn open_command(
    offer: &Offer,
    quantity: u32,
    term: Term,
    trial: bool,
    at: DateTime<Utc>,
) -> SubscriptionCommand {
    SubscriptionCommand::Open {
        subscription_id: SUBSCRIPTION,
        tenant_id: TENANT,
        offer: offer.clone(),
        quantity,
        term,
        billing_profile_id: PROFILE,
        trial,
        at,
    }
}

/// Runs `command` against `given` with the default rules and returns its refusal, after checking
/// it is exactly `expected` with the machine code `code`.
fn assert_refused(
    given: Vec<SubscriptionEvent>,
    command: SubscriptionCommand,
    expected: DomainError,
    code: &str,
) -> DomainError {
    let err = framework()
        .given(given)
        .when(command)
        .inspect_result()
        .expect_err("the command should be refused");
    assert_eq!(err, expected);
    assert_eq!(err.code(), code);
    err
}

fn invalid_state(action: &'static str, status: &'static str) -> DomainError {
    DomainError::InvalidSubscriptionState {
        subscription_id: SUBSCRIPTION,
        action,
        status,
    }
}

/// E1, 5 seats, in each status other than active, with the status's label.
fn e1_in_every_inactive_status() -> Vec<(&'static str, Vec<SubscriptionEvent>)> {
    let e1 = e1();
    vec![
        ("suspended", vec![opened(&e1, 5), suspended(&e1, 5, jan(2))]),
        (
            "expired",
            vec![
                opened(&e1, 5),
                expired(&e1, 5, feb(1), utc(2026, 3, 3, 0, 0, 0)),
            ],
        ),
        ("cancelled", vec![opened(&e1, 5), cancelled(&e1, 5, jan(2))]),
        (
            "disabled",
            vec![
                opened(&e1, 5),
                expired(&e1, 5, feb(1), utc(2026, 3, 3, 0, 0, 0)),
                disabled(&e1, 5, utc(2026, 3, 3, 0, 0, 0)),
            ],
        ),
    ]
}

/// A tenant that holds an active, paid subscription to `parent`.
fn tenant_holding(parent: &Offer) -> Tenant {
    let mut tenant = Tenant::default();
    tenant.apply(TenantEvent::TenantCreated {
        tenant_id: TENANT,
        domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
        name: OrganisationName::parse("Contoso").unwrap(),
        reseller_id: None,
        at: jan(1),
    });
    tenant.apply(TenantEvent::SubscriptionPurchased {
        subscription_id: PARENT_SUBSCRIPTION,
        offer: parent.clone(),
        quantity: 10,
        term: Term::Monthly,
        billing_profile_id: PROFILE,
        trial: false,
        at: jan(1),
    });
    tenant
}

// ---------------------------------------------------------------------------------------------
// Open
// ---------------------------------------------------------------------------------------------

#[test]
fn open_paid_monthly_renews_a_month_later_with_a_168h_window() {
    let e1 = e1();
    framework()
        .given_no_previous_events()
        .when(open_command(&e1, 10, Term::Monthly, false, jan(1)))
        .then_expect_events(vec![SubscriptionEvent::SubscriptionOpened {
            subscription_id: SUBSCRIPTION,
            tenant_id: TENANT,
            offer: e1,
            quantity: 10,
            term: Term::Monthly,
            billing_profile_id: PROFILE,
            trial: false,
            trial_ends_at: None,
            renews_at: feb(1),
            refundable_until: jan(8),
            at: jan(1),
        }]);
}

#[test]
fn open_annual_renews_twelve_months_later_to_the_second() {
    let e3 = e3();
    let at = utc(2026, 3, 15, 10, 30, 5);
    framework()
        .given_no_previous_events()
        .when(open_command(&e3, 3, Term::Annual, false, at))
        .then_expect_events(vec![SubscriptionEvent::SubscriptionOpened {
            subscription_id: SUBSCRIPTION,
            tenant_id: TENANT,
            offer: e3,
            quantity: 3,
            term: Term::Annual,
            billing_profile_id: PROFILE,
            trial: false,
            trial_ends_at: None,
            renews_at: utc(2027, 3, 15, 10, 30, 5),
            refundable_until: utc(2026, 3, 22, 10, 30, 5),
            at,
        }]);
}

#[test]
fn open_monthly_on_the_31st_renews_on_the_last_day_of_the_shorter_month() {
    let e1 = e1();
    framework()
        .given_no_previous_events()
        .when(open_command(&e1, 1, Term::Monthly, false, jan(31)))
        .then_expect_events(vec![SubscriptionEvent::SubscriptionOpened {
            subscription_id: SUBSCRIPTION,
            tenant_id: TENANT,
            offer: e1,
            quantity: 1,
            term: Term::Monthly,
            billing_profile_id: PROFILE,
            trial: false,
            trial_ends_at: None,
            renews_at: feb(28),
            refundable_until: feb(7),
            at: jan(31),
        }]);
}

#[test]
fn open_trial_ends_and_renews_30_days_later() {
    let bp = business_premium();
    framework()
        .given_no_previous_events()
        .when(open_command(&bp, 25, Term::Monthly, true, jan(1)))
        .then_expect_events(vec![opened_trial(&bp)]);
}

#[test]
fn open_under_72h_rules_closes_the_first_window_after_72h() {
    let e1 = e1();
    framework_72h()
        .given_no_previous_events()
        .when(open_command(&e1, 10, Term::Monthly, false, jan(1)))
        .then_expect_events(vec![SubscriptionEvent::SubscriptionOpened {
            subscription_id: SUBSCRIPTION,
            tenant_id: TENANT,
            offer: e1,
            quantity: 10,
            term: Term::Monthly,
            billing_profile_id: PROFILE,
            trial: false,
            trial_ends_at: None,
            renews_at: feb(1),
            refundable_until: jan(4),
            at: jan(1),
        }]);
}

#[test]
fn open_twice_with_the_same_id_emits_nothing() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 10)])
        .when(open_command(&e1, 10, Term::Monthly, false, jan(1)))
        .then_expect_events(vec![]);
}

#[test]
fn open_with_another_id_on_an_opened_stream_is_refused_already_exists() {
    let e1 = e1();
    let other = Uuid::from_u128(77);
    let err = assert_refused(
        vec![opened(&e1, 10)],
        SubscriptionCommand::Open {
            subscription_id: other,
            tenant_id: TENANT,
            offer: e1.clone(),
            quantity: 10,
            term: Term::Monthly,
            billing_profile_id: PROFILE,
            trial: false,
            at: jan(2),
        },
        DomainError::AlreadyExists {
            entity: Entity::Subscription,
            id: other.to_string(),
        },
        "already_exists",
    );
    assert!(err.to_string().contains(&other.to_string()));
}

// ---------------------------------------------------------------------------------------------
// Never opened
// ---------------------------------------------------------------------------------------------

#[test]
fn every_command_but_open_on_a_never_opened_subscription_is_refused_not_found() {
    let commands = vec![
        add(1, jan(2)),
        remove(1, jan(2)),
        SubscriptionCommand::Suspend {
            reason: SuspensionReason::Requested,
            at: jan(2),
        },
        SubscriptionCommand::Reactivate {
            parent_chain: None,
            at: jan(2),
        },
        SubscriptionCommand::Cancel { at: jan(2) },
        SubscriptionCommand::ConvertTrial { at: jan(2) },
        SubscriptionCommand::Upgrade {
            target: e3(),
            at: jan(2),
        },
        SubscriptionCommand::Renew { at: jan(2) },
        SubscriptionCommand::Expire { at: jan(2) },
        SubscriptionCommand::Disable { at: jan(2) },
        SubscriptionCommand::AssignBillingProfile {
            billing_profile_id: OTHER_PROFILE,
            at: jan(2),
        },
    ];
    assert_eq!(commands.len(), 11);
    for command in commands {
        let err = framework()
            .given_no_previous_events()
            .when(command.clone())
            .inspect_result()
            .expect_err("a never-opened subscription refuses every command but Open");
        assert_eq!(
            err,
            DomainError::NotFound {
                entity: Entity::Subscription,
                id: String::new(),
            },
            "{command:?}"
        );
        assert_eq!(err.code(), "subscription_not_found", "{command:?}");
        assert_eq!(err.to_string(), "subscription does not exist");
    }
}

// ---------------------------------------------------------------------------------------------
// AddLicenses
// ---------------------------------------------------------------------------------------------

#[test]
fn add_licenses_opens_batch_2_with_its_own_168h_window_at_the_offer_price() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 5)])
        .when(add(3, utc(2026, 1, 3, 12, 0, 0)))
        .then_expect_events(vec![SubscriptionEvent::LicensesAdded {
            count: 3,
            batch: 2,
            refundable_until: utc(2026, 1, 10, 12, 0, 0),
            unit_price: usd("8.00"),
            seats: snapshot(&e1, 8, SeatState::Enabled),
            at: utc(2026, 1, 3, 12, 0, 0),
        }]);
}

#[test]
fn add_licenses_past_the_seat_limit_is_refused_naming_the_limit_and_the_seats_left() {
    let e1 = e1();
    let limit = aggregates::subscription::MAX_SEATS;
    framework()
        .given(vec![opened(&e1, limit - 10)])
        .when(add(11, jan(2)))
        .then_expect_error(DomainError::SeatLimitExceeded {
            limit,
            seats: limit - 10,
            adding: 11,
        });
    framework()
        .given(vec![opened(&e1, limit - 10)])
        .when(add(10, jan(2)))
        .then_expect_events(vec![SubscriptionEvent::LicensesAdded {
            count: 10,
            batch: 2,
            refundable_until: jan(9),
            unit_price: usd("8.00"),
            seats: snapshot(&e1, limit, SeatState::Enabled),
            at: jan(2),
        }]);
    let refusal = DomainError::SeatLimitExceeded {
        limit,
        seats: limit - 10,
        adding: 11,
    };
    assert_eq!(refusal.code(), "seat_limit_exceeded");
    assert!(refusal.to_string().contains("at most 10 more"), "{refusal}");
}

#[test]
fn add_licenses_numbers_batches_consecutively_and_sums_the_quantity() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 5), added(&e1, 3, 2, 8, jan(2), jan(9))])
        .when(add(4, jan(3)))
        .then_expect_events(vec![SubscriptionEvent::LicensesAdded {
            count: 4,
            batch: 3,
            refundable_until: jan(10),
            unit_price: usd("8.00"),
            seats: snapshot(&e1, 12, SeatState::Enabled),
            at: jan(3),
        }]);
}

#[test]
fn add_licenses_under_72h_rules_closes_the_batch_window_after_72h() {
    let e1 = e1();
    framework_72h()
        .given(vec![opened(&e1, 5)])
        .when(add(2, jan(2)))
        .then_expect_events(vec![SubscriptionEvent::LicensesAdded {
            count: 2,
            batch: 2,
            refundable_until: jan(5),
            unit_price: usd("8.00"),
            seats: snapshot(&e1, 7, SeatState::Enabled),
            at: jan(2),
        }]);
}

#[test]
fn add_licenses_after_an_upgrade_bills_the_new_offer_price() {
    let (e1, e3) = (e1(), e3());
    framework()
        .given(vec![opened(&e1, 5), upgraded(&e1, &e3, 5, jan(2))])
        .when(add(1, jan(3)))
        .then_expect_events(vec![SubscriptionEvent::LicensesAdded {
            count: 1,
            batch: 2,
            refundable_until: jan(10),
            unit_price: usd("20.00"),
            seats: snapshot(&e3, 6, SeatState::Enabled),
            at: jan(3),
        }]);
}

#[test]
fn add_licenses_to_a_converted_trial_opens_batch_3() {
    let bp = business_premium();
    framework()
        .given(vec![
            opened_trial(&bp),
            converted(&bp, 25, jan(20), jan(27), feb(20)),
        ])
        .when(add(5, jan(21)))
        .then_expect_events(vec![SubscriptionEvent::LicensesAdded {
            count: 5,
            batch: 3,
            refundable_until: jan(28),
            unit_price: usd("12.50"),
            seats: snapshot(&bp, 30, SeatState::Enabled),
            at: jan(21),
        }]);
}

#[test]
fn add_licenses_to_a_trial_is_refused_trial_quantity_fixed() {
    let err = assert_refused(
        vec![opened_trial(&business_premium())],
        add(1, jan(2)),
        DomainError::TrialQuantityFixed { seats: 25 },
        "trial_quantity_fixed",
    );
    assert!(err.to_string().contains("exactly 25 seats"));
}

#[test]
fn add_licenses_to_a_subscription_that_is_not_active_is_refused_invalid_state() {
    for (status, given) in e1_in_every_inactive_status() {
        let err = assert_refused(
            given,
            add(1, utc(2026, 3, 4, 0, 0, 0)),
            invalid_state("add licences to", status),
            "invalid_subscription_state",
        );
        assert!(err.to_string().contains(&format!("it is {status}")));
    }
}

// ---------------------------------------------------------------------------------------------
// RemoveLicenses
// ---------------------------------------------------------------------------------------------

#[test]
fn remove_licenses_at_exactly_168h_after_purchase_is_allowed() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 10)])
        .when(remove(3, jan(8)))
        .then_expect_events(vec![SubscriptionEvent::LicensesRemoved {
            count: 3,
            drawn: vec![BatchDraw { batch: 1, seats: 3 }],
            unit_price: usd("8.00"),
            seats: snapshot(&e1, 7, SeatState::Enabled),
            at: jan(8),
        }]);
}

#[test]
fn remove_licenses_one_second_after_168h_is_refused_window_closed_at_the_closing_instant() {
    let err = assert_refused(
        vec![opened(&e1(), 10)],
        remove(3, utc(2026, 1, 8, 0, 0, 1)),
        DomainError::CancellationWindowClosed { closed_at: jan(8) },
        "cancellation_window_closed",
    );
    assert!(err.to_string().contains("2026-01-08T00:00:00Z"));
}

#[test]
fn remove_licenses_at_exactly_168h_after_the_batch_was_added_draws_that_batch() {
    let e1 = e1();
    let added_at = utc(2026, 1, 3, 12, 0, 0);
    let closes_at = utc(2026, 1, 10, 12, 0, 0);
    framework()
        .given(vec![
            opened(&e1, 10),
            added(&e1, 4, 2, 14, added_at, closes_at),
        ])
        .when(remove(2, closes_at))
        .then_expect_events(vec![SubscriptionEvent::LicensesRemoved {
            count: 2,
            drawn: vec![BatchDraw { batch: 2, seats: 2 }],
            unit_price: usd("8.00"),
            seats: snapshot(&e1, 12, SeatState::Enabled),
            at: closes_at,
        }]);
}

#[test]
fn remove_licenses_one_second_after_the_added_batch_window_is_refused_naming_its_close() {
    let e1 = e1();
    let err = assert_refused(
        vec![
            opened(&e1, 10),
            added(
                &e1,
                4,
                2,
                14,
                utc(2026, 1, 3, 12, 0, 0),
                utc(2026, 1, 10, 12, 0, 0),
            ),
        ],
        remove(1, utc(2026, 1, 10, 12, 0, 1)),
        DomainError::CancellationWindowClosed {
            closed_at: utc(2026, 1, 10, 12, 0, 0),
        },
        "cancellation_window_closed",
    );
    assert!(err.to_string().contains("2026-01-10T12:00:00Z"));
}

#[test]
fn remove_licenses_after_every_window_closed_names_the_latest_closing_instant() {
    let e1 = e1();
    let err = assert_refused(
        vec![opened(&e1, 5), added(&e1, 2, 2, 7, jan(2), jan(9))],
        remove(1, utc(2026, 1, 9, 0, 0, 1)),
        DomainError::CancellationWindowClosed { closed_at: jan(9) },
        "cancellation_window_closed",
    );
    assert!(err.to_string().contains("2026-01-09T00:00:00Z"));
}

#[test]
fn remove_licenses_takes_the_newest_batches_first() {
    let e1 = e1();
    framework()
        .given(vec![
            opened(&e1, 4),
            added(&e1, 3, 2, 7, jan(2), jan(9)),
            added(&e1, 2, 3, 9, jan(3), jan(10)),
        ])
        .when(remove(4, jan(4)))
        .then_expect_events(vec![SubscriptionEvent::LicensesRemoved {
            count: 4,
            drawn: vec![
                BatchDraw { batch: 3, seats: 2 },
                BatchDraw { batch: 2, seats: 2 },
            ],
            unit_price: usd("8.00"),
            seats: snapshot(&e1, 5, SeatState::Enabled),
            at: jan(4),
        }]);
}

#[test]
fn remove_licenses_after_a_removal_skips_the_emptied_batch_and_continues_with_older_ones() {
    let e1 = e1();
    framework()
        .given(vec![
            opened(&e1, 4),
            added(&e1, 3, 2, 7, jan(2), jan(9)),
            added(&e1, 2, 3, 9, jan(3), jan(10)),
            removed(&e1, "8.00", &[(3, 2), (2, 2)], 5, jan(4)),
        ])
        .when(remove(2, jan(5)))
        .then_expect_events(vec![SubscriptionEvent::LicensesRemoved {
            count: 2,
            drawn: vec![
                BatchDraw { batch: 2, seats: 1 },
                BatchDraw { batch: 1, seats: 1 },
            ],
            unit_price: usd("8.00"),
            seats: snapshot(&e1, 3, SeatState::Enabled),
            at: jan(5),
        }]);
}

#[test]
fn remove_licenses_skips_a_newer_batch_whose_shorter_window_has_closed() {
    let e1 = e1();
    // Batch 2 was added under the historical 72 h rule: it closes before batch 1 does.
    framework()
        .given(vec![opened(&e1, 10), added(&e1, 3, 2, 13, jan(2), jan(5))])
        .when(remove(2, jan(6)))
        .then_expect_events(vec![SubscriptionEvent::LicensesRemoved {
            count: 2,
            drawn: vec![BatchDraw { batch: 1, seats: 2 }],
            unit_price: usd("8.00"),
            seats: snapshot(&e1, 11, SeatState::Enabled),
            at: jan(6),
        }]);
}

#[test]
fn remove_more_seats_than_still_refundable_is_refused_insufficient_refundable_seats() {
    let e1 = e1();
    let err = assert_refused(
        vec![opened(&e1, 10), added(&e1, 3, 2, 13, jan(6), jan(13))],
        remove(4, jan(9)),
        DomainError::InsufficientRefundableSeats {
            requested: 4,
            refundable: 3,
            next_closes_at: jan(13),
        },
        "insufficient_refundable_seats",
    );
    let message = err.to_string();
    assert!(message.contains("only 3 of the 4 seats"), "{message}");
    assert!(message.contains("2026-01-13T00:00:00Z"), "{message}");
}

#[test]
fn remove_exactly_the_refundable_seats_of_a_partly_refundable_subscription_is_allowed() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 10), added(&e1, 3, 2, 13, jan(6), jan(13))])
        .when(remove(3, jan(9)))
        .then_expect_events(vec![SubscriptionEvent::LicensesRemoved {
            count: 3,
            drawn: vec![BatchDraw { batch: 2, seats: 3 }],
            unit_price: usd("8.00"),
            seats: snapshot(&e1, 10, SeatState::Enabled),
            at: jan(9),
        }]);
}

#[test]
fn insufficient_refundable_seats_names_the_earliest_still_open_window() {
    let e1 = e1();
    assert_refused(
        vec![
            opened(&e1, 10),
            added(&e1, 3, 2, 13, jan(6), jan(13)),
            added(&e1, 2, 3, 15, jan(7), jan(14)),
        ],
        remove(6, jan(9)),
        DomainError::InsufficientRefundableSeats {
            requested: 6,
            refundable: 5,
            next_closes_at: jan(13),
        },
        "insufficient_refundable_seats",
    );
}

#[test]
fn remove_every_seat_is_refused_quantity_below_minimum() {
    let err = assert_refused(
        vec![opened(&e1(), 5)],
        remove(5, jan(2)),
        DomainError::QuantityBelowMinimum {
            quantity: 5,
            removing: 5,
        },
        "quantity_below_minimum",
    );
    assert!(err.to_string().contains("removing 5 of 5 seats"));
}

#[test]
fn remove_more_seats_than_held_is_refused_quantity_below_minimum() {
    let err = assert_refused(
        vec![opened(&e1(), 5)],
        remove(7, jan(2)),
        DomainError::QuantityBelowMinimum {
            quantity: 5,
            removing: 7,
        },
        "quantity_below_minimum",
    );
    assert!(err.to_string().contains("removing 7 of 5 seats"));
}

#[test]
fn remove_down_to_one_seat_is_allowed() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 5)])
        .when(remove(4, jan(2)))
        .then_expect_events(vec![removed(&e1, "8.00", &[(1, 4)], 1, jan(2))]);
}

#[test]
fn remove_licenses_under_72h_rules_is_allowed_at_72h_and_refused_one_second_later() {
    let e1 = e1();
    let opened_events = framework_72h()
        .given_no_previous_events()
        .when(open_command(&e1, 10, Term::Monthly, false, jan(1)))
        .inspect_result()
        .expect("open succeeds");

    framework_72h()
        .given(opened_events.clone())
        .when(remove(2, jan(4)))
        .then_expect_events(vec![removed(&e1, "8.00", &[(1, 2)], 8, jan(4))]);

    let err = framework_72h()
        .given(opened_events)
        .when(remove(2, utc(2026, 1, 4, 0, 0, 1)))
        .inspect_result()
        .expect_err("the 72 h window has closed");
    assert_eq!(
        err,
        DomainError::CancellationWindowClosed { closed_at: jan(4) }
    );
    assert_eq!(err.code(), "cancellation_window_closed");
    assert!(err.to_string().contains("2026-01-04T00:00:00Z"));
}

#[test]
fn remove_licenses_from_a_trial_is_refused_trial_quantity_fixed() {
    assert_refused(
        vec![opened_trial(&business_premium())],
        remove(1, jan(2)),
        DomainError::TrialQuantityFixed { seats: 25 },
        "trial_quantity_fixed",
    );
}

#[test]
fn remove_licenses_from_a_subscription_that_is_not_active_is_refused_invalid_state() {
    for (status, given) in e1_in_every_inactive_status() {
        assert_refused(
            given,
            remove(1, jan(3)),
            invalid_state("remove licences from", status),
            "invalid_subscription_state",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Suspend
// ---------------------------------------------------------------------------------------------

#[test]
fn suspend_an_active_subscription_reports_its_seats_suspended() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 5)])
        .when(SubscriptionCommand::Suspend {
            reason: SuspensionReason::Requested,
            at: jan(2),
        })
        .then_expect_events(vec![suspended(&e1, 5, jan(2))]);
}

#[test]
fn suspend_for_an_ended_parent_records_the_parent_subscription() {
    let phone = phone_system();
    framework()
        .given(vec![opened(&phone, 5)])
        .when(SubscriptionCommand::Suspend {
            reason: SuspensionReason::ParentEnded {
                parent_subscription_id: PARENT_SUBSCRIPTION,
            },
            at: jan(2),
        })
        .then_expect_events(vec![orphaned(&phone, 5, jan(2))]);
}

#[test]
fn suspend_an_expired_subscription_reports_its_seats_suspended() {
    let e1 = e1();
    framework()
        .given(vec![
            opened(&e1, 5),
            expired(&e1, 5, feb(1), utc(2026, 3, 3, 0, 0, 0)),
        ])
        .when(SubscriptionCommand::Suspend {
            reason: SuspensionReason::Requested,
            at: feb(2),
        })
        .then_expect_events(vec![suspended(&e1, 5, feb(2))]);
}

#[test]
fn suspend_a_suspended_subscription_emits_nothing() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 5), suspended(&e1, 5, jan(2))])
        .when(SubscriptionCommand::Suspend {
            reason: SuspensionReason::Requested,
            at: jan(3),
        })
        .then_expect_events(vec![]);
}

#[test]
fn suspend_a_cancelled_or_disabled_subscription_is_refused_invalid_state() {
    for (status, given) in e1_in_every_inactive_status() {
        if status == "cancelled" || status == "disabled" {
            assert_refused(
                given,
                SubscriptionCommand::Suspend {
                    reason: SuspensionReason::Requested,
                    at: utc(2026, 3, 4, 0, 0, 0),
                },
                invalid_state("suspend", status),
                "invalid_subscription_state",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reactivate
// ---------------------------------------------------------------------------------------------

#[test]
fn reactivate_a_suspended_top_level_subscription_needs_no_proof() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 5), suspended(&e1, 5, jan(2))])
        .when(SubscriptionCommand::Reactivate {
            parent_chain: None,
            at: jan(3),
        })
        .then_expect_events(vec![SubscriptionEvent::SubscriptionReactivated {
            seats: snapshot(&e1, 5, SeatState::Enabled),
            at: jan(3),
        }]);
}

#[test]
fn reactivate_an_add_on_without_proof_is_refused_parent_offer_required() {
    let phone = phone_system();
    let err = assert_refused(
        vec![opened(&phone, 5), orphaned(&phone, 5, jan(2))],
        SubscriptionCommand::Reactivate {
            parent_chain: None,
            at: jan(3),
        },
        DomainError::ParentOfferRequired {
            offer_id: OfferId::parse(offers::PHONE_SYSTEM).unwrap(),
            offer_name: "Phone System".into(),
            possible_parents: vec![
                offers::SKYPE_FOR_BUSINESS_PLAN_2.into(),
                offers::ENTERPRISE_E1.into(),
                offers::ENTERPRISE_E3.into(),
            ],
        },
        "parent_offer_required",
    );
    let message = err.to_string();
    assert!(
        message.starts_with("Phone System is an add-on"),
        "{message}"
    );
    assert!(message.contains(offers::ENTERPRISE_E1), "{message}");
}

#[test]
fn reactivate_an_add_on_with_a_proof_from_the_tenant_reports_its_seats_enabled() {
    let phone = phone_system();
    let proof = tenant_holding(&e1())
        .prove_parent_chain(&phone)
        .expect("the tenant holds E1, a parent of Phone System");
    framework()
        .given(vec![opened(&phone, 5), orphaned(&phone, 5, jan(2))])
        .when(SubscriptionCommand::Reactivate {
            parent_chain: Some(proof),
            at: jan(3),
        })
        .then_expect_events(vec![SubscriptionEvent::SubscriptionReactivated {
            seats: snapshot(&phone, 5, SeatState::Enabled),
            at: jan(3),
        }]);
}

#[test]
fn reactivate_an_add_on_with_a_proof_for_another_offer_is_refused_parent_offer_required() {
    let phone = phone_system();
    // A proof for E1 itself (a top-level offer, trivially proven) is not a proof for Phone System.
    let proof = tenant_holding(&e1()).prove_parent_chain(&e1()).unwrap();
    let err = framework()
        .given(vec![opened(&phone, 5), orphaned(&phone, 5, jan(2))])
        .when(SubscriptionCommand::Reactivate {
            parent_chain: Some(proof),
            at: jan(3),
        })
        .inspect_result()
        .expect_err("the proof is for another offer");
    assert_eq!(err.code(), "parent_offer_required");
    assert!(matches!(
        err,
        DomainError::ParentOfferRequired { offer_id, .. }
            if offer_id == OfferId::parse(offers::PHONE_SYSTEM).unwrap()
    ));
}

#[test]
fn a_tenant_without_a_parent_of_the_add_on_cannot_prove_its_chain() {
    let err = tenant_holding(&business_premium())
        .prove_parent_chain(&phone_system())
        .expect_err("Business Premium is not a parent of Phone System");
    assert_eq!(err.code(), "parent_offer_required");
}

#[test]
fn reactivate_a_subscription_that_is_not_suspended_is_refused_invalid_state() {
    let e1 = e1();
    let mut cases = vec![("active", vec![opened(&e1, 5)])];
    cases.extend(
        e1_in_every_inactive_status()
            .into_iter()
            .filter(|(status, _)| *status != "suspended"),
    );
    for (status, given) in cases {
        assert_refused(
            given,
            SubscriptionCommand::Reactivate {
                parent_chain: None,
                at: utc(2026, 3, 4, 0, 0, 0),
            },
            invalid_state("reactivate", status),
            "invalid_subscription_state",
        );
    }
}

// A suspension during the grace period keeps the grace deadline: reactivation returns to expired.
#[test]
fn reactivate_a_subscription_suspended_in_its_grace_period_keeps_it_expired_until_disabled() {
    let e1 = e1();
    let grace_ends_at = utc(2026, 3, 3, 0, 0, 0);
    let mut given = vec![
        opened(&e1, 5),
        expired(&e1, 5, feb(1), grace_ends_at),
        suspended(&e1, 5, feb(10)),
    ];
    let reactivated = framework()
        .given(given.clone())
        .when(SubscriptionCommand::Reactivate {
            parent_chain: None,
            at: feb(11),
        })
        .inspect_result()
        .expect("reactivation succeeds");
    assert_eq!(
        reactivated,
        vec![SubscriptionEvent::SubscriptionReactivated {
            seats: snapshot(&e1, 5, SeatState::Warning),
            at: feb(11),
        }],
        "the subscription is past its term: its seats must stay in the grace-period state"
    );
    given.extend(reactivated);
    framework()
        .given(given)
        .when(SubscriptionCommand::Disable { at: grace_ends_at })
        .then_expect_events(vec![disabled(&e1, 5, grace_ends_at)]);
}

// ---------------------------------------------------------------------------------------------
// Cancel
// ---------------------------------------------------------------------------------------------

#[test]
fn cancel_at_exactly_168h_after_purchase_reports_the_seats_inactive() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 5)])
        .when(SubscriptionCommand::Cancel { at: jan(8) })
        .then_expect_events(vec![cancelled(&e1, 5, jan(8))]);
}

#[test]
fn cancel_one_second_after_the_purchase_window_is_refused_window_closed() {
    let err = assert_refused(
        vec![opened(&e1(), 5)],
        SubscriptionCommand::Cancel {
            at: utc(2026, 1, 8, 0, 0, 1),
        },
        DomainError::CancellationWindowClosed { closed_at: jan(8) },
        "cancellation_window_closed",
    );
    assert!(err.to_string().contains("2026-01-08T00:00:00Z"));
}

#[test]
fn cancel_window_is_not_extended_by_later_added_licences() {
    let e1 = e1();
    assert_refused(
        vec![opened(&e1, 5), added(&e1, 2, 2, 7, jan(6), jan(13))],
        SubscriptionCommand::Cancel {
            at: utc(2026, 1, 8, 0, 0, 1),
        },
        DomainError::CancellationWindowClosed { closed_at: jan(8) },
        "cancellation_window_closed",
    );
}

#[test]
fn cancel_a_suspended_subscription_within_the_window_is_allowed() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 5), suspended(&e1, 5, jan(2))])
        .when(SubscriptionCommand::Cancel { at: jan(3) })
        .then_expect_events(vec![cancelled(&e1, 5, jan(3))]);
}

#[test]
fn cancel_a_trial_long_after_its_first_168h_is_allowed() {
    let bp = business_premium();
    framework()
        .given(vec![opened_trial(&bp)])
        .when(SubscriptionCommand::Cancel { at: jan(20) })
        .then_expect_events(vec![cancelled(&bp, 25, jan(20))]);
}

#[test]
fn cancel_within_168h_of_a_renewal_is_allowed_and_refused_one_second_later() {
    let e1 = e1();
    let given = vec![
        opened(&e1, 5),
        renewed(&e1, 5, feb(1), utc(2026, 3, 1, 0, 0, 0), feb(8)),
    ];
    framework()
        .given(given.clone())
        .when(SubscriptionCommand::Cancel { at: feb(8) })
        .then_expect_events(vec![cancelled(&e1, 5, feb(8))]);
    let err = assert_refused(
        given,
        SubscriptionCommand::Cancel {
            at: utc(2026, 2, 8, 0, 0, 1),
        },
        DomainError::CancellationWindowClosed { closed_at: feb(8) },
        "cancellation_window_closed",
    );
    assert!(err.to_string().contains("2026-02-08T00:00:00Z"));
}

#[test]
fn cancel_within_168h_of_a_trial_conversion_is_allowed_and_refused_one_second_later() {
    let bp = business_premium();
    let given = vec![
        opened_trial(&bp),
        converted(&bp, 25, jan(20), jan(27), feb(20)),
    ];
    framework()
        .given(given.clone())
        .when(SubscriptionCommand::Cancel { at: jan(27) })
        .then_expect_events(vec![cancelled(&bp, 25, jan(27))]);
    assert_refused(
        given,
        SubscriptionCommand::Cancel {
            at: utc(2026, 1, 27, 0, 0, 1),
        },
        DomainError::CancellationWindowClosed { closed_at: jan(27) },
        "cancellation_window_closed",
    );
}

#[test]
fn cancel_an_expired_cancelled_or_disabled_subscription_is_refused_invalid_state() {
    for (status, given) in e1_in_every_inactive_status() {
        if status != "suspended" {
            assert_refused(
                given,
                SubscriptionCommand::Cancel { at: jan(2) },
                invalid_state("cancel", status),
                "invalid_subscription_state",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ConvertTrial
// ---------------------------------------------------------------------------------------------

#[test]
fn convert_trial_opens_a_fresh_168h_window_and_a_paid_term_from_the_conversion() {
    let bp = business_premium();
    framework()
        .given(vec![opened_trial(&bp)])
        .when(SubscriptionCommand::ConvertTrial { at: jan(20) })
        .then_expect_events(vec![SubscriptionEvent::TrialConverted {
            refundable_until: jan(27),
            renews_at: feb(20),
            seats: snapshot(&bp, 25, SeatState::Enabled),
            at: jan(20),
        }]);
}

#[test]
fn convert_annual_trial_renews_twelve_months_after_the_conversion() {
    let bp = business_premium();
    let trial = SubscriptionEvent::SubscriptionOpened {
        subscription_id: SUBSCRIPTION,
        tenant_id: TENANT,
        offer: bp.clone(),
        quantity: 25,
        term: Term::Annual,
        billing_profile_id: PROFILE,
        trial: true,
        trial_ends_at: Some(jan(31)),
        renews_at: jan(31),
        refundable_until: jan(8),
        at: jan(1),
    };
    framework()
        .given(vec![trial])
        .when(SubscriptionCommand::ConvertTrial { at: jan(20) })
        .then_expect_events(vec![SubscriptionEvent::TrialConverted {
            refundable_until: jan(27),
            renews_at: utc(2027, 1, 20, 0, 0, 0),
            seats: snapshot(&bp, 25, SeatState::Enabled),
            at: jan(20),
        }]);
}

#[test]
fn convert_trial_under_72h_rules_opens_a_72h_window() {
    let bp = business_premium();
    framework_72h()
        .given(vec![opened_trial(&bp)])
        .when(SubscriptionCommand::ConvertTrial { at: jan(20) })
        .then_expect_events(vec![SubscriptionEvent::TrialConverted {
            refundable_until: jan(23),
            renews_at: feb(20),
            seats: snapshot(&bp, 25, SeatState::Enabled),
            at: jan(20),
        }]);
}

#[test]
fn converted_trial_seats_are_removable_until_168h_after_conversion_as_batch_2() {
    let bp = business_premium();
    let given = vec![
        opened_trial(&bp),
        converted(&bp, 25, jan(20), jan(27), feb(20)),
    ];
    framework()
        .given(given.clone())
        .when(remove(5, jan(27)))
        .then_expect_events(vec![removed(&bp, "12.50", &[(2, 5)], 20, jan(27))]);
    let err = assert_refused(
        given,
        remove(5, utc(2026, 1, 27, 0, 0, 1)),
        DomainError::CancellationWindowClosed { closed_at: jan(27) },
        "cancellation_window_closed",
    );
    assert!(err.to_string().contains("2026-01-27T00:00:00Z"));
}

#[test]
fn convert_an_expired_trial_returns_it_to_active() {
    let bp = business_premium();
    framework()
        .given(vec![
            opened_trial(&bp),
            expired(&bp, 25, jan(31), utc(2026, 3, 2, 0, 0, 0)),
        ])
        .when(SubscriptionCommand::ConvertTrial { at: feb(5) })
        .then_expect_events(vec![SubscriptionEvent::TrialConverted {
            refundable_until: feb(12),
            renews_at: utc(2026, 3, 5, 0, 0, 0),
            seats: snapshot(&bp, 25, SeatState::Enabled),
            at: feb(5),
        }]);
}

#[test]
fn convert_a_paid_subscription_is_refused_not_a_trial() {
    let err = assert_refused(
        vec![opened(&e1(), 5)],
        SubscriptionCommand::ConvertTrial { at: jan(2) },
        DomainError::NotATrial {
            subscription_id: SUBSCRIPTION,
        },
        "not_a_trial",
    );
    assert!(err.to_string().contains(&SUBSCRIPTION.to_string()));
}

#[test]
fn convert_a_trial_twice_is_refused_not_a_trial() {
    let bp = business_premium();
    assert_refused(
        vec![
            opened_trial(&bp),
            converted(&bp, 25, jan(20), jan(27), feb(20)),
        ],
        SubscriptionCommand::ConvertTrial { at: jan(21) },
        DomainError::NotATrial {
            subscription_id: SUBSCRIPTION,
        },
        "not_a_trial",
    );
}

#[test]
fn convert_a_suspended_or_cancelled_trial_is_refused_invalid_state() {
    let bp = business_premium();
    assert_refused(
        vec![opened_trial(&bp), suspended(&bp, 25, jan(2))],
        SubscriptionCommand::ConvertTrial { at: jan(3) },
        invalid_state("convert", "suspended"),
        "invalid_subscription_state",
    );
    assert_refused(
        vec![opened_trial(&bp), cancelled(&bp, 25, jan(2))],
        SubscriptionCommand::ConvertTrial { at: jan(3) },
        invalid_state("convert", "cancelled"),
        "invalid_subscription_state",
    );
}

// ---------------------------------------------------------------------------------------------
// Upgrade
// ---------------------------------------------------------------------------------------------

#[test]
fn upgrade_e1_to_e3_reports_the_new_offer_and_price_in_the_seats() {
    let (e1, e3) = (e1(), e3());
    framework()
        .given(vec![opened(&e1, 5)])
        .when(SubscriptionCommand::Upgrade {
            target: e3.clone(),
            at: jan(2),
        })
        .then_expect_events(vec![SubscriptionEvent::SubscriptionUpgraded {
            from: e1,
            seats: SeatSnapshot {
                tenant_id: TENANT,
                offer: e3.clone(),
                quantity: 5,
                state: SeatState::Enabled,
            },
            at: jan(2),
        }]);
    assert_eq!(e3.unit_price, usd("20.00"));
}

#[test]
fn upgrade_keeps_each_batch_cancellation_window() {
    let (e1, e3) = (e1(), e3());
    let given = vec![
        opened(&e1, 10),
        added(&e1, 3, 2, 13, jan(2), jan(9)),
        upgraded(&e1, &e3, 13, jan(3)),
    ];
    framework()
        .given(given.clone())
        .when(remove(2, jan(9)))
        .then_expect_events(vec![removed(&e3, "20.00", &[(2, 2)], 11, jan(9))]);
    assert_refused(
        given,
        remove(1, utc(2026, 1, 9, 0, 0, 1)),
        DomainError::CancellationWindowClosed { closed_at: jan(9) },
        "cancellation_window_closed",
    );
}

#[test]
fn upgrade_to_an_offer_without_upgrades_listed_is_refused_upgrade_not_allowed_none() {
    let (e1, e3) = (e1(), e3());
    let err = assert_refused(
        vec![opened(&e3, 5)],
        SubscriptionCommand::Upgrade {
            target: e1,
            at: jan(2),
        },
        DomainError::UpgradeNotAllowed {
            from: "Office 365 Enterprise E3".into(),
            to: "Office 365 Enterprise E1".into(),
            allowed: vec![],
        },
        "upgrade_not_allowed",
    );
    assert_eq!(
        err.to_string(),
        "Office 365 Enterprise E3 cannot be upgraded to Office 365 Enterprise E1; allowed: none"
    );
}

#[test]
fn upgrade_e1_to_an_offer_other_than_e3_is_refused_naming_the_allowed_targets() {
    let err = assert_refused(
        vec![opened(&e1(), 5)],
        SubscriptionCommand::Upgrade {
            target: business_premium(),
            at: jan(2),
        },
        DomainError::UpgradeNotAllowed {
            from: "Office 365 Enterprise E1".into(),
            to: "Office 365 Business Premium".into(),
            allowed: vec![offers::ENTERPRISE_E3.into()],
        },
        "upgrade_not_allowed",
    );
    assert!(err.to_string().contains(offers::ENTERPRISE_E3));
}

#[test]
fn upgrade_is_judged_against_the_current_offer_after_an_earlier_upgrade() {
    let (e1, e3) = (e1(), e3());
    assert_refused(
        vec![opened(&e1, 5), upgraded(&e1, &e3, 5, jan(2))],
        SubscriptionCommand::Upgrade {
            target: e3,
            at: jan(3),
        },
        DomainError::UpgradeNotAllowed {
            from: "Office 365 Enterprise E3".into(),
            to: "Office 365 Enterprise E3".into(),
            allowed: vec![],
        },
        "upgrade_not_allowed",
    );
}

#[test]
fn upgrade_a_trial_is_refused_invalid_state() {
    let e1 = e1();
    let trial = SubscriptionEvent::SubscriptionOpened {
        subscription_id: SUBSCRIPTION,
        tenant_id: TENANT,
        offer: e1.clone(),
        quantity: 25,
        term: Term::Monthly,
        billing_profile_id: PROFILE,
        trial: true,
        trial_ends_at: Some(jan(31)),
        renews_at: jan(31),
        refundable_until: jan(8),
        at: jan(1),
    };
    assert_refused(
        vec![trial],
        SubscriptionCommand::Upgrade {
            target: e3(),
            at: jan(2),
        },
        invalid_state("upgrade a trial of", "active"),
        "invalid_subscription_state",
    );
}

#[test]
fn upgrade_a_subscription_that_is_not_active_is_refused_invalid_state() {
    for (status, given) in e1_in_every_inactive_status() {
        assert_refused(
            given,
            SubscriptionCommand::Upgrade {
                target: e3(),
                at: utc(2026, 3, 4, 0, 0, 0),
            },
            invalid_state("upgrade", status),
            "invalid_subscription_state",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Renew
// ---------------------------------------------------------------------------------------------

#[test]
fn renew_at_term_end_starts_the_next_term_with_a_fresh_168h_window() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 5)])
        .when(SubscriptionCommand::Renew { at: feb(1) })
        .then_expect_events(vec![renewed(
            &e1,
            5,
            feb(1),
            utc(2026, 3, 1, 0, 0, 0),
            feb(8),
        )]);
}

#[test]
fn renew_late_keeps_the_term_anniversary_but_opens_the_window_from_the_renewal() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 5)])
        .when(SubscriptionCommand::Renew { at: feb(3) })
        .then_expect_events(vec![renewed(
            &e1,
            5,
            feb(3),
            utc(2026, 3, 1, 0, 0, 0),
            feb(10),
        )]);
}

#[test]
fn renew_an_annual_subscription_adds_twelve_months() {
    let e1 = e1();
    let annual = SubscriptionEvent::SubscriptionOpened {
        subscription_id: SUBSCRIPTION,
        tenant_id: TENANT,
        offer: e1.clone(),
        quantity: 5,
        term: Term::Annual,
        billing_profile_id: PROFILE,
        trial: false,
        trial_ends_at: None,
        renews_at: utc(2027, 1, 1, 0, 0, 0),
        refundable_until: jan(8),
        at: jan(1),
    };
    framework()
        .given(vec![annual])
        .when(SubscriptionCommand::Renew {
            at: utc(2027, 1, 1, 0, 0, 0),
        })
        .then_expect_events(vec![renewed(
            &e1,
            5,
            utc(2027, 1, 1, 0, 0, 0),
            utc(2028, 1, 1, 0, 0, 0),
            utc(2027, 1, 8, 0, 0, 0),
        )]);
}

#[test]
fn renew_before_term_end_is_refused_renewal_not_due() {
    let err = assert_refused(
        vec![opened(&e1(), 5)],
        SubscriptionCommand::Renew {
            at: utc(2026, 1, 31, 23, 59, 59),
        },
        DomainError::RenewalNotDue { renews_at: feb(1) },
        "renewal_not_due",
    );
    assert!(err.to_string().contains("2026-02-01T00:00:00Z"));
}

#[test]
fn renew_an_expired_subscription_reports_its_seats_enabled_again() {
    let e1 = e1();
    framework()
        .given(vec![
            opened(&e1, 5),
            expired(&e1, 5, feb(1), utc(2026, 3, 3, 0, 0, 0)),
        ])
        .when(SubscriptionCommand::Renew { at: feb(10) })
        .then_expect_events(vec![renewed(
            &e1,
            5,
            feb(10),
            utc(2026, 3, 1, 0, 0, 0),
            feb(17),
        )]);
}

#[test]
fn renewal_makes_every_batch_refundable_again_until_168h_after_it() {
    let e1 = e1();
    let given = vec![
        opened(&e1, 5),
        added(&e1, 3, 2, 8, jan(2), jan(9)),
        renewed(&e1, 8, feb(1), utc(2026, 3, 1, 0, 0, 0), feb(8)),
    ];
    framework()
        .given(given.clone())
        .when(remove(7, feb(8)))
        .then_expect_events(vec![removed(&e1, "8.00", &[(2, 3), (1, 4)], 1, feb(8))]);
    assert_refused(
        given,
        remove(1, utc(2026, 2, 8, 0, 0, 1)),
        DomainError::CancellationWindowClosed { closed_at: feb(8) },
        "cancellation_window_closed",
    );
}

#[test]
fn renew_a_trial_is_refused_invalid_state() {
    assert_refused(
        vec![opened_trial(&business_premium())],
        SubscriptionCommand::Renew { at: jan(31) },
        invalid_state("renew a trial of", "active"),
        "invalid_subscription_state",
    );
}

#[test]
fn renew_a_suspended_cancelled_or_disabled_subscription_is_refused_invalid_state() {
    for (status, given) in e1_in_every_inactive_status() {
        if status != "expired" {
            assert_refused(
                given,
                SubscriptionCommand::Renew {
                    at: utc(2026, 3, 4, 0, 0, 0),
                },
                invalid_state("renew", status),
                "invalid_subscription_state",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Expire
// ---------------------------------------------------------------------------------------------

#[test]
fn expire_at_term_end_starts_a_30_day_grace_period_with_warning_seats() {
    let e1 = e1();
    framework()
        .given(vec![opened(&e1, 5)])
        .when(SubscriptionCommand::Expire { at: feb(1) })
        .then_expect_events(vec![expired(&e1, 5, feb(1), utc(2026, 3, 3, 0, 0, 0))]);
}

#[test]
fn expire_before_term_end_is_refused_term_not_ended() {
    let err = assert_refused(
        vec![opened(&e1(), 5)],
        SubscriptionCommand::Expire {
            at: utc(2026, 1, 31, 23, 59, 59),
        },
        DomainError::TermNotEnded { ends_at: feb(1) },
        "term_not_ended",
    );
    assert!(err.to_string().contains("2026-02-01T00:00:00Z"));
}

#[test]
fn expire_a_trial_at_its_end_and_not_a_second_before() {
    let bp = business_premium();
    framework()
        .given(vec![opened_trial(&bp)])
        .when(SubscriptionCommand::Expire { at: jan(31) })
        .then_expect_events(vec![expired(&bp, 25, jan(31), utc(2026, 3, 2, 0, 0, 0))]);
    let err = assert_refused(
        vec![opened_trial(&bp)],
        SubscriptionCommand::Expire {
            at: utc(2026, 1, 30, 23, 59, 59),
        },
        DomainError::TermNotEnded { ends_at: jan(31) },
        "term_not_ended",
    );
    assert!(err.to_string().contains("2026-01-31T00:00:00Z"));
}

#[test]
fn expire_a_converted_trial_waits_for_the_paid_term_end() {
    let bp = business_premium();
    assert_refused(
        vec![
            opened_trial(&bp),
            converted(&bp, 25, jan(20), jan(27), feb(20)),
        ],
        SubscriptionCommand::Expire { at: jan(31) },
        DomainError::TermNotEnded { ends_at: feb(20) },
        "term_not_ended",
    );
}

#[test]
fn expire_after_a_renewal_waits_for_the_new_term_end() {
    let e1 = e1();
    assert_refused(
        vec![
            opened(&e1, 5),
            renewed(&e1, 5, feb(1), utc(2026, 3, 1, 0, 0, 0), feb(8)),
        ],
        SubscriptionCommand::Expire { at: feb(15) },
        DomainError::TermNotEnded {
            ends_at: utc(2026, 3, 1, 0, 0, 0),
        },
        "term_not_ended",
    );
}

#[test]
fn expire_a_cancelled_or_disabled_subscription_is_refused_invalid_state() {
    for (status, given) in e1_in_every_inactive_status() {
        if status == "cancelled" || status == "disabled" {
            assert_refused(
                given,
                SubscriptionCommand::Expire {
                    at: utc(2026, 3, 4, 0, 0, 0),
                },
                invalid_state("expire", status),
                "invalid_subscription_state",
            );
        }
    }
}

#[test]
fn expire_an_expired_subscription_again_emits_nothing() {
    let e1 = e1();
    framework()
        .given(vec![
            opened(&e1, 5),
            expired(&e1, 5, feb(1), utc(2026, 3, 3, 0, 0, 0)),
        ])
        .when(SubscriptionCommand::Expire { at: feb(2) })
        .then_expect_events(vec![]);
}

// The term ending while suspended starts the grace period but leaves the seats suspended.
#[test]
fn expire_an_add_on_suspended_for_its_ended_parent_keeps_its_seats_unassignable() {
    let phone = phone_system();
    let result = framework()
        .given(vec![opened(&phone, 5), orphaned(&phone, 5, jan(10))])
        .when(SubscriptionCommand::Expire { at: feb(1) })
        .inspect_result();
    // Refusing the expiry, or expiring without making the seats assignable, are both fine.
    if let Ok(events) = result {
        for event in &events {
            if let Some(seats) = event.seats() {
                assert!(
                    !seats.state.assignable(),
                    "an orphaned add-on got assignable seats back: {event:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Disable
// ---------------------------------------------------------------------------------------------

#[test]
fn disable_at_grace_end_reports_the_seats_inactive() {
    let e1 = e1();
    let grace_ends_at = utc(2026, 3, 3, 0, 0, 0);
    framework()
        .given(vec![opened(&e1, 5), expired(&e1, 5, feb(1), grace_ends_at)])
        .when(SubscriptionCommand::Disable { at: grace_ends_at })
        .then_expect_events(vec![disabled(&e1, 5, grace_ends_at)]);
}

#[test]
fn disable_before_grace_end_is_refused_grace_period_not_over() {
    let e1 = e1();
    let err = assert_refused(
        vec![
            opened(&e1, 5),
            expired(&e1, 5, feb(1), utc(2026, 3, 3, 0, 0, 0)),
        ],
        SubscriptionCommand::Disable {
            at: utc(2026, 3, 2, 23, 59, 59),
        },
        DomainError::GracePeriodNotOver {
            ends_at: utc(2026, 3, 3, 0, 0, 0),
        },
        "grace_period_not_over",
    );
    assert!(err.to_string().contains("2026-03-03T00:00:00Z"));
}

#[test]
fn disable_a_disabled_subscription_emits_nothing() {
    let e1 = e1();
    framework()
        .given(vec![
            opened(&e1, 5),
            expired(&e1, 5, feb(1), utc(2026, 3, 3, 0, 0, 0)),
            disabled(&e1, 5, utc(2026, 3, 3, 0, 0, 0)),
        ])
        .when(SubscriptionCommand::Disable {
            at: utc(2026, 3, 4, 0, 0, 0),
        })
        .then_expect_events(vec![]);
}

#[test]
fn disable_a_subscription_that_is_not_expired_is_refused_invalid_state() {
    let e1 = e1();
    let mut cases = vec![("active", vec![opened(&e1, 5)])];
    cases.extend(
        e1_in_every_inactive_status()
            .into_iter()
            .filter(|(status, _)| *status == "suspended" || *status == "cancelled"),
    );
    for (status, given) in cases {
        assert_refused(
            given,
            SubscriptionCommand::Disable {
                at: utc(2026, 6, 1, 0, 0, 0),
            },
            invalid_state("disable", status),
            "invalid_subscription_state",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// AssignBillingProfile
// ---------------------------------------------------------------------------------------------

#[test]
fn assign_another_billing_profile_records_both_profiles_and_the_tenant() {
    framework()
        .given(vec![opened(&e1(), 5)])
        .when(SubscriptionCommand::AssignBillingProfile {
            billing_profile_id: OTHER_PROFILE,
            at: jan(2),
        })
        .then_expect_events(vec![SubscriptionEvent::BillingProfileAssigned {
            tenant_id: TENANT,
            from: PROFILE,
            to: OTHER_PROFILE,
            at: jan(2),
        }]);
}

#[test]
fn assign_the_current_billing_profile_emits_nothing() {
    framework()
        .given(vec![opened(&e1(), 5)])
        .when(SubscriptionCommand::AssignBillingProfile {
            billing_profile_id: PROFILE,
            at: jan(2),
        })
        .then_expect_events(vec![]);
}

#[test]
fn assign_billing_profile_follows_the_previous_assignment() {
    let given = vec![
        opened(&e1(), 5),
        SubscriptionEvent::BillingProfileAssigned {
            tenant_id: TENANT,
            from: PROFILE,
            to: OTHER_PROFILE,
            at: jan(2),
        },
    ];
    framework()
        .given(given.clone())
        .when(SubscriptionCommand::AssignBillingProfile {
            billing_profile_id: OTHER_PROFILE,
            at: jan(3),
        })
        .then_expect_events(vec![]);
    framework()
        .given(given)
        .when(SubscriptionCommand::AssignBillingProfile {
            billing_profile_id: PROFILE,
            at: jan(3),
        })
        .then_expect_events(vec![SubscriptionEvent::BillingProfileAssigned {
            tenant_id: TENANT,
            from: OTHER_PROFILE,
            to: PROFILE,
            at: jan(3),
        }]);
}

#[test]
fn assign_billing_profile_of_a_suspended_or_expired_subscription_is_allowed() {
    for (status, given) in e1_in_every_inactive_status() {
        if status == "suspended" || status == "expired" {
            framework()
                .given(given)
                .when(SubscriptionCommand::AssignBillingProfile {
                    billing_profile_id: OTHER_PROFILE,
                    at: feb(2),
                })
                .then_expect_events(vec![SubscriptionEvent::BillingProfileAssigned {
                    tenant_id: TENANT,
                    from: PROFILE,
                    to: OTHER_PROFILE,
                    at: feb(2),
                }]);
        }
    }
}

#[test]
fn assign_billing_profile_of_a_cancelled_or_disabled_subscription_is_refused_invalid_state() {
    for (status, given) in e1_in_every_inactive_status() {
        if status == "cancelled" || status == "disabled" {
            let err = assert_refused(
                given,
                SubscriptionCommand::AssignBillingProfile {
                    billing_profile_id: OTHER_PROFILE,
                    at: utc(2026, 3, 4, 0, 0, 0),
                },
                invalid_state("move the billing profile of", status),
                "invalid_subscription_state",
            );
            assert!(err
                .to_string()
                .starts_with("cannot move the billing profile of subscription"));
        }
    }
}

#[test]
fn monthly_renewals_keep_the_day_of_the_month_they_were_bought_on() {
    let e1 = e1();
    let open = SubscriptionEvent::SubscriptionOpened {
        subscription_id: SUBSCRIPTION,
        tenant_id: TENANT,
        offer: e1.clone(),
        quantity: 1,
        term: Term::Monthly,
        billing_profile_id: PROFILE,
        trial: false,
        trial_ends_at: None,
        renews_at: feb(28),
        refundable_until: feb(7),
        at: jan(31),
    };
    let events = framework()
        .given(vec![open])
        .when(SubscriptionCommand::Renew { at: feb(28) })
        .inspect_result()
        .unwrap();
    let SubscriptionEvent::SubscriptionRenewed { renews_at, .. } = &events[0] else {
        panic!("expected a renewal, got {events:?}");
    };
    // Jan 31 → Feb 28 → Mar 31, not Mar 28.
    assert_eq!(*renews_at, utc(2026, 3, 31, 0, 0, 0));
}
