//! Which tenant an event belongs to, and who may read it.
//!
//! Tenant events belong to their tenant, user events name theirs, and a subscription's first
//! event names its tenant (later ones do not, so the tenant is looked up once per subscription
//! and remembered). A tenant's reseller never changes after its creation, so it is remembered
//! too. Catalog, reseller and billing-profile events belong to no tenant.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::log::StoredEvent;
use crate::store::Store;

/// Remembered answers are dropped wholesale past this many, to keep memory bounded; they are
/// cheap to look up again.
const REMEMBERED: usize = 100_000;

/// Why the tenant of an event could not be told.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    /// A stream does not start the way every stream of its type starts.
    #[error("the {aggregate_type} stream {aggregate_id} does not start with its creation")]
    Unrooted {
        /// The stream's type.
        aggregate_type: &'static str,
        /// The stream's id.
        aggregate_id: String,
    },
}

/// Tells the tenant of events and the reseller of tenants, from the log.
#[derive(Debug)]
pub struct Tenancy {
    store: Store,
    subscription_tenants: Mutex<HashMap<Uuid, Uuid>>,
    tenant_resellers: Mutex<HashMap<Uuid, Option<Uuid>>>,
}

impl Tenancy {
    /// A resolver over `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            subscription_tenants: Mutex::new(HashMap::new()),
            tenant_resellers: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant `stored` belongs to, given its `data` (the envelope's body).
    pub async fn tenant_of(
        &self,
        stored: &StoredEvent,
        data: &serde_json::Value,
    ) -> Result<Option<Uuid>, TenancyError> {
        let named = data
            .get("tenant_id")
            .and_then(serde_json::Value::as_str)
            .and_then(|raw| Uuid::parse_str(raw).ok());
        match stored.aggregate_type.as_str() {
            "tenant" => Ok(Uuid::parse_str(&stored.aggregate_id).ok()),
            "user" => Ok(named),
            "subscription" => {
                let Ok(subscription) = Uuid::parse_str(&stored.aggregate_id) else {
                    return Ok(None);
                };
                if let Some(tenant) = named {
                    remember(&self.subscription_tenants, subscription, tenant);
                    return Ok(Some(tenant));
                }
                if let Some(tenant) = recall(&self.subscription_tenants, &subscription) {
                    return Ok(Some(tenant));
                }
                let first = self
                    .first_event("subscription", &stored.aggregate_id)
                    .await?;
                let tenant = first
                    .as_ref()
                    .and_then(|payload| inner_field(payload, "tenant_id"))
                    .and_then(|raw| Uuid::parse_str(&raw).ok())
                    .ok_or_else(|| TenancyError::Unrooted {
                        aggregate_type: "subscription",
                        aggregate_id: stored.aggregate_id.clone(),
                    })?;
                remember(&self.subscription_tenants, subscription, tenant);
                Ok(Some(tenant))
            }
            _ => Ok(None),
        }
    }

    /// The reseller managing `tenant` (`None` when the partner manages it directly or it does
    /// not exist).
    pub async fn reseller_of(&self, tenant: Uuid) -> Result<Option<Uuid>, TenancyError> {
        if let Some(reseller) = recall(&self.tenant_resellers, &tenant) {
            return Ok(reseller);
        }
        let Some(first) = self.first_event("tenant", &tenant.to_string()).await? else {
            return Ok(None);
        };
        let reseller =
            inner_field(&first, "reseller_id").and_then(|raw| Uuid::parse_str(&raw).ok());
        remember(&self.tenant_resellers, tenant, reseller);
        Ok(reseller)
    }

    /// Whether `audience` may read an event of `tenant`.
    pub async fn may_read(
        &self,
        audience: Audience,
        tenant: Option<Uuid>,
    ) -> Result<bool, TenancyError> {
        Ok(match (audience, tenant) {
            (Audience::Everything, _) => true,
            (_, None) => false,
            (Audience::Tenant(own), Some(tenant)) => own == tenant,
            (Audience::Reseller(own), Some(tenant)) => self.reseller_of(tenant).await? == Some(own),
        })
    }

    async fn first_event(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        crate::on_pool!(&self.store, pool => {
            sqlx::query_scalar(
                "SELECT CAST(payload AS TEXT) FROM events
                  WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
            )
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_optional(pool)
            .await
        })
    }
}

/// Whose events a reader of the feed may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every event (admin, support, auditor).
    Everything,
    /// The events of one reseller's tenants.
    Reseller(Uuid),
    /// The events of one tenant.
    Tenant(Uuid),
}

impl Audience {
    /// What `principal` may read of the log; `None`: nothing (the route answers 403).
    pub fn of(principal: &Principal) -> Option<Self> {
        match principal.role {
            Role::Admin | Role::Support | Role::Auditor => Some(Self::Everything),
            Role::Reseller => principal.reseller_id.map(Self::Reseller),
            Role::CustomerAdmin => principal.tenant_id.map(Self::Tenant),
            Role::PasswordAdmin => None,
        }
    }
}

/// A field of the body of a stored `{"<EventType>": {…}}` payload.
fn inner_field(payload: &str, field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    value
        .as_object()?
        .values()
        .next()?
        .get(field)?
        .as_str()
        .map(str::to_owned)
}

fn recall<V: Copy>(map: &Mutex<HashMap<Uuid, V>>, key: &Uuid) -> Option<V> {
    map.lock().expect("tenancy cache lock").get(key).copied()
}

fn remember<V>(map: &Mutex<HashMap<Uuid, V>>, key: Uuid, value: V) {
    let mut map = map.lock().expect("tenancy cache lock");
    if map.len() >= REMEMBERED {
        map.clear();
    }
    map.insert(key, value);
}
