//! Licence availability per product of one tenant, folded from the tenant's events alone
//! (Microsoft Graph's subscribedSkus shape): enabled, warning, suspended, assigned, available,
//! the SKU and the subscriptions behind each row.

use std::collections::{BTreeMap, BTreeSet};

use aggregates::tenant::{SeatState, TenantEvent};
use aggregates::values::{OfferId, ProvisioningId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One row of the licence view: one product of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseRow {
    /// The SKU part number (provisioning id) the row counts.
    pub sku: ProvisioningId,
    /// The product name as Partner Center shows it (of the newest subscription's offer).
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

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Seats {
    sku: Option<ProvisioningId>,
    name: String,
    offer_id: Option<OfferId>,
    quantity: u32,
    state: Option<SeatState>,
}

/// The licence view of one tenant, kept by folding its events in order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LicenseView {
    subscriptions: BTreeMap<Uuid, Seats>,
    assigned: BTreeMap<ProvisioningId, BTreeSet<Uuid>>,
    held_when_deleted: BTreeMap<Uuid, Vec<ProvisioningId>>,
}

impl LicenseView {
    /// Folds one tenant event in.
    pub fn apply(&mut self, event: &TenantEvent) {
        match event {
            TenantEvent::SubscriptionPurchased {
                subscription_id,
                offer,
                quantity,
                ..
            } => {
                self.subscriptions.insert(
                    *subscription_id,
                    Seats {
                        sku: Some(offer.provisioning_id.clone()),
                        name: offer.name.to_string(),
                        offer_id: Some(offer.id),
                        quantity: *quantity,
                        state: Some(SeatState::Enabled),
                    },
                );
            }
            TenantEvent::SubscriptionSeatsChanged {
                subscription_id,
                seats,
                ..
            } => {
                self.subscriptions.insert(
                    *subscription_id,
                    Seats {
                        sku: Some(seats.offer.provisioning_id.clone()),
                        name: seats.offer.name.to_string(),
                        offer_id: Some(seats.offer.id),
                        quantity: seats.quantity,
                        state: Some(seats.state),
                    },
                );
            }
            TenantEvent::LicensesMigrated {
                from_product,
                to_product,
                users,
                ..
            } => {
                for user in users {
                    if let Some(holders) = self.assigned.get_mut(from_product) {
                        holders.remove(user);
                    }
                    self.assigned
                        .entry(to_product.clone())
                        .or_default()
                        .insert(*user);
                }
            }
            TenantEvent::LicensesAssigned {
                user_id,
                added,
                removed,
                ..
            } => {
                for product in added {
                    self.assigned
                        .entry(product.clone())
                        .or_default()
                        .insert(*user_id);
                }
                for product in removed {
                    if let Some(holders) = self.assigned.get_mut(product) {
                        holders.remove(user_id);
                    }
                }
            }
            TenantEvent::UserLicensesReleased {
                user_id, released, ..
            } => {
                for product in released {
                    if let Some(holders) = self.assigned.get_mut(product) {
                        holders.remove(user_id);
                    }
                }
                self.held_when_deleted.insert(*user_id, released.clone());
            }
            TenantEvent::UserLicensesReinstated {
                user_id,
                reinstated,
                ..
            } => {
                for product in reinstated {
                    self.assigned
                        .entry(product.clone())
                        .or_default()
                        .insert(*user_id);
                }
                self.held_when_deleted.remove(user_id);
            }
            TenantEvent::UserForgotten { user_id, .. } => {
                for holders in self.assigned.values_mut() {
                    holders.remove(user_id);
                }
                self.held_when_deleted.remove(user_id);
            }
            TenantEvent::TenantCreated { .. }
            | TenantEvent::AddOnOrphaned { .. }
            | TenantEvent::UserRegistered { .. } => {}
        }
    }

    /// The rows, one per product, ordered by SKU.
    pub fn rows(&self) -> Vec<LicenseRow> {
        let mut rows: BTreeMap<ProvisioningId, LicenseRow> = BTreeMap::new();
        for (subscription_id, seats) in &self.subscriptions {
            let (Some(sku), Some(offer_id), Some(state)) =
                (&seats.sku, seats.offer_id, seats.state)
            else {
                continue;
            };
            let row = rows.entry(sku.clone()).or_insert_with(|| LicenseRow {
                sku: sku.clone(),
                product_name: seats.name.clone(),
                offer_id,
                enabled: 0,
                warning: 0,
                suspended: 0,
                assigned: 0,
                available: 0,
                over_assigned: false,
                subscription_ids: BTreeSet::new(),
            });
            row.subscription_ids.insert(*subscription_id);
            match state {
                SeatState::Enabled => row.enabled += seats.quantity,
                SeatState::Warning => row.warning += seats.quantity,
                SeatState::Suspended => row.suspended += seats.quantity,
                SeatState::Inactive => {}
            }
        }
        for row in rows.values_mut() {
            row.assigned = self
                .assigned
                .get(&row.sku)
                .map_or(0, |holders| holders.len() as u32);
            row.available =
                i64::from(row.enabled) + i64::from(row.warning) - i64::from(row.assigned);
            row.over_assigned = row.available < 0;
        }
        rows.into_values().collect()
    }
}
