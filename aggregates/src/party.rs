//! The partner's side of the books: indirect resellers and billing profiles.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
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

/// Events of a reseller: the `reseller` aggregate, one stream per reseller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum ResellerEvent {
    /// An indirect reseller was registered (`POST /v1/resellers`, CreateReseller).
    ResellerCreated {
        /// The reseller's id, the subject of its stream.
        reseller_id: Uuid,
        /// The reseller's name.
        name: OrganisationName,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
}

impl ResellerEvent {
    /// The schema version of every reseller event: the `v<N>` of their CloudEvents types and what
    /// [`DomainEvent::event_version`] records. Raise it for a change that breaks readers of the
    /// JSON (an upcaster then reads the old one); an added field does not.
    pub const EVENT_VERSION: &'static str = "1";
}

impl DomainEvent for ResellerEvent {
    fn event_type(&self) -> String {
        "ResellerCreated".into()
    }

    fn event_version(&self) -> String {
        Self::EVENT_VERSION.into()
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

/// Events of a billing profile: the `billing_profile` aggregate, one stream per profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum BillingProfileEvent {
    /// A billing profile was created (`POST /v1/billing-profiles`, CreateBillingProfile) for the
    /// partner's own account or a reseller's; it gets its own monthly invoice.
    BillingProfileCreated {
        /// The billing profile's id, the subject of its stream.
        billing_profile_id: Uuid,
        /// The billing profile's name.
        name: OrganisationName,
        /// The currency it is invoiced in.
        currency: Currency,
        /// The reseller account it belongs to, or `null` for the partner's own.
        reseller_id: Option<Uuid>,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
}

impl BillingProfileEvent {
    /// The schema version of every billing-profile event: the `v<N>` of their CloudEvents types and
    /// what [`DomainEvent::event_version`] records. Raise it for a change that breaks readers of
    /// the JSON (an upcaster then reads the old one); an added field does not.
    pub const EVENT_VERSION: &'static str = "1";
}

impl DomainEvent for BillingProfileEvent {
    fn event_type(&self) -> String {
        "BillingProfileCreated".into()
    }

    fn event_version(&self) -> String {
        Self::EVENT_VERSION.into()
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
