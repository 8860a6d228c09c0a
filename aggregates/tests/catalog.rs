//! Tests of the offer catalog: the default offers, the consistency rules of `Catalog` (parents
//! and upgrade targets exist, parents form no cycle) and the catalog aggregate's commands.

use std::collections::BTreeSet;

use aggregates::catalog::{
    default_catalog, default_offers, offers, Catalog, CatalogAggregate, CatalogCommand,
    CatalogError, CatalogEvent, Offer,
};
use aggregates::values::{OfferId, ProductName, ProvisioningId, UnitPrice};
use aggregates::DomainError;
use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn id(raw: &str) -> OfferId {
    OfferId::parse(raw).unwrap()
}

fn test_id(n: u128) -> OfferId {
    OfferId(Uuid::from_u128(n))
}

fn usd(amount: &str) -> UnitPrice {
    UnitPrice::parse(amount, "USD").unwrap()
}

/// A minimal offer with the given parents and upgrade targets.
fn custom_offer(id: OfferId, parents: &[OfferId], upgrades: &[OfferId]) -> Offer {
    Offer {
        id,
        name: ProductName::parse(&format!("Test offer {id}")).unwrap(),
        provisioning_id: ProvisioningId::parse("TEST_SKU").unwrap(),
        trial_offer_id: None,
        assignable_to_users: true,
        possible_upgrades: upgrades.to_vec(),
        unit_price: usd("1.00"),
        parent_offers: parents.to_vec(),
    }
}

fn default_offer(raw: &str) -> Offer {
    default_catalog()
        .get(&id(raw))
        .expect("offer in the default catalog")
        .clone()
}

fn framework() -> TestFramework<CatalogAggregate> {
    TestFramework::with(())
}

/// The default offers as published events (`apply` does not re-check, so any order will do).
fn seeded() -> Vec<CatalogEvent> {
    default_offers()
        .into_iter()
        .map(|offer| CatalogEvent::OfferPublished { offer, at: t0() })
        .collect()
}

/// Asserts that `path` is a closed walk along the parent edges of `offers` through exactly the
/// offers `members`.
fn assert_parent_cycle(path: &[OfferId], members: &[OfferId], offers: &[Offer]) {
    assert!(path.len() >= 2, "a cycle has at least one edge: {path:?}");
    assert_eq!(path.first(), path.last(), "a cycle ends where it starts");
    for edge in path.windows(2) {
        let child = offers
            .iter()
            .find(|offer| offer.id == edge[0])
            .expect("offer on the path");
        assert!(
            child.parent_offers.contains(&edge[1]),
            "{} does not name {} as a parent",
            edge[0],
            edge[1]
        );
    }
    let on_path: BTreeSet<OfferId> = path.iter().copied().collect();
    let expected: BTreeSet<OfferId> = members.iter().copied().collect();
    assert_eq!(on_path, expected);
}

// ---------------------------------------------------------------------------------------------
// The default catalog
// ---------------------------------------------------------------------------------------------

#[test]
fn default_catalog_holds_the_eight_offers_with_their_real_ids_names_skus_and_prices() {
    let catalog = default_catalog();
    let expected = [
        (
            "031c9e47-4802-4248-838e-778fb1d2cc05",
            "Office 365 Business Premium",
            "O365_BUSINESS_PREMIUM",
            "12.50",
        ),
        (
            "53fc25f7-6639-4f78-bb44-3c2dfec3ed40",
            "Office 365 Extra File Storage",
            "SHAREPOINTSTORAGE",
            "0.20",
        ),
        (
            "2828be95-46ba-4f91-b2fd-0bef192ecf60",
            "Exchange Online Archiving for Exchange Online",
            "EXCHANGEARCHIVE_ADDON",
            "3.00",
        ),
        (
            "a2706f86-868d-4048-989b-0c69e5c76b63",
            "Exchange Online Advanced Threat Protection",
            "ATP_ENTERPRISE",
            "2.00",
        ),
        (
            "4260988e-990d-479c-ae7b-f01ce8e1bb4d",
            "Phone System",
            "MCOEV",
            "8.00",
        ),
        (
            "14c61739-b45a-42c0-832c-d330972d3173",
            "Skype for Business Online (Plan 2)",
            "MCOSTANDARD",
            "5.50",
        ),
        (
            "91fd106f-4b2c-4938-95ac-f54f74e9a239",
            "Office 365 Enterprise E1",
            "STANDARDPACK",
            "8.00",
        ),
        (
            "796b6b5f-613c-4e24-a17c-eba730d49c02",
            "Office 365 Enterprise E3",
            "ENTERPRISEPACK",
            "20.00",
        ),
    ];
    assert_eq!(catalog.len(), 8);
    assert_eq!(default_offers().len(), 8);
    for (raw_id, name, sku, price) in expected {
        let offer = catalog
            .get(&id(raw_id))
            .unwrap_or_else(|| panic!("{raw_id} missing"));
        assert_eq!(offer.name.as_str(), name, "{raw_id}");
        assert_eq!(offer.provisioning_id.as_str(), sku, "{raw_id}");
        assert_eq!(offer.unit_price, usd(price), "{raw_id}");
    }
}

#[test]
fn offer_id_constants_name_the_offers_of_the_default_catalog() {
    let catalog = default_catalog();
    for (raw, name) in [
        (offers::BUSINESS_PREMIUM, "Office 365 Business Premium"),
        (offers::EXTRA_FILE_STORAGE, "Office 365 Extra File Storage"),
        (
            offers::EXCHANGE_ONLINE_ARCHIVING,
            "Exchange Online Archiving for Exchange Online",
        ),
        (
            offers::EXCHANGE_ONLINE_ATP,
            "Exchange Online Advanced Threat Protection",
        ),
        (offers::PHONE_SYSTEM, "Phone System"),
        (
            offers::SKYPE_FOR_BUSINESS_PLAN_2,
            "Skype for Business Online (Plan 2)",
        ),
        (offers::ENTERPRISE_E1, "Office 365 Enterprise E1"),
        (offers::ENTERPRISE_E3, "Office 365 Enterprise E3"),
    ] {
        assert_eq!(catalog.get(&id(raw)).unwrap().name.as_str(), name);
    }
}

#[test]
fn business_premium_can_be_tried_through_its_trial_offer_which_is_not_a_catalog_offer() {
    let catalog = default_catalog();
    let premium = default_offer(offers::BUSINESS_PREMIUM);
    assert_eq!(
        premium.trial_offer_id,
        Some(id(offers::BUSINESS_PREMIUM_TRIAL))
    );
    assert!(catalog.get(&id(offers::BUSINESS_PREMIUM_TRIAL)).is_none());
    let with_trials: Vec<&Offer> = catalog
        .offers()
        .filter(|offer| offer.trial_offer_id.is_some())
        .collect();
    assert_eq!(with_trials, vec![&premium]);
}

#[test]
fn phone_system_parents_are_skype_plan_2_e1_and_e3() {
    let phone = default_offer(offers::PHONE_SYSTEM);
    assert!(phone.is_add_on());
    assert_eq!(
        phone.parent_offers,
        vec![
            id(offers::SKYPE_FOR_BUSINESS_PLAN_2),
            id(offers::ENTERPRISE_E1),
            id(offers::ENTERPRISE_E3),
        ]
    );
}

#[test]
fn business_premium_add_ons_name_it_as_their_only_parent() {
    for raw in [
        offers::EXTRA_FILE_STORAGE,
        offers::EXCHANGE_ONLINE_ARCHIVING,
        offers::EXCHANGE_ONLINE_ATP,
    ] {
        let add_on = default_offer(raw);
        assert!(add_on.is_add_on(), "{raw}");
        assert_eq!(add_on.parent_offers, vec![id(offers::BUSINESS_PREMIUM)]);
    }
}

#[test]
fn top_level_offers_have_no_parents() {
    for raw in [
        offers::BUSINESS_PREMIUM,
        offers::SKYPE_FOR_BUSINESS_PLAN_2,
        offers::ENTERPRISE_E1,
        offers::ENTERPRISE_E3,
    ] {
        assert!(!default_offer(raw).is_add_on(), "{raw}");
    }
}

#[test]
fn extra_file_storage_is_the_only_offer_not_assignable_to_users() {
    let not_assignable: Vec<OfferId> = default_catalog()
        .offers()
        .filter(|offer| !offer.assignable_to_users)
        .map(|offer| offer.id)
        .collect();
    assert_eq!(not_assignable, vec![id(offers::EXTRA_FILE_STORAGE)]);
}

#[test]
fn e1_is_the_only_offer_with_an_upgrade_and_it_goes_to_e3() {
    let with_upgrades: Vec<(OfferId, Vec<OfferId>)> = default_catalog()
        .offers()
        .filter(|offer| !offer.possible_upgrades.is_empty())
        .map(|offer| (offer.id, offer.possible_upgrades.clone()))
        .collect();
    assert_eq!(
        with_upgrades,
        vec![(id(offers::ENTERPRISE_E1), vec![id(offers::ENTERPRISE_E3)])]
    );
}

// ---------------------------------------------------------------------------------------------
// Catalog::with_offer / Catalog::new
// ---------------------------------------------------------------------------------------------

#[test]
fn with_offer_adds_a_consistent_add_on_and_leaves_the_original_unchanged() {
    let catalog = default_catalog();
    let add_on = custom_offer(test_id(1), &[id(offers::ENTERPRISE_E3)], &[]);
    let next = catalog.with_offer(add_on.clone()).expect("consistent");
    assert_eq!(next.len(), 9);
    assert_eq!(next.get(&test_id(1)), Some(&add_on));
    assert_eq!(catalog.len(), 8);
    assert!(catalog.get(&test_id(1)).is_none());
}

#[test]
fn with_offer_replaces_the_offer_with_the_same_id() {
    let mut e3 = default_offer(offers::ENTERPRISE_E3);
    e3.unit_price = usd("23.00");
    let next = default_catalog()
        .with_offer(e3.clone())
        .expect("consistent");
    assert_eq!(next.len(), 8);
    assert_eq!(next.get(&e3.id).unwrap().unit_price, usd("23.00"));
}

#[test]
fn with_offer_refuses_an_unknown_parent_offer() {
    let add_on = custom_offer(test_id(1), &[test_id(99)], &[]);
    let err = default_catalog()
        .with_offer(add_on)
        .expect_err("parent 99 is not in the catalog");
    assert_eq!(
        err,
        CatalogError::UnknownParent {
            offer: test_id(1),
            parent: test_id(99),
        }
    );
    assert_eq!(err.code(), "unknown_parent_offer");
    let domain = DomainError::from(err.clone());
    assert_eq!(domain.code(), "unknown_parent_offer");
    assert_eq!(domain.to_string(), err.to_string());
    assert!(err.to_string().contains(&test_id(99).to_string()));
}

#[test]
fn with_offer_refuses_an_unknown_upgrade_target() {
    let offer = custom_offer(test_id(1), &[], &[test_id(98)]);
    let err = default_catalog()
        .with_offer(offer)
        .expect_err("upgrade target 98 is not in the catalog");
    assert_eq!(
        err,
        CatalogError::UnknownUpgrade {
            offer: test_id(1),
            target: test_id(98),
        }
    );
    assert_eq!(err.code(), "unknown_upgrade_offer");
    assert_eq!(
        DomainError::from(err.clone()).code(),
        "unknown_upgrade_offer"
    );
    assert!(err.to_string().contains(&test_id(98).to_string()));
}

#[test]
fn with_offer_refuses_an_offer_that_is_its_own_parent() {
    let offer = custom_offer(test_id(1), &[test_id(1)], &[]);
    let err = default_catalog()
        .with_offer(offer)
        .expect_err("self-parent is a cycle");
    assert_eq!(
        err,
        CatalogError::Cycle {
            path: vec![test_id(1), test_id(1)],
        }
    );
    assert_eq!(err.code(), "offer_parent_cycle");
    assert_eq!(DomainError::from(err).code(), "offer_parent_cycle");
}

#[test]
fn with_offer_refuses_a_two_offer_parent_cycle() {
    let a = custom_offer(test_id(1), &[], &[]);
    let b = custom_offer(test_id(2), &[test_id(1)], &[]);
    let catalog = default_catalog()
        .with_offer(a)
        .and_then(|catalog| catalog.with_offer(b.clone()))
        .expect("a, then b as an add-on of a, are consistent");
    let a_looping = custom_offer(test_id(1), &[test_id(2)], &[]);
    let err = catalog
        .with_offer(a_looping.clone())
        .expect_err("a -> b -> a is a cycle");
    assert_eq!(err.code(), "offer_parent_cycle");
    let CatalogError::Cycle { path } = &err else {
        panic!("expected a cycle, got {err:?}");
    };
    assert_parent_cycle(path, &[test_id(1), test_id(2)], &[a_looping, b]);
    let message = err.to_string();
    assert!(
        message.starts_with("parent offers would form a cycle: "),
        "{message}"
    );
    assert!(message.contains(" -> "), "{message}");
}

#[test]
fn with_offer_refuses_a_three_offer_parent_cycle() {
    let a = custom_offer(test_id(1), &[], &[]);
    let b = custom_offer(test_id(2), &[test_id(1)], &[]);
    let c = custom_offer(test_id(3), &[test_id(2)], &[]);
    let catalog = Catalog::new([a, b.clone(), c.clone()]).expect("a chain is consistent");
    let a_looping = custom_offer(test_id(1), &[test_id(3)], &[]);
    let err = catalog
        .with_offer(a_looping.clone())
        .expect_err("a -> c -> b -> a is a cycle");
    let CatalogError::Cycle { path } = &err else {
        panic!("expected a cycle, got {err:?}");
    };
    assert_parent_cycle(
        path,
        &[test_id(1), test_id(2), test_id(3)],
        &[a_looping, b, c],
    );
}

#[test]
fn with_offer_allows_a_diamond_of_parents_which_is_no_cycle() {
    // Phone System is itself an add-on of E1: an add-on of both E1 and Phone System reaches E1
    // along two paths (a diamond), which shares an ancestor but never loops.
    let add_on = custom_offer(
        test_id(1),
        &[id(offers::PHONE_SYSTEM), id(offers::ENTERPRISE_E1)],
        &[],
    );
    assert!(default_catalog().with_offer(add_on).is_ok());
}

#[test]
fn with_offer_refuses_making_a_default_offer_a_child_of_its_own_add_on() {
    let mut e1 = default_offer(offers::ENTERPRISE_E1);
    e1.parent_offers = vec![id(offers::PHONE_SYSTEM)];
    let phone = default_offer(offers::PHONE_SYSTEM);
    let err = default_catalog()
        .with_offer(e1.clone())
        .expect_err("E1 -> Phone System -> E1 is a cycle");
    let CatalogError::Cycle { path } = &err else {
        panic!("expected a cycle, got {err:?}");
    };
    assert_parent_cycle(path, &[e1.id, phone.id], &[e1, phone]);
}

#[test]
fn catalog_new_refuses_dangling_parents_and_cycles() {
    assert_eq!(
        Catalog::new([custom_offer(test_id(1), &[test_id(2)], &[])]),
        Err(CatalogError::UnknownParent {
            offer: test_id(1),
            parent: test_id(2),
        })
    );
    let err = Catalog::new([
        custom_offer(test_id(1), &[test_id(2)], &[]),
        custom_offer(test_id(2), &[test_id(1)], &[]),
    ])
    .expect_err("a 2-cycle");
    assert_eq!(err.code(), "offer_parent_cycle");
}

#[test]
fn upgrade_targets_may_point_at_each_other_since_only_parents_must_not_loop() {
    let a = custom_offer(test_id(1), &[], &[test_id(2)]);
    let b = custom_offer(test_id(2), &[], &[test_id(1)]);
    assert!(Catalog::new([a, b]).is_ok());
}

// ---------------------------------------------------------------------------------------------
// CatalogAggregate
// ---------------------------------------------------------------------------------------------

#[test]
fn seed_defaults_into_an_empty_catalog_publishes_the_eight_offers_dependencies_first() {
    let events = framework()
        .given_no_previous_events()
        .when(CatalogCommand::SeedDefaults { at: t0() })
        .inspect_result()
        .expect("seeding an empty catalog succeeds");
    assert_eq!(events.len(), 8);
    let published: Vec<Offer> = events
        .into_iter()
        .map(|event| match event {
            CatalogEvent::OfferPublished { offer, at } => {
                assert_eq!(at, t0());
                offer
            }
        })
        .collect();
    // Exactly the default offers, each once.
    let mut expected = default_offers();
    expected.sort_by_key(|offer| offer.id);
    let mut sorted = published.clone();
    sorted.sort_by_key(|offer| offer.id);
    assert_eq!(sorted, expected);
    // Every parent and upgrade target comes before the offers naming it ...
    for (position, offer) in published.iter().enumerate() {
        for dependency in offer.parent_offers.iter().chain(&offer.possible_upgrades) {
            let before = published[..position]
                .iter()
                .any(|earlier| earlier.id == *dependency);
            assert!(
                before,
                "{} is published before its dependency {dependency}",
                offer.name.as_str()
            );
        }
    }
    // ... so every intermediate catalog is consistent.
    let mut catalog = Catalog::default();
    for offer in published {
        catalog = catalog
            .with_offer(offer)
            .expect("each prefix of the seed is a consistent catalog");
    }
    assert_eq!(catalog, default_catalog());
}

#[test]
fn seed_defaults_places_phone_system_after_skype_e1_and_e3_and_e1_after_e3() {
    let events = framework()
        .given_no_previous_events()
        .when(CatalogCommand::SeedDefaults { at: t0() })
        .inspect_result()
        .unwrap();
    let position = |raw: &str| {
        events
            .iter()
            .position(|CatalogEvent::OfferPublished { offer, .. }| offer.id == id(raw))
            .unwrap()
    };
    let phone = position(offers::PHONE_SYSTEM);
    assert!(position(offers::SKYPE_FOR_BUSINESS_PLAN_2) < phone);
    assert!(position(offers::ENTERPRISE_E1) < phone);
    assert!(position(offers::ENTERPRISE_E3) < phone);
    assert!(position(offers::ENTERPRISE_E3) < position(offers::ENTERPRISE_E1));
    assert!(position(offers::BUSINESS_PREMIUM) < position(offers::EXTRA_FILE_STORAGE));
}

#[test]
fn seed_defaults_on_a_non_empty_catalog_emits_nothing() {
    framework()
        .given(vec![CatalogEvent::OfferPublished {
            offer: default_offer(offers::ENTERPRISE_E3),
            at: t0(),
        }])
        .when(CatalogCommand::SeedDefaults { at: t0() })
        .then_expect_events(vec![]);
}

#[test]
fn seed_defaults_twice_emits_nothing_the_second_time() {
    framework()
        .given(seeded())
        .when(CatalogCommand::SeedDefaults { at: t0() })
        .then_expect_events(vec![]);
}

#[test]
fn publish_a_new_consistent_offer_emits_offer_published() {
    let add_on = custom_offer(test_id(1), &[id(offers::ENTERPRISE_E3)], &[]);
    framework()
        .given(seeded())
        .when(CatalogCommand::PublishOffer {
            offer: add_on.clone(),
            at: t0(),
        })
        .then_expect_events(vec![CatalogEvent::OfferPublished {
            offer: add_on,
            at: t0(),
        }]);
}

#[test]
fn publish_a_top_level_offer_into_an_empty_catalog_emits_offer_published() {
    let e3 = default_offer(offers::ENTERPRISE_E3);
    framework()
        .given_no_previous_events()
        .when(CatalogCommand::PublishOffer {
            offer: e3.clone(),
            at: t0(),
        })
        .then_expect_events(vec![CatalogEvent::OfferPublished {
            offer: e3,
            at: t0(),
        }]);
}

#[test]
fn publish_an_offer_identical_to_the_published_one_emits_nothing() {
    framework()
        .given(seeded())
        .when(CatalogCommand::PublishOffer {
            offer: default_offer(offers::PHONE_SYSTEM),
            at: t0(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn publish_a_changed_price_emits_offer_published() {
    let mut e1 = default_offer(offers::ENTERPRISE_E1);
    e1.unit_price = usd("10.00");
    framework()
        .given(seeded())
        .when(CatalogCommand::PublishOffer {
            offer: e1.clone(),
            at: t0(),
        })
        .then_expect_events(vec![CatalogEvent::OfferPublished {
            offer: e1,
            at: t0(),
        }]);
}

#[test]
fn publish_an_add_on_whose_parent_is_unpublished_is_refused_unknown_parent_offer() {
    let err = framework()
        .given_no_previous_events()
        .when(CatalogCommand::PublishOffer {
            offer: default_offer(offers::PHONE_SYSTEM),
            at: t0(),
        })
        .inspect_result()
        .expect_err("Phone System's parents are not published");
    assert_eq!(
        err,
        DomainError::Catalog(CatalogError::UnknownParent {
            offer: id(offers::PHONE_SYSTEM),
            parent: id(offers::SKYPE_FOR_BUSINESS_PLAN_2),
        })
    );
    assert_eq!(err.code(), "unknown_parent_offer");
}

#[test]
fn publish_an_offer_with_an_unknown_upgrade_target_is_refused_unknown_upgrade_offer() {
    framework()
        .given(seeded())
        .when(CatalogCommand::PublishOffer {
            offer: custom_offer(test_id(1), &[], &[test_id(2)]),
            at: t0(),
        })
        .then_expect_error(DomainError::Catalog(CatalogError::UnknownUpgrade {
            offer: test_id(1),
            target: test_id(2),
        }));
}

#[test]
fn publish_an_offer_that_makes_a_parent_cycle_is_refused_offer_parent_cycle() {
    let mut e1 = default_offer(offers::ENTERPRISE_E1);
    e1.parent_offers = vec![id(offers::PHONE_SYSTEM)];
    let err = framework()
        .given(seeded())
        .when(CatalogCommand::PublishOffer {
            offer: e1.clone(),
            at: t0(),
        })
        .inspect_result()
        .expect_err("E1 -> Phone System -> E1 is a cycle");
    assert_eq!(err.code(), "offer_parent_cycle");
    let DomainError::Catalog(CatalogError::Cycle { path }) = &err else {
        panic!("expected a cycle, got {err:?}");
    };
    assert_parent_cycle(
        path,
        &[e1.id, id(offers::PHONE_SYSTEM)],
        &[e1.clone(), default_offer(offers::PHONE_SYSTEM)],
    );
}

#[test]
fn publish_an_offer_that_is_its_own_parent_is_refused_offer_parent_cycle() {
    framework()
        .given(seeded())
        .when(CatalogCommand::PublishOffer {
            offer: custom_offer(test_id(1), &[test_id(1)], &[]),
            at: t0(),
        })
        .then_expect_error(DomainError::Catalog(CatalogError::Cycle {
            path: vec![test_id(1), test_id(1)],
        }));
}

#[test]
fn applying_the_seed_events_yields_the_default_catalog() {
    let events = framework()
        .given_no_previous_events()
        .when(CatalogCommand::SeedDefaults { at: t0() })
        .inspect_result()
        .unwrap();
    let mut aggregate = CatalogAggregate::default();
    for event in events {
        cqrs_es::Aggregate::apply(&mut aggregate, event);
    }
    assert_eq!(aggregate.catalog, default_catalog());
}
