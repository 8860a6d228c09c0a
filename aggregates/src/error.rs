//! The one error type of the domain. Every refusal names the rule that refused the command with a
//! stable machine `code` and says, in its message, the numbers a person needs (counts, instants).

use chrono::{DateTime, Utc};
use thiserror::Error;
use uuid::Uuid;

use crate::values::{OfferId, ProvisioningId};

/// What kind of thing a command named that does not exist (or exists already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// A customer tenant.
    Tenant,
    /// A subscription.
    Subscription,
    /// A user of a tenant.
    User,
    /// An offer of the catalog.
    Offer,
    /// An indirect reseller.
    Reseller,
    /// A billing profile.
    BillingProfile,
}

impl Entity {
    fn label(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Subscription => "subscription",
            Self::User => "user",
            Self::Offer => "offer",
            Self::Reseller => "reseller",
            Self::BillingProfile => "billing profile",
        }
    }
}

/// How a caller should treat a refusal: the HTTP layer maps these to 404, 422 and 409.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCategory {
    /// The command names something that does not exist.
    NotFound,
    /// The command's input is inconsistent in itself, whatever the state.
    InvalidInput,
    /// A rule of the domain refuses the command in the current state.
    RuleViolation,
}

fn fmt_instant(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A command refused by the domain.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DomainError {
    /// The command addresses an aggregate that was never created (`id` is empty when the
    /// command does not name it: its caller knows which id it addressed).
    #[error("{} {}does not exist", .entity.label(), if .id.is_empty() { String::new() } else { format!("{} ", .id) })]
    NotFound {
        /// What kind of thing.
        entity: Entity,
        /// Its id.
        id: String,
    },
    /// A create command for an id that is taken.
    #[error("{} {id} exists already", .entity.label())]
    AlreadyExists {
        /// What kind of thing.
        entity: Entity,
        /// Its id.
        id: String,
    },
    /// An add-on needs an active subscription to one of its possible parents, whose own chain
    /// holds up to a top-level offer.
    #[error("{offer_name} is an add-on: the tenant needs an active subscription to one of {} (with its own parents) first", .possible_parents.join(", "))]
    ParentOfferRequired {
        /// The add-on.
        offer_id: OfferId,
        /// The add-on's name.
        offer_name: String,
        /// The offers any one of which would satisfy the rule (by name where the tenant knows
        /// the offer, else by id).
        possible_parents: Vec<String>,
    },
    /// The offer has no trial, or is an add-on (add-ons have no trials).
    #[error("{offer_name} has no trial offer")]
    TrialNotAvailable {
        /// The offer asked for.
        offer_name: String,
    },
    /// At most one trial per offer per tenant.
    #[error("the tenant already had a trial of {offer_name} (subscription {subscription_id})")]
    TrialAlreadyUsed {
        /// The offer.
        offer_name: String,
        /// The earlier trial.
        subscription_id: Uuid,
    },
    /// Trials hold a fixed number of seats until converted.
    #[error("a trial holds exactly {seats} seats, fixed until it is converted to paid")]
    TrialQuantityFixed {
        /// The fixed trial quantity.
        seats: u32,
    },
    /// Only offers that can be assigned to users can be given to a user.
    #[error("{offer_name} ({offer_id}) cannot be assigned to users")]
    OfferNotAssignable {
        /// The offer.
        offer_id: OfferId,
        /// Its name.
        offer_name: String,
    },
    /// The tenant holds no subscription to the offer, so it has no seats of it.
    #[error("the tenant has no subscription to offer {offer_id}")]
    OfferNotSubscribed {
        /// The offer.
        offer_id: OfferId,
    },
    /// Not enough available seats of a product for the licences asked for.
    #[error("not enough licences of {product}: {requested} requested, {available} available")]
    InsufficientLicenses {
        /// The product (SKU part number).
        product: ProvisioningId,
        /// Seats the command needs.
        requested: u32,
        /// Seats available before the command.
        available: i64,
    },
    /// The same offer is both added and removed in one licence change.
    #[error("offer {offer_id} is both added and removed in one change")]
    ConflictingLicenseChange {
        /// The offer named twice.
        offer_id: OfferId,
    },
    /// User principal names are unique within a tenant (deleted users keep theirs until purged).
    #[error("the user principal name is already taken in this tenant")]
    DuplicateUserPrincipalName,
    /// A user's principal name must be in the tenant's domain.
    #[error("the user principal name's domain {principal_domain} is not the tenant's domain {tenant_domain}")]
    PrincipalDomainMismatch {
        /// The domain of the principal name.
        principal_domain: String,
        /// The tenant's domain.
        tenant_domain: String,
    },
    /// The user is deleted or purged and cannot be changed this way.
    #[error("user {user_id} is {status}, not active")]
    UserNotActive {
        /// The user.
        user_id: Uuid,
        /// Its status.
        status: &'static str,
    },
    /// The subscription's status does not allow the command.
    #[error("cannot {action} subscription {subscription_id}: it is {status}")]
    InvalidSubscriptionState {
        /// The subscription.
        subscription_id: Uuid,
        /// What the command tried.
        action: &'static str,
        /// The current status.
        status: &'static str,
    },
    /// Seats may be removed (or a subscription cancelled) only within the cancellation window.
    #[error("the cancellation window closed at {}", fmt_instant(.closed_at))]
    CancellationWindowClosed {
        /// When the (latest) window closed.
        closed_at: DateTime<Utc>,
    },
    /// Fewer seats are still refundable than the command removes.
    #[error("only {refundable} of the {requested} seats are still within their cancellation window (the next closes at {})", fmt_instant(.next_closes_at))]
    InsufficientRefundableSeats {
        /// Seats asked to remove.
        requested: u32,
        /// Seats still refundable.
        refundable: u32,
        /// When the earliest still-open window closes.
        next_closes_at: DateTime<Utc>,
    },
    /// A subscription keeps at least one seat; cancel it to drop them all.
    #[error(
        "removing {removing} of {quantity} seats would leave none: cancel the subscription instead"
    )]
    QuantityBelowMinimum {
        /// Current quantity.
        quantity: u32,
        /// Seats asked to remove.
        removing: u32,
    },
    /// A subscription holds at most [`crate::subscription::MAX_SEATS`] seats.
    #[error(
        "a subscription holds at most {limit} seats: it has {seats}, so at most {} more can be added, not {adding}",
        .limit.saturating_sub(*.seats)
    )]
    SeatLimitExceeded {
        /// The most seats a subscription may hold.
        limit: u32,
        /// Its seats now.
        seats: u32,
        /// Seats asked to add.
        adding: u32,
    },
    /// The subscription is not a trial.
    #[error("subscription {subscription_id} is not a trial")]
    NotATrial {
        /// The subscription.
        subscription_id: Uuid,
    },
    /// Upgrades go only to an offer listed among the offer's possible upgrades.
    #[error("{from} cannot be upgraded to {to}; allowed: {}", if .allowed.is_empty() { "none".to_owned() } else { .allowed.join(", ") })]
    UpgradeNotAllowed {
        /// The current offer's name.
        from: String,
        /// The target offer's name.
        to: String,
        /// Ids of the allowed targets.
        allowed: Vec<String>,
    },
    /// A subscription expires only at the end of its term.
    #[error("the term runs until {}", fmt_instant(.ends_at))]
    TermNotEnded {
        /// End of the current term.
        ends_at: DateTime<Utc>,
    },
    /// An expired subscription is disabled only after its grace period.
    #[error("the grace period runs until {}", fmt_instant(.ends_at))]
    GracePeriodNotOver {
        /// End of the grace period.
        ends_at: DateTime<Utc>,
    },
    /// A subscription renews only once its term has ended.
    #[error("the subscription renews at {}, not before", fmt_instant(.renews_at))]
    RenewalNotDue {
        /// The renewal instant.
        renews_at: DateTime<Utc>,
    },
    /// A deleted user can be restored within the restore window only.
    #[error("the restore window of this user closed at {} (deleted at {})", fmt_instant(.closed_at), fmt_instant(.deleted_at))]
    RestoreWindowExpired {
        /// When the user was deleted.
        deleted_at: DateTime<Utc>,
        /// When restoring stopped being possible.
        closed_at: DateTime<Utc>,
    },
    /// A purged user is gone for good.
    #[error("user {user_id} was purged and can never be restored or changed")]
    UserPurged {
        /// The user.
        user_id: Uuid,
    },
    /// The user is not deleted (restore or purge of an active user).
    #[error("user {user_id} is not deleted")]
    UserNotDeleted {
        /// The user.
        user_id: Uuid,
    },
    /// The user is deleted already.
    #[error("user {user_id} is already deleted (restorable until {})", fmt_instant(.restorable_until))]
    UserAlreadyDeleted {
        /// The user.
        user_id: Uuid,
        /// End of its restore window.
        restorable_until: DateTime<Utc>,
    },
    /// A deleted user is purged only once its restore window has closed.
    #[error("user {user_id} stays restorable until {}; purge is not due", fmt_instant(.due_at))]
    PurgeNotDue {
        /// The user.
        user_id: Uuid,
        /// When the purge becomes due.
        due_at: DateTime<Utc>,
    },
    /// The catalog refused an offer change.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

impl DomainError {
    /// The stable machine code of the rule that refused the command.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { entity, .. } => match entity {
                Entity::Tenant => "tenant_not_found",
                Entity::Subscription => "subscription_not_found",
                Entity::User => "user_not_found",
                Entity::Offer => "offer_not_found",
                Entity::Reseller => "reseller_not_found",
                Entity::BillingProfile => "billing_profile_not_found",
            },
            Self::AlreadyExists { .. } => "already_exists",
            Self::ParentOfferRequired { .. } => "parent_offer_required",
            Self::TrialNotAvailable { .. } => "trial_not_available",
            Self::TrialAlreadyUsed { .. } => "trial_already_used",
            Self::TrialQuantityFixed { .. } => "trial_quantity_fixed",
            Self::OfferNotAssignable { .. } => "offer_not_assignable",
            Self::OfferNotSubscribed { .. } => "offer_not_subscribed",
            Self::InsufficientLicenses { .. } => "insufficient_licenses",
            Self::ConflictingLicenseChange { .. } => "conflicting_license_change",
            Self::DuplicateUserPrincipalName => "duplicate_user_principal_name",
            Self::PrincipalDomainMismatch { .. } => "principal_domain_mismatch",
            Self::UserNotActive { .. } => "user_not_active",
            Self::InvalidSubscriptionState { .. } => "invalid_subscription_state",
            Self::CancellationWindowClosed { .. } => "cancellation_window_closed",
            Self::InsufficientRefundableSeats { .. } => "insufficient_refundable_seats",
            Self::QuantityBelowMinimum { .. } => "quantity_below_minimum",
            Self::SeatLimitExceeded { .. } => "seat_limit_exceeded",
            Self::NotATrial { .. } => "not_a_trial",
            Self::UpgradeNotAllowed { .. } => "upgrade_not_allowed",
            Self::TermNotEnded { .. } => "term_not_ended",
            Self::GracePeriodNotOver { .. } => "grace_period_not_over",
            Self::RenewalNotDue { .. } => "renewal_not_due",
            Self::RestoreWindowExpired { .. } => "restore_window_expired",
            Self::UserPurged { .. } => "user_purged",
            Self::UserNotDeleted { .. } => "user_not_deleted",
            Self::UserAlreadyDeleted { .. } => "user_already_deleted",
            Self::PurgeNotDue { .. } => "purge_not_due",
            Self::Catalog(inner) => inner.code(),
        }
    }

    /// A short human title for the rule (the `title` of a problem document).
    pub fn title(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "Not found",
            Self::AlreadyExists { .. } => "Already exists",
            Self::ParentOfferRequired { .. } => "Parent offer required",
            Self::TrialNotAvailable { .. } => "No trial for this offer",
            Self::TrialAlreadyUsed { .. } => "Trial already used",
            Self::TrialQuantityFixed { .. } => "Trial quantity is fixed",
            Self::OfferNotAssignable { .. } => "Offer cannot be assigned to users",
            Self::OfferNotSubscribed { .. } => "No subscription to this offer",
            Self::InsufficientLicenses { .. } => "Not enough licences",
            Self::ConflictingLicenseChange { .. } => "Conflicting licence change",
            Self::DuplicateUserPrincipalName => "User principal name taken",
            Self::PrincipalDomainMismatch { .. } => "Principal name outside the tenant's domain",
            Self::UserNotActive { .. } => "User is not active",
            Self::InvalidSubscriptionState { .. } => "Subscription state does not allow this",
            Self::CancellationWindowClosed { .. } => "Cancellation window closed",
            Self::InsufficientRefundableSeats { .. } => "Not enough refundable seats",
            Self::QuantityBelowMinimum { .. } => "A subscription keeps at least one seat",
            Self::SeatLimitExceeded { .. } => "Seat limit exceeded",
            Self::NotATrial { .. } => "Not a trial",
            Self::UpgradeNotAllowed { .. } => "Upgrade not allowed",
            Self::TermNotEnded { .. } => "Term has not ended",
            Self::GracePeriodNotOver { .. } => "Grace period not over",
            Self::RenewalNotDue { .. } => "Renewal not due",
            Self::RestoreWindowExpired { .. } => "Restore window expired",
            Self::UserPurged { .. } => "User purged",
            Self::UserNotDeleted { .. } => "User is not deleted",
            Self::UserAlreadyDeleted { .. } => "User already deleted",
            Self::PurgeNotDue { .. } => "Purge not due",
            Self::Catalog(_) => "Catalog change refused",
        }
    }

    /// Whether the refusal means "unknown id", "bad input" or "a rule says no".
    pub fn category(&self) -> ErrorCategory {
        match self {
            Self::NotFound { .. } => ErrorCategory::NotFound,
            Self::ConflictingLicenseChange { .. } | Self::Catalog(_) => ErrorCategory::InvalidInput,
            _ => ErrorCategory::RuleViolation,
        }
    }

    pub(crate) fn not_found(entity: Entity, id: impl ToString) -> Self {
        Self::NotFound {
            entity,
            id: id.to_string(),
        }
    }

    pub(crate) fn already_exists(entity: Entity, id: impl ToString) -> Self {
        Self::AlreadyExists {
            entity,
            id: id.to_string(),
        }
    }
}
