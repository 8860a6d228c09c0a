//! Given/when/then tests of the partner's accounts: indirect resellers and billing profiles.

use aggregates::party::{
    BillingProfile, BillingProfileCommand, BillingProfileEvent, BillingProfileState, Reseller,
    ResellerCommand, ResellerEvent,
};
use aggregates::values::{Currency, OrganisationName};
use aggregates::{DomainError, Entity};
use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use uuid::Uuid;

const RESELLER: Uuid = Uuid::from_u128(1);
const OTHER_RESELLER: Uuid = Uuid::from_u128(2);
const PROFILE: Uuid = Uuid::from_u128(10);
const OTHER_PROFILE: Uuid = Uuid::from_u128(11);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn t1() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 9, 30, 0).unwrap()
}

fn name(raw: &str) -> OrganisationName {
    OrganisationName::parse(raw).unwrap()
}

fn currency(raw: &str) -> Currency {
    Currency::parse(raw).unwrap()
}

fn reseller_created(reseller_id: Uuid, raw_name: &str) -> ResellerEvent {
    ResellerEvent::ResellerCreated {
        reseller_id,
        name: name(raw_name),
        at: t0(),
    }
}

fn create_reseller(reseller_id: Uuid, raw_name: &str) -> ResellerCommand {
    ResellerCommand::CreateReseller {
        reseller_id,
        name: name(raw_name),
        at: t1(),
    }
}

fn profile_created(reseller_id: Option<Uuid>) -> BillingProfileEvent {
    BillingProfileEvent::BillingProfileCreated {
        billing_profile_id: PROFILE,
        name: name("Contoso invoices"),
        currency: currency("EUR"),
        reseller_id,
        at: t0(),
    }
}

fn create_profile(billing_profile_id: Uuid, reseller_id: Option<Uuid>) -> BillingProfileCommand {
    BillingProfileCommand::CreateBillingProfile {
        billing_profile_id,
        name: name("Fabrikam invoices"),
        currency: currency("usd"),
        reseller_id,
        at: t1(),
    }
}

// ---------------------------------------------------------------------------------------------
// Reseller
// ---------------------------------------------------------------------------------------------

#[test]
fn create_reseller_emits_reseller_created() {
    TestFramework::<Reseller>::with(())
        .given_no_previous_events()
        .when(create_reseller(RESELLER, "Northwind Resale"))
        .then_expect_events(vec![ResellerEvent::ResellerCreated {
            reseller_id: RESELLER,
            name: name("Northwind Resale"),
            at: t1(),
        }]);
}

#[test]
fn create_reseller_again_with_the_same_id_is_refused_already_exists() {
    TestFramework::<Reseller>::with(())
        .given(vec![reseller_created(RESELLER, "Northwind Resale")])
        .when(create_reseller(RESELLER, "Northwind Resale"))
        .then_expect_error(DomainError::AlreadyExists {
            entity: Entity::Reseller,
            id: RESELLER.to_string(),
        });
}

#[test]
fn create_reseller_on_a_created_stream_is_refused_with_code_and_message() {
    let err = TestFramework::<Reseller>::with(())
        .given(vec![reseller_created(RESELLER, "Northwind Resale")])
        .when(create_reseller(OTHER_RESELLER, "Another name"))
        .inspect_result()
        .expect_err("the stream already holds a reseller");
    assert!(matches!(
        err,
        DomainError::AlreadyExists {
            entity: Entity::Reseller,
            ..
        }
    ));
    assert_eq!(err.code(), "already_exists");
    assert!(
        err.to_string().starts_with("reseller ") && err.to_string().ends_with(" exists already"),
        "{err}"
    );
}

#[test]
fn reseller_created_sets_id_name_and_creation_instant() {
    let mut reseller = Reseller::default();
    reseller.apply(reseller_created(RESELLER, "Northwind Resale"));
    assert_eq!(reseller.reseller_id, Some(RESELLER));
    assert_eq!(reseller.name, Some(name("Northwind Resale")));
    assert_eq!(reseller.created_at, Some(t0()));
}

// ---------------------------------------------------------------------------------------------
// Billing profile
// ---------------------------------------------------------------------------------------------

#[test]
fn create_billing_profile_of_the_partner_emits_created_without_reseller() {
    TestFramework::<BillingProfile>::with(())
        .given_no_previous_events()
        .when(create_profile(PROFILE, None))
        .then_expect_events(vec![BillingProfileEvent::BillingProfileCreated {
            billing_profile_id: PROFILE,
            name: name("Fabrikam invoices"),
            currency: currency("USD"),
            reseller_id: None,
            at: t1(),
        }]);
}

#[test]
fn create_billing_profile_of_a_reseller_records_the_reseller() {
    TestFramework::<BillingProfile>::with(())
        .given_no_previous_events()
        .when(create_profile(PROFILE, Some(RESELLER)))
        .then_expect_events(vec![BillingProfileEvent::BillingProfileCreated {
            billing_profile_id: PROFILE,
            name: name("Fabrikam invoices"),
            currency: currency("USD"),
            reseller_id: Some(RESELLER),
            at: t1(),
        }]);
}

#[test]
fn create_billing_profile_again_with_the_same_id_is_refused_already_exists() {
    let err = TestFramework::<BillingProfile>::with(())
        .given(vec![profile_created(None)])
        .when(create_profile(PROFILE, None))
        .inspect_result()
        .expect_err("the billing profile exists");
    assert_eq!(
        err,
        DomainError::AlreadyExists {
            entity: Entity::BillingProfile,
            id: PROFILE.to_string(),
        }
    );
    assert_eq!(err.code(), "already_exists");
    assert_eq!(
        err.to_string(),
        format!("billing profile {PROFILE} exists already")
    );
}

#[test]
fn create_billing_profile_on_a_created_stream_is_refused_even_with_other_details() {
    let err = TestFramework::<BillingProfile>::with(())
        .given(vec![profile_created(Some(RESELLER))])
        .when(create_profile(OTHER_PROFILE, None))
        .inspect_result()
        .expect_err("the stream already holds a billing profile");
    assert!(matches!(
        err,
        DomainError::AlreadyExists {
            entity: Entity::BillingProfile,
            ..
        }
    ));
    assert_eq!(err.code(), "already_exists");
}

#[test]
fn billing_profile_created_sets_the_profile_state() {
    let mut profile = BillingProfile::default();
    profile.apply(profile_created(Some(RESELLER)));
    assert_eq!(
        profile.state,
        Some(BillingProfileState {
            billing_profile_id: PROFILE,
            name: name("Contoso invoices"),
            currency: currency("EUR"),
            reseller_id: Some(RESELLER),
            created_at: t0(),
        })
    );
}
