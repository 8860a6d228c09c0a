//! Who may do what: every role set the routes check, the tenant-visibility rule and `require`,
//! in one place, so that a role's reach is read here and nowhere else.
//!
//! The contract's roles: `admin` (everything), `reseller` (its tenants), `customer_admin` (one
//! tenant), `password_admin` (one tenant: read users, reset passwords, nothing else), `support`
//! (reads every projection, no command) and `auditor` (reads the log and histories, no command).

use aggregates::tenant::TenantProfile;
use thiserror::Error;

use crate::auth::{Principal, Role};

/// A set of roles allowed to take one kind of step.
pub type Roles = &'static [Role];

/// Issue tokens, change the catalog, create resellers, move the sandbox clock.
pub const ADMINS: Roles = &[Role::Admin];
/// Create billing profiles and tenants (a reseller under itself).
pub const ONBOARDERS: Roles = &[Role::Admin, Role::Reseller];
/// Buy and change subscriptions, manage users and their licences (within their scope).
pub const MANAGERS: Roles = &[Role::Admin, Role::Reseller, Role::CustomerAdmin];
/// Read the catalog, tenants, subscriptions, licence views, invoices and histories.
pub const READERS: Roles = &[
    Role::Admin,
    Role::Reseller,
    Role::CustomerAdmin,
    Role::Support,
    Role::Auditor,
];
/// Read users and user lists: every reader, and the password admin of the tenant.
pub const USER_READERS: Roles = &[
    Role::Admin,
    Role::Reseller,
    Role::CustomerAdmin,
    Role::PasswordAdmin,
    Role::Support,
    Role::Auditor,
];
/// Reset a user's password.
pub const PASSWORD_RESETTERS: Roles = &[
    Role::Admin,
    Role::Reseller,
    Role::CustomerAdmin,
    Role::PasswordAdmin,
];
/// Read resellers and billing profiles (a reseller its own).
pub const ACCOUNT_READERS: Roles = &[Role::Admin, Role::Reseller, Role::Support, Role::Auditor];

/// The roles of a set as the API description lists them, each with its scope.
pub fn describe(roles: Roles) -> String {
    roles
        .iter()
        .map(|role| match role {
            Role::Admin => "admin",
            Role::Reseller => "reseller (its own tenants and accounts)",
            Role::CustomerAdmin => "customer_admin (its tenant)",
            Role::PasswordAdmin => "password_admin (its tenant)",
            Role::Support => "support",
            Role::Auditor => "auditor",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The caller's role may not take this step.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("role {role} may not do this")]
pub struct Denied {
    /// The caller's role.
    pub role: Role,
}

/// Passes when the caller's role is one of `roles`.
pub fn require(principal: &Principal, roles: Roles) -> Result<(), Denied> {
    if roles.contains(&principal.role) {
        Ok(())
    } else {
        Err(Denied {
            role: principal.role,
        })
    }
}

/// Whether the caller may know a tenant exists at all; when not, the tenant answers 404, so
/// that a token never learns which tenants exist outside its scope.
pub fn may_see_tenant(principal: &Principal, profile: &TenantProfile) -> bool {
    match principal.role {
        Role::Admin | Role::Support | Role::Auditor => true,
        Role::Reseller => {
            principal.reseller_id.is_some() && principal.reseller_id == profile.reseller_id
        }
        Role::CustomerAdmin | Role::PasswordAdmin => principal.tenant_id == Some(profile.tenant_id),
    }
}

/// Whether the caller may see an account (a reseller or a billing profile) owned by `owner`
/// (`None`: the partner's own).
pub fn may_see_account(principal: &Principal, owner: Option<uuid::Uuid>) -> bool {
    match principal.role {
        Role::Admin | Role::Support | Role::Auditor => true,
        Role::Reseller => principal.reseller_id.is_some() && principal.reseller_id == owner,
        Role::CustomerAdmin | Role::PasswordAdmin => false,
    }
}

/// Whether the caller may charge a billing profile owned by `profile_owner` for a tenant of
/// `tenant_reseller` (`None`: the partner's own, on either side). One rule for every role: a
/// reseller's profile bills that reseller's tenants only, whoever asks; the partner's own
/// profiles bill the partner's direct tenants, and any tenant when the partner (an admin)
/// decides so.
pub fn may_charge(
    principal: &Principal,
    profile_owner: Option<uuid::Uuid>,
    tenant_reseller: Option<uuid::Uuid>,
) -> bool {
    profile_owner == tenant_reseller || (profile_owner.is_none() && principal.role == Role::Admin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn principal(role: Role) -> Principal {
        Principal {
            token_id: Uuid::nil(),
            role,
            reseller_id: None,
            tenant_id: None,
        }
    }

    #[test]
    fn a_password_admin_reads_users_and_resets_passwords_and_nothing_else() {
        let caller = principal(Role::PasswordAdmin);
        assert!(require(&caller, USER_READERS).is_ok());
        assert!(require(&caller, PASSWORD_RESETTERS).is_ok());
        for roles in [ADMINS, ONBOARDERS, MANAGERS, READERS, ACCOUNT_READERS] {
            assert_eq!(
                require(&caller, roles),
                Err(Denied {
                    role: Role::PasswordAdmin
                })
            );
        }
    }

    #[test]
    fn the_description_names_each_role_of_a_set_with_its_scope() {
        assert_eq!(describe(ADMINS), "admin");
        assert_eq!(
            describe(PASSWORD_RESETTERS),
            "admin, reseller (its own tenants and accounts), customer_admin (its tenant), password_admin (its tenant)"
        );
    }

    #[test]
    fn support_and_auditors_command_nothing() {
        for role in [Role::Support, Role::Auditor] {
            let caller = principal(role);
            for roles in [ADMINS, ONBOARDERS, MANAGERS, PASSWORD_RESETTERS] {
                assert!(require(&caller, roles).is_err(), "{role} passed {roles:?}");
            }
        }
    }

    #[test]
    fn a_reseller_s_billing_profile_bills_only_that_reseller_s_tenants_whoever_asks() {
        let (northwind, fabrikam) = (Some(Uuid::new_v4()), Some(Uuid::new_v4()));
        for role in [Role::Admin, Role::Reseller, Role::CustomerAdmin] {
            let caller = principal(role);
            assert!(may_charge(&caller, northwind, northwind), "{role}");
            assert!(!may_charge(&caller, fabrikam, northwind), "{role}");
            assert!(!may_charge(&caller, northwind, None), "{role}");
            assert!(may_charge(&caller, None, None), "{role}");
        }
        assert!(may_charge(&principal(Role::Admin), None, northwind));
        assert!(!may_charge(
            &principal(Role::CustomerAdmin),
            None,
            northwind
        ));
        assert!(!may_charge(&principal(Role::Reseller), None, northwind));
    }

    #[test]
    fn a_reseller_sees_only_its_own_accounts() {
        let own = Uuid::new_v4();
        let caller = Principal {
            reseller_id: Some(own),
            ..principal(Role::Reseller)
        };
        assert!(may_see_account(&caller, Some(own)));
        assert!(!may_see_account(&caller, Some(Uuid::new_v4())));
        assert!(!may_see_account(&caller, None));
    }
}
