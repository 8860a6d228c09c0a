//! A user of a customer tenant: sealed personal details, role, lifecycle (active, deleted and
//! restorable for 30 days, purged) and a history of password resets without any secret.
//!
//! Its licences live in the tenant's register (the seat invariant needs them there); deleting,
//! restoring and purging a user tell the tenant through [`crate::policy`].

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DomainError, Entity};
use crate::personal::{ResetNotice, SealedDetails};
use crate::rules::CommercialRules;
use crate::values::UserRole;

/// Where a user stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum UserStatus {
    /// In use.
    Active,
    /// Soft-deleted; restorable until `restorable_until`.
    Deleted {
        /// When it was deleted.
        deleted_at: DateTime<Utc>,
        /// The end of its restore window.
        restorable_until: DateTime<Utc>,
    },
    /// Purged for good; its personal data is shredded.
    Purged {
        /// When.
        purged_at: DateTime<Utc>,
        /// When it had been deleted.
        deleted_at: DateTime<Utc>,
        /// When its restore window closed.
        restorable_until: DateTime<Utc>,
    },
}

impl UserStatus {
    /// The status as one word.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deleted { .. } => "deleted",
            Self::Purged { .. } => "purged",
        }
    }
}

/// One password reset, as the log keeps it: when, and where the notice went. Never the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordResetRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// Where the notice went.
    pub notice: ResetNotice,
}

/// Commands to a user.
#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    /// Creates the user from the tenant's registration (idempotent).
    CreateUser {
        /// The user's id.
        user_id: Uuid,
        /// Its tenant.
        tenant_id: Uuid,
        /// Sealed personal details.
        details: SealedDetails,
        /// Role.
        role: UserRole,
        /// When.
        at: DateTime<Utc>,
    },
    /// Changes personal details and/or role.
    EditUser {
        /// New sealed details, when they change.
        details: Option<SealedDetails>,
        /// New role, when it changes.
        role: Option<UserRole>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Soft-deletes the user: its licences are released, it stays restorable for a while.
    DeleteUser {
        /// When.
        at: DateTime<Utc>,
    },
    /// Restores a deleted user within its restore window, licences included.
    RestoreUser {
        /// When.
        at: DateTime<Utc>,
    },
    /// Purges a deleted user once its restore window has closed (idempotent).
    PurgeUser {
        /// When.
        at: DateTime<Utc>,
    },
    /// Records a password reset (the password itself is generated and shown by the service).
    ResetPassword {
        /// Where the notice goes.
        notice: ResetNotice,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Events of a user: the `user` aggregate, one stream per user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum UserEvent {
    /// The user's stream opened: follows the tenant's `UserRegistered` (CreateUser). Personal
    /// details are sealed.
    UserCreated {
        /// The user's id, the subject of its stream.
        user_id: Uuid,
        /// The tenant the user belongs to.
        tenant_id: Uuid,
        /// Sealed personal details.
        details: SealedDetails,
        /// The user's administrative role in the tenant.
        role: UserRole,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// A user's personal details and/or role changed (`PATCH /v1/users/{user_id}`, EditUser); what
    /// did not change is `null`. Not emitted when nothing changes.
    UserEdited {
        /// The tenant the user belongs to.
        tenant_id: Uuid,
        /// The new sealed personal details, or `null` when they did not change.
        details: Option<SealedDetails>,
        /// The new role, or `null` when it did not change.
        role: Option<UserRole>,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// A user was soft-deleted (`DELETE /v1/users/{user_id}`, DeleteUser): its licences are
    /// released (`UserLicensesReleased`) and it is restorable until `restorable_until` (30 days),
    /// when it is purged.
    UserDeleted {
        /// The tenant the user belongs to.
        tenant_id: Uuid,
        /// When it was deleted (business time, by the service's clock).
        deleted_at: DateTime<Utc>,
        /// The end of the restore window (and when the purge falls due).
        restorable_until: DateTime<Utc>,
    },
    /// A deleted user was restored within its restore window (`POST /v1/users/{user_id}:restore`,
    /// RestoreUser); its licences are given back (`UserLicensesReinstated`).
    UserRestored {
        /// The tenant the user belongs to.
        tenant_id: Uuid,
        /// When it had been deleted.
        deleted_at: DateTime<Utc>,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// A deleted user was purged when its restore window closed (durable timer at
    /// `restorable_until`): its key is destroyed, so its sealed personal details can never be read
    /// again, and it can no longer be restored.
    UserPurged {
        /// The tenant the user belongs to.
        tenant_id: Uuid,
        /// The key destroyed with the purge: the one `details` were sealed under.
        key_id: Uuid,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
    /// A user's password was reset (`POST /v1/users/{user_id}:reset-password`, ResetPassword). The
    /// temporary password is shown once to the caller and never recorded: the event says only where
    /// the notice went.
    PasswordReset {
        /// The tenant the user belongs to.
        tenant_id: Uuid,
        /// Where the notice of the reset went.
        notice: ResetNotice,
        /// When it happened (business time, by the service's clock).
        at: DateTime<Utc>,
    },
}

impl UserEvent {
    /// When it happened (business time, from the service's clock).
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::UserDeleted { deleted_at, .. } => *deleted_at,
            Self::UserCreated { at, .. }
            | Self::UserEdited { at, .. }
            | Self::UserRestored { at, .. }
            | Self::UserPurged { at, .. }
            | Self::PasswordReset { at, .. } => *at,
        }
    }

    /// The tenant the user belongs to.
    pub fn tenant_id(&self) -> Uuid {
        match self {
            Self::UserCreated { tenant_id, .. }
            | Self::UserEdited { tenant_id, .. }
            | Self::UserDeleted { tenant_id, .. }
            | Self::UserRestored { tenant_id, .. }
            | Self::UserPurged { tenant_id, .. }
            | Self::PasswordReset { tenant_id, .. } => *tenant_id,
        }
    }
}

impl UserEvent {
    /// The schema version of every user event: the `v<N>` of their CloudEvents types and what
    /// [`DomainEvent::event_version`] records. Raise it for a change that breaks readers of the
    /// JSON (an upcaster then reads the old one); an added field does not.
    pub const EVENT_VERSION: &'static str = "1";
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserCreated { .. } => "UserCreated",
            Self::UserEdited { .. } => "UserEdited",
            Self::UserDeleted { .. } => "UserDeleted",
            Self::UserRestored { .. } => "UserRestored",
            Self::UserPurged { .. } => "UserPurged",
            Self::PasswordReset { .. } => "PasswordReset",
        }
        .into()
    }

    fn event_version(&self) -> String {
        Self::EVENT_VERSION.into()
    }
}

/// The state of a created user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    /// Its id.
    pub user_id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// Sealed personal details (unreadable once purged).
    pub details: SealedDetails,
    /// Role.
    pub role: UserRole,
    /// Status.
    pub status: UserStatus,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Password resets, newest last.
    pub password_resets: Vec<PasswordResetRecord>,
}

/// The user aggregate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// `None` until created.
    pub state: Option<UserState>,
}

impl User {
    fn decide(
        &self,
        command: UserCommand,
        rules: &CommercialRules,
    ) -> Result<Option<UserEvent>, DomainError> {
        if let UserCommand::CreateUser {
            user_id,
            tenant_id,
            details,
            role,
            at,
        } = command
        {
            return match &self.state {
                Some(state) if state.user_id == user_id => Ok(None),
                Some(_) => Err(DomainError::already_exists(Entity::User, user_id)),
                None => Ok(Some(UserEvent::UserCreated {
                    user_id,
                    tenant_id,
                    details,
                    role,
                    at,
                })),
            };
        }
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| DomainError::not_found(Entity::User, ""))?;
        let user_id = state.user_id;
        let tenant_id = state.tenant_id;
        let not_active = || DomainError::UserNotActive {
            user_id,
            status: state.status.label(),
        };
        let event = match command {
            UserCommand::CreateUser { .. } => unreachable!("handled above"),
            UserCommand::EditUser { details, role, at } => {
                if state.status != UserStatus::Active {
                    return Err(not_active());
                }
                let details = details.filter(|new| *new != state.details);
                let role = role.filter(|new| *new != state.role);
                if details.is_none() && role.is_none() {
                    return Ok(None);
                }
                UserEvent::UserEdited {
                    tenant_id,
                    details,
                    role,
                    at,
                }
            }
            UserCommand::DeleteUser { at } => match state.status {
                UserStatus::Active => UserEvent::UserDeleted {
                    tenant_id,
                    deleted_at: at,
                    restorable_until: at + rules.restore_window,
                },
                UserStatus::Deleted {
                    restorable_until, ..
                } => {
                    return Err(DomainError::UserAlreadyDeleted {
                        user_id,
                        restorable_until,
                    })
                }
                UserStatus::Purged { .. } => return Err(DomainError::UserPurged { user_id }),
            },
            UserCommand::RestoreUser { at } => match state.status {
                UserStatus::Active => return Err(DomainError::UserNotDeleted { user_id }),
                // What refuses the restore is the window, closed before the purge came.
                UserStatus::Purged {
                    deleted_at,
                    restorable_until,
                    ..
                } => {
                    return Err(DomainError::RestoreWindowExpired {
                        deleted_at,
                        closed_at: restorable_until,
                    })
                }
                UserStatus::Deleted {
                    deleted_at,
                    restorable_until,
                } => {
                    // The window is half-open: at `restorable_until` the purge takes over.
                    if at >= restorable_until {
                        return Err(DomainError::RestoreWindowExpired {
                            deleted_at,
                            closed_at: restorable_until,
                        });
                    }
                    UserEvent::UserRestored {
                        tenant_id,
                        deleted_at,
                        at,
                    }
                }
            },
            UserCommand::PurgeUser { at } => match state.status {
                UserStatus::Purged { .. } => return Ok(None),
                UserStatus::Active => return Err(DomainError::UserNotDeleted { user_id }),
                UserStatus::Deleted {
                    restorable_until, ..
                } => {
                    if at < restorable_until {
                        return Err(DomainError::PurgeNotDue {
                            user_id,
                            due_at: restorable_until,
                        });
                    }
                    UserEvent::UserPurged {
                        tenant_id,
                        key_id: state.details.key_id,
                        at,
                    }
                }
            },
            UserCommand::ResetPassword { notice, at } => {
                if state.status != UserStatus::Active {
                    return Err(not_active());
                }
                UserEvent::PasswordReset {
                    tenant_id,
                    notice,
                    at,
                }
            }
        };
        Ok(Some(event))
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = DomainError;
    type Services = CommercialRules;

    async fn handle(
        &mut self,
        command: Self::Command,
        rules: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command, rules)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        if let UserEvent::UserCreated {
            user_id,
            tenant_id,
            details,
            role,
            at,
        } = event
        {
            self.state = Some(UserState {
                user_id,
                tenant_id,
                details,
                role,
                status: UserStatus::Active,
                created_at: at,
                password_resets: Vec::new(),
            });
            return;
        }
        let Some(state) = self.state.as_mut() else {
            return;
        };
        match event {
            UserEvent::UserCreated { .. } => {}
            UserEvent::UserEdited { details, role, .. } => {
                if let Some(details) = details {
                    state.details = details;
                }
                if let Some(role) = role {
                    state.role = role;
                }
            }
            UserEvent::UserDeleted {
                deleted_at,
                restorable_until,
                ..
            } => {
                state.status = UserStatus::Deleted {
                    deleted_at,
                    restorable_until,
                };
            }
            UserEvent::UserRestored { .. } => state.status = UserStatus::Active,
            UserEvent::UserPurged { at, .. } => {
                let (deleted_at, restorable_until) = match state.status {
                    UserStatus::Deleted {
                        deleted_at,
                        restorable_until,
                    } => (deleted_at, restorable_until),
                    _ => (at, at),
                };
                state.status = UserStatus::Purged {
                    purged_at: at,
                    deleted_at,
                    restorable_until,
                };
            }
            UserEvent::PasswordReset { notice, at, .. } => {
                state
                    .password_resets
                    .push(PasswordResetRecord { at, notice });
            }
        }
    }
}
