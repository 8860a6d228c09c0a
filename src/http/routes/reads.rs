//! Reads a support agent or auditor makes: licence availability, user lists, histories.
//!
//! Until the checkpointed projections arrive these are computed from the aggregates, which are
//! always current, so `position` is the log's end.

use std::collections::BTreeSet;

use aggregates::tenant::MemberStatus;
use aggregates::user::UserStatus;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::parties::visible_tenant;
use super::subscriptions::visible_subscription;
use super::users::visible_user;
use super::{parse_id, require};
use crate::auth::{Principal, Role};
use crate::http::problem::ApiError;
use crate::http::{AppState, Json};

const SUPPORTERS: &[Role] = &[
    Role::Admin,
    Role::Reseller,
    Role::CustomerAdmin,
    Role::PasswordAdmin,
    Role::Support,
    Role::Auditor,
];
const HISTORIANS: &[Role] = &[
    Role::Admin,
    Role::Reseller,
    Role::CustomerAdmin,
    Role::Support,
    Role::Auditor,
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/licenses", get(licenses))
        .route("/v1/tenants/{tenant_id}/users", get(users))
        .route("/v1/tenants/{tenant_id}/history", get(tenant_history))
        .route(
            "/v1/subscriptions/{subscription_id}/history",
            get(subscription_history),
        )
        .route("/v1/users/{user_id}/history", get(user_history))
}

async fn licenses(
    principal: Principal,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = parse_id("tenant_id", &tenant_id)?;
    let (tenant, _) = visible_tenant(&state, &principal, tenant_id).await?;
    require(&principal, SUPPORTERS)?;
    let rows: Vec<Value> = tenant
        .all_seats()
        .into_iter()
        .map(|seats| {
            let behind: Vec<(&Uuid, &aggregates::tenant::HeldSubscription)> = tenant
                .subscriptions
                .iter()
                .filter(|(_, held)| held.offer.provisioning_id == seats.product)
                .collect();
            let names: BTreeSet<String> = behind
                .iter()
                .map(|(_, held)| held.offer.name.to_string())
                .collect();
            json!({
                "sku": seats.product,
                "product_name": names.into_iter().next(),
                "enabled": seats.enabled,
                "warning": seats.warning,
                "suspended": seats.suspended,
                "assigned": seats.assigned,
                "available": seats.available,
                "over_assigned": seats.over_assigned(),
                "subscription_ids": behind.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "tenant_id": tenant_id,
        "licenses": rows,
        "position": state.ledger.position_after(None).await?,
    })))
}

#[derive(Debug, Deserialize)]
struct UserListQuery {
    #[serde(default)]
    include_deleted: bool,
}

async fn users(
    principal: Principal,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    Query(query): Query<UserListQuery>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = parse_id("tenant_id", &tenant_id)?;
    let (tenant, _) = visible_tenant(&state, &principal, tenant_id).await?;
    require(&principal, SUPPORTERS)?;
    let mut rows = Vec::new();
    for (user_id, member) in &tenant.members {
        let listed = match member.status {
            MemberStatus::Active => true,
            MemberStatus::Deleted => query.include_deleted,
            MemberStatus::Purged => false,
        };
        if !listed {
            continue;
        }
        let Some(user) = state.ledger.user(*user_id).await?.state else {
            continue;
        };
        let details = state
            .vault
            .unseal(&user.details)
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?;
        let restorable_until = match user.status {
            UserStatus::Deleted {
                restorable_until, ..
            } => Some(restorable_until),
            _ => None,
        };
        rows.push(json!({
            "id": user_id,
            "user_principal_name": details.as_ref().map(|d| d.user_principal_name.to_string()),
            "display_name": details.as_ref().map(|d| d.display_name.to_string()),
            "status": user.status.label(),
            "role": user.role,
            "licenses": if member.status == MemberStatus::Active {
                member.licenses.iter().map(ToString::to_string).collect::<Vec<_>>()
            } else {
                Vec::new()
            },
            "restorable_until": restorable_until,
        }));
    }
    Ok(Json(json!({
        "tenant_id": tenant_id,
        "users": rows,
        "position": state.ledger.position_after(None).await?,
    })))
}

async fn history_of(
    state: &AppState,
    aggregate_type: &str,
    aggregate_id: Uuid,
) -> Result<Json<Value>, ApiError> {
    let events = state
        .store
        .history(aggregate_type, &aggregate_id.to_string())
        .await?;
    Ok(Json(json!({
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "events": events,
        "position": state.ledger.position_after(None).await?,
    })))
}

async fn tenant_history(
    principal: Principal,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = parse_id("tenant_id", &tenant_id)?;
    visible_tenant(&state, &principal, tenant_id).await?;
    require(&principal, HISTORIANS)?;
    history_of(&state, "tenant", tenant_id).await
}

async fn subscription_history(
    principal: Principal,
    State(state): State<AppState>,
    Path(subscription_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let subscription_id = parse_id("subscription_id", &subscription_id)?;
    visible_subscription(&state, &principal, subscription_id, HISTORIANS).await?;
    history_of(&state, "subscription", subscription_id).await
}

async fn user_history(
    principal: Principal,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user_id = parse_id("user_id", &user_id)?;
    visible_user(&state, &principal, user_id, HISTORIANS).await?;
    history_of(&state, "user", user_id).await
}
