//! The offer catalog: what can be bought, what it costs, which add-on needs which parent.
//!
//! The catalog is itself an aggregate (one stream, id [`CATALOG_ID`]) so that every change to an
//! offer is an event an auditor can read; every change is validated against the whole catalog:
//! parents and upgrade targets must exist and the parent relation must have no cycle.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::DomainError;
use crate::values::{OfferId, ProductName, ProvisioningId, UnitPrice};

/// The id of the one catalog aggregate.
pub const CATALOG_ID: &str = "catalog";

/// An offer as the partner's catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Offer {
    /// The offer id (a GUID from Microsoft's offer matrix).
    pub id: OfferId,
    /// The product name as Partner Center shows it.
    pub name: ProductName,
    /// The SKU part number licences are counted by; a paid offer and its trial share one.
    pub provisioning_id: ProvisioningId,
    /// The offer id of the trial offer, when the offer can be tried.
    pub trial_offer_id: Option<OfferId>,
    /// Whether seats of this offer are assigned to users (Extra File Storage is not).
    pub assignable_to_users: bool,
    /// Offers a subscription to this one may be upgraded to.
    pub possible_upgrades: Vec<OfferId>,
    /// Price per licence per month.
    pub unit_price: UnitPrice,
    /// For an add-on: the offers any one of which must be held first. Empty for a top-level offer.
    pub parent_offers: Vec<OfferId>,
}

impl Offer {
    /// Whether the offer is an add-on (has possible parents).
    pub fn is_add_on(&self) -> bool {
        !self.parent_offers.is_empty()
    }
}

/// Why the catalog refused a change.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CatalogError {
    /// A parent offer named by an add-on is not in the catalog.
    #[error("offer {offer} names parent {parent}, which is not in the catalog")]
    UnknownParent {
        /// The add-on.
        offer: OfferId,
        /// The missing parent.
        parent: OfferId,
    },
    /// An upgrade target is not in the catalog.
    #[error("offer {offer} names upgrade {target}, which is not in the catalog")]
    UnknownUpgrade {
        /// The offer.
        offer: OfferId,
        /// The missing target.
        target: OfferId,
    },
    /// The parent relation would loop (an offer would be its own ancestor).
    #[error("parent offers would form a cycle: {}", .path.iter().map(ToString::to_string).collect::<Vec<_>>().join(" -> "))]
    Cycle {
        /// The offers on the cycle, first repeated at the end.
        path: Vec<OfferId>,
    },
}

impl CatalogError {
    /// The stable machine code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownParent { .. } => "unknown_parent_offer",
            Self::UnknownUpgrade { .. } => "unknown_upgrade_offer",
            Self::Cycle { .. } => "offer_parent_cycle",
        }
    }
}

/// A consistent set of offers: every parent and upgrade target exists, parents form no cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    offers: BTreeMap<OfferId, Offer>,
}

impl Catalog {
    /// Builds a catalog from offers, refusing dangling references and cycles.
    pub fn new(offers: impl IntoIterator<Item = Offer>) -> Result<Self, CatalogError> {
        let catalog = Self {
            offers: offers.into_iter().map(|offer| (offer.id, offer)).collect(),
        };
        catalog.check()?;
        Ok(catalog)
    }

    /// The catalog with `offer` added or replaced, if the result is consistent.
    pub fn with_offer(&self, offer: Offer) -> Result<Self, CatalogError> {
        let mut next = self.clone();
        next.offers.insert(offer.id, offer);
        next.check()?;
        Ok(next)
    }

    /// Looks an offer up by id.
    pub fn get(&self, id: &OfferId) -> Option<&Offer> {
        self.offers.get(id)
    }

    /// All offers, ordered by id.
    pub fn offers(&self) -> impl Iterator<Item = &Offer> {
        self.offers.values()
    }

    /// The number of offers.
    pub fn len(&self) -> usize {
        self.offers.len()
    }

    /// Whether the catalog has no offer.
    pub fn is_empty(&self) -> bool {
        self.offers.is_empty()
    }

    fn check(&self) -> Result<(), CatalogError> {
        for offer in self.offers.values() {
            if let Some(parent) = offer
                .parent_offers
                .iter()
                .find(|parent| !self.offers.contains_key(parent))
            {
                return Err(CatalogError::UnknownParent {
                    offer: offer.id,
                    parent: *parent,
                });
            }
            if let Some(target) = offer
                .possible_upgrades
                .iter()
                .find(|target| !self.offers.contains_key(target))
            {
                return Err(CatalogError::UnknownUpgrade {
                    offer: offer.id,
                    target: *target,
                });
            }
        }
        // Depth-first search with colours: a grey node met again closes a cycle.
        let mut done = BTreeSet::new();
        for start in self.offers.keys() {
            let mut path = Vec::new();
            self.visit(*start, &mut path, &mut done)?;
        }
        Ok(())
    }

    fn visit(
        &self,
        id: OfferId,
        path: &mut Vec<OfferId>,
        done: &mut BTreeSet<OfferId>,
    ) -> Result<(), CatalogError> {
        if done.contains(&id) {
            return Ok(());
        }
        if let Some(at) = path.iter().position(|seen| *seen == id) {
            let mut cycle = path[at..].to_vec();
            cycle.push(id);
            return Err(CatalogError::Cycle { path: cycle });
        }
        path.push(id);
        for parent in &self.offers[&id].parent_offers {
            self.visit(*parent, path, done)?;
        }
        path.pop();
        done.insert(id);
        Ok(())
    }
}

/// One offer of the partner guides, as written there.
struct Seed<'a> {
    id: &'a str,
    name: &'a str,
    provisioning_id: &'a str,
    trial_offer_id: Option<&'a str>,
    assignable_to_users: bool,
    possible_upgrades: &'a [&'a str],
    price: &'a str,
    parent_offers: &'a [&'a str],
}

impl Seed<'_> {
    fn offer(&self) -> Offer {
        let offer_id = |raw: &str| OfferId::parse(raw).expect("seed offer ids are GUIDs");
        Offer {
            id: offer_id(self.id),
            name: ProductName::parse(self.name).expect("seed names are valid"),
            provisioning_id: ProvisioningId::parse(self.provisioning_id)
                .expect("seed SKUs are valid"),
            trial_offer_id: self.trial_offer_id.map(offer_id),
            assignable_to_users: self.assignable_to_users,
            possible_upgrades: self
                .possible_upgrades
                .iter()
                .map(|id| offer_id(id))
                .collect(),
            unit_price: UnitPrice::parse(self.price, "USD").expect("seed prices are valid"),
            parent_offers: self.parent_offers.iter().map(|id| offer_id(id)).collect(),
        }
    }
}

/// Well-known offer ids of the default catalog.
pub mod offers {
    /// Office 365 Business Premium.
    pub const BUSINESS_PREMIUM: &str = "031c9e47-4802-4248-838e-778fb1d2cc05";
    /// The trial offer of Office 365 Business Premium.
    pub const BUSINESS_PREMIUM_TRIAL: &str = "c0bd2e08-11ac-4836-bdc7-3712e744922f";
    /// Office 365 Extra File Storage (add-on of Business Premium, not assignable).
    pub const EXTRA_FILE_STORAGE: &str = "53fc25f7-6639-4f78-bb44-3c2dfec3ed40";
    /// Exchange Online Archiving for Exchange Online (add-on of Business Premium).
    pub const EXCHANGE_ONLINE_ARCHIVING: &str = "2828be95-46ba-4f91-b2fd-0bef192ecf60";
    /// Exchange Online Advanced Threat Protection (add-on of Business Premium).
    pub const EXCHANGE_ONLINE_ATP: &str = "a2706f86-868d-4048-989b-0c69e5c76b63";
    /// Phone System (add-on of Skype for Business Online (Plan 2), Office 365 E1 or E3).
    pub const PHONE_SYSTEM: &str = "4260988e-990d-479c-ae7b-f01ce8e1bb4d";
    /// Skype for Business Online (Plan 2).
    pub const SKYPE_FOR_BUSINESS_PLAN_2: &str = "14c61739-b45a-42c0-832c-d330972d3173";
    /// Office 365 Enterprise E1.
    pub const ENTERPRISE_E1: &str = "91fd106f-4b2c-4938-95ac-f54f74e9a239";
    /// Office 365 Enterprise E3.
    pub const ENTERPRISE_E3: &str = "796b6b5f-613c-4e24-a17c-eba730d49c02";
}

/// The offers named in the partner guides, with their real offer ids and SKU part numbers.
/// Prices are the legacy CSP list prices in USD per licence per month.
pub fn default_offers() -> Vec<Offer> {
    use offers::*;
    vec![
        Seed {
            id: BUSINESS_PREMIUM,
            name: "Office 365 Business Premium",
            provisioning_id: "O365_BUSINESS_PREMIUM",
            trial_offer_id: Some(BUSINESS_PREMIUM_TRIAL),
            assignable_to_users: true,
            possible_upgrades: &[],
            price: "12.50",
            parent_offers: &[],
        }
        .offer(),
        Seed {
            id: EXTRA_FILE_STORAGE,
            name: "Office 365 Extra File Storage",
            provisioning_id: "SHAREPOINTSTORAGE",
            trial_offer_id: None,
            assignable_to_users: false,
            possible_upgrades: &[],
            price: "0.20",
            parent_offers: &[BUSINESS_PREMIUM],
        }
        .offer(),
        Seed {
            id: EXCHANGE_ONLINE_ARCHIVING,
            name: "Exchange Online Archiving for Exchange Online",
            provisioning_id: "EXCHANGEARCHIVE_ADDON",
            trial_offer_id: None,
            assignable_to_users: true,
            possible_upgrades: &[],
            price: "3.00",
            parent_offers: &[BUSINESS_PREMIUM],
        }
        .offer(),
        Seed {
            id: EXCHANGE_ONLINE_ATP,
            name: "Exchange Online Advanced Threat Protection",
            provisioning_id: "ATP_ENTERPRISE",
            trial_offer_id: None,
            assignable_to_users: true,
            possible_upgrades: &[],
            price: "2.00",
            parent_offers: &[BUSINESS_PREMIUM],
        }
        .offer(),
        Seed {
            id: PHONE_SYSTEM,
            name: "Phone System",
            provisioning_id: "MCOEV",
            trial_offer_id: None,
            assignable_to_users: true,
            possible_upgrades: &[],
            price: "8.00",
            parent_offers: &[SKYPE_FOR_BUSINESS_PLAN_2, ENTERPRISE_E1, ENTERPRISE_E3],
        }
        .offer(),
        Seed {
            id: SKYPE_FOR_BUSINESS_PLAN_2,
            name: "Skype for Business Online (Plan 2)",
            provisioning_id: "MCOSTANDARD",
            trial_offer_id: None,
            assignable_to_users: true,
            possible_upgrades: &[],
            price: "5.50",
            parent_offers: &[],
        }
        .offer(),
        Seed {
            id: ENTERPRISE_E1,
            name: "Office 365 Enterprise E1",
            provisioning_id: "STANDARDPACK",
            trial_offer_id: None,
            assignable_to_users: true,
            possible_upgrades: &[ENTERPRISE_E3],
            price: "8.00",
            parent_offers: &[],
        }
        .offer(),
        Seed {
            id: ENTERPRISE_E3,
            name: "Office 365 Enterprise E3",
            provisioning_id: "ENTERPRISEPACK",
            trial_offer_id: None,
            assignable_to_users: true,
            possible_upgrades: &[],
            price: "20.00",
            parent_offers: &[],
        }
        .offer(),
    ]
}

/// The default catalog, built from [`default_offers`].
pub fn default_catalog() -> Catalog {
    Catalog::new(default_offers()).expect("the default catalog is consistent")
}

/// Commands to the catalog aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogCommand {
    /// Adds an offer or replaces the offer with the same id.
    PublishOffer {
        /// The offer as it should read from now on.
        offer: Offer,
        /// When.
        at: DateTime<Utc>,
    },
    /// Publishes the [`default_offers`] into an empty catalog; does nothing on a non-empty one.
    SeedDefaults {
        /// When.
        at: DateTime<Utc>,
    },
}

/// Events of the catalog aggregate: one stream, id `catalog`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum CatalogEvent {
    /// An offer was added to the catalog or changed (`POST /v1/offers`, PublishOffer; the default
    /// offers are published into an empty catalog when the service first starts). `offer` is the
    /// offer as it reads from now on.
    OfferPublished {
        /// The offer as it reads from now on.
        offer: Offer,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
}

impl CatalogEvent {
    /// The schema version of every catalog event: the `v<N>` of their CloudEvents types and what
    /// [`DomainEvent::event_version`] records. Raise it for a change that breaks readers of the
    /// JSON (an upcaster then reads the old one); an added field does not.
    pub const EVENT_VERSION: &'static str = "1";
}

impl DomainEvent for CatalogEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OfferPublished { .. } => "OfferPublished".into(),
        }
    }

    fn event_version(&self) -> String {
        Self::EVENT_VERSION.into()
    }
}

/// The catalog aggregate: the consistent catalog as of its last event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogAggregate {
    /// The current offers.
    pub catalog: Catalog,
}

impl Aggregate for CatalogAggregate {
    const TYPE: &'static str = "catalog";
    type Command = CatalogCommand;
    type Event = CatalogEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            CatalogCommand::PublishOffer { offer, at } => {
                if self.catalog.get(&offer.id) == Some(&offer) {
                    return Ok(());
                }
                self.catalog.with_offer(offer.clone())?;
                sink.write(CatalogEvent::OfferPublished { offer, at }, self)
                    .await;
            }
            CatalogCommand::SeedDefaults { at } => {
                if !self.catalog.is_empty() {
                    return Ok(());
                }
                // Parents first, so that every intermediate catalog is consistent too.
                let defaults = default_catalog();
                let mut ordered: Vec<Offer> = Vec::new();
                let mut pending: Vec<Offer> = defaults.offers().cloned().collect();
                while !pending.is_empty() {
                    let (ready, rest): (Vec<Offer>, Vec<Offer>) =
                        pending.into_iter().partition(|offer| {
                            offer
                                .parent_offers
                                .iter()
                                .chain(&offer.possible_upgrades)
                                .all(|dep| {
                                    ordered.iter().any(|done| done.id == *dep) || *dep == offer.id
                                })
                        });
                    assert!(!ready.is_empty(), "default catalog has no cycle");
                    ordered.extend(ready);
                    pending = rest;
                }
                for offer in ordered {
                    sink.write(CatalogEvent::OfferPublished { offer, at }, self)
                        .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CatalogEvent::OfferPublished { offer, .. } => {
                // Events are facts: apply without re-checking (the check ran in `handle`).
                self.catalog.offers.insert(offer.id, offer);
            }
        }
    }
}
