//! Users: create, read, edit, licences, delete, restore, password reset.
//!
//! Personal details are sealed before they reach a command; the temporary password of a reset
//! is generated here, returned once in the response and never stored, logged or put in an event.

use aggregates::personal::{PersonalDetails, ResetNotice};
use aggregates::policy::FollowUp;
use aggregates::tenant::{MemberStatus, TenantCommand};
use aggregates::user::{UserCommand, UserState, UserStatus};
use aggregates::values::{
    EmailAddress, Location, OfferId, PersonName, UserPrincipalName, UserRole,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::parties::visible_tenant;
use super::{metadata, parse_id, require};
use crate::auth::Principal;
use crate::http::min_position::{MinPosition, ReadFrom};
use crate::http::problem::ApiError;
use crate::http::{optional_json, AppState, Json};

use crate::access::{MANAGERS, PASSWORD_RESETTERS, USER_READERS as READERS};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/users", post(create_user))
        .route(
            "/v1/users/{user}",
            get(get_user)
                .patch(edit_user)
                .delete(delete_user)
                .post(user_action),
        )
        .route("/v1/users/{user_id}/licenses", post(assign_licenses))
}

/// A user the caller may see, with the caller's role checked against `roles`.
pub(super) async fn visible_user(
    state: &AppState,
    principal: &Principal,
    user_id: Uuid,
    roles: crate::access::Roles,
) -> Result<UserState, ApiError> {
    tenant_of_visible_user(state, principal, user_id, roles).await?;
    state
        .ledger
        .user(user_id)
        .await?
        .state
        .clone()
        .ok_or_else(|| ApiError::NotFound(format!("user {user_id} does not exist")))
}

/// The tenant of a user the caller may act on, or 404, from facts that never change (a user's
/// tenant, a tenant's reseller): a command needs no fresher look, since the aggregates decide
/// on their current state anyway.
async fn tenant_of_visible_user(
    state: &AppState,
    principal: &Principal,
    user_id: Uuid,
    roles: crate::access::Roles,
) -> Result<Uuid, ApiError> {
    let not_found = || ApiError::NotFound(format!("user {user_id} does not exist"));
    let tenant_id = state
        .ledger
        .known_user(user_id)
        .await?
        .state
        .as_ref()
        .map(|user| user.tenant_id)
        .ok_or_else(not_found)?;
    let tenant = state.ledger.known_tenant(tenant_id).await?;
    match &tenant.profile {
        Some(profile) if super::parties::may_see_tenant(principal, profile) => {}
        _ => return Err(not_found()),
    }
    require(principal, roles)?;
    Ok(tenant_id)
}

/// A user as clients read it: personal details while the user's key lives (`null` once
/// purged).
#[derive(Debug, Serialize, JsonSchema)]
pub struct UserView {
    /// Its id.
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// `active`, `deleted` or `purged`.
    pub status: &'static str,
    /// Its sign-in name.
    pub user_principal_name: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Usage location.
    pub location: Option<String>,
    /// Its administrative role in the tenant.
    pub role: UserRole,
    /// The SKUs of the licences it holds.
    pub licenses: Vec<String>,
    /// When it was deleted (deleted and purged users).
    pub deleted_at: Option<DateTime<Utc>>,
    /// Until when it could be restored (deleted and purged users).
    pub restorable_until: Option<DateTime<Utc>>,
    /// When it was purged and its personal data shredded (purged users).
    pub purged_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// How many times its password was reset.
    pub password_resets: usize,
    /// Where the command landed in the log, or how far the log had been read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
}

/// A password reset: the temporary password is shown this once.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PasswordReset {
    /// The user.
    pub user_id: Uuid,
    /// The temporary password; `null` in a replay of the answer.
    pub temporary_password: Option<String>,
    /// `user_principal_name` or `notify_email`.
    pub notice_sent_to: &'static str,
    /// Where the reset landed in the log.
    pub position: i64,
}

/// The answer of a user action: `:restore` answers the user, `:reset-password` the reset.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum UserAnswer {
    /// `:restore`.
    User(Box<UserView>),
    /// `:reset-password`.
    Reset(PasswordReset),
}

/// The user as clients read it: details unsealed while the key lives; purged users have none.
async fn user_view(
    state: &AppState,
    user: &UserState,
    tenant: std::sync::Arc<aggregates::tenant::Tenant>,
) -> Result<UserView, ApiError> {
    let licenses: Vec<String> = tenant
        .members
        .get(&user.user_id)
        .filter(|member| member.status == MemberStatus::Active)
        .map(|member| member.licenses.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    // Let go of the tenant before the next await: while anyone holds it, the tenant's next
    // command must copy it (a 100 000-user tenant takes milliseconds to copy).
    drop(tenant);
    let details = match user.status {
        UserStatus::Purged { .. } => None,
        _ => state
            .vault
            .unseal(&user.details)
            .await
            .map_err(ApiError::from)?,
    };
    let (deleted_at, restorable_until, purged_at) = match user.status {
        UserStatus::Deleted {
            deleted_at,
            restorable_until,
        } => (Some(deleted_at), Some(restorable_until), None),
        UserStatus::Purged {
            purged_at,
            deleted_at,
            restorable_until,
        } => (Some(deleted_at), Some(restorable_until), Some(purged_at)),
        UserStatus::Active => (None, None, None),
    };
    Ok(UserView {
        id: user.user_id,
        tenant_id: user.tenant_id,
        status: user.status.label(),
        user_principal_name: details.as_ref().map(|d| d.user_principal_name.to_string()),
        first_name: details.as_ref().map(|d| d.first_name.to_string()),
        last_name: details.as_ref().map(|d| d.last_name.to_string()),
        display_name: details.as_ref().map(|d| d.display_name.to_string()),
        location: details
            .as_ref()
            .and_then(|d| d.location.as_ref().map(ToString::to_string)),
        role: user.role,
        licenses,
        deleted_at,
        restorable_until,
        purged_at,
        created_at: user.created_at,
        password_resets: user.password_resets.len(),
        position: None,
    })
}

async fn respond(
    state: &AppState,
    user_id: Uuid,
    landed: Option<crate::write::ledger::Landed>,
) -> Result<UserView, ApiError> {
    let position = state.ledger.position_after(landed.as_ref()).await?;
    // The answer is the state this instance committed (its cache holds the command's and its
    // follow-ups' events): at least as new as the command, without asking the store again.
    let user = state
        .ledger
        .known_user(user_id)
        .await?
        .state
        .clone()
        .ok_or_else(|| ApiError::internal(format!("user {user_id} did not come into being")))?;
    let tenant = state.ledger.known_tenant(user.tenant_id).await?;
    let mut body = user_view(state, &user, tenant).await?;
    body.position = Some(position);
    Ok(body)
}

/// A new user: CreateUser.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Its sign-in name, in one of the tenant's domains.
    user_principal_name: String,
    /// First name.
    first_name: String,
    /// Last name.
    last_name: String,
    /// Display name.
    display_name: String,
    /// Usage location.
    location: Option<String>,
    /// Its administrative role (`user` by default).
    role: Option<String>,
}

async fn create_user(
    principal: Principal,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    Json(input): Json<NewUser>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant_id = parse_id("tenant_id", &tenant_id)?;
    visible_tenant(&state, &principal, tenant_id).await?;
    require(&principal, MANAGERS)?;
    let details = PersonalDetails {
        user_principal_name: UserPrincipalName::parse(&input.user_principal_name)?,
        first_name: PersonName::parse_field("first_name", &input.first_name)?,
        last_name: PersonName::parse_field("last_name", &input.last_name)?,
        display_name: PersonName::parse_field("display_name", &input.display_name)?,
        location: input.location.as_deref().map(Location::parse).transpose()?,
    };
    let role = input
        .role
        .as_deref()
        .map(UserRole::parse)
        .transpose()?
        .unwrap_or_default();
    let user_id = Uuid::new_v4();
    let sealed = state
        .vault
        .seal(user_id, &details)
        .await
        .map_err(ApiError::from)?;
    let landed = state
        .ledger
        .dispatch(
            FollowUp::Tenant {
                tenant_id,
                command: TenantCommand::RegisterUser {
                    user_id,
                    principal_domain: details.user_principal_name.domain(),
                    fingerprint: state
                        .vault
                        .fingerprint(tenant_id, &details.user_principal_name),
                    details: sealed,
                    role,
                    at: state.clock.now(),
                },
            },
            &metadata(&principal),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(respond(&state, user_id, landed).await?),
    ))
}

async fn get_user(
    principal: Principal,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    min_position: MinPosition,
) -> Result<Json<UserView>, ApiError> {
    if let Some((_, action)) = user_id.split_once(':') {
        return Err(ApiError::MethodNotAllowed(format!(
            "GET /v1/users/{user_id}: :{action} is an action, sent with POST"
        )));
    }
    let user_id = parse_id("user_id", &user_id)?;
    let position = min_position.reached(&state, ReadFrom::Log).await?;
    let user = visible_user(&state, &principal, user_id, READERS).await?;
    let tenant = state.ledger.tenant(user.tenant_id).await?;
    let mut body = user_view(&state, &user, tenant).await?;
    body.position = Some(position);
    Ok(Json(body))
}

/// Changes to a user: EditUser (only what is given changes).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChanges {
    /// First name.
    first_name: Option<String>,
    /// Last name.
    last_name: Option<String>,
    /// Display name.
    display_name: Option<String>,
    /// Usage location.
    location: Option<String>,
    /// Administrative role.
    role: Option<String>,
}

async fn edit_user(
    principal: Principal,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    Json(changes): Json<UserChanges>,
) -> Result<Json<UserView>, ApiError> {
    let user_id = parse_id("user_id", &user_id)?;
    let user = visible_user(&state, &principal, user_id, MANAGERS).await?;
    let role = changes.role.as_deref().map(UserRole::parse).transpose()?;
    let touches_details = changes.first_name.is_some()
        || changes.last_name.is_some()
        || changes.display_name.is_some()
        || changes.location.is_some();
    let details = if touches_details {
        let mut details = state
            .vault
            .unseal(&user.details)
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::Domain(aggregates::DomainError::UserPurged {
                user_id,
            }))?;
        if let Some(raw) = &changes.first_name {
            details.first_name = PersonName::parse_field("first_name", raw)?;
        }
        if let Some(raw) = &changes.last_name {
            details.last_name = PersonName::parse_field("last_name", raw)?;
        }
        if let Some(raw) = &changes.display_name {
            details.display_name = PersonName::parse_field("display_name", raw)?;
        }
        if let Some(raw) = &changes.location {
            details.location = Some(Location::parse(raw)?);
        }
        let unchanged =
            state.vault.unseal(&user.details).await.ok().flatten() == Some(details.clone());
        if unchanged {
            None
        } else {
            Some(
                state
                    .vault
                    .seal(user_id, &details)
                    .await
                    .map_err(ApiError::from)?,
            )
        }
    } else {
        None
    };
    let landed = state
        .ledger
        .dispatch(
            FollowUp::User {
                user_id,
                command: UserCommand::EditUser {
                    details,
                    role,
                    at: state.clock.now(),
                },
            },
            &metadata(&principal),
        )
        .await?;
    Ok(Json(respond(&state, user_id, landed).await?))
}

async fn delete_user(
    principal: Principal,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    let user_id = parse_id("user_id", &user_id)?;
    tenant_of_visible_user(&state, &principal, user_id, MANAGERS).await?;
    let landed = state
        .ledger
        .dispatch(
            FollowUp::User {
                user_id,
                command: UserCommand::DeleteUser {
                    at: state.clock.now(),
                },
            },
            &metadata(&principal),
        )
        .await?;
    Ok(Json(respond(&state, user_id, landed).await?))
}

/// The body of a user action: only `:reset-password` takes one.
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetInput {
    /// For `:reset-password`: where to send the notice (default: the user's own address).
    notify_email: Option<String>,
}

/// The characters of a temporary password: Microsoft's four classes (upper, lower, digit,
/// symbol), without look-alikes that trip people reading one aloud (0/O, 1/l/I).
const PASSWORD_ALPHABET: &[u8] =
    b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!#$%&*+-=?@^_";

/// A temporary password: 20 characters drawn uniformly from [`PASSWORD_ALPHABET`] (rejection
/// sampling, so no character is likelier than another), drawn again until it holds all four
/// classes — every character is random, no fixed tail to meet complexity rules.
fn temporary_password() -> String {
    const LENGTH: usize = 20;
    // The largest multiple of the alphabet's size below 256: bytes above it are redrawn.
    let limit = (256 / PASSWORD_ALPHABET.len() * PASSWORD_ALPHABET.len()) as u8;
    loop {
        let mut password = String::with_capacity(LENGTH);
        while password.len() < LENGTH {
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes).expect("the operating system's random source works");
            for byte in bytes {
                if byte < limit && password.len() < LENGTH {
                    password
                        .push(PASSWORD_ALPHABET[byte as usize % PASSWORD_ALPHABET.len()] as char);
                }
            }
        }
        let has = |class: fn(&char) -> bool| password.chars().any(|c| class(&c));
        if has(char::is_ascii_uppercase)
            && has(char::is_ascii_lowercase)
            && has(char::is_ascii_digit)
            && has(char::is_ascii_punctuation)
        {
            return password;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_passwords_use_the_whole_alphabet_with_no_fixed_part() {
        let passwords: Vec<String> = (0..2_000).map(|_| temporary_password()).collect();
        for password in &passwords {
            assert_eq!(password.len(), 20);
            assert!(password
                .bytes()
                .all(|byte| PASSWORD_ALPHABET.contains(&byte)));
        }
        // Every position takes many values: nothing is fixed, the tail least of all.
        for place in 0..20 {
            let seen: std::collections::HashSet<u8> = passwords
                .iter()
                .map(|password| password.as_bytes()[place])
                .collect();
            assert!(
                seen.len() > 40,
                "place {place} takes only {} values",
                seen.len()
            );
        }
        // And every character of the alphabet turns up.
        let used: std::collections::HashSet<u8> = passwords
            .iter()
            .flat_map(|password| password.bytes())
            .collect();
        assert_eq!(used.len(), PASSWORD_ALPHABET.len());
    }
}

async fn user_action(
    principal: Principal,
    State(state): State<AppState>,
    Path(target): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<UserAnswer>, ApiError> {
    let (raw_id, action) = target.split_once(':').ok_or_else(|| {
        ApiError::NotFound(format!(
            "POST /v1/users/{target} is not a route: use {{id}}:restore or {{id}}:reset-password"
        ))
    })?;
    let user_id = parse_id("user_id", raw_id)?;
    match action {
        "restore" => {
            tenant_of_visible_user(&state, &principal, user_id, MANAGERS).await?;
            let landed = state
                .ledger
                .dispatch(
                    FollowUp::User {
                        user_id,
                        command: UserCommand::RestoreUser {
                            at: state.clock.now(),
                        },
                    },
                    &metadata(&principal),
                )
                .await?;
            Ok(Json(UserAnswer::User(Box::new(
                respond(&state, user_id, landed).await?,
            ))))
        }
        "reset-password" => {
            visible_user(&state, &principal, user_id, PASSWORD_RESETTERS).await?;
            let input: ResetInput = optional_json(&body)?;
            let notice = match input.notify_email.as_deref() {
                Some(raw) => {
                    EmailAddress::parse(raw)?;
                    ResetNotice::OtherAddress
                }
                None => ResetNotice::OwnPrincipalName,
            };
            let landed = state
                .ledger
                .dispatch(
                    FollowUp::User {
                        user_id,
                        command: UserCommand::ResetPassword {
                            notice,
                            at: state.clock.now(),
                        },
                    },
                    &metadata(&principal),
                )
                .await?;
            let position = state.ledger.position_after(landed.as_ref()).await?;
            Ok(Json(UserAnswer::Reset(PasswordReset {
                user_id,
                temporary_password: Some(temporary_password()),
                notice_sent_to: match notice {
                    ResetNotice::OwnPrincipalName => "user_principal_name",
                    ResetNotice::OtherAddress => "notify_email",
                },
                position,
            })))
        }
        other => Err(ApiError::NotFound(format!(
            "unknown user action '{other}': use restore or reset-password"
        ))),
    }
}

/// AssignLicenses: offers to add and to remove, all or nothing.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LicenseChange {
    /// Offer ids to give the user.
    #[serde(default)]
    add: Vec<String>,
    /// Offer ids to take from the user.
    #[serde(default)]
    remove: Vec<String>,
}

async fn assign_licenses(
    principal: Principal,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    Json(change): Json<LicenseChange>,
) -> Result<Json<UserView>, ApiError> {
    let user_id = parse_id("user_id", &user_id)?;
    let tenant_id = tenant_of_visible_user(&state, &principal, user_id, MANAGERS).await?;
    let parse_all = |raw: &[String], field: &'static str| -> Result<Vec<OfferId>, ApiError> {
        raw.iter()
            .map(|id| {
                OfferId::parse(id).map_err(|_| ApiError::Invalid {
                    field: field.into(),
                    reason: format!("'{id}' is not an offer id"),
                })
            })
            .collect()
    };
    let landed = state
        .ledger
        .dispatch(
            FollowUp::Tenant {
                tenant_id,
                command: TenantCommand::AssignLicenses {
                    user_id,
                    add: parse_all(&change.add, "add")?,
                    remove: parse_all(&change.remove, "remove")?,
                    at: state.clock.now(),
                },
            },
            &metadata(&principal),
        )
        .await?;
    Ok(Json(respond(&state, user_id, landed).await?))
}
