//! Licence availability per tenant and product (Microsoft Graph's subscribedSkus shape):
//! enabled, warning, suspended, assigned, available, the SKU and the subscriptions behind each
//! row. Folded from tenant events alone: the tenant owns the seat pool.
//!
//! Rows kept: `seats/{subscription}` (each subscription's seats, scoped by tenant),
//! `holder/{tenant}/{user}` (the products a user holds) and `assigned/{tenant}/{sku}` (how many
//! users hold a product), so a query reads a tenant's rows without touching its users.

use std::collections::{BTreeMap, BTreeSet};

use aggregates::tenant::{SeatState, TenantEvent};
use aggregates::values::{OfferId, ProvisioningId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{text, DomainEvent, LoggedEvent, Projection, ProjectionError, RowSet};

/// The projection's name.
pub const NAME: &str = "licenses";
/// Kind of a subscription's seats.
pub const SEATS: &str = "seats";
/// Kind of a product's holder count.
pub const ASSIGNED: &str = "assigned";
const HOLDER: &str = "holder";

/// One row of the licence view: one product of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LicenseRow {
    /// The SKU part number (provisioning id) the row counts.
    pub sku: ProvisioningId,
    /// The product name as Partner Center shows it.
    pub product_name: String,
    /// The offer id of that offer.
    pub offer_id: OfferId,
    /// Seats of active subscriptions.
    pub enabled: u32,
    /// Seats of expired subscriptions in their grace period.
    pub warning: u32,
    /// Seats of suspended subscriptions.
    pub suspended: u32,
    /// Seats held by active users.
    pub assigned: u32,
    /// `enabled + warning − assigned`, negative when over-assigned (never clamped).
    pub available: i64,
    /// Whether more seats are assigned than assignable.
    pub over_assigned: bool,
    /// The subscriptions behind the row.
    pub subscription_ids: BTreeSet<Uuid>,
}

/// One subscription's seats as the tenant's pool counts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatsDoc {
    /// The subscription.
    pub subscription_id: Uuid,
    /// Its product.
    pub sku: ProvisioningId,
    /// Its product's name.
    pub product_name: String,
    /// Its offer.
    pub offer_id: OfferId,
    /// Its seats.
    pub quantity: u32,
    /// How they count.
    pub state: SeatState,
}

/// How many users of a tenant hold a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedDoc {
    /// The product.
    pub sku: ProvisioningId,
    /// Its holders.
    pub holders: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct HolderDoc {
    skus: BTreeSet<ProvisioningId>,
}

fn seats_key(subscription_id: Uuid) -> String {
    text::key(SEATS, subscription_id, &[])
}

fn holder_key(tenant_id: Uuid, user_id: Uuid) -> String {
    text::key(HOLDER, tenant_id, &[&user_id])
}

fn assigned_key(tenant_id: Uuid, sku: &ProvisioningId) -> String {
    text::key(ASSIGNED, tenant_id, &[&sku.as_str()])
}

/// The licence-availability projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Licenses;

impl Projection for Licenses {
    fn name(&self) -> &'static str {
        NAME
    }

    fn keys(&self, event: &LoggedEvent) -> Vec<String> {
        let DomainEvent::Tenant(tenant_event) = &event.event else {
            return Vec::new();
        };
        let Ok(tenant_id) = event.aggregate_uuid() else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        let mut user_and = |user_id: Uuid, skus: &mut dyn Iterator<Item = &ProvisioningId>| {
            keys.push(holder_key(tenant_id, user_id));
            keys.extend(skus.map(|sku| assigned_key(tenant_id, sku)));
        };
        match tenant_event {
            TenantEvent::LicensesAssigned {
                user_id,
                added,
                removed,
                ..
            } => user_and(*user_id, &mut added.iter().chain(removed)),
            TenantEvent::UserLicensesReleased {
                user_id, released, ..
            } => user_and(*user_id, &mut released.iter()),
            TenantEvent::UserLicensesReinstated {
                user_id,
                reinstated,
                ..
            } => user_and(*user_id, &mut reinstated.iter()),
            TenantEvent::LicensesMigrated {
                from_product,
                to_product,
                users,
                ..
            } => {
                for user_id in users {
                    user_and(*user_id, &mut [from_product, to_product].into_iter());
                }
            }
            TenantEvent::UserForgotten { user_id, .. } => {
                keys.push(holder_key(tenant_id, *user_id));
            }
            _ => {}
        }
        keys
    }

    fn apply(&self, event: &LoggedEvent, rows: &mut RowSet) -> Result<(), ProjectionError> {
        let DomainEvent::Tenant(tenant_event) = &event.event else {
            return Ok(());
        };
        let tenant_id = event.aggregate_uuid()?;
        let mut pool = Pool { tenant_id, rows };
        match tenant_event {
            TenantEvent::SubscriptionPurchased {
                subscription_id,
                offer,
                quantity,
                ..
            } => pool.seats(SeatsDoc {
                subscription_id: *subscription_id,
                sku: offer.provisioning_id.clone(),
                product_name: offer.name.to_string(),
                offer_id: offer.id,
                quantity: *quantity,
                state: SeatState::Enabled,
            }),
            TenantEvent::SubscriptionSeatsChanged {
                subscription_id,
                seats,
                ..
            } => pool.seats(SeatsDoc {
                subscription_id: *subscription_id,
                sku: seats.offer.provisioning_id.clone(),
                product_name: seats.offer.name.to_string(),
                offer_id: seats.offer.id,
                quantity: seats.quantity,
                state: seats.state,
            }),
            TenantEvent::LicensesAssigned {
                user_id,
                added,
                removed,
                ..
            } => {
                pool.hold(*user_id, added)?;
                pool.release(*user_id, removed)?;
            }
            TenantEvent::UserLicensesReleased {
                user_id, released, ..
            } => pool.release(*user_id, released)?,
            TenantEvent::UserLicensesReinstated {
                user_id,
                reinstated,
                ..
            } => pool.hold(*user_id, reinstated)?,
            TenantEvent::LicensesMigrated {
                from_product,
                to_product,
                users,
                ..
            } => {
                for user_id in users {
                    pool.release(*user_id, std::slice::from_ref(from_product))?;
                    pool.hold(*user_id, std::slice::from_ref(to_product))?;
                }
            }
            TenantEvent::UserForgotten { user_id, .. } => {
                let held: Vec<ProvisioningId> = pool.holder(*user_id)?.skus.into_iter().collect();
                pool.release(*user_id, &held)?;
                pool.rows.delete(&holder_key(tenant_id, *user_id));
            }
            TenantEvent::TenantCreated { .. }
            | TenantEvent::AddOnOrphaned { .. }
            | TenantEvent::UserRegistered { .. } => {}
        }
        Ok(())
    }
}

struct Pool<'a> {
    tenant_id: Uuid,
    rows: &'a mut RowSet,
}

impl Pool<'_> {
    fn seats(&mut self, seats: SeatsDoc) {
        self.rows.store(
            seats_key(seats.subscription_id),
            SEATS,
            text::uuid(self.tenant_id),
            String::new(),
            seats,
        );
    }

    fn holder(&self, user_id: Uuid) -> Result<HolderDoc, ProjectionError> {
        Ok(self
            .rows
            .load(&holder_key(self.tenant_id, user_id))?
            .unwrap_or_default())
    }

    /// Adds `skus` to what the user holds, counting only the ones not held yet.
    fn hold(&mut self, user_id: Uuid, skus: &[ProvisioningId]) -> Result<(), ProjectionError> {
        let counted = self.change_holder(user_id, |holder| {
            skus.iter()
                .filter(|sku| holder.skus.insert((*sku).clone()))
                .collect()
        })?;
        for sku in counted {
            self.count(sku, 1)?;
        }
        Ok(())
    }

    /// Removes `skus` from what the user holds, counting only the ones held.
    fn release(&mut self, user_id: Uuid, skus: &[ProvisioningId]) -> Result<(), ProjectionError> {
        let counted = self.change_holder(user_id, |holder| {
            skus.iter().filter(|sku| holder.skus.remove(*sku)).collect()
        })?;
        for sku in counted {
            self.count(sku, -1)?;
        }
        Ok(())
    }

    /// Changes what the user holds (nothing when there is no row yet) and stores it.
    fn change_holder<'s>(
        &mut self,
        user_id: Uuid,
        change: impl FnOnce(&mut HolderDoc) -> Vec<&'s ProvisioningId>,
    ) -> Result<Vec<&'s ProvisioningId>, ProjectionError> {
        let key = holder_key(self.tenant_id, user_id);
        let mut changed = Vec::new();
        let mut change = Some(change);
        let updated = self.rows.update(&key, |holder: &mut HolderDoc| {
            if let Some(change) = change.take() {
                changed = change(holder);
            }
        })?;
        if !updated {
            let mut holder = HolderDoc::default();
            if let Some(change) = change.take() {
                changed = change(&mut holder);
            }
            self.put_holder(user_id, holder);
        }
        Ok(changed)
    }

    fn put_holder(&mut self, user_id: Uuid, holder: HolderDoc) {
        self.rows.store(
            holder_key(self.tenant_id, user_id),
            HOLDER,
            text::uuid(self.tenant_id),
            String::new(),
            holder,
        );
    }

    fn count(&mut self, sku: &ProvisioningId, change: i64) -> Result<(), ProjectionError> {
        let counted =
            |holders: u32| u32::try_from((i64::from(holders) + change).max(0)).unwrap_or(u32::MAX);
        let key = assigned_key(self.tenant_id, sku);
        // The row names its product: changed in place, it stays what storing it anew writes.
        if self.rows.update(&key, |doc: &mut AssignedDoc| {
            doc.holders = counted(doc.holders);
        })? {
            return Ok(());
        }
        let holders = counted(0);
        self.rows.store(
            key,
            ASSIGNED,
            text::uuid(self.tenant_id),
            String::new(),
            AssignedDoc {
                sku: sku.clone(),
                holders,
            },
        );
        Ok(())
    }
}

/// The licence view of a tenant from its `seats` and `assigned` rows: one row per product that
/// has a subscription, ordered by SKU.
pub fn availability(seats: &[SeatsDoc], assigned: &[AssignedDoc]) -> Vec<LicenseRow> {
    let mut by_subscription: Vec<&SeatsDoc> = seats.iter().collect();
    by_subscription.sort_by_key(|seats| seats.subscription_id);
    let mut rows: BTreeMap<ProvisioningId, LicenseRow> = BTreeMap::new();
    for seats in by_subscription {
        let row = rows.entry(seats.sku.clone()).or_insert_with(|| LicenseRow {
            sku: seats.sku.clone(),
            product_name: seats.product_name.clone(),
            offer_id: seats.offer_id,
            enabled: 0,
            warning: 0,
            suspended: 0,
            assigned: 0,
            available: 0,
            over_assigned: false,
            subscription_ids: BTreeSet::new(),
        });
        row.subscription_ids.insert(seats.subscription_id);
        match seats.state {
            SeatState::Enabled => row.enabled += seats.quantity,
            SeatState::Warning => row.warning += seats.quantity,
            SeatState::Suspended => row.suspended += seats.quantity,
            SeatState::Inactive => {}
        }
    }
    for row in rows.values_mut() {
        row.assigned = assigned
            .iter()
            .filter(|count| count.sku == row.sku)
            .map(|count| count.holders)
            .sum();
        row.available = i64::from(row.enabled) + i64::from(row.warning) - i64::from(row.assigned);
        row.over_assigned = row.available < 0;
    }
    rows.into_values().collect()
}

/// The licence view of `tenant_id` from rows held in memory (as-of and tests).
pub fn availability_in(rows: &RowSet, tenant_id: Uuid) -> Result<Vec<LicenseRow>, ProjectionError> {
    let scope = tenant_id.to_string();
    Ok(availability(
        &rows.scoped(SEATS, &scope)?,
        &rows.scoped(ASSIGNED, &scope)?,
    ))
}
