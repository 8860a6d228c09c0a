//! Given/when/then tests of the tenant aggregate: its seat pool, parent chains, trials, the
//! user register and licence assignment.

use aggregates::catalog::{default_catalog, offers, Offer};
use aggregates::personal::{PrincipalFingerprint, SealedDetails};
use aggregates::tenant::{SeatSnapshot, SeatState, Tenant, TenantCommand, TenantEvent};
use aggregates::values::{
    DomainName, OfferId, OrganisationName, ProvisioningId, Quantity, Term, UserRole,
};
use aggregates::{CommercialRules, DomainError, Entity};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use uuid::Uuid;

const TENANT: Uuid = Uuid::from_u128(1);
const PROFILE: Uuid = Uuid::from_u128(2);
const SUB_BP: Uuid = Uuid::from_u128(10);
const SUB_BP_2: Uuid = Uuid::from_u128(11);
const SUB_ADDON: Uuid = Uuid::from_u128(12);
const ALICE: Uuid = Uuid::from_u128(100);
const BOB: Uuid = Uuid::from_u128(101);
const CAROL: Uuid = Uuid::from_u128(102);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn offer(id: &str) -> Offer {
    default_catalog()
        .get(&OfferId::parse(id).unwrap())
        .expect("offer in the default catalog")
        .clone()
}

fn offer_id(id: &str) -> OfferId {
    OfferId::parse(id).unwrap()
}

fn product(sku: &str) -> ProvisioningId {
    ProvisioningId::parse(sku).unwrap()
}

fn fingerprint(n: u8) -> PrincipalFingerprint {
    PrincipalFingerprint::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

fn sealed(user_id: Uuid) -> SealedDetails {
    SealedDetails {
        key_id: user_id,
        ciphertext: "c2VhbGVk".into(),
    }
}

fn framework() -> TestFramework<Tenant> {
    TestFramework::with(CommercialRules::default())
}

fn created() -> TenantEvent {
    TenantEvent::TenantCreated {
        tenant_id: TENANT,
        domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
        name: OrganisationName::parse("Contoso").unwrap(),
        reseller_id: None,
        at: t0(),
    }
}

fn purchased(subscription_id: Uuid, offer_ref: &str, quantity: u32, trial: bool) -> TenantEvent {
    TenantEvent::SubscriptionPurchased {
        subscription_id,
        offer: offer(offer_ref),
        quantity,
        term: Term::Monthly,
        billing_profile_id: PROFILE,
        trial,
        at: t0(),
    }
}

fn registered(user_id: Uuid, n: u8) -> TenantEvent {
    TenantEvent::UserRegistered {
        user_id,
        fingerprint: fingerprint(n),
        details: sealed(user_id),
        role: UserRole::User,
        at: t0(),
    }
}

fn assigned(user_id: Uuid, sku: &str) -> TenantEvent {
    TenantEvent::LicensesAssigned {
        user_id,
        added: vec![product(sku)],
        removed: vec![],
        at: t0(),
    }
}

fn purchase(subscription_id: Uuid, offer_ref: &str, quantity: i64, trial: bool) -> TenantCommand {
    TenantCommand::PurchaseSubscription {
        subscription_id,
        offer: offer(offer_ref),
        quantity: Quantity::parse("quantity", quantity).unwrap(),
        term: Term::Monthly,
        billing_profile_id: PROFILE,
        trial,
        at: t0(),
    }
}

fn assign(user_id: Uuid, add: &[&str], remove: &[&str]) -> TenantCommand {
    TenantCommand::AssignLicenses {
        user_id,
        add: add.iter().map(|id| offer_id(id)).collect(),
        remove: remove.iter().map(|id| offer_id(id)).collect(),
        at: t0(),
    }
}

fn state_after(events: Vec<TenantEvent>) -> Tenant {
    let mut tenant = Tenant::default();
    for event in events {
        tenant.apply(event);
    }
    tenant
}

fn expect_error(given: Vec<TenantEvent>, when: TenantCommand, error: DomainError, code: &str) {
    assert_eq!(error.code(), code);
    framework().given(given).when(when).then_expect_error(error);
}

#[test]
fn create_tenant_records_domain_name_and_reseller() {
    let reseller = Uuid::from_u128(7);
    framework()
        .given_no_previous_events()
        .when(TenantCommand::CreateTenant {
            tenant_id: TENANT,
            domain: DomainName::parse("Fabrikam.onmicrosoft.com").unwrap(),
            name: OrganisationName::parse("Fabrikam").unwrap(),
            reseller_id: Some(reseller),
            at: t0(),
        })
        .then_expect_events(vec![TenantEvent::TenantCreated {
            tenant_id: TENANT,
            domain: DomainName::parse("fabrikam.onmicrosoft.com").unwrap(),
            name: OrganisationName::parse("Fabrikam").unwrap(),
            reseller_id: Some(reseller),
            at: t0(),
        }]);
}

#[test]
fn create_tenant_twice_is_refused() {
    let TenantEvent::TenantCreated {
        tenant_id,
        domain,
        name,
        reseller_id,
        at,
    } = created()
    else {
        unreachable!()
    };
    expect_error(
        vec![created()],
        TenantCommand::CreateTenant {
            tenant_id,
            domain,
            name,
            reseller_id,
            at,
        },
        DomainError::AlreadyExists {
            entity: Entity::Tenant,
            id: TENANT.to_string(),
        },
        "already_exists",
    );
}

#[test]
fn commands_to_a_tenant_never_created_are_not_found() {
    let result = framework()
        .given_no_previous_events()
        .when(purchase(SUB_BP, offers::BUSINESS_PREMIUM, 5, false))
        .inspect_result();
    assert_eq!(result.unwrap_err().code(), "tenant_not_found");
}

#[test]
fn purchase_of_a_top_level_offer_records_offer_price_and_term() {
    framework()
        .given(vec![created()])
        .when(purchase(SUB_BP, offers::BUSINESS_PREMIUM, 5, false))
        .then_expect_events(vec![purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false)]);
    let TenantEvent::SubscriptionPurchased { offer, .. } =
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false)
    else {
        unreachable!()
    };
    assert_eq!(offer.unit_price.amount.to_string(), "12.50");
    assert_eq!(offer.unit_price.currency.as_str(), "USD");
}

#[test]
fn add_on_without_parent_is_refused_with_parent_offer_required() {
    expect_error(
        vec![created()],
        purchase(SUB_ADDON, offers::EXCHANGE_ONLINE_ARCHIVING, 5, false),
        DomainError::ParentOfferRequired {
            offer_id: offer_id(offers::EXCHANGE_ONLINE_ARCHIVING),
            offer_name: "Exchange Online Archiving for Exchange Online".into(),
            possible_parents: vec![offers::BUSINESS_PREMIUM.into()],
        },
        "parent_offer_required",
    );
}

#[test]
fn add_on_with_an_active_parent_is_bought() {
    framework()
        .given(vec![
            created(),
            purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false),
        ])
        .when(purchase(
            SUB_ADDON,
            offers::EXCHANGE_ONLINE_ARCHIVING,
            3,
            false,
        ))
        .then_expect_events(vec![purchased(
            SUB_ADDON,
            offers::EXCHANGE_ONLINE_ARCHIVING,
            3,
            false,
        )]);
}

#[test]
fn phone_system_is_satisfied_by_any_one_of_its_parents() {
    for parent in [
        offers::SKYPE_FOR_BUSINESS_PLAN_2,
        offers::ENTERPRISE_E1,
        offers::ENTERPRISE_E3,
    ] {
        framework()
            .given(vec![created(), purchased(SUB_BP, parent, 5, false)])
            .when(purchase(SUB_ADDON, offers::PHONE_SYSTEM, 2, false))
            .then_expect_events(vec![purchased(SUB_ADDON, offers::PHONE_SYSTEM, 2, false)]);
    }
}

#[test]
fn add_on_whose_parent_is_suspended_or_cancelled_is_refused() {
    for state in [SeatState::Suspended, SeatState::Inactive] {
        let sync = TenantEvent::SubscriptionSeatsChanged {
            subscription_id: SUB_BP,
            source_sequence: 2,
            previous_product: product("O365_BUSINESS_PREMIUM"),
            seats: SeatSnapshot {
                tenant_id: TENANT,
                offer: offer(offers::BUSINESS_PREMIUM),
                quantity: 5,
                state,
            },
            at: t0(),
        };
        let result = framework()
            .given(vec![
                created(),
                purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false),
                sync,
            ])
            .when(purchase(SUB_ADDON, offers::EXTRA_FILE_STORAGE, 1, false))
            .inspect_result();
        assert_eq!(
            result.unwrap_err().code(),
            "parent_offer_required",
            "{state:?}"
        );
    }
}

#[test]
fn parent_chain_is_checked_up_to_the_top_level_offer() {
    // A grandchild add-on: its parent is itself an add-on of Business Premium.
    let mut grandchild = offer(offers::PHONE_SYSTEM);
    grandchild.id = offer_id("00000000-0000-0000-0000-00000000abcd");
    grandchild.parent_offers = vec![offer_id(offers::EXCHANGE_ONLINE_ARCHIVING)];
    let archive_without_top = TenantEvent::SubscriptionSeatsChanged {
        subscription_id: SUB_BP,
        source_sequence: 3,
        previous_product: product("O365_BUSINESS_PREMIUM"),
        seats: SeatSnapshot {
            tenant_id: TENANT,
            offer: offer(offers::BUSINESS_PREMIUM),
            quantity: 5,
            state: SeatState::Inactive,
        },
        at: t0(),
    };
    let holding_chain = vec![
        created(),
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false),
        purchased(SUB_ADDON, offers::EXCHANGE_ONLINE_ARCHIVING, 5, false),
    ];
    let tenant = state_after(holding_chain.clone());
    assert!(tenant.prove_parent_chain(&grandchild).is_ok());
    let mut broken = holding_chain;
    broken.push(archive_without_top);
    let tenant = state_after(broken);
    assert_eq!(
        tenant.prove_parent_chain(&grandchild).unwrap_err().code(),
        "parent_offer_required"
    );
}

#[test]
fn trial_of_business_premium_holds_25_seats_once_per_offer() {
    framework()
        .given(vec![created()])
        .when(purchase(SUB_BP, offers::BUSINESS_PREMIUM, 25, true))
        .then_expect_events(vec![purchased(SUB_BP, offers::BUSINESS_PREMIUM, 25, true)]);
    expect_error(
        vec![
            created(),
            purchased(SUB_BP, offers::BUSINESS_PREMIUM, 25, true),
        ],
        purchase(SUB_BP_2, offers::BUSINESS_PREMIUM, 25, true),
        DomainError::TrialAlreadyUsed {
            offer_name: "Office 365 Business Premium".into(),
            subscription_id: SUB_BP,
        },
        "trial_already_used",
    );
}

#[test]
fn trial_with_another_quantity_is_refused() {
    expect_error(
        vec![created()],
        purchase(SUB_BP, offers::BUSINESS_PREMIUM, 10, true),
        DomainError::TrialQuantityFixed { seats: 25 },
        "trial_quantity_fixed",
    );
}

#[test]
fn trials_of_add_ons_and_offers_without_trial_are_refused() {
    expect_error(
        vec![
            created(),
            purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false),
        ],
        purchase(SUB_ADDON, offers::EXCHANGE_ONLINE_ARCHIVING, 25, true),
        DomainError::TrialNotAvailable {
            offer_name: "Exchange Online Archiving for Exchange Online".into(),
        },
        "trial_not_available",
    );
    expect_error(
        vec![created()],
        purchase(SUB_BP, offers::ENTERPRISE_E3, 25, true),
        DomainError::TrialNotAvailable {
            offer_name: "Office 365 Enterprise E3".into(),
        },
        "trial_not_available",
    );
}

#[test]
fn purchase_with_a_taken_subscription_id_is_refused() {
    let result = framework()
        .given(vec![
            created(),
            purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false),
        ])
        .when(purchase(SUB_BP, offers::ENTERPRISE_E3, 5, false))
        .inspect_result();
    assert_eq!(result.unwrap_err().code(), "already_exists");
}

fn register(user_id: Uuid, n: u8, domain: &str) -> TenantCommand {
    TenantCommand::RegisterUser {
        user_id,
        principal_domain: DomainName::parse(domain).unwrap(),
        fingerprint: fingerprint(n),
        details: sealed(user_id),
        role: UserRole::User,
        at: t0(),
    }
}

#[test]
fn register_user_reserves_its_principal_name() {
    framework()
        .given(vec![created()])
        .when(register(ALICE, 1, "contoso.onmicrosoft.com"))
        .then_expect_events(vec![registered(ALICE, 1)]);
}

#[test]
fn register_user_with_a_taken_principal_name_is_refused() {
    expect_error(
        vec![created(), registered(ALICE, 1)],
        register(BOB, 1, "contoso.onmicrosoft.com"),
        DomainError::DuplicateUserPrincipalName,
        "duplicate_user_principal_name",
    );
}

#[test]
fn a_deleted_user_keeps_its_principal_name_until_purged() {
    let released = TenantEvent::UserLicensesReleased {
        user_id: ALICE,
        source_sequence: 2,
        released: vec![],
        at: t0(),
    };
    expect_error(
        vec![created(), registered(ALICE, 1), released.clone()],
        register(BOB, 1, "contoso.onmicrosoft.com"),
        DomainError::DuplicateUserPrincipalName,
        "duplicate_user_principal_name",
    );
    framework()
        .given(vec![
            created(),
            registered(ALICE, 1),
            released,
            TenantEvent::UserForgotten {
                user_id: ALICE,
                source_sequence: 3,
                at: t0(),
            },
        ])
        .when(register(BOB, 1, "contoso.onmicrosoft.com"))
        .then_expect_events(vec![registered(BOB, 1)]);
}

#[test]
fn register_user_outside_the_tenant_domain_is_refused() {
    expect_error(
        vec![created()],
        register(ALICE, 1, "fabrikam.com"),
        DomainError::PrincipalDomainMismatch {
            principal_domain: "fabrikam.com".into(),
            tenant_domain: "contoso.onmicrosoft.com".into(),
        },
        "principal_domain_mismatch",
    );
}

#[test]
fn registering_the_same_user_again_is_idempotent() {
    framework()
        .given(vec![created(), registered(ALICE, 1)])
        .when(register(ALICE, 1, "contoso.onmicrosoft.com"))
        .then_expect_events(vec![]);
}

#[test]
fn assigning_the_last_seat_succeeds_and_the_next_is_refused() {
    let given = vec![
        created(),
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 1, false),
        registered(ALICE, 1),
        registered(BOB, 2),
    ];
    framework()
        .given(given.clone())
        .when(assign(ALICE, &[offers::BUSINESS_PREMIUM], &[]))
        .then_expect_events(vec![assigned(ALICE, "O365_BUSINESS_PREMIUM")]);
    let mut full = given;
    full.push(assigned(ALICE, "O365_BUSINESS_PREMIUM"));
    expect_error(
        full,
        assign(BOB, &[offers::BUSINESS_PREMIUM], &[]),
        DomainError::InsufficientLicenses {
            product: product("O365_BUSINESS_PREMIUM"),
            requested: 1,
            available: 0,
        },
        "insufficient_licenses",
    );
}

#[test]
fn assignment_is_all_or_nothing() {
    // E3 has a free seat, Business Premium has none: asking for both changes nothing.
    let given = vec![
        created(),
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 1, false),
        purchased(SUB_BP_2, offers::ENTERPRISE_E3, 1, false),
        registered(ALICE, 1),
        registered(BOB, 2),
        assigned(ALICE, "O365_BUSINESS_PREMIUM"),
    ];
    let result = framework()
        .given(given.clone())
        .when(assign(
            BOB,
            &[offers::ENTERPRISE_E3, offers::BUSINESS_PREMIUM],
            &[],
        ))
        .inspect_result();
    assert_eq!(result.unwrap_err().code(), "insufficient_licenses");
    let tenant = state_after(given);
    assert_eq!(tenant.seats(&product("ENTERPRISEPACK")).assigned, 0);
}

#[test]
fn assign_and_remove_in_one_change() {
    framework()
        .given(vec![
            created(),
            purchased(SUB_BP, offers::BUSINESS_PREMIUM, 1, false),
            purchased(SUB_BP_2, offers::ENTERPRISE_E3, 1, false),
            registered(ALICE, 1),
            assigned(ALICE, "O365_BUSINESS_PREMIUM"),
        ])
        .when(assign(
            ALICE,
            &[offers::ENTERPRISE_E3],
            &[offers::BUSINESS_PREMIUM],
        ))
        .then_expect_events(vec![TenantEvent::LicensesAssigned {
            user_id: ALICE,
            added: vec![product("ENTERPRISEPACK")],
            removed: vec![product("O365_BUSINESS_PREMIUM")],
            at: t0(),
        }]);
}

#[test]
fn seats_of_several_subscriptions_of_one_product_pool_together() {
    let tenant = state_after(vec![
        created(),
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 2, false),
        purchased(SUB_BP_2, offers::BUSINESS_PREMIUM, 3, false),
        registered(ALICE, 1),
        assigned(ALICE, "O365_BUSINESS_PREMIUM"),
    ]);
    let seats = tenant.seats(&product("O365_BUSINESS_PREMIUM"));
    assert_eq!((seats.enabled, seats.assigned, seats.available), (5, 1, 4));
    assert_eq!(tenant.all_seats().len(), 1);
}

#[test]
fn trial_offer_id_counts_against_the_paid_product() {
    framework()
        .given(vec![
            created(),
            purchased(SUB_BP, offers::BUSINESS_PREMIUM, 25, true),
            registered(ALICE, 1),
        ])
        .when(assign(ALICE, &[offers::BUSINESS_PREMIUM_TRIAL], &[]))
        .then_expect_events(vec![assigned(ALICE, "O365_BUSINESS_PREMIUM")]);
}

#[test]
fn assigning_an_offer_not_assignable_to_users_is_refused() {
    expect_error(
        vec![
            created(),
            purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false),
            purchased(SUB_ADDON, offers::EXTRA_FILE_STORAGE, 5, false),
            registered(ALICE, 1),
        ],
        assign(ALICE, &[offers::EXTRA_FILE_STORAGE], &[]),
        DomainError::OfferNotAssignable {
            offer_id: offer_id(offers::EXTRA_FILE_STORAGE),
            offer_name: "Office 365 Extra File Storage".into(),
        },
        "offer_not_assignable",
    );
}

#[test]
fn assigning_an_offer_the_tenant_never_bought_is_refused() {
    expect_error(
        vec![created(), registered(ALICE, 1)],
        assign(ALICE, &[offers::ENTERPRISE_E3], &[]),
        DomainError::OfferNotSubscribed {
            offer_id: offer_id(offers::ENTERPRISE_E3),
        },
        "offer_not_subscribed",
    );
}

#[test]
fn adding_and_removing_the_same_offer_is_refused() {
    expect_error(
        vec![
            created(),
            purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false),
            registered(ALICE, 1),
        ],
        assign(
            ALICE,
            &[offers::BUSINESS_PREMIUM],
            &[offers::BUSINESS_PREMIUM],
        ),
        DomainError::ConflictingLicenseChange {
            offer_id: offer_id(offers::BUSINESS_PREMIUM),
        },
        "conflicting_license_change",
    );
}

#[test]
fn assigning_to_an_unknown_or_deleted_user_is_refused() {
    let given = vec![
        created(),
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false),
        registered(ALICE, 1),
        TenantEvent::UserLicensesReleased {
            user_id: ALICE,
            source_sequence: 2,
            released: vec![],
            at: t0(),
        },
    ];
    expect_error(
        given.clone(),
        assign(ALICE, &[offers::BUSINESS_PREMIUM], &[]),
        DomainError::UserNotActive {
            user_id: ALICE,
            status: "deleted",
        },
        "user_not_active",
    );
    let result = framework()
        .given(given)
        .when(assign(CAROL, &[offers::BUSINESS_PREMIUM], &[]))
        .inspect_result();
    assert_eq!(result.unwrap_err().code(), "user_not_found");
}

#[test]
fn an_assignment_that_changes_nothing_records_nothing() {
    framework()
        .given(vec![
            created(),
            purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false),
            registered(ALICE, 1),
            assigned(ALICE, "O365_BUSINESS_PREMIUM"),
        ])
        .when(assign(ALICE, &[offers::BUSINESS_PREMIUM], &[]))
        .then_expect_events(vec![]);
}

fn sync(sequence: u64, offer_ref: &str, quantity: u32, state: SeatState) -> TenantCommand {
    TenantCommand::SyncSubscription {
        subscription_id: SUB_BP,
        source_sequence: sequence,
        seats: SeatSnapshot {
            tenant_id: TENANT,
            offer: offer(offer_ref),
            quantity,
            state,
        },
        at: t0() + Duration::days(1),
    }
}

#[test]
fn seat_reports_change_the_pool_and_stale_ones_are_dropped() {
    let given = vec![
        created(),
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false),
    ];
    let events = framework()
        .given(given.clone())
        .when(sync(3, offers::BUSINESS_PREMIUM, 8, SeatState::Enabled))
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 1);
    let mut after = given;
    after.extend(events);
    assert_eq!(
        state_after(after.clone())
            .seats(&product("O365_BUSINESS_PREMIUM"))
            .enabled,
        8
    );
    framework()
        .given(after)
        .when(sync(2, offers::BUSINESS_PREMIUM, 6, SeatState::Enabled))
        .then_expect_events(vec![]);
}

#[test]
fn removing_seats_below_assigned_goes_negative_and_flags_over_assignment() {
    let mut given = vec![
        created(),
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 2, false),
        registered(ALICE, 1),
        registered(BOB, 2),
        assigned(ALICE, "O365_BUSINESS_PREMIUM"),
        assigned(BOB, "O365_BUSINESS_PREMIUM"),
    ];
    let events = framework()
        .given(given.clone())
        .when(sync(2, offers::BUSINESS_PREMIUM, 1, SeatState::Enabled))
        .inspect_result()
        .unwrap();
    given.extend(events);
    let seats = state_after(given).seats(&product("O365_BUSINESS_PREMIUM"));
    assert_eq!(seats.available, -1);
    assert!(seats.over_assigned());
}

#[test]
fn warning_seats_are_assignable_and_suspended_seats_are_not() {
    let base = vec![
        created(),
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 1, false),
        registered(ALICE, 1),
    ];
    for (state, allowed) in [(SeatState::Warning, true), (SeatState::Suspended, false)] {
        let mut given = base.clone();
        given.extend(
            framework()
                .given(base.clone())
                .when(sync(2, offers::BUSINESS_PREMIUM, 1, state))
                .inspect_result()
                .unwrap(),
        );
        let result = framework()
            .given(given)
            .when(assign(ALICE, &[offers::BUSINESS_PREMIUM], &[]))
            .inspect_result();
        assert_eq!(result.is_ok(), allowed, "{state:?}");
    }
}

#[test]
fn cancelling_the_last_parent_orphans_its_add_ons() {
    let given = vec![
        created(),
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false),
        purchased(SUB_ADDON, offers::EXCHANGE_ONLINE_ARCHIVING, 5, false),
    ];
    let events = framework()
        .given(given)
        .when(sync(2, offers::BUSINESS_PREMIUM, 5, SeatState::Inactive))
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1],
        TenantEvent::AddOnOrphaned {
            subscription_id: SUB_ADDON,
            offer_id: offer_id(offers::EXCHANGE_ONLINE_ARCHIVING),
            parent_subscription_id: SUB_BP,
            at: t0() + Duration::days(1),
        }
    );
}

#[test]
fn cancelling_one_of_two_parents_orphans_nothing() {
    let given = vec![
        created(),
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 5, false),
        purchased(SUB_BP_2, offers::BUSINESS_PREMIUM, 5, false),
        purchased(SUB_ADDON, offers::EXCHANGE_ONLINE_ARCHIVING, 5, false),
    ];
    let events = framework()
        .given(given)
        .when(sync(2, offers::BUSINESS_PREMIUM, 5, SeatState::Inactive))
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
}

#[test]
fn upgrade_moves_users_the_old_product_can_no_longer_seat() {
    let given = vec![
        created(),
        purchased(SUB_BP, offers::ENTERPRISE_E1, 2, false),
        registered(ALICE, 1),
        registered(BOB, 2),
        assigned(ALICE, "STANDARDPACK"),
        assigned(BOB, "STANDARDPACK"),
    ];
    let events = framework()
        .given(given.clone())
        .when(sync(2, offers::ENTERPRISE_E3, 2, SeatState::Enabled))
        .inspect_result()
        .unwrap();
    assert_eq!(
        events[1],
        TenantEvent::LicensesMigrated {
            subscription_id: SUB_BP,
            from_product: product("STANDARDPACK"),
            to_product: product("ENTERPRISEPACK"),
            users: vec![ALICE, BOB],
            at: t0() + Duration::days(1),
        }
    );
    let mut after = given;
    after.extend(events);
    let tenant = state_after(after);
    assert_eq!(tenant.seats(&product("ENTERPRISEPACK")).available, 0);
    assert_eq!(tenant.seats(&product("STANDARDPACK")).assigned, 0);
}

#[test]
fn release_frees_a_deleted_users_seats_once() {
    let given = vec![
        created(),
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 1, false),
        registered(ALICE, 1),
        assigned(ALICE, "O365_BUSINESS_PREMIUM"),
    ];
    let release = TenantCommand::ReleaseUserLicenses {
        user_id: ALICE,
        source_sequence: 2,
        at: t0(),
    };
    let released = TenantEvent::UserLicensesReleased {
        user_id: ALICE,
        source_sequence: 2,
        released: vec![product("O365_BUSINESS_PREMIUM")],
        at: t0(),
    };
    framework()
        .given(given.clone())
        .when(release.clone())
        .then_expect_events(vec![released.clone()]);
    let mut after = given;
    after.push(released);
    assert_eq!(
        state_after(after.clone())
            .seats(&product("O365_BUSINESS_PREMIUM"))
            .available,
        1
    );
    framework()
        .given(after)
        .when(release)
        .then_expect_events(vec![]);
}

#[test]
fn reinstating_without_a_free_seat_records_the_over_assignment() {
    let given = vec![
        created(),
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 1, false),
        registered(ALICE, 1),
        registered(BOB, 2),
        assigned(ALICE, "O365_BUSINESS_PREMIUM"),
        TenantEvent::UserLicensesReleased {
            user_id: ALICE,
            source_sequence: 2,
            released: vec![product("O365_BUSINESS_PREMIUM")],
            at: t0(),
        },
        assigned(BOB, "O365_BUSINESS_PREMIUM"),
    ];
    let reinstated = TenantEvent::UserLicensesReinstated {
        user_id: ALICE,
        source_sequence: 3,
        reinstated: vec![product("O365_BUSINESS_PREMIUM")],
        over_assigned: vec![product("O365_BUSINESS_PREMIUM")],
        at: t0(),
    };
    framework()
        .given(given.clone())
        .when(TenantCommand::ReinstateUserLicenses {
            user_id: ALICE,
            source_sequence: 3,
            at: t0(),
        })
        .then_expect_events(vec![reinstated.clone()]);
    let mut after = given;
    after.push(reinstated);
    let seats = state_after(after).seats(&product("O365_BUSINESS_PREMIUM"));
    assert_eq!((seats.assigned, seats.available), (2, -1));
}

#[test]
fn forgetting_a_purged_user_twice_records_once() {
    let given = vec![
        created(),
        registered(ALICE, 1),
        TenantEvent::UserLicensesReleased {
            user_id: ALICE,
            source_sequence: 2,
            released: vec![],
            at: t0(),
        },
    ];
    let forget = TenantCommand::ForgetUser {
        user_id: ALICE,
        source_sequence: 3,
        at: t0(),
    };
    let forgotten = TenantEvent::UserForgotten {
        user_id: ALICE,
        source_sequence: 3,
        at: t0(),
    };
    framework()
        .given(given.clone())
        .when(forget.clone())
        .then_expect_events(vec![forgotten.clone()]);
    let mut after = given;
    after.push(forgotten);
    framework()
        .given(after.clone())
        .when(forget)
        .then_expect_events(vec![]);
    expect_error(
        after,
        TenantCommand::ReinstateUserLicenses {
            user_id: ALICE,
            source_sequence: 4,
            at: t0(),
        },
        DomainError::UserPurged { user_id: ALICE },
        "user_purged",
    );
}

#[test]
fn a_stale_report_of_an_earlier_deletion_releases_nothing() {
    // Alice was deleted (user event 2) and restored (user event 3); the deletion arrives again.
    let given = vec![
        created(),
        purchased(SUB_BP, offers::BUSINESS_PREMIUM, 1, false),
        registered(ALICE, 1),
        assigned(ALICE, "O365_BUSINESS_PREMIUM"),
        TenantEvent::UserLicensesReleased {
            user_id: ALICE,
            source_sequence: 2,
            released: vec![product("O365_BUSINESS_PREMIUM")],
            at: t0(),
        },
        TenantEvent::UserLicensesReinstated {
            user_id: ALICE,
            source_sequence: 3,
            reinstated: vec![product("O365_BUSINESS_PREMIUM")],
            over_assigned: vec![],
            at: t0(),
        },
    ];
    framework()
        .given(given)
        .when(TenantCommand::ReleaseUserLicenses {
            user_id: ALICE,
            source_sequence: 2,
            at: t0(),
        })
        .then_expect_events(vec![]);
}

/// A snapshot is the state's JSON: read back, the registers (persistent maps, read entry by
/// entry) hold every member and principal as they were.
#[test]
fn a_tenant_reads_back_from_its_snapshot_json() {
    let mut tenant = Tenant::default();
    tenant.apply(created());
    tenant.apply(purchased(
        Uuid::from_u128(9),
        offers::BUSINESS_PREMIUM,
        40,
        false,
    ));
    let users: Vec<Uuid> = (1..=40).map(|n| Uuid::from_u128(1_000 + n)).collect();
    for (n, user_id) in users.iter().enumerate() {
        tenant.apply(registered(*user_id, n as u8));
        if n % 3 == 0 {
            tenant.apply(assigned(*user_id, "O365_BUSINESS_PREMIUM"));
        }
    }
    let json = serde_json::to_string(&tenant).unwrap();
    let read: Tenant = serde_json::from_str(&json).unwrap();
    assert_eq!(read.members.len(), 40);
    assert_eq!(read.principals.len(), 40);
    assert_eq!(read, tenant);
}
