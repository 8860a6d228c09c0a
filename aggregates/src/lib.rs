//! seatledger's licensing domain, pure: aggregates, commands, events, rules and process
//! managers for Microsoft 365 licences kept by a cloud partner.
//!
//! Nothing here performs I/O or reads a clock: every command carries the instant it happens
//! at, the commercial numbers arrive as [`rules::CommercialRules`], and personal data arrives
//! already sealed ([`personal`]). The service crate stores the events, runs the process
//! managers of [`policy`] durably and serves the read models.
//!
//! Aggregates and what each guards:
//! - [`tenant::Tenant`]: the seat pool per product and the register of users and principal
//!   names: no seat is handed out twice, no principal name is taken twice.
//! - [`subscription::Subscription`]: quantity in batches with their cancellation windows, term,
//!   billing profile, lifecycle, upgrades, trials.
//! - [`user::User`]: sealed details, role, delete / restore / purge, password resets.
//! - [`catalog::CatalogAggregate`], [`party::Reseller`], [`party::BillingProfile`]: the offers
//!   and the partner's accounts.

#![deny(missing_docs)]

pub mod catalog;
pub mod error;
pub mod party;
pub mod personal;
pub mod policy;
pub mod rules;
pub mod subscription;
pub mod tenant;
pub mod user;
pub mod values;

pub use error::{DomainError, Entity, ErrorCategory};
pub use rules::CommercialRules;
