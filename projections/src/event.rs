//! Events as the global log hands them to consumers, decoded into the domain's types.

use aggregates::catalog::CatalogEvent;
use aggregates::party::{BillingProfileEvent, ResellerEvent};
use aggregates::subscription::SubscriptionEvent;
use aggregates::tenant::TenantEvent;
use aggregates::user::UserEvent;
use uuid::Uuid;

use crate::ProjectionError;

/// One event of the global log.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// Its place in the global log.
    pub position: i64,
    /// Its aggregate's type (`tenant`, `subscription`, `user`…).
    pub aggregate_type: String,
    /// Its aggregate's id.
    pub aggregate_id: String,
    /// Its place in its aggregate's stream.
    pub sequence: i64,
    /// The event, decoded.
    pub event: DomainEvent,
}

/// An event of any aggregate.
#[derive(Debug, Clone)]
pub enum DomainEvent {
    /// Of a tenant.
    Tenant(TenantEvent),
    /// Of a subscription.
    Subscription(SubscriptionEvent),
    /// Of a user.
    User(UserEvent),
    /// Of the catalog.
    Catalog(CatalogEvent),
    /// Of a reseller.
    Reseller(ResellerEvent),
    /// Of a billing profile.
    BillingProfile(BillingProfileEvent),
}

impl LoggedEvent {
    /// Decodes a stored event (the payload as cqrs-es serialised it).
    pub fn decode(
        position: i64,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
        payload: &str,
    ) -> Result<Self, ProjectionError> {
        fn parse<T: serde::de::DeserializeOwned>(
            position: i64,
            payload: &str,
        ) -> Result<T, ProjectionError> {
            serde_json::from_str(payload).map_err(|error| ProjectionError::Undecodable {
                position,
                reason: error.to_string(),
            })
        }
        let event = match aggregate_type {
            "tenant" => DomainEvent::Tenant(parse(position, payload)?),
            "subscription" => DomainEvent::Subscription(parse(position, payload)?),
            "user" => DomainEvent::User(parse(position, payload)?),
            "catalog" => DomainEvent::Catalog(parse(position, payload)?),
            "reseller" => DomainEvent::Reseller(parse(position, payload)?),
            "billing_profile" => DomainEvent::BillingProfile(parse(position, payload)?),
            other => {
                return Err(ProjectionError::Undecodable {
                    position,
                    reason: format!("unknown aggregate type '{other}'"),
                })
            }
        };
        Ok(Self {
            position,
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            sequence,
            event,
        })
    }

    /// The aggregate id as a UUID (every aggregate but the catalog has one).
    pub fn aggregate_uuid(&self) -> Result<Uuid, ProjectionError> {
        Uuid::parse_str(&self.aggregate_id).map_err(|_| ProjectionError::Undecodable {
            position: self.position,
            reason: format!("aggregate id '{}' is not a UUID", self.aggregate_id),
        })
    }

    /// When it happened, for the aggregates whose events say (tenant, subscription, user).
    pub fn at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match &self.event {
            DomainEvent::Tenant(event) => Some(event.at()),
            DomainEvent::Subscription(event) => Some(event.at()),
            DomainEvent::User(event) => Some(event.at()),
            DomainEvent::Catalog(_) | DomainEvent::Reseller(_) | DomainEvent::BillingProfile(_) => {
                None
            }
        }
    }

    /// What the process managers of `aggregates::policy` decide on this event: follow-up
    /// commands and timers.
    pub fn follow_ups(&self) -> Result<Vec<aggregates::policy::FollowUp>, ProjectionError> {
        use aggregates::policy;
        Ok(match &self.event {
            DomainEvent::Tenant(event) => policy::on_tenant_event(self.aggregate_uuid()?, event),
            DomainEvent::Subscription(event) => {
                policy::on_subscription_event(self.aggregate_uuid()?, self.sequence(), event)
            }
            DomainEvent::User(event) => {
                policy::on_user_event(self.aggregate_uuid()?, self.sequence(), event)
            }
            DomainEvent::Catalog(_) | DomainEvent::Reseller(_) | DomainEvent::BillingProfile(_) => {
                Vec::new()
            }
        })
    }

    /// The sequence as the policies take it.
    pub fn sequence(&self) -> u64 {
        u64::try_from(self.sequence).unwrap_or_default()
    }
}
