//! Bearer tokens: issued once, stored only as hashes, each scoped to a role and, where the role
//! needs it, one reseller or one tenant.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use uuid::Uuid;

use crate::store::Store;

/// What a token may do (docs/API.md's roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including issuing tokens and changing the catalog.
    Admin,
    /// Commands and reads for the tenants of one reseller.
    Reseller,
    /// Commands and reads for one tenant.
    CustomerAdmin,
    /// One tenant: read users, reset passwords, nothing else.
    PasswordAdmin,
    /// Reads every projection; no command.
    Support,
    /// Reads the log and histories; no command.
    Auditor,
}

impl Role {
    /// The role's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Reseller => "reseller",
            Self::CustomerAdmin => "customer_admin",
            Self::PasswordAdmin => "password_admin",
            Self::Support => "support",
            Self::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(raw.to_owned())).map_err(|_| {
            "must be one of admin, reseller, customer_admin, password_admin, support, auditor"
                .to_owned()
        })
    }
}

/// Who is calling: the token's id (recorded in event metadata, never the token) and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id.
    pub token_id: Uuid,
    /// Its role.
    pub role: Role,
    /// The reseller it is scoped to (role `reseller`).
    pub reseller_id: Option<Uuid>,
    /// The tenant it is scoped to (roles `customer_admin`, `password_admin`).
    pub tenant_id: Option<Uuid>,
}

/// Why a token could not be issued.
#[derive(Debug, Error)]
pub enum TokenError {
    /// The role needs a scope that was not given, or was given one it cannot have.
    #[error("{0}")]
    Scope(String),
    /// The store failed.
    #[error("token store failure: {0}")]
    Store(#[from] sqlx::Error),
}

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the operating system's random source works");
    format!("sl_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Checks that a role comes with exactly the scope it needs.
pub fn check_scope(
    role: Role,
    reseller_id: Option<Uuid>,
    tenant_id: Option<Uuid>,
) -> Result<(), TokenError> {
    let refuse = |message: &str| Err(TokenError::Scope(message.to_owned()));
    match role {
        Role::Reseller if reseller_id.is_none() => refuse("role reseller needs reseller_id"),
        Role::Reseller if tenant_id.is_some() => refuse("role reseller takes no tenant_id"),
        Role::CustomerAdmin | Role::PasswordAdmin if tenant_id.is_none() => {
            refuse("this role needs tenant_id")
        }
        Role::CustomerAdmin | Role::PasswordAdmin if reseller_id.is_some() => {
            refuse("this role takes no reseller_id")
        }
        Role::Admin | Role::Support | Role::Auditor
            if reseller_id.is_some() || tenant_id.is_some() =>
        {
            refuse("this role is not scoped: give neither reseller_id nor tenant_id")
        }
        _ => Ok(()),
    }
}

/// The token table.
#[derive(Debug, Clone)]
pub struct Tokens {
    store: Store,
    /// Tokens already seen, by hash. A token's role and scope never change once issued (there
    /// is no revocation yet; one would have to clear this), so every request after a token's
    /// first skips the query. Unknown tokens are never remembered.
    known: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Principal>>>,
}

/// Remembered tokens are forgotten wholesale past this many.
const KNOWN_TOKENS: usize = 10_000;

impl Tokens {
    /// The tokens of `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            known: Default::default(),
        }
    }

    /// Issues a new token; the token itself is returned once and never stored.
    pub async fn issue(
        &self,
        role: Role,
        reseller_id: Option<Uuid>,
        tenant_id: Option<Uuid>,
    ) -> Result<(Uuid, String), TokenError> {
        check_scope(role, reseller_id, tenant_id)?;
        let token = new_token();
        let token_id = Uuid::new_v4();
        self.insert(token_id, &token, role, reseller_id, tenant_id)
            .await?;
        Ok((token_id, token))
    }

    async fn insert(
        &self,
        token_id: Uuid,
        token: &str,
        role: Role,
        reseller_id: Option<Uuid>,
        tenant_id: Option<Uuid>,
    ) -> Result<(), sqlx::Error> {
        match &self.store {
            Store::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO api_tokens (token_id, token_hash, role, reseller_id, tenant_id)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_hash) DO NOTHING",
                )
                .bind(token_id)
                .bind(hash(token))
                .bind(role.as_str())
                .bind(reseller_id)
                .bind(tenant_id)
                .execute(pool)
                .await?;
            }
            Store::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO api_tokens (token_id, token_hash, role, reseller_id, tenant_id)
                     VALUES (?, ?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING",
                )
                .bind(token_id.to_string())
                .bind(hash(token))
                .bind(role.as_str())
                .bind(reseller_id.map(|id| id.to_string()))
                .bind(tenant_id.map(|id| id.to_string()))
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Makes sure an admin token exists: the given one (stored hashed), or when none is given
    /// and no admin token exists yet, a generated one, returned so it can be shown once.
    pub async fn bootstrap_admin(&self, given: Option<&str>) -> Result<Option<String>, TokenError> {
        if let Some(token) = given {
            if self.authenticate(token).await?.is_none() {
                self.insert(Uuid::new_v4(), token, Role::Admin, None, None)
                    .await?;
            }
            return Ok(None);
        }
        let admins: i64 = match &self.store {
            Store::Postgres(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE role = 'admin'")
                    .fetch_one(pool)
                    .await?
            }
            Store::Sqlite(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE role = 'admin'")
                    .fetch_one(pool)
                    .await?
            }
        };
        if admins > 0 {
            return Ok(None);
        }
        let (_, token) = self.issue(Role::Admin, None, None).await?;
        Ok(Some(token))
    }

    /// The principal a presented token stands for, if any.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, sqlx::Error> {
        let digest = hash(token);
        if let Some(principal) = self.known.lock().expect("token cache lock").get(&digest) {
            return Ok(Some(principal.clone()));
        }
        let row: Option<(String, String, Option<String>, Option<String>)> = match &self.store {
            Store::Postgres(pool) => sqlx::query_as::<_, (Uuid, String, Option<Uuid>, Option<Uuid>)>(
                "SELECT token_id, role, reseller_id, tenant_id FROM api_tokens WHERE token_hash = $1",
            )
            .bind(&digest)
            .fetch_optional(pool)
            .await?
            .map(|(id, role, reseller, tenant)| {
                (
                    id.to_string(),
                    role,
                    reseller.map(|id| id.to_string()),
                    tenant.map(|id| id.to_string()),
                )
            }),
            Store::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT token_id, role, reseller_id, tenant_id FROM api_tokens WHERE token_hash = ?",
                )
                .bind(&digest)
                .fetch_optional(pool)
                .await?
            }
        };
        let parse = |raw: &str| Uuid::parse_str(raw).ok();
        let principal = row.and_then(|(id, role, reseller, tenant)| {
            Some(Principal {
                token_id: parse(&id)?,
                role: role.parse().ok()?,
                reseller_id: reseller.as_deref().and_then(parse),
                tenant_id: tenant.as_deref().and_then(parse),
            })
        });
        if let Some(principal) = &principal {
            let mut known = self.known.lock().expect("token cache lock");
            if known.len() >= KNOWN_TOKENS {
                known.clear();
            }
            known.insert(digest, principal.clone());
        }
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_fit_their_roles() {
        let id = Some(Uuid::nil());
        assert!(check_scope(Role::Reseller, id, None).is_ok());
        assert!(check_scope(Role::Reseller, None, None).is_err());
        assert!(check_scope(Role::CustomerAdmin, None, id).is_ok());
        assert!(check_scope(Role::PasswordAdmin, None, None).is_err());
        assert!(check_scope(Role::Support, None, id).is_err());
        assert!(check_scope(Role::Admin, None, None).is_ok());
    }

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.len() > 40);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), a);
    }
}
