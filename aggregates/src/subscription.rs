//! A subscription: an offer bought for a tenant, its seats in batches (each with its own
//! cancellation window), its term, billing profile, lifecycle and upgrades.
//!
//! Every event that changes how its seats count carries a [`SeatSnapshot`], the absolute state
//! the tenant's pool folds in (see [`crate::policy`]), so that a late or repeated report can
//! never roll the pool back.

use chrono::{DateTime, Months, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::Offer;
use crate::error::{DomainError, Entity};
use crate::rules::CommercialRules;
use crate::tenant::{ParentChainProof, SeatSnapshot, SeatState};
use crate::values::{Quantity, Term, UnitPrice};

/// The most seats one subscription holds: as many as one command may ask for, and far below
/// where a seat count (a `u32`) or an invoice line (seats × price) could overflow.
pub const MAX_SEATS: u32 = Quantity::MAX;

/// Why a subscription was suspended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SuspensionReason {
    /// A partner or admin asked for it.
    Requested,
    /// The add-on's last qualifying parent subscription ended.
    ParentEnded {
        /// The parent subscription that ended.
        parent_subscription_id: Uuid,
    },
}

/// A subscription's lifecycle status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum SubscriptionStatus {
    /// In service.
    Active,
    /// Suspended: billed, not assignable.
    Suspended {
        /// Why.
        reason: SuspensionReason,
        /// Set when the term ended (or had ended) while suspended: the grace period still runs
        /// and ends then, suspended or not.
        grace_ends_at: Option<DateTime<Utc>>,
    },
    /// Cancelled within its window.
    Cancelled,
    /// Past its term, in the grace period (seats count as "warning").
    Expired {
        /// When the grace period ends and the subscription is disabled.
        grace_ends_at: DateTime<Utc>,
    },
    /// Out of service for good.
    Disabled,
}

impl SubscriptionStatus {
    /// The status as one word.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended { .. } => "suspended",
            Self::Cancelled => "cancelled",
            Self::Expired { .. } => "expired",
            Self::Disabled => "disabled",
        }
    }

    /// The status after a suspension: an expired subscription keeps its grace deadline.
    pub fn suspended(&self, reason: SuspensionReason) -> Self {
        let grace_ends_at = match self {
            Self::Expired { grace_ends_at } => Some(*grace_ends_at),
            Self::Suspended { grace_ends_at, .. } => *grace_ends_at,
            _ => None,
        };
        Self::Suspended {
            reason,
            grace_ends_at,
        }
    }

    /// The status after a reactivation: back to expired when the term ended meanwhile.
    pub fn reactivated(&self) -> Self {
        match self {
            Self::Suspended {
                grace_ends_at: Some(grace_ends_at),
                ..
            } => Self::Expired {
                grace_ends_at: *grace_ends_at,
            },
            _ => Self::Active,
        }
    }

    /// The status after the term ends: a suspended subscription stays suspended (its seats do
    /// not become assignable) but its grace period starts all the same.
    pub fn expired(&self, grace_ends_at: DateTime<Utc>) -> Self {
        match self {
            Self::Suspended { reason, .. } => Self::Suspended {
                reason: reason.clone(),
                grace_ends_at: Some(grace_ends_at),
            },
            _ => Self::Expired { grace_ends_at },
        }
    }

    /// When the grace period ends, if it runs.
    pub fn grace_ends_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::Expired { grace_ends_at } => Some(*grace_ends_at),
            Self::Suspended { grace_ends_at, .. } => *grace_ends_at,
            _ => None,
        }
    }

    /// How seats in this status count in the tenant's pool.
    pub fn seat_state(&self) -> SeatState {
        match self {
            Self::Active => SeatState::Enabled,
            Self::Expired { .. } => SeatState::Warning,
            Self::Suspended { .. } => SeatState::Suspended,
            Self::Cancelled | Self::Disabled => SeatState::Inactive,
        }
    }
}

/// Seats added together, refundable until one instant (Microsoft's refundableQuantity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatBatch {
    /// The batch's number within the subscription.
    pub batch: u32,
    /// Seats still in it.
    pub seats: u32,
    /// When they were bought (or the window reopened, on renewal or conversion).
    pub added_at: DateTime<Utc>,
    /// Until when they may be removed.
    pub refundable_until: DateTime<Utc>,
}

/// Seats taken from one batch by a removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchDraw {
    /// The batch.
    pub batch: u32,
    /// Seats taken from it.
    pub seats: u32,
}

/// One upgrade in the subscription's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeRecord {
    /// The offer before.
    pub from: Offer,
    /// The offer after.
    pub to: Offer,
    /// When.
    pub at: DateTime<Utc>,
}

/// Commands to a subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionCommand {
    /// Opens the subscription from the tenant's purchase (idempotent).
    Open {
        /// The subscription's id.
        subscription_id: Uuid,
        /// The tenant that bought it.
        tenant_id: Uuid,
        /// The offer, price included.
        offer: Offer,
        /// Seats.
        quantity: u32,
        /// Term.
        term: Term,
        /// Who pays.
        billing_profile_id: Uuid,
        /// Whether a trial.
        trial: bool,
        /// When it was bought.
        at: DateTime<Utc>,
    },
    /// Adds seats (a new batch with its own cancellation window).
    AddLicenses {
        /// Seats to add.
        count: Quantity,
        /// When.
        at: DateTime<Utc>,
    },
    /// Removes seats still within their cancellation window, newest first.
    RemoveLicenses {
        /// Seats to remove.
        count: Quantity,
        /// When.
        at: DateTime<Utc>,
    },
    /// Suspends the subscription (idempotent).
    Suspend {
        /// Why.
        reason: SuspensionReason,
        /// When.
        at: DateTime<Utc>,
    },
    /// Reactivates a suspended subscription; an add-on needs proof of its parent chain.
    Reactivate {
        /// For an add-on: proof, from the tenant, that a parent chain holds now.
        parent_chain: Option<ParentChainProof>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Cancels within the cancellation window of the purchase, renewal or conversion.
    Cancel {
        /// When.
        at: DateTime<Utc>,
    },
    /// Converts a trial to paid, opening a fresh cancellation window.
    ConvertTrial {
        /// When.
        at: DateTime<Utc>,
    },
    /// Moves to an offer among the current offer's possible upgrades.
    Upgrade {
        /// The target offer as the catalog lists it now.
        target: Offer,
        /// When.
        at: DateTime<Utc>,
    },
    /// Renews for another term once the current one has ended.
    Renew {
        /// When.
        at: DateTime<Utc>,
    },
    /// Lets the subscription expire at the end of its term (or trial): grace period begins.
    Expire {
        /// When.
        at: DateTime<Utc>,
    },
    /// Disables an expired subscription once its grace period is over.
    Disable {
        /// When.
        at: DateTime<Utc>,
    },
    /// Moves the subscription to another billing profile.
    AssignBillingProfile {
        /// The new billing profile.
        billing_profile_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Events of a subscription: the `subscription` aggregate, one stream per subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum SubscriptionEvent {
    /// The subscription's stream opened with its first batch of seats: follows the tenant's
    /// `SubscriptionPurchased`. A trial has `trial_ends_at` set and expires then unless converted.
    SubscriptionOpened {
        /// The subscription's id, the subject of its stream.
        subscription_id: Uuid,
        /// The tenant that bought it.
        tenant_id: Uuid,
        /// The offer, price included.
        offer: Offer,
        /// Seats bought.
        quantity: u32,
        /// How long a term runs before it renews.
        term: Term,
        /// The billing profile whose invoice the subscription goes on.
        billing_profile_id: Uuid,
        /// Whether it is a trial.
        trial: bool,
        /// When the trial ends; `null` for a paid subscription.
        trial_ends_at: Option<DateTime<Utc>>,
        /// When the current term ends.
        renews_at: DateTime<Utc>,
        /// When the first batch stops being refundable.
        refundable_until: DateTime<Utc>,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// Seats were added (`POST /v1/subscriptions/{subscription_id}/licenses:add`, AddLicense) as a
    /// new batch with its own cancellation window.
    LicensesAdded {
        /// How many seats were added.
        count: u32,
        /// The number of the new batch within the subscription (`drawn` of a later removal names
        /// it).
        batch: u32,
        /// Until when they are refundable.
        refundable_until: DateTime<Utc>,
        /// The unit price they are billed at.
        unit_price: UnitPrice,
        /// The subscription's seats after the change, as the tenant's pool counts them.
        seats: SeatSnapshot,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// Seats still within their cancellation window were removed (`POST
    /// /v1/subscriptions/{subscription_id}/licenses:remove`, RemoveLicense), newest batches first.
    LicensesRemoved {
        /// How many seats were removed.
        count: u32,
        /// From which batches.
        drawn: Vec<BatchDraw>,
        /// The unit price the seats are billed at now (the current offer's, after an upgrade).
        unit_price: UnitPrice,
        /// The subscription's seats after the change, as the tenant's pool counts them.
        seats: SeatSnapshot,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// The subscription was suspended: on request (`POST
    /// /v1/subscriptions/{subscription_id}:suspend`, reason `requested`) or, for an add-on, after
    /// its last qualifying parent ended (`AddOnOrphaned`, reason `parent_ended`). Its seats are
    /// still billed but cannot be assigned.
    SubscriptionSuspended {
        /// Why it was suspended.
        reason: SuspensionReason,
        /// The subscription's seats after the change, as the tenant's pool counts them.
        seats: SeatSnapshot,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// A suspended subscription was reactivated (`POST
    /// /v1/subscriptions/{subscription_id}:reactivate`; an add-on only while a parent chain holds).
    /// Its seats count as enabled again, or as warning when its term ended while it was suspended.
    SubscriptionReactivated {
        /// The subscription's seats after the change, as the tenant's pool counts them.
        seats: SeatSnapshot,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// The subscription was cancelled (`POST /v1/subscriptions/{subscription_id}:cancel`) within
    /// the cancellation window of its purchase, renewal or conversion (a trial at any time); its
    /// seats leave the pool.
    SubscriptionCancelled {
        /// The subscription's seats after the change (state `inactive`: out of the pool).
        seats: SeatSnapshot,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// A trial became a paid subscription (`POST
    /// /v1/subscriptions/{subscription_id}:convert-trial`), with a fresh cancellation window and a
    /// first paid term.
    TrialConverted {
        /// The start of the paid term's cancellation window closes then.
        refundable_until: DateTime<Utc>,
        /// When the first paid term ends.
        renews_at: DateTime<Utc>,
        /// The subscription's seats after the change, as the tenant's pool counts them.
        seats: SeatSnapshot,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// The subscription moved to one of its offer's possible upgrades (`POST
    /// /v1/subscriptions/{subscription_id}:upgrade`); `seats` carries the new offer and its price.
    SubscriptionUpgraded {
        /// The offer before.
        from: Offer,
        /// The resulting seats (with the new offer and price).
        seats: SeatSnapshot,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// The subscription was renewed for another term once the current one had ended (Renew); every
    /// seat is refundable again for a window. (The service issues no Renew yet: today paid
    /// subscriptions neither renew nor expire.)
    SubscriptionRenewed {
        /// When the new term ends.
        renews_at: DateTime<Utc>,
        /// Until when the renewed seats are refundable.
        refundable_until: DateTime<Utc>,
        /// The subscription's seats after the change, as the tenant's pool counts them.
        seats: SeatSnapshot,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// The subscription's term ended without a renewal and its grace period began (today only
    /// trials expire, by a durable timer at `trial_ends_at`). Its seats count as warning, still
    /// assignable, until `grace_ends_at`; a subscription suspended at that moment stays suspended
    /// while the grace period runs.
    SubscriptionExpired {
        /// When the grace period ends.
        grace_ends_at: DateTime<Utc>,
        /// The subscription's seats after the change (state `warning`, or `suspended` when it was
        /// suspended).
        seats: SeatSnapshot,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// An expired subscription's grace period ended (durable timer at `grace_ends_at`): it is out
    /// of service for good and its seats leave the pool.
    SubscriptionDisabled {
        /// The subscription's seats after the change (state `inactive`: out of the pool).
        seats: SeatSnapshot,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// The subscription moved to another billing profile (`PUT
    /// /v1/subscriptions/{subscription_id}/billing-profile`); its charges go on `to`'s invoice from
    /// now on.
    BillingProfileAssigned {
        /// The tenant the subscription belongs to.
        tenant_id: Uuid,
        /// The profile before.
        from: Uuid,
        /// The profile after.
        to: Uuid,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
}

impl SubscriptionEvent {
    /// The seats this event reports to the tenant's pool, if it changes them.
    pub fn seats(&self) -> Option<&SeatSnapshot> {
        match self {
            Self::SubscriptionOpened { .. } | Self::BillingProfileAssigned { .. } => None,
            Self::LicensesAdded { seats, .. }
            | Self::LicensesRemoved { seats, .. }
            | Self::SubscriptionSuspended { seats, .. }
            | Self::SubscriptionReactivated { seats, .. }
            | Self::SubscriptionCancelled { seats, .. }
            | Self::TrialConverted { seats, .. }
            | Self::SubscriptionUpgraded { seats, .. }
            | Self::SubscriptionRenewed { seats, .. }
            | Self::SubscriptionExpired { seats, .. }
            | Self::SubscriptionDisabled { seats, .. } => Some(seats),
        }
    }

    /// When the change happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::SubscriptionOpened { at, .. }
            | Self::LicensesAdded { at, .. }
            | Self::LicensesRemoved { at, .. }
            | Self::SubscriptionSuspended { at, .. }
            | Self::SubscriptionReactivated { at, .. }
            | Self::SubscriptionCancelled { at, .. }
            | Self::TrialConverted { at, .. }
            | Self::SubscriptionUpgraded { at, .. }
            | Self::SubscriptionRenewed { at, .. }
            | Self::SubscriptionExpired { at, .. }
            | Self::SubscriptionDisabled { at, .. }
            | Self::BillingProfileAssigned { at, .. } => *at,
        }
    }
}

impl SubscriptionEvent {
    /// The schema version of every subscription event: the `v<N>` of their CloudEvents types and
    /// what [`DomainEvent::event_version`] records. Raise it for a change that breaks readers of
    /// the JSON (an upcaster then reads the old one); an added field does not.
    pub const EVENT_VERSION: &'static str = "1";
}

impl DomainEvent for SubscriptionEvent {
    fn event_type(&self) -> String {
        match self {
            Self::SubscriptionOpened { .. } => "SubscriptionOpened",
            Self::LicensesAdded { .. } => "LicensesAdded",
            Self::LicensesRemoved { .. } => "LicensesRemoved",
            Self::SubscriptionSuspended { .. } => "SubscriptionSuspended",
            Self::SubscriptionReactivated { .. } => "SubscriptionReactivated",
            Self::SubscriptionCancelled { .. } => "SubscriptionCancelled",
            Self::TrialConverted { .. } => "TrialConverted",
            Self::SubscriptionUpgraded { .. } => "SubscriptionUpgraded",
            Self::SubscriptionRenewed { .. } => "SubscriptionRenewed",
            Self::SubscriptionExpired { .. } => "SubscriptionExpired",
            Self::SubscriptionDisabled { .. } => "SubscriptionDisabled",
            Self::BillingProfileAssigned { .. } => "BillingProfileAssigned",
        }
        .into()
    }

    fn event_version(&self) -> String {
        Self::EVENT_VERSION.into()
    }
}

/// The state of an opened subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionState {
    /// Its id.
    pub subscription_id: Uuid,
    /// The tenant.
    pub tenant_id: Uuid,
    /// The current offer (price included).
    pub offer: Offer,
    /// Seats.
    pub quantity: u32,
    /// Term.
    pub term: Term,
    /// Who pays.
    pub billing_profile_id: Uuid,
    /// Whether still a trial.
    pub trial: bool,
    /// When the trial ends, for a trial.
    pub trial_ends_at: Option<DateTime<Utc>>,
    /// Lifecycle status.
    pub status: SubscriptionStatus,
    /// Seat batches with their windows (batches emptied by removals are dropped).
    pub batches: Vec<SeatBatch>,
    /// The number the next batch gets.
    pub next_batch: u32,
    /// When it was bought.
    pub purchased_at: DateTime<Utc>,
    /// Until when the whole subscription may be cancelled (purchase, renewal or conversion +
    /// the window).
    pub cancellable_until: DateTime<Utc>,
    /// When the current term ends.
    pub renews_at: DateTime<Utc>,
    /// The instant terms are counted from (purchase, or conversion of a trial), so that
    /// monthly renewals keep their day of the month (Jan 31 → Feb 28 → Mar 31).
    pub term_anchor: DateTime<Utc>,
    /// Renewals since the anchor.
    pub renewals: u32,
    /// Upgrades so far.
    pub upgrades: Vec<UpgradeRecord>,
}

impl SubscriptionState {
    /// The seats as the tenant's pool should count them.
    pub fn snapshot(&self) -> SeatSnapshot {
        SeatSnapshot {
            tenant_id: self.tenant_id,
            offer: self.offer.clone(),
            quantity: self.quantity,
            state: self.status.seat_state(),
        }
    }

    /// Seats removable at `at` (the sum of batches whose window is still open).
    pub fn refundable_at(&self, at: DateTime<Utc>) -> u32 {
        self.batches
            .iter()
            .filter(|batch| at <= batch.refundable_until)
            .map(|batch| batch.seats)
            .sum()
    }

    fn refuse(&self, action: &'static str) -> DomainError {
        DomainError::InvalidSubscriptionState {
            subscription_id: self.subscription_id,
            action,
            status: self.status.label(),
        }
    }

    fn require_active(&self, action: &'static str) -> Result<(), DomainError> {
        if self.status == SubscriptionStatus::Active {
            Ok(())
        } else {
            Err(self.refuse(action))
        }
    }

    fn with(&self, change: impl FnOnce(&mut Self)) -> SeatSnapshot {
        let mut next = self.clone();
        change(&mut next);
        next.snapshot()
    }

    fn remove_events(
        &self,
        count: u32,
        at: DateTime<Utc>,
    ) -> Result<SubscriptionEvent, DomainError> {
        self.require_active("remove licences from")?;
        if self.trial {
            return Err(DomainError::TrialQuantityFixed {
                seats: self.quantity,
            });
        }
        if count >= self.quantity {
            return Err(DomainError::QuantityBelowMinimum {
                quantity: self.quantity,
                removing: count,
            });
        }
        let refundable = self.refundable_at(at);
        if refundable == 0 {
            let closed_at = self
                .batches
                .iter()
                .map(|batch| batch.refundable_until)
                .max()
                .unwrap_or(self.cancellable_until);
            return Err(DomainError::CancellationWindowClosed { closed_at });
        }
        if refundable < count {
            let next_closes_at = self
                .batches
                .iter()
                .filter(|batch| at <= batch.refundable_until)
                .map(|batch| batch.refundable_until)
                .min()
                .expect("some batch is refundable");
            return Err(DomainError::InsufficientRefundableSeats {
                requested: count,
                refundable,
                next_closes_at,
            });
        }
        // Newest seats first: they are the ones the customer most likely over-bought.
        let mut left = count;
        let mut drawn = Vec::new();
        for batch in self.batches.iter().rev() {
            if left == 0 {
                break;
            }
            if at <= batch.refundable_until && batch.seats > 0 {
                let take = left.min(batch.seats);
                drawn.push(BatchDraw {
                    batch: batch.batch,
                    seats: take,
                });
                left -= take;
            }
        }
        Ok(SubscriptionEvent::LicensesRemoved {
            count,
            drawn,
            unit_price: self.offer.unit_price.clone(),
            seats: self.with(|next| next.quantity -= count),
            at,
        })
    }

    fn renewal_after(&self, renewals: u32) -> DateTime<Utc> {
        add_months(self.term_anchor, self.term.months() * (renewals + 1))
    }

    fn term_end(&self) -> DateTime<Utc> {
        self.trial_ends_at
            .filter(|_| self.trial)
            .unwrap_or(self.renews_at)
    }
}

fn add_months(at: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    at.checked_add_months(Months::new(months))
        .expect("dates stay far from the end of chrono's range")
}

/// The subscription aggregate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// `None` until opened.
    pub state: Option<SubscriptionState>,
}

impl Subscription {
    fn opened(&self) -> Result<&SubscriptionState, DomainError> {
        self.state
            .as_ref()
            .ok_or_else(|| DomainError::not_found(Entity::Subscription, ""))
    }

    fn decide(
        &self,
        command: SubscriptionCommand,
        rules: &CommercialRules,
    ) -> Result<Vec<SubscriptionEvent>, DomainError> {
        if let SubscriptionCommand::Open {
            subscription_id,
            tenant_id,
            offer,
            quantity,
            term,
            billing_profile_id,
            trial,
            at,
        } = command
        {
            if let Some(state) = &self.state {
                // The policy may deliver the purchase twice; the second is not a new subscription.
                return if state.subscription_id == subscription_id {
                    Ok(Vec::new())
                } else {
                    Err(DomainError::already_exists(
                        Entity::Subscription,
                        subscription_id,
                    ))
                };
            }
            let trial_ends_at = trial.then(|| at + rules.trial_length);
            return Ok(vec![SubscriptionEvent::SubscriptionOpened {
                subscription_id,
                tenant_id,
                offer,
                quantity,
                term,
                billing_profile_id,
                trial,
                trial_ends_at,
                renews_at: trial_ends_at.unwrap_or_else(|| add_months(at, term.months())),
                refundable_until: at + rules.cancellation_window,
                at,
            }]);
        }
        let state = self.opened()?;
        let event = match command {
            SubscriptionCommand::Open { .. } => unreachable!("handled above"),
            SubscriptionCommand::AddLicenses { count, at } => {
                state.require_active("add licences to")?;
                if state.trial {
                    return Err(DomainError::TrialQuantityFixed {
                        seats: state.quantity,
                    });
                }
                let total = state
                    .quantity
                    .checked_add(count.get())
                    .filter(|total| *total <= MAX_SEATS)
                    .ok_or(DomainError::SeatLimitExceeded {
                        limit: MAX_SEATS,
                        seats: state.quantity,
                        adding: count.get(),
                    })?;
                SubscriptionEvent::LicensesAdded {
                    count: count.get(),
                    batch: state.next_batch,
                    refundable_until: at + rules.cancellation_window,
                    unit_price: state.offer.unit_price.clone(),
                    seats: state.with(|next| next.quantity = total),
                    at,
                }
            }
            SubscriptionCommand::RemoveLicenses { count, at } => {
                state.remove_events(count.get(), at)?
            }
            SubscriptionCommand::Suspend { reason, at } => match &state.status {
                SubscriptionStatus::Suspended { .. } => return Ok(Vec::new()),
                SubscriptionStatus::Active | SubscriptionStatus::Expired { .. } => {
                    let status = state.status.suspended(reason.clone());
                    SubscriptionEvent::SubscriptionSuspended {
                        reason,
                        seats: state.with(|next| next.status = status),
                        at,
                    }
                }
                _ => return Err(state.refuse("suspend")),
            },
            SubscriptionCommand::Reactivate { parent_chain, at } => {
                if !matches!(state.status, SubscriptionStatus::Suspended { .. }) {
                    return Err(state.refuse("reactivate"));
                }
                let proven = parent_chain
                    .as_ref()
                    .is_some_and(|proof| proof.offer_id() == state.offer.id);
                if state.offer.is_add_on() && !proven {
                    return Err(DomainError::ParentOfferRequired {
                        offer_id: state.offer.id,
                        offer_name: state.offer.name.to_string(),
                        possible_parents: state
                            .offer
                            .parent_offers
                            .iter()
                            .map(ToString::to_string)
                            .collect(),
                    });
                }
                SubscriptionEvent::SubscriptionReactivated {
                    seats: state.with(|next| next.status = next.status.reactivated()),
                    at,
                }
            }
            SubscriptionCommand::Cancel { at } => {
                if !matches!(
                    state.status,
                    SubscriptionStatus::Active | SubscriptionStatus::Suspended { .. }
                ) {
                    return Err(state.refuse("cancel"));
                }
                if !state.trial && at > state.cancellable_until {
                    return Err(DomainError::CancellationWindowClosed {
                        closed_at: state.cancellable_until,
                    });
                }
                SubscriptionEvent::SubscriptionCancelled {
                    seats: state.with(|next| next.status = SubscriptionStatus::Cancelled),
                    at,
                }
            }
            SubscriptionCommand::ConvertTrial { at } => {
                if !state.trial {
                    return Err(DomainError::NotATrial {
                        subscription_id: state.subscription_id,
                    });
                }
                if !matches!(
                    state.status,
                    SubscriptionStatus::Active | SubscriptionStatus::Expired { .. }
                ) {
                    return Err(state.refuse("convert"));
                }
                SubscriptionEvent::TrialConverted {
                    refundable_until: at + rules.cancellation_window,
                    renews_at: add_months(at, state.term.months()),
                    seats: state.with(|next| next.status = SubscriptionStatus::Active),
                    at,
                }
            }
            SubscriptionCommand::Upgrade { target, at } => {
                state.require_active("upgrade")?;
                if state.trial {
                    return Err(state.refuse("upgrade a trial of"));
                }
                if !state.offer.possible_upgrades.contains(&target.id) {
                    return Err(DomainError::UpgradeNotAllowed {
                        from: state.offer.name.to_string(),
                        to: target.name.to_string(),
                        allowed: state
                            .offer
                            .possible_upgrades
                            .iter()
                            .map(ToString::to_string)
                            .collect(),
                    });
                }
                SubscriptionEvent::SubscriptionUpgraded {
                    from: state.offer.clone(),
                    seats: state.with(|next| next.offer = target),
                    at,
                }
            }
            SubscriptionCommand::Renew { at } => {
                if state.trial {
                    return Err(state.refuse("renew a trial of"));
                }
                if !matches!(
                    state.status,
                    SubscriptionStatus::Active | SubscriptionStatus::Expired { .. }
                ) {
                    return Err(state.refuse("renew"));
                }
                if at < state.renews_at {
                    return Err(DomainError::RenewalNotDue {
                        renews_at: state.renews_at,
                    });
                }
                SubscriptionEvent::SubscriptionRenewed {
                    renews_at: state.renewal_after(state.renewals + 1),
                    refundable_until: at + rules.cancellation_window,
                    seats: state.with(|next| next.status = SubscriptionStatus::Active),
                    at,
                }
            }
            SubscriptionCommand::Expire { at } => {
                // A timer may fire twice; the second finds the work done.
                if state.status.grace_ends_at().is_some() {
                    return Ok(Vec::new());
                }
                if !matches!(
                    state.status,
                    SubscriptionStatus::Active | SubscriptionStatus::Suspended { .. }
                ) {
                    return Err(state.refuse("expire"));
                }
                if at < state.term_end() {
                    return Err(DomainError::TermNotEnded {
                        ends_at: state.term_end(),
                    });
                }
                // The grace period runs from the end of the term, however late this runs.
                let grace_ends_at = state.term_end() + rules.grace_period;
                SubscriptionEvent::SubscriptionExpired {
                    grace_ends_at,
                    seats: state.with(|next| next.status = next.status.expired(grace_ends_at)),
                    at,
                }
            }
            SubscriptionCommand::Disable { at } => match state.status.grace_ends_at() {
                _ if state.status == SubscriptionStatus::Disabled => return Ok(Vec::new()),
                Some(grace_ends_at) if at >= grace_ends_at => {
                    SubscriptionEvent::SubscriptionDisabled {
                        seats: state.with(|next| next.status = SubscriptionStatus::Disabled),
                        at,
                    }
                }
                Some(grace_ends_at) => {
                    return Err(DomainError::GracePeriodNotOver {
                        ends_at: grace_ends_at,
                    })
                }
                None => return Err(state.refuse("disable")),
            },
            SubscriptionCommand::AssignBillingProfile {
                billing_profile_id,
                at,
            } => {
                if matches!(
                    state.status,
                    SubscriptionStatus::Cancelled | SubscriptionStatus::Disabled
                ) {
                    return Err(state.refuse("move the billing profile of"));
                }
                if state.billing_profile_id == billing_profile_id {
                    return Ok(Vec::new());
                }
                SubscriptionEvent::BillingProfileAssigned {
                    tenant_id: state.tenant_id,
                    from: state.billing_profile_id,
                    to: billing_profile_id,
                    at,
                }
            }
        };
        Ok(vec![event])
    }
}

impl Aggregate for Subscription {
    const TYPE: &'static str = "subscription";
    type Command = SubscriptionCommand;
    type Event = SubscriptionEvent;
    type Error = DomainError;
    type Services = CommercialRules;

    async fn handle(
        &mut self,
        command: Self::Command,
        rules: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command, rules)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        if let SubscriptionEvent::SubscriptionOpened {
            subscription_id,
            tenant_id,
            offer,
            quantity,
            term,
            billing_profile_id,
            trial,
            trial_ends_at,
            renews_at,
            refundable_until,
            at,
        } = event
        {
            self.state = Some(SubscriptionState {
                subscription_id,
                tenant_id,
                offer,
                quantity,
                term,
                billing_profile_id,
                trial,
                trial_ends_at,
                status: SubscriptionStatus::Active,
                batches: vec![SeatBatch {
                    batch: 1,
                    seats: quantity,
                    added_at: at,
                    refundable_until,
                }],
                next_batch: 2,
                purchased_at: at,
                cancellable_until: refundable_until,
                renews_at,
                term_anchor: at,
                renewals: 0,
                upgrades: Vec::new(),
            });
            return;
        }
        let Some(state) = self.state.as_mut() else {
            return;
        };
        if let Some(seats) = event.seats() {
            state.quantity = seats.quantity;
            state.offer = seats.offer.clone();
        }
        match event {
            SubscriptionEvent::SubscriptionOpened { .. } => {}
            SubscriptionEvent::LicensesAdded {
                count,
                batch,
                refundable_until,
                at,
                ..
            } => {
                state.batches.push(SeatBatch {
                    batch,
                    seats: count,
                    added_at: at,
                    refundable_until,
                });
                state.next_batch = batch + 1;
            }
            SubscriptionEvent::LicensesRemoved { drawn, .. } => {
                for draw in drawn {
                    if let Some(batch) = state.batches.iter_mut().find(|b| b.batch == draw.batch) {
                        batch.seats -= draw.seats.min(batch.seats);
                    }
                }
                state.batches.retain(|batch| batch.seats > 0);
            }
            SubscriptionEvent::SubscriptionSuspended { reason, .. } => {
                state.status = state.status.suspended(reason);
            }
            SubscriptionEvent::SubscriptionReactivated { .. } => {
                state.status = state.status.reactivated();
            }
            SubscriptionEvent::SubscriptionCancelled { .. } => {
                state.status = SubscriptionStatus::Cancelled;
            }
            SubscriptionEvent::TrialConverted {
                refundable_until,
                renews_at,
                at,
                ..
            } => {
                state.trial = false;
                state.trial_ends_at = None;
                state.status = SubscriptionStatus::Active;
                state.renews_at = renews_at;
                state.term_anchor = at;
                state.renewals = 0;
                state.cancellable_until = refundable_until;
                state.batches = vec![SeatBatch {
                    batch: state.next_batch,
                    seats: state.quantity,
                    added_at: at,
                    refundable_until,
                }];
                state.next_batch += 1;
            }
            SubscriptionEvent::SubscriptionUpgraded { from, seats, at } => {
                state.upgrades.push(UpgradeRecord {
                    from,
                    to: seats.offer,
                    at,
                });
            }
            SubscriptionEvent::SubscriptionRenewed {
                renews_at,
                refundable_until,
                ..
            } => {
                state.status = SubscriptionStatus::Active;
                state.renews_at = renews_at;
                state.renewals += 1;
                state.cancellable_until = refundable_until;
                for batch in &mut state.batches {
                    batch.refundable_until = refundable_until;
                }
            }
            SubscriptionEvent::SubscriptionExpired { grace_ends_at, .. } => {
                state.status = state.status.expired(grace_ends_at);
            }
            SubscriptionEvent::SubscriptionDisabled { .. } => {
                state.status = SubscriptionStatus::Disabled;
            }
            SubscriptionEvent::BillingProfileAssigned { to, .. } => {
                state.billing_profile_id = to;
            }
        }
    }
}
