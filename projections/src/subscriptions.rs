//! Subscriptions: state, quantity, refundable batches with their deadlines, term, billing
//! profile. Each row is the subscription's state folded by the domain's own `apply`, so the
//! read model cannot drift from what the aggregate decides with.

use aggregates::subscription::{Subscription, SubscriptionState};
use cqrs_es::Aggregate;
use uuid::Uuid;

use crate::{text, DomainEvent, LoggedEvent, Projection, ProjectionError, RowSet};

/// The projection's name.
pub const NAME: &str = "subscriptions";
/// Kind of a subscription's row.
pub const SUBSCRIPTION: &str = "subscription";

/// The key of a subscription's row.
pub fn subscription_key(subscription_id: Uuid) -> String {
    text::key(SUBSCRIPTION, subscription_id, &[])
}

/// The subscriptions projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subscriptions;

impl Projection for Subscriptions {
    fn name(&self) -> &'static str {
        NAME
    }

    fn keys(&self, event: &LoggedEvent) -> Vec<String> {
        match &event.event {
            DomainEvent::Subscription(_) => event
                .aggregate_uuid()
                .map(subscription_key)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    fn apply(&self, event: &LoggedEvent, rows: &mut RowSet) -> Result<(), ProjectionError> {
        let DomainEvent::Subscription(subscription_event) = &event.event else {
            return Ok(());
        };
        let subscription_id = event.aggregate_uuid()?;
        let key = subscription_key(subscription_id);
        let mut subscription = Subscription {
            state: rows.load::<SubscriptionState>(&key)?,
        };
        subscription.apply(subscription_event.clone());
        if let Some(state) = subscription.state {
            rows.store(
                key,
                SUBSCRIPTION,
                text::uuid(state.tenant_id),
                String::new(),
                state,
            );
        }
        Ok(())
    }
}
