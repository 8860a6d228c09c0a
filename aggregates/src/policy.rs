//! Process managers: the steps that cross aggregates, as pure functions from one event to the
//! follow-up commands and timers it calls for.
//!
//! The service runs them durably (a checkpointed consumer of the log) and may also run them
//! right after a command; delivering an event twice is harmless, because every follow-up
//! command is idempotent: opening an opened subscription, releasing released licences,
//! reinstating an active user, forgetting a forgotten one, or a seat report older than the last
//! one, all decide no event. Timers have deterministic keys, so scheduling twice is one timer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::subscription::{SubscriptionCommand, SubscriptionEvent, SuspensionReason};
use crate::tenant::{SeatState, TenantCommand, TenantEvent};
use crate::user::{UserCommand, UserEvent};

/// What a durable timer does when it falls due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum TimerAction {
    /// Purge a deleted user whose restore window closed.
    PurgeUser {
        /// The user.
        user_id: Uuid,
    },
    /// Let a trial expire at its end.
    ExpireSubscription {
        /// The subscription.
        subscription_id: Uuid,
    },
    /// Disable an expired subscription at the end of its grace period.
    DisableSubscription {
        /// The subscription.
        subscription_id: Uuid,
    },
}

impl TimerAction {
    /// The command to run when the timer fires at `now` (the service's clock).
    pub fn follow_up(&self, now: DateTime<Utc>) -> FollowUp {
        match *self {
            Self::PurgeUser { user_id } => FollowUp::User {
                user_id,
                command: UserCommand::PurgeUser { at: now },
            },
            Self::ExpireSubscription { subscription_id } => FollowUp::Subscription {
                subscription_id,
                command: SubscriptionCommand::Expire { at: now },
            },
            Self::DisableSubscription { subscription_id } => FollowUp::Subscription {
                subscription_id,
                command: SubscriptionCommand::Disable { at: now },
            },
        }
    }
}

/// A durable timer: fires `action` once the service's clock reaches `due_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// A deterministic key: scheduling the same timer twice keeps one, cancelling names it.
    pub key: String,
    /// When it falls due.
    pub due_at: DateTime<Utc>,
    /// What it does.
    pub action: TimerAction,
}

fn purge_key(user_id: Uuid) -> String {
    format!("purge-user/{user_id}")
}

fn expire_key(subscription_id: Uuid) -> String {
    format!("expire-subscription/{subscription_id}")
}

fn disable_key(subscription_id: Uuid) -> String {
    format!("disable-subscription/{subscription_id}")
}

/// One step a process manager asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowUp {
    /// A command to a tenant.
    Tenant {
        /// The tenant.
        tenant_id: Uuid,
        /// The command.
        command: TenantCommand,
    },
    /// A command to a subscription.
    Subscription {
        /// The subscription.
        subscription_id: Uuid,
        /// The command.
        command: SubscriptionCommand,
    },
    /// A command to a user.
    User {
        /// The user.
        user_id: Uuid,
        /// The command.
        command: UserCommand,
    },
    /// Schedule (or re-schedule) a timer.
    Schedule(Timer),
    /// Cancel the timer with this key, if any.
    Cancel {
        /// The timer's key.
        key: String,
    },
}

/// Follow-ups of a tenant event: open the bought subscription, create the registered user,
/// suspend an add-on that lost its parent.
pub fn on_tenant_event(tenant_id: Uuid, event: &TenantEvent) -> Vec<FollowUp> {
    match event {
        TenantEvent::SubscriptionPurchased {
            subscription_id,
            offer,
            quantity,
            term,
            billing_profile_id,
            trial,
            at,
        } => vec![FollowUp::Subscription {
            subscription_id: *subscription_id,
            command: SubscriptionCommand::Open {
                subscription_id: *subscription_id,
                tenant_id,
                offer: offer.clone(),
                quantity: *quantity,
                term: *term,
                billing_profile_id: *billing_profile_id,
                trial: *trial,
                at: *at,
            },
        }],
        TenantEvent::UserRegistered {
            user_id,
            details,
            role,
            at,
            ..
        } => vec![FollowUp::User {
            user_id: *user_id,
            command: UserCommand::CreateUser {
                user_id: *user_id,
                tenant_id,
                details: details.clone(),
                role: *role,
                at: *at,
            },
        }],
        TenantEvent::AddOnOrphaned {
            subscription_id,
            parent_subscription_id,
            at,
            ..
        } => vec![FollowUp::Subscription {
            subscription_id: *subscription_id,
            command: SubscriptionCommand::Suspend {
                reason: SuspensionReason::ParentEnded {
                    parent_subscription_id: *parent_subscription_id,
                },
                at: *at,
            },
        }],
        TenantEvent::TenantCreated { .. }
        | TenantEvent::SubscriptionSeatsChanged { .. }
        | TenantEvent::LicensesMigrated { .. }
        | TenantEvent::LicensesAssigned { .. }
        | TenantEvent::UserLicensesReleased { .. }
        | TenantEvent::UserLicensesReinstated { .. }
        | TenantEvent::UserForgotten { .. } => Vec::new(),
    }
}

/// Follow-ups of a subscription event: report its seats to the tenant's pool, and keep the
/// trial-expiry and grace-period timers in step with its status. `sequence` is the event's
/// sequence number in the subscription's stream.
pub fn on_subscription_event(
    subscription_id: Uuid,
    sequence: u64,
    event: &SubscriptionEvent,
) -> Vec<FollowUp> {
    let mut follow_ups = Vec::new();
    if let Some(seats) = event.seats() {
        follow_ups.push(FollowUp::Tenant {
            tenant_id: seats.tenant_id,
            command: TenantCommand::SyncSubscription {
                subscription_id,
                source_sequence: sequence,
                seats: seats.clone(),
                at: event.at(),
            },
        });
    }
    match event {
        SubscriptionEvent::SubscriptionOpened {
            trial_ends_at: Some(ends_at),
            ..
        } => follow_ups.push(FollowUp::Schedule(Timer {
            key: expire_key(subscription_id),
            due_at: *ends_at,
            action: TimerAction::ExpireSubscription { subscription_id },
        })),
        SubscriptionEvent::TrialConverted { .. } => {
            // A trial may be converted during its grace period: both timers go.
            follow_ups.push(FollowUp::Cancel {
                key: expire_key(subscription_id),
            });
            follow_ups.push(FollowUp::Cancel {
                key: disable_key(subscription_id),
            });
        }
        SubscriptionEvent::SubscriptionExpired { grace_ends_at, .. } => {
            follow_ups.push(FollowUp::Schedule(Timer {
                key: disable_key(subscription_id),
                due_at: *grace_ends_at,
                action: TimerAction::DisableSubscription { subscription_id },
            }))
        }
        // Back in service: no disable is due. A suspension, or a reactivation into the grace
        // period, leaves the deadline standing.
        SubscriptionEvent::SubscriptionRenewed { .. } => follow_ups.push(FollowUp::Cancel {
            key: disable_key(subscription_id),
        }),
        SubscriptionEvent::SubscriptionReactivated { seats, .. }
            if seats.state == SeatState::Enabled =>
        {
            follow_ups.push(FollowUp::Cancel {
                key: disable_key(subscription_id),
            })
        }
        SubscriptionEvent::SubscriptionCancelled { .. } => {
            follow_ups.push(FollowUp::Cancel {
                key: expire_key(subscription_id),
            });
            follow_ups.push(FollowUp::Cancel {
                key: disable_key(subscription_id),
            });
        }
        _ => {}
    }
    follow_ups
}

/// Follow-ups of a user event: release licences on delete and schedule the purge at the end of
/// the restore window; give them back and cancel the purge on restore; free the principal name
/// on purge. `sequence` is the event's sequence number in the user's stream: the tenant drops a
/// report older than the last one it folded in, so a late delivery of a deletion cannot take
/// the seats of a user restored since.
pub fn on_user_event(user_id: Uuid, sequence: u64, event: &UserEvent) -> Vec<FollowUp> {
    match event {
        UserEvent::UserDeleted {
            tenant_id,
            deleted_at,
            restorable_until,
        } => vec![
            FollowUp::Tenant {
                tenant_id: *tenant_id,
                command: TenantCommand::ReleaseUserLicenses {
                    user_id,
                    source_sequence: sequence,
                    at: *deleted_at,
                },
            },
            FollowUp::Schedule(Timer {
                key: purge_key(user_id),
                due_at: *restorable_until,
                action: TimerAction::PurgeUser { user_id },
            }),
        ],
        UserEvent::UserRestored { tenant_id, at, .. } => vec![
            FollowUp::Cancel {
                key: purge_key(user_id),
            },
            FollowUp::Tenant {
                tenant_id: *tenant_id,
                command: TenantCommand::ReinstateUserLicenses {
                    user_id,
                    source_sequence: sequence,
                    at: *at,
                },
            },
        ],
        UserEvent::UserPurged { tenant_id, at, .. } => vec![FollowUp::Tenant {
            tenant_id: *tenant_id,
            command: TenantCommand::ForgetUser {
                user_id,
                source_sequence: sequence,
                at: *at,
            },
        }],
        UserEvent::UserCreated { .. }
        | UserEvent::UserEdited { .. }
        | UserEvent::PasswordReset { .. } => Vec::new(),
    }
}
