//! The customer tenant: its profile, its seat pool and its register of users.
//!
//! The tenant owns everything the seat invariant depends on, so that one optimistic-concurrency
//! check guards it: the seats of every subscription per product (as last reported by the
//! subscription), which user holds which product, and which principal names are taken. No seat
//! can be handed out twice, because every assignment is decided against this one stream.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::Offer;
use crate::error::{DomainError, Entity};
use crate::personal::{PrincipalFingerprint, SealedDetails};
use crate::rules::CommercialRules;
use crate::values::{
    DomainName, OfferId, OrganisationName, ProvisioningId, Quantity, Term, UserRole,
};

/// How a subscription's seats count in the pool (Microsoft Graph's subscribedSkus buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeatState {
    /// Active: assignable.
    Enabled,
    /// Expired but in its grace period: still assignable.
    Warning,
    /// Suspended: billed, not assignable.
    Suspended,
    /// Cancelled or disabled: gone from the pool.
    Inactive,
}

impl SeatState {
    /// Whether seats in this state can be held by users.
    pub fn assignable(self) -> bool {
        matches!(self, Self::Enabled | Self::Warning)
    }
}

/// One subscription's seats as the tenant's pool counts them: the subscription reports this
/// absolute state (not a difference) after each change to its seats, and `crate::policy` carries
/// it to the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SeatSnapshot {
    /// The tenant the subscription belongs to.
    pub tenant_id: Uuid,
    /// The subscription's current offer (it changes on upgrade).
    pub offer: Offer,
    /// Its current number of seats.
    pub quantity: u32,
    /// How those seats count.
    pub state: SeatState,
}

/// One subscription as the tenant's pool sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSubscription {
    /// The subscription's offer.
    pub offer: Offer,
    /// Its seats.
    pub quantity: u32,
    /// How they count.
    pub state: SeatState,
    /// Whether it was bought as a trial.
    pub trial: bool,
    /// The sequence of the last subscription event folded in, to drop stale reports.
    pub reported_sequence: u64,
}

/// Where a user of the tenant stands, as far as seats go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Holds its licences.
    Active,
    /// Deleted: its licences are released but remembered for a restore.
    Deleted,
    /// Purged: gone; its principal name is free again.
    Purged,
}

impl MemberStatus {
    fn label(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deleted => "deleted",
            Self::Purged => "purged",
        }
    }
}

/// A user in the tenant's register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The fingerprint of its principal name.
    pub fingerprint: PrincipalFingerprint,
    /// Its status.
    pub status: MemberStatus,
    /// Products it holds (when active) or held when deleted (given back on restore).
    pub licenses: LicenceSet,
    /// The sequence of the last user event folded in (deletion, restore, purge), so that a
    /// late or repeated delivery of an older one changes nothing.
    pub reported_sequence: u64,
}

/// The products one member holds: a sorted list without duplicates. A member holds one or a
/// few, and a `BTreeSet` spends a node of eleven slots (about 300 bytes) even on one: for a
/// 100 000-user tenant that was most of its memory. Serialised as the same JSON array.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<ProvisioningId>", into = "Vec<ProvisioningId>")]
pub struct LicenceSet(Vec<ProvisioningId>);

impl LicenceSet {
    /// Whether `product` is held.
    pub fn contains(&self, product: &ProvisioningId) -> bool {
        self.0.binary_search(product).is_ok()
    }

    /// Adds `product`; `false` when it was held already.
    pub fn insert(&mut self, product: ProvisioningId) -> bool {
        match self.0.binary_search(&product) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, product);
                true
            }
        }
    }

    /// Removes `product`; `false` when it was not held.
    pub fn remove(&mut self, product: &ProvisioningId) -> bool {
        match self.0.binary_search(product) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// The products, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, ProvisioningId> {
        self.0.iter()
    }

    /// Removes every product.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<ProvisioningId>> for LicenceSet {
    fn from(mut products: Vec<ProvisioningId>) -> Self {
        products.sort();
        products.dedup();
        products.shrink_to_fit();
        Self(products)
    }
}

impl From<LicenceSet> for Vec<ProvisioningId> {
    fn from(set: LicenceSet) -> Self {
        set.0
    }
}

impl<'a> IntoIterator for &'a LicenceSet {
    type Item = &'a ProvisioningId;
    type IntoIter = std::slice::Iter<'a, ProvisioningId>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<ProvisioningId> for LicenceSet {
    fn from_iter<I: IntoIterator<Item = ProvisioningId>>(products: I) -> Self {
        Self::from(products.into_iter().collect::<Vec<_>>())
    }
}

/// The seat counts of one product, as Microsoft Graph's subscribedSkus reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductSeats {
    /// The SKU part number.
    pub product: ProvisioningId,
    /// Seats of active subscriptions.
    pub enabled: u32,
    /// Seats of expired subscriptions in their grace period.
    pub warning: u32,
    /// Seats of suspended subscriptions.
    pub suspended: u32,
    /// Seats held by active users.
    pub assigned: u32,
    /// `enabled + warning − assigned`; negative when over-assigned.
    pub available: i64,
}

impl ProductSeats {
    /// Whether more seats are assigned than assignable.
    pub fn over_assigned(&self) -> bool {
        self.available < 0
    }
}

/// Proof that a tenant holds, right now, a qualifying parent chain for an offer: only
/// [`Tenant::prove_parent_chain`] makes one, so a command carrying it cannot skip the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentChainProof {
    offer_id: OfferId,
}

impl ParentChainProof {
    /// The offer whose chain was proven.
    pub fn offer_id(&self) -> OfferId {
        self.offer_id
    }
}

/// Commands to a tenant.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantCommand {
    /// Creates the tenant.
    CreateTenant {
        /// The tenant's id.
        tenant_id: Uuid,
        /// Its initial domain, e.g. `contoso.onmicrosoft.com`.
        domain: DomainName,
        /// Its name.
        name: OrganisationName,
        /// The indirect reseller managing it, or `None` when the partner manages it directly.
        reseller_id: Option<Uuid>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Buys a subscription; the subscription aggregate is opened from the resulting event.
    PurchaseSubscription {
        /// The new subscription's id.
        subscription_id: Uuid,
        /// The offer, as the catalog lists it now (its price is recorded).
        offer: Offer,
        /// Seats to buy.
        quantity: Quantity,
        /// Monthly or annual.
        term: Term,
        /// The billing profile that pays.
        billing_profile_id: Uuid,
        /// Whether this is a trial.
        trial: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// Folds a subscription's reported seats into the pool (from the subscription's events).
    SyncSubscription {
        /// The subscription.
        subscription_id: Uuid,
        /// The sequence number of the subscription event that reported it.
        source_sequence: u64,
        /// What it reported.
        seats: SeatSnapshot,
        /// When the subscription changed.
        at: DateTime<Utc>,
    },
    /// Registers a new user, reserving its principal name.
    RegisterUser {
        /// The user's id.
        user_id: Uuid,
        /// The domain part of the principal name (not personal data: it is the tenant's).
        principal_domain: DomainName,
        /// The keyed fingerprint of the principal name.
        fingerprint: PrincipalFingerprint,
        /// The sealed personal details.
        details: SealedDetails,
        /// The user's role.
        role: UserRole,
        /// When.
        at: DateTime<Utc>,
    },
    /// Changes a user's licences: all given changes or none.
    AssignLicenses {
        /// The user.
        user_id: Uuid,
        /// Offers whose licences to give.
        add: Vec<OfferId>,
        /// Offers whose licences to take away.
        remove: Vec<OfferId>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Releases a deleted user's licences to the pool (from the user's deletion).
    ReleaseUserLicenses {
        /// The user.
        user_id: Uuid,
        /// The sequence number of the user's deletion event.
        source_sequence: u64,
        /// When the user was deleted.
        at: DateTime<Utc>,
    },
    /// Gives a restored user its licences back, recording any shortfall (from the restore).
    ReinstateUserLicenses {
        /// The user.
        user_id: Uuid,
        /// The sequence number of the user's restore event.
        source_sequence: u64,
        /// When the user was restored.
        at: DateTime<Utc>,
    },
    /// Drops a purged user from the register, freeing its principal name (from the purge).
    ForgetUser {
        /// The user.
        user_id: Uuid,
        /// The sequence number of the user's purge event.
        source_sequence: u64,
        /// When the user was purged.
        at: DateTime<Utc>,
    },
}

/// Events of a tenant: the `tenant` aggregate, one stream per customer tenant, which holds its
/// seat pool and its register of users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum TenantEvent {
    /// A customer tenant was created (`POST /v1/tenants`, CreateTenant): the first event of every
    /// tenant stream.
    TenantCreated {
        /// The tenant's id, the subject of its stream.
        tenant_id: Uuid,
        /// Its initial domain, e.g. `contoso.onmicrosoft.com`; user principal names end in it.
        domain: DomainName,
        /// The tenant's (organisation's) name.
        name: OrganisationName,
        /// The indirect reseller that manages the tenant, or `null` when the partner manages it
        /// directly.
        reseller_id: Option<Uuid>,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// A subscription was bought for the tenant (`POST /v1/tenants/{tenant_id}/subscriptions`,
    /// PurchaseSubscription), with the offer and its price as the catalog listed them at the
    /// purchase. The subscription's own stream then opens with `SubscriptionOpened`.
    SubscriptionPurchased {
        /// The subscription: the id of its `subscription` stream.
        subscription_id: Uuid,
        /// The offer, price included.
        offer: Offer,
        /// Seats bought.
        quantity: u32,
        /// How long a term runs before it renews.
        term: Term,
        /// The billing profile whose invoice the subscription goes on.
        billing_profile_id: Uuid,
        /// Whether it is a trial.
        trial: bool,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// The tenant's seat pool took in a change of one subscription's seats (quantity, how they
    /// count, or the product after an upgrade). It follows every subscription event that carries
    /// `seats` (licences added or removed, suspension, reactivation, cancellation, trial
    /// conversion, upgrade, renewal, expiry, disabling), unless the report changes nothing or is
    /// older than the last one taken in.
    SubscriptionSeatsChanged {
        /// The subscription: the id of its `subscription` stream.
        subscription_id: Uuid,
        /// The `streamsequence` of the subscription event that reported it.
        source_sequence: u64,
        /// Its product before the change (differs from the offer's after an upgrade).
        previous_product: ProvisioningId,
        /// The subscription's seats after the change, as it reported them.
        seats: SeatSnapshot,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// After an upgrade took its seats from the old product, the users who held the old product
    /// beyond the seats it still has were moved to the new one. Committed together with the
    /// `SubscriptionSeatsChanged` of the upgrade, right after it.
    LicensesMigrated {
        /// The upgraded subscription.
        subscription_id: Uuid,
        /// The old product.
        from_product: ProvisioningId,
        /// The new product.
        to_product: ProvisioningId,
        /// The users moved.
        users: Vec<Uuid>,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// A subscription going out of service (cancelled or disabled) left an add-on in service
    /// without a qualifying parent chain. Committed together with the `SubscriptionSeatsChanged`
    /// that took the parent out, right after it; the add-on is then suspended
    /// (`SubscriptionSuspended` with reason `parent_ended`).
    AddOnOrphaned {
        /// The add-on subscription.
        subscription_id: Uuid,
        /// Its offer.
        offer_id: OfferId,
        /// The parent subscription whose end caused it.
        parent_subscription_id: Uuid,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// A user was created in the tenant (`POST /v1/tenants/{tenant_id}/users`, CreateUser) and its
    /// principal name reserved; the user's own stream then starts with `UserCreated`. Personal
    /// details are sealed.
    UserRegistered {
        /// The user: the id of its `user` stream.
        user_id: Uuid,
        /// The principal name's fingerprint.
        fingerprint: PrincipalFingerprint,
        /// Sealed personal details (shredded with the user's key).
        details: SealedDetails,
        /// The user's administrative role in the tenant.
        role: UserRole,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// A user's licences changed (`POST /v1/users/{user_id}/licenses`, AssignLicenses): every
    /// product in `added` was given and every one in `removed` taken away, all at once. Not emitted
    /// when the request changes nothing.
    LicensesAssigned {
        /// The user: the id of its `user` stream.
        user_id: Uuid,
        /// Products given.
        added: Vec<ProvisioningId>,
        /// Products taken away.
        removed: Vec<ProvisioningId>,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// A deleted user's licences went back to the pool: follows `UserDeleted` (DeleteUser).
    /// `released` may be empty.
    UserLicensesReleased {
        /// The user: the id of its `user` stream.
        user_id: Uuid,
        /// The `streamsequence` of the user's `UserDeleted` that caused it.
        source_sequence: u64,
        /// Products released.
        released: Vec<ProvisioningId>,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// A restored user got its licences back: follows `UserRestored` (RestoreUser). `over_assigned`
    /// lists the products that had no free seat any more: the pool is over-assigned for them from
    /// now on (shown, never hidden).
    UserLicensesReinstated {
        /// The user: the id of its `user` stream.
        user_id: Uuid,
        /// The `streamsequence` of the user's `UserRestored` that caused it.
        source_sequence: u64,
        /// Products given back.
        reinstated: Vec<ProvisioningId>,
        /// Products given back without a free seat.
        over_assigned: Vec<ProvisioningId>,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// A purged user left the tenant's register and its principal name is free again: follows
    /// `UserPurged`.
    UserForgotten {
        /// The user: the id of its `user` stream.
        user_id: Uuid,
        /// The `streamsequence` of the user's `UserPurged` that caused it.
        source_sequence: u64,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
}

impl TenantEvent {
    /// When it happened (business time, from the service's clock).
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::TenantCreated { at, .. }
            | Self::SubscriptionPurchased { at, .. }
            | Self::SubscriptionSeatsChanged { at, .. }
            | Self::LicensesMigrated { at, .. }
            | Self::AddOnOrphaned { at, .. }
            | Self::UserRegistered { at, .. }
            | Self::LicensesAssigned { at, .. }
            | Self::UserLicensesReleased { at, .. }
            | Self::UserLicensesReinstated { at, .. }
            | Self::UserForgotten { at, .. } => *at,
        }
    }
}

impl TenantEvent {
    /// The schema version of every tenant event: the `v<N>` of their CloudEvents types and what
    /// [`DomainEvent::event_version`] records. Raise it for a change that breaks readers of the
    /// JSON (an upcaster then reads the old one); an added field does not.
    pub const EVENT_VERSION: &'static str = "1";
}

impl DomainEvent for TenantEvent {
    fn event_type(&self) -> String {
        match self {
            Self::TenantCreated { .. } => "TenantCreated",
            Self::SubscriptionPurchased { .. } => "SubscriptionPurchased",
            Self::SubscriptionSeatsChanged { .. } => "SubscriptionSeatsChanged",
            Self::LicensesMigrated { .. } => "LicensesMigrated",
            Self::AddOnOrphaned { .. } => "AddOnOrphaned",
            Self::UserRegistered { .. } => "UserRegistered",
            Self::LicensesAssigned { .. } => "LicensesAssigned",
            Self::UserLicensesReleased { .. } => "UserLicensesReleased",
            Self::UserLicensesReinstated { .. } => "UserLicensesReinstated",
            Self::UserForgotten { .. } => "UserForgotten",
        }
        .into()
    }

    fn event_version(&self) -> String {
        Self::EVENT_VERSION.into()
    }
}

/// The tenant's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantProfile {
    /// The tenant's id.
    pub tenant_id: Uuid,
    /// Its domain.
    pub domain: DomainName,
    /// Its name.
    pub name: OrganisationName,
    /// Its reseller, if indirect.
    pub reseller_id: Option<Uuid>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// The tenant aggregate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// The profile; `None` until created.
    pub profile: Option<TenantProfile>,
    /// Subscriptions by id.
    pub subscriptions: BTreeMap<Uuid, HeldSubscription>,
    /// The trial subscription of each offer that had one.
    pub trials: BTreeMap<OfferId, Uuid>,
    /// Users by id. A persistent map: the executor copies the state whenever a reader still
    /// holds the previous one, and a copy must not cost the whole register.
    #[serde(deserialize_with = "entry_by_entry")]
    pub members: imbl::OrdMap<Uuid, Member>,
    /// Which live (not purged) user holds each principal name (persistent, as `members`).
    #[serde(deserialize_with = "entry_by_entry")]
    pub principals: imbl::OrdMap<PrincipalFingerprint, Uuid>,
    /// Seats held by active users, per product (kept so a check costs nothing per user).
    pub assigned: BTreeMap<ProvisioningId, u32>,
}

/// Reads a persistent map from a snapshot one entry at a time. imbl's own deserialiser
/// gathers every entry in a `Vec` first (doubling as it grows) and inserts them afterwards: the
/// same map, with tens of MiB more at the peak for a 100 000-user tenant.
fn entry_by_entry<'de, D, K, V>(deserializer: D) -> Result<imbl::OrdMap<K, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: Deserialize<'de> + Ord + Clone,
    V: Deserialize<'de> + Clone,
{
    struct Entries<K, V>(std::marker::PhantomData<(K, V)>);

    impl<'de, K, V> serde::de::Visitor<'de> for Entries<K, V>
    where
        K: Deserialize<'de> + Ord + Clone,
        V: Deserialize<'de> + Clone,
    {
        type Value = imbl::OrdMap<K, V>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a map")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut entries: A,
        ) -> Result<Self::Value, A::Error> {
            let mut map = imbl::OrdMap::new();
            while let Some((key, value)) = entries.next_entry()? {
                map.insert(key, value);
            }
            Ok(map)
        }
    }

    deserializer.deserialize_map(Entries(std::marker::PhantomData))
}

impl Tenant {
    /// The seat counts of one product.
    pub fn seats(&self, product: &ProvisioningId) -> ProductSeats {
        let (mut enabled, mut warning, mut suspended) = (0u32, 0u32, 0u32);
        for held in self
            .subscriptions
            .values()
            .filter(|held| &held.offer.provisioning_id == product)
        {
            // Each subscription is bounded (subscription::MAX_SEATS); a tenant with thousands
            // of maximal ones saturates rather than wraps.
            match held.state {
                SeatState::Enabled => enabled = enabled.saturating_add(held.quantity),
                SeatState::Warning => warning = warning.saturating_add(held.quantity),
                SeatState::Suspended => suspended = suspended.saturating_add(held.quantity),
                SeatState::Inactive => {}
            }
        }
        let assigned = self.assigned.get(product).copied().unwrap_or(0);
        ProductSeats {
            product: product.clone(),
            enabled,
            warning,
            suspended,
            assigned,
            available: i64::from(enabled) + i64::from(warning) - i64::from(assigned),
        }
    }

    /// The seat counts of every product the tenant has held or assigned.
    pub fn all_seats(&self) -> Vec<ProductSeats> {
        let products: BTreeSet<&ProvisioningId> = self
            .subscriptions
            .values()
            .map(|held| &held.offer.provisioning_id)
            .chain(self.assigned.keys())
            .collect();
        products
            .into_iter()
            .map(|product| self.seats(product))
            .collect()
    }

    /// Proves that the tenant holds a qualifying parent chain for `offer` (trivially for a
    /// top-level offer), or names the parents it lacks.
    pub fn prove_parent_chain(&self, offer: &Offer) -> Result<ParentChainProof, DomainError> {
        if self.chain_satisfied(offer, &mut Vec::new()) {
            Ok(ParentChainProof { offer_id: offer.id })
        } else {
            Err(DomainError::ParentOfferRequired {
                offer_id: offer.id,
                offer_name: offer.name.to_string(),
                possible_parents: offer
                    .parent_offers
                    .iter()
                    .map(|parent| self.offer_label(parent))
                    .collect(),
            })
        }
    }

    fn offer_label(&self, id: &OfferId) -> String {
        self.subscriptions
            .values()
            .find(|held| held.offer.id == *id)
            .map(|held| held.offer.name.to_string())
            .unwrap_or_else(|| id.to_string())
    }

    /// Each level satisfied by any one in-service subscription to one of its possible parents.
    /// `visiting` guards against loops between offers recorded at different times.
    fn chain_satisfied(&self, offer: &Offer, visiting: &mut Vec<OfferId>) -> bool {
        if !offer.is_add_on() {
            return true;
        }
        if visiting.contains(&offer.id) {
            return false;
        }
        visiting.push(offer.id);
        let satisfied = offer.parent_offers.iter().any(|parent| {
            self.subscriptions.values().any(|held| {
                held.offer.id == *parent
                    && held.state.assignable()
                    && self.chain_satisfied(&held.offer, visiting)
            })
        });
        visiting.pop();
        satisfied
    }

    fn profile(&self) -> Result<&TenantProfile, DomainError> {
        self.profile
            .as_ref()
            .ok_or_else(|| DomainError::not_found(Entity::Tenant, ""))
    }

    fn member(&self, user_id: Uuid) -> Result<&Member, DomainError> {
        self.members
            .get(&user_id)
            .ok_or_else(|| DomainError::not_found(Entity::User, user_id))
    }

    /// The product a licence request for `offer_id` counts against: the paid offer's or its
    /// trial's, among the tenant's own subscriptions.
    fn offer_for_licence(&self, offer_id: OfferId) -> Result<&Offer, DomainError> {
        self.subscriptions
            .values()
            .map(|held| &held.offer)
            .find(|offer| offer.id == offer_id || offer.trial_offer_id == Some(offer_id))
            .ok_or(DomainError::OfferNotSubscribed { offer_id })
    }

    fn purchase_events(
        &self,
        command: PurchaseArgs,
        rules: &CommercialRules,
    ) -> Result<TenantEvent, DomainError> {
        let PurchaseArgs {
            subscription_id,
            offer,
            quantity,
            term,
            billing_profile_id,
            trial,
            at,
        } = command;
        if self.subscriptions.contains_key(&subscription_id) {
            return Err(DomainError::already_exists(
                Entity::Subscription,
                subscription_id,
            ));
        }
        if trial {
            if offer.trial_offer_id.is_none() || offer.is_add_on() {
                return Err(DomainError::TrialNotAvailable {
                    offer_name: offer.name.to_string(),
                });
            }
            if let Some(earlier) = self.trials.get(&offer.id) {
                return Err(DomainError::TrialAlreadyUsed {
                    offer_name: offer.name.to_string(),
                    subscription_id: *earlier,
                });
            }
            if quantity.get() != rules.trial_seats {
                return Err(DomainError::TrialQuantityFixed {
                    seats: rules.trial_seats,
                });
            }
        }
        self.prove_parent_chain(&offer)?;
        Ok(TenantEvent::SubscriptionPurchased {
            subscription_id,
            offer,
            quantity: quantity.get(),
            term,
            billing_profile_id,
            trial,
            at,
        })
    }

    fn sync_events(
        &self,
        subscription_id: Uuid,
        source_sequence: u64,
        seats: SeatSnapshot,
        at: DateTime<Utc>,
    ) -> Result<Vec<TenantEvent>, DomainError> {
        let held = self
            .subscriptions
            .get(&subscription_id)
            .ok_or_else(|| DomainError::not_found(Entity::Subscription, subscription_id))?;
        if source_sequence <= held.reported_sequence
            || (held.offer == seats.offer
                && held.quantity == seats.quantity
                && held.state == seats.state)
        {
            return Ok(Vec::new());
        }
        let previous_product = held.offer.provisioning_id.clone();
        let new_product = seats.offer.provisioning_id.clone();
        let ended = held.state != SeatState::Inactive && seats.state == SeatState::Inactive;
        let mut events = vec![TenantEvent::SubscriptionSeatsChanged {
            subscription_id,
            source_sequence,
            previous_product: previous_product.clone(),
            seats,
            at,
        }];
        if previous_product == new_product && !ended {
            return Ok(events);
        }
        // Judge the consequences on the pool as it will be after the change.
        let mut after = self.clone();
        after.apply(events[0].clone());
        if previous_product != new_product {
            let excess = (-after.seats(&previous_product).available).max(0) as usize;
            let users: Vec<Uuid> = after
                .members
                .iter()
                .filter(|(_, member)| {
                    member.status == MemberStatus::Active
                        && member.licenses.contains(&previous_product)
                })
                .map(|(id, _)| *id)
                .take(excess)
                .collect();
            if !users.is_empty() {
                events.push(TenantEvent::LicensesMigrated {
                    subscription_id,
                    from_product: previous_product,
                    to_product: new_product,
                    users,
                    at,
                });
            }
        }
        if ended {
            for (addon_id, addon) in &after.subscriptions {
                if addon.offer.is_add_on()
                    && addon.state.assignable()
                    && !after.chain_satisfied(&addon.offer, &mut Vec::new())
                {
                    events.push(TenantEvent::AddOnOrphaned {
                        subscription_id: *addon_id,
                        offer_id: addon.offer.id,
                        parent_subscription_id: subscription_id,
                        at,
                    });
                }
            }
        }
        Ok(events)
    }

    fn assignment_event(
        &self,
        user_id: Uuid,
        add: Vec<OfferId>,
        remove: Vec<OfferId>,
        at: DateTime<Utc>,
    ) -> Result<Option<TenantEvent>, DomainError> {
        let member = self.member(user_id)?;
        if member.status != MemberStatus::Active {
            return Err(DomainError::UserNotActive {
                user_id,
                status: member.status.label(),
            });
        }
        if let Some(offer_id) = add.iter().find(|offer| remove.contains(offer)) {
            return Err(DomainError::ConflictingLicenseChange {
                offer_id: *offer_id,
            });
        }
        let mut to_add = BTreeSet::new();
        for offer_id in &add {
            let offer = self.offer_for_licence(*offer_id)?;
            if !offer.assignable_to_users {
                return Err(DomainError::OfferNotAssignable {
                    offer_id: *offer_id,
                    offer_name: offer.name.to_string(),
                });
            }
            to_add.insert(offer.provisioning_id.clone());
        }
        let mut to_remove = BTreeSet::new();
        for offer_id in &remove {
            let product = self.offer_for_licence(*offer_id)?.provisioning_id.clone();
            if to_add.contains(&product) {
                return Err(DomainError::ConflictingLicenseChange {
                    offer_id: *offer_id,
                });
            }
            to_remove.insert(product);
        }
        let added: Vec<ProvisioningId> = to_add
            .into_iter()
            .filter(|product| !member.licenses.contains(product))
            .collect();
        let removed: Vec<ProvisioningId> = to_remove
            .into_iter()
            .filter(|product| member.licenses.contains(product))
            .collect();
        for product in &added {
            let seats = self.seats(product);
            if seats.available < 1 {
                return Err(DomainError::InsufficientLicenses {
                    product: product.clone(),
                    requested: 1,
                    available: seats.available,
                });
            }
        }
        if added.is_empty() && removed.is_empty() {
            return Ok(None);
        }
        Ok(Some(TenantEvent::LicensesAssigned {
            user_id,
            added,
            removed,
            at,
        }))
    }

    fn register_event(&self, args: RegisterArgs) -> Result<Option<TenantEvent>, DomainError> {
        let profile = self.profile()?;
        let RegisterArgs {
            user_id,
            principal_domain,
            fingerprint,
            details,
            role,
            at,
        } = args;
        if let Some(existing) = self.members.get(&user_id) {
            // A retried registration of the same user is not a second user.
            return if existing.fingerprint == fingerprint {
                Ok(None)
            } else {
                Err(DomainError::already_exists(Entity::User, user_id))
            };
        }
        if principal_domain != profile.domain {
            return Err(DomainError::PrincipalDomainMismatch {
                principal_domain: principal_domain.to_string(),
                tenant_domain: profile.domain.to_string(),
            });
        }
        if self.principals.contains_key(&fingerprint) {
            return Err(DomainError::DuplicateUserPrincipalName);
        }
        Ok(Some(TenantEvent::UserRegistered {
            user_id,
            fingerprint,
            details,
            role,
            at,
        }))
    }

    fn reinstate_event(
        &self,
        user_id: Uuid,
        source_sequence: u64,
        at: DateTime<Utc>,
    ) -> Result<Option<TenantEvent>, DomainError> {
        let member = self.member(user_id)?;
        if source_sequence <= member.reported_sequence {
            return Ok(None);
        }
        match member.status {
            MemberStatus::Active => Ok(None),
            MemberStatus::Purged => Err(DomainError::UserPurged { user_id }),
            MemberStatus::Deleted => {
                let reinstated: Vec<ProvisioningId> = member.licenses.iter().cloned().collect();
                let over_assigned = reinstated
                    .iter()
                    .filter(|product| self.seats(product).available < 1)
                    .cloned()
                    .collect();
                Ok(Some(TenantEvent::UserLicensesReinstated {
                    user_id,
                    source_sequence,
                    reinstated,
                    over_assigned,
                    at,
                }))
            }
        }
    }

    fn add_assigned(&mut self, product: &ProvisioningId) {
        *self.assigned.entry(product.clone()).or_insert(0) += 1;
    }

    fn remove_assigned(&mut self, product: &ProvisioningId) {
        if let Some(count) = self.assigned.get_mut(product) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.assigned.remove(product);
            }
        }
    }
}

struct PurchaseArgs {
    subscription_id: Uuid,
    offer: Offer,
    quantity: Quantity,
    term: Term,
    billing_profile_id: Uuid,
    trial: bool,
    at: DateTime<Utc>,
}

struct RegisterArgs {
    user_id: Uuid,
    principal_domain: DomainName,
    fingerprint: PrincipalFingerprint,
    details: SealedDetails,
    role: UserRole,
    at: DateTime<Utc>,
}

impl Aggregate for Tenant {
    const TYPE: &'static str = "tenant";
    type Command = TenantCommand;
    type Event = TenantEvent;
    type Error = DomainError;
    type Services = CommercialRules;

    async fn handle(
        &mut self,
        command: Self::Command,
        rules: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events: Vec<TenantEvent> = match command {
            TenantCommand::CreateTenant {
                tenant_id,
                domain,
                name,
                reseller_id,
                at,
            } => {
                if let Some(profile) = &self.profile {
                    return Err(DomainError::already_exists(
                        Entity::Tenant,
                        profile.tenant_id,
                    ));
                }
                vec![TenantEvent::TenantCreated {
                    tenant_id,
                    domain,
                    name,
                    reseller_id,
                    at,
                }]
            }
            TenantCommand::PurchaseSubscription {
                subscription_id,
                offer,
                quantity,
                term,
                billing_profile_id,
                trial,
                at,
            } => {
                self.profile()?;
                vec![self.purchase_events(
                    PurchaseArgs {
                        subscription_id,
                        offer,
                        quantity,
                        term,
                        billing_profile_id,
                        trial,
                        at,
                    },
                    rules,
                )?]
            }
            TenantCommand::SyncSubscription {
                subscription_id,
                source_sequence,
                seats,
                at,
            } => {
                self.profile()?;
                self.sync_events(subscription_id, source_sequence, seats, at)?
            }
            TenantCommand::RegisterUser {
                user_id,
                principal_domain,
                fingerprint,
                details,
                role,
                at,
            } => self
                .register_event(RegisterArgs {
                    user_id,
                    principal_domain,
                    fingerprint,
                    details,
                    role,
                    at,
                })?
                .into_iter()
                .collect(),
            TenantCommand::AssignLicenses {
                user_id,
                add,
                remove,
                at,
            } => {
                self.profile()?;
                self.assignment_event(user_id, add, remove, at)?
                    .into_iter()
                    .collect()
            }
            TenantCommand::ReleaseUserLicenses {
                user_id,
                source_sequence,
                at,
            } => {
                self.profile()?;
                let member = self.member(user_id)?;
                if member.status == MemberStatus::Active
                    && source_sequence > member.reported_sequence
                {
                    vec![TenantEvent::UserLicensesReleased {
                        user_id,
                        source_sequence,
                        released: member.licenses.iter().cloned().collect(),
                        at,
                    }]
                } else {
                    Vec::new()
                }
            }
            TenantCommand::ReinstateUserLicenses {
                user_id,
                source_sequence,
                at,
            } => {
                self.profile()?;
                self.reinstate_event(user_id, source_sequence, at)?
                    .into_iter()
                    .collect()
            }
            TenantCommand::ForgetUser {
                user_id,
                source_sequence,
                at,
            } => {
                self.profile()?;
                if self.member(user_id)?.status == MemberStatus::Purged {
                    Vec::new()
                } else {
                    vec![TenantEvent::UserForgotten {
                        user_id,
                        source_sequence,
                        at,
                    }]
                }
            }
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TenantEvent::TenantCreated {
                tenant_id,
                domain,
                name,
                reseller_id,
                at,
            } => {
                self.profile = Some(TenantProfile {
                    tenant_id,
                    domain,
                    name,
                    reseller_id,
                    created_at: at,
                });
            }
            TenantEvent::SubscriptionPurchased {
                subscription_id,
                offer,
                quantity,
                trial,
                ..
            } => {
                if trial {
                    self.trials.insert(offer.id, subscription_id);
                }
                self.subscriptions.insert(
                    subscription_id,
                    HeldSubscription {
                        offer,
                        quantity,
                        state: SeatState::Enabled,
                        trial,
                        reported_sequence: 0,
                    },
                );
            }
            TenantEvent::SubscriptionSeatsChanged {
                subscription_id,
                source_sequence,
                seats,
                ..
            } => {
                if let Some(held) = self.subscriptions.get_mut(&subscription_id) {
                    held.offer = seats.offer;
                    held.quantity = seats.quantity;
                    held.state = seats.state;
                    held.reported_sequence = source_sequence;
                }
            }
            TenantEvent::LicensesMigrated {
                from_product,
                to_product,
                users,
                ..
            } => {
                for user_id in users {
                    let Some(member) = self.members.get_mut(&user_id) else {
                        continue;
                    };
                    let removed = member.licenses.remove(&from_product);
                    let added = member.licenses.insert(to_product.clone());
                    if removed {
                        self.remove_assigned(&from_product);
                    }
                    if added {
                        self.add_assigned(&to_product);
                    }
                }
            }
            TenantEvent::AddOnOrphaned { .. } => {}
            TenantEvent::UserRegistered {
                user_id,
                fingerprint,
                ..
            } => {
                self.principals.insert(fingerprint, user_id);
                self.members.insert(
                    user_id,
                    Member {
                        fingerprint,
                        status: MemberStatus::Active,
                        licenses: LicenceSet::default(),
                        reported_sequence: 0,
                    },
                );
            }
            TenantEvent::LicensesAssigned {
                user_id,
                added,
                removed,
                ..
            } => {
                if let Some(member) = self.members.get_mut(&user_id) {
                    for product in &added {
                        member.licenses.insert(product.clone());
                    }
                    for product in &removed {
                        member.licenses.remove(product);
                    }
                }
                added.iter().for_each(|product| self.add_assigned(product));
                removed
                    .iter()
                    .for_each(|product| self.remove_assigned(product));
            }
            TenantEvent::UserLicensesReleased {
                user_id,
                source_sequence,
                released,
                ..
            } => {
                if let Some(member) = self.members.get_mut(&user_id) {
                    member.status = MemberStatus::Deleted;
                    member.reported_sequence = source_sequence;
                }
                released
                    .iter()
                    .for_each(|product| self.remove_assigned(product));
            }
            TenantEvent::UserLicensesReinstated {
                user_id,
                source_sequence,
                reinstated,
                ..
            } => {
                if let Some(member) = self.members.get_mut(&user_id) {
                    member.status = MemberStatus::Active;
                    member.reported_sequence = source_sequence;
                }
                reinstated
                    .iter()
                    .for_each(|product| self.add_assigned(product));
            }
            TenantEvent::UserForgotten {
                user_id,
                source_sequence,
                ..
            } => {
                if let Some(member) = self.members.get_mut(&user_id) {
                    if member.status == MemberStatus::Active {
                        let held: Vec<ProvisioningId> = member.licenses.iter().cloned().collect();
                        held.iter()
                            .for_each(|product| self.remove_assigned(product));
                    }
                }
                if let Some(member) = self.members.get_mut(&user_id) {
                    member.status = MemberStatus::Purged;
                    member.reported_sequence = source_sequence;
                    member.licenses.clear();
                    if self.principals.get(&member.fingerprint) == Some(&user_id) {
                        self.principals.remove(&member.fingerprint);
                    }
                }
            }
        }
    }
}
