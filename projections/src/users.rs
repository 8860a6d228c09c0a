//! Users per tenant: status, role, licences, and for deleted users when they were deleted and
//! until when they can be restored. Purged users disappear. Personal details stay sealed here
//! (the service unseals them per request with the user's key, which the purge destroys), so no
//! read model holds a readable name of a purged user.

use std::collections::BTreeSet;

use aggregates::personal::SealedDetails;
use aggregates::tenant::TenantEvent;
use aggregates::user::UserEvent;
use aggregates::values::{ProvisioningId, UserRole};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{text, DomainEvent, LoggedEvent, Projection, ProjectionError, RowSet};

/// The projection's name.
pub const NAME: &str = "users";
/// Kind of a user's row.
pub const USER: &str = "user";

/// A user as the user list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    /// The user.
    pub user_id: Uuid,
    /// The tenant.
    pub tenant_id: Uuid,
    /// `active` or `deleted`.
    pub status: UserListStatus,
    /// The administrative role.
    pub role: UserRole,
    /// The personal details, sealed with the user's key.
    pub details: SealedDetails,
    /// The products the user holds.
    pub licenses: BTreeSet<ProvisioningId>,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When a deleted user was deleted.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Until when a deleted user can be restored.
    pub restorable_until: Option<DateTime<Utc>>,
}

/// A listed user's status (purged users are not listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserListStatus {
    /// In use.
    Active,
    /// Deleted, restorable until `restorable_until`.
    Deleted,
}

/// The key of a user's row.
pub fn user_key(user_id: Uuid) -> String {
    text::key(USER, user_id, &[])
}

/// The user-list projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Users;

fn subject(event: &LoggedEvent) -> Option<Uuid> {
    match &event.event {
        DomainEvent::User(_) => event.aggregate_uuid().ok(),
        DomainEvent::Tenant(
            TenantEvent::UserRegistered { user_id, .. }
            | TenantEvent::LicensesAssigned { user_id, .. }
            | TenantEvent::UserLicensesReleased { user_id, .. }
            | TenantEvent::UserLicensesReinstated { user_id, .. }
            | TenantEvent::UserForgotten { user_id, .. },
        ) => Some(*user_id),
        _ => None,
    }
}

impl Projection for Users {
    fn name(&self) -> &'static str {
        NAME
    }

    fn keys(&self, event: &LoggedEvent) -> Vec<String> {
        match &event.event {
            DomainEvent::Tenant(TenantEvent::LicensesMigrated { users, .. }) => {
                users.iter().map(|user| user_key(*user)).collect()
            }
            _ => subject(event).map(user_key).into_iter().collect(),
        }
    }

    fn apply(&self, event: &LoggedEvent, rows: &mut RowSet) -> Result<(), ProjectionError> {
        match &event.event {
            DomainEvent::User(user_event) => {
                let user_id = event.aggregate_uuid()?;
                apply_user_event(user_id, user_event, rows)
            }
            DomainEvent::Tenant(tenant_event) => {
                let tenant_id = event.aggregate_uuid()?;
                apply_tenant_event(tenant_id, tenant_event, rows)
            }
            _ => Ok(()),
        }
    }
}

fn save(rows: &mut RowSet, row: UserRow) {
    rows.store(
        user_key(row.user_id),
        USER,
        text::uuid(row.tenant_id),
        String::new(),
        row,
    );
}

/// Changes a user's row if the user is listed (a purged user's row stays gone).
fn update(
    rows: &mut RowSet,
    user_id: Uuid,
    change: impl FnOnce(&mut UserRow),
) -> Result<(), ProjectionError> {
    rows.update::<UserRow>(&user_key(user_id), change)?;
    Ok(())
}

fn apply_user_event(
    user_id: Uuid,
    event: &UserEvent,
    rows: &mut RowSet,
) -> Result<(), ProjectionError> {
    match event {
        UserEvent::UserCreated {
            tenant_id,
            details,
            role,
            at,
            ..
        } => {
            let existing = rows.load::<UserRow>(&user_key(user_id))?;
            let row = UserRow {
                user_id,
                tenant_id: *tenant_id,
                status: UserListStatus::Active,
                role: *role,
                details: details.clone(),
                licenses: existing.map(|row| row.licenses).unwrap_or_default(),
                created_at: *at,
                deleted_at: None,
                restorable_until: None,
            };
            save(rows, row);
            Ok(())
        }
        UserEvent::UserEdited { details, role, .. } => update(rows, user_id, |row| {
            if let Some(details) = details {
                row.details = details.clone();
            }
            if let Some(role) = role {
                row.role = *role;
            }
        }),
        UserEvent::UserDeleted {
            deleted_at,
            restorable_until,
            ..
        } => update(rows, user_id, |row| {
            row.status = UserListStatus::Deleted;
            row.deleted_at = Some(*deleted_at);
            row.restorable_until = Some(*restorable_until);
        }),
        UserEvent::UserRestored { .. } => update(rows, user_id, |row| {
            row.status = UserListStatus::Active;
            row.deleted_at = None;
            row.restorable_until = None;
        }),
        UserEvent::UserPurged { .. } => {
            rows.delete(&user_key(user_id));
            Ok(())
        }
        UserEvent::PasswordReset { .. } => Ok(()),
    }
}

fn apply_tenant_event(
    tenant_id: Uuid,
    event: &TenantEvent,
    rows: &mut RowSet,
) -> Result<(), ProjectionError> {
    match event {
        // The tenant registers a user before the user's own stream begins; the row starts here
        // and the user's events complete it.
        TenantEvent::UserRegistered {
            user_id,
            details,
            role,
            at,
            ..
        } => {
            if !rows.contains(&user_key(*user_id))? {
                save(
                    rows,
                    UserRow {
                        user_id: *user_id,
                        tenant_id,
                        status: UserListStatus::Active,
                        role: *role,
                        details: details.clone(),
                        licenses: BTreeSet::new(),
                        created_at: *at,
                        deleted_at: None,
                        restorable_until: None,
                    },
                );
            }
            Ok(())
        }
        TenantEvent::LicensesAssigned {
            user_id,
            added,
            removed,
            ..
        } => update(rows, *user_id, |row| {
            row.licenses.extend(added.iter().cloned());
            for product in removed {
                row.licenses.remove(product);
            }
        }),
        TenantEvent::UserLicensesReleased {
            user_id, released, ..
        } => update(rows, *user_id, |row| {
            for product in released {
                row.licenses.remove(product);
            }
        }),
        TenantEvent::UserLicensesReinstated {
            user_id,
            reinstated,
            ..
        } => update(rows, *user_id, |row| {
            row.licenses.extend(reinstated.iter().cloned());
        }),
        TenantEvent::LicensesMigrated {
            from_product,
            to_product,
            users,
            ..
        } => {
            for user_id in users {
                update(rows, *user_id, |row| {
                    if row.licenses.remove(from_product) {
                        row.licenses.insert(to_product.clone());
                    }
                })?;
            }
            Ok(())
        }
        TenantEvent::UserForgotten { user_id, .. } => {
            rows.delete(&user_key(*user_id));
            Ok(())
        }
        TenantEvent::TenantCreated { .. }
        | TenantEvent::SubscriptionPurchased { .. }
        | TenantEvent::SubscriptionSeatsChanged { .. }
        | TenantEvent::AddOnOrphaned { .. } => Ok(()),
    }
}

/// The users of `tenant_id` in rows held in memory (as-of and tests), ordered by id.
pub fn users_in(rows: &RowSet, tenant_id: Uuid) -> Result<Vec<UserRow>, ProjectionError> {
    let mut users: Vec<UserRow> = rows.scoped(USER, &tenant_id.to_string())?;
    users.sort_by_key(|row| row.user_id);
    Ok(users)
}
