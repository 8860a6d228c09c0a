//! The partner's side of the books: indirect resellers and billing profiles.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DomainError, Entity};
use crate::values::{Currency, OrganisationName};

/// Commands to a reseller.
#[derive(Debug, Clone, PartialEq)]
pub enum ResellerCommand {
    /// Registers an indirect reseller.
    CreateReseller {
        /// Its id.
        reseller_id: Uuid,
        /// Its name.
        name: OrganisationName,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Events of a reseller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResellerEvent {
    /// The reseller was registered.
    ResellerCreated {
        /// Its id.
        reseller_id: Uuid,
        /// Its name.
        name: OrganisationName,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ResellerEvent {
    fn event_type(&self) -> String {
        "ResellerCreated".into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

/// An indirect reseller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reseller {
    /// Its id, once created.
    pub reseller_id: Option<Uuid>,
    /// Its name, once created.
    pub name: Option<OrganisationName>,
    /// When it was created.
    pub created_at: Option<DateTime<Utc>>,
}

impl Aggregate for Reseller {
    const TYPE: &'static str = "reseller";
    type Command = ResellerCommand;
    type Event = ResellerEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let ResellerCommand::CreateReseller {
            reseller_id,
            name,
            at,
        } = command;
        if self.reseller_id.is_some() {
            return Err(DomainError::already_exists(Entity::Reseller, reseller_id));
        }
        sink.write(
            ResellerEvent::ResellerCreated {
                reseller_id,
                name,
                at,
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let ResellerEvent::ResellerCreated {
            reseller_id,
            name,
            at,
        } = event;
        self.reseller_id = Some(reseller_id);
        self.name = Some(name);
        self.created_at = Some(at);
    }
}

/// Commands to a billing profile.
#[derive(Debug, Clone, PartialEq)]
pub enum BillingProfileCommand {
    /// Creates a billing profile, which gets its own monthly invoice.
    CreateBillingProfile {
        /// Its id.
        billing_profile_id: Uuid,
        /// Its name.
        name: OrganisationName,
        /// The currency it is invoiced in.
        currency: Currency,
        /// The reseller account it belongs to, or `None` for the partner's own.
        reseller_id: Option<Uuid>,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Events of a billing profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BillingProfileEvent {
    /// The billing profile was created.
    BillingProfileCreated {
        /// Its id.
        billing_profile_id: Uuid,
        /// Its name.
        name: OrganisationName,
        /// Its currency.
        currency: Currency,
        /// Its reseller account, if any.
        reseller_id: Option<Uuid>,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for BillingProfileEvent {
    fn event_type(&self) -> String {
        "BillingProfileCreated".into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

/// The facts of a created billing profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingProfileState {
    /// Its id.
    pub billing_profile_id: Uuid,
    /// Its name.
    pub name: OrganisationName,
    /// Its currency.
    pub currency: Currency,
    /// Its reseller account, if any.
    pub reseller_id: Option<Uuid>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A billing profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BillingProfile {
    /// `None` until created.
    pub state: Option<BillingProfileState>,
}

impl Aggregate for BillingProfile {
    const TYPE: &'static str = "billing_profile";
    type Command = BillingProfileCommand;
    type Event = BillingProfileEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let BillingProfileCommand::CreateBillingProfile {
            billing_profile_id,
            name,
            currency,
            reseller_id,
            at,
        } = command;
        if self.state.is_some() {
            return Err(DomainError::already_exists(
                Entity::BillingProfile,
                billing_profile_id,
            ));
        }
        sink.write(
            BillingProfileEvent::BillingProfileCreated {
                billing_profile_id,
                name,
                currency,
                reseller_id,
                at,
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let BillingProfileEvent::BillingProfileCreated {
            billing_profile_id,
            name,
            currency,
            reseller_id,
            at,
        } = event;
        self.state = Some(BillingProfileState {
            billing_profile_id,
            name,
            currency,
            reseller_id,
            created_at: at,
        });
    }
}
