//! Resellers, billing profiles and tenants: who buys, who pays, who is served.

use aggregates::party::{BillingProfileCommand, ResellerCommand};
use aggregates::policy::FollowUp;
use aggregates::tenant::{Tenant, TenantCommand, TenantProfile};
use aggregates::values::{Currency, DomainName, OrganisationName};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{metadata, parse_id, require};
use crate::access;
use crate::auth::{Principal, Role};
use crate::http::min_position::{MinPosition, ReadFrom};
use crate::http::problem::ApiError;
use crate::http::{AppState, Json};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/resellers", post(create_reseller))
        .route("/v1/resellers/{reseller_id}", get(get_reseller))
        .route("/v1/billing-profiles", post(create_billing_profile))
        .route(
            "/v1/billing-profiles/{billing_profile_id}",
            get(get_billing_profile),
        )
        .route("/v1/tenants", post(create_tenant))
        .route("/v1/tenants/{tenant_id}", get(get_tenant))
}

pub(crate) use crate::access::may_see_tenant;

/// Loads a tenant the caller may see, or answers 404.
pub(crate) async fn visible_tenant(
    state: &AppState,
    principal: &Principal,
    tenant_id: Uuid,
) -> Result<(std::sync::Arc<Tenant>, TenantProfile), ApiError> {
    let tenant = state.ledger.tenant(tenant_id).await?;
    match tenant.profile.clone() {
        Some(profile) if may_see_tenant(principal, &profile) => Ok((tenant, profile)),
        _ => Err(ApiError::NotFound(format!(
            "tenant {tenant_id} does not exist"
        ))),
    }
}

/// A new indirect reseller.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResellerInput {
    /// Its organisation name.
    name: String,
}

/// An indirect reseller.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ResellerView {
    /// Its id.
    pub id: Uuid,
    /// Its organisation name.
    pub name: OrganisationName,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// Where its creation landed in the log, or how far the log had been read.
    pub position: i64,
}

/// A billing profile: who is invoiced, in which currency.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BillingProfileView {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: OrganisationName,
    /// The currency of its invoices.
    pub currency: Currency,
    /// The reseller it belongs to (`null`: the partner's own).
    pub reseller_id: Option<Uuid>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Where its creation landed in the log, or how far the log had been read.
    pub position: i64,
}

/// A customer tenant.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TenantView {
    /// Its id.
    pub id: Uuid,
    /// Its initial domain (`contoso.onmicrosoft.com`).
    pub domain: DomainName,
    /// Its organisation name.
    pub name: OrganisationName,
    /// The reseller that manages it (`null`: the partner directly).
    pub reseller_id: Option<Uuid>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its subscriptions' ids (not in a creation's answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_ids: Option<Vec<Uuid>>,
    /// How many users it has, purged ones aside (not in a creation's answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<usize>,
    /// Where its creation landed in the log, or how far the log had been read.
    pub position: i64,
}

async fn create_reseller(
    principal: Principal,
    State(state): State<AppState>,
    Json(input): Json<ResellerInput>,
) -> Result<impl IntoResponse, ApiError> {
    require(&principal, access::ADMINS)?;
    let name = OrganisationName::parse(&input.name)?;
    let reseller_id = Uuid::new_v4();
    let at = state.clock.now();
    let landed = state
        .ledger
        .reseller(
            reseller_id,
            ResellerCommand::CreateReseller {
                reseller_id,
                name: name.clone(),
                at,
            },
            &metadata(&principal),
        )
        .await?;
    let position = state.ledger.position_after(landed.as_ref()).await?;
    Ok((
        StatusCode::CREATED,
        Json(ResellerView {
            id: reseller_id,
            name,
            created_at: at,
            position,
        }),
    ))
}

async fn get_reseller(
    principal: Principal,
    State(state): State<AppState>,
    Path(reseller_id): Path<String>,
    min_position: MinPosition,
) -> Result<Json<ResellerView>, ApiError> {
    let reseller_id = parse_id("reseller_id", &reseller_id)?;
    let position = min_position.reached(&state, ReadFrom::Log).await?;
    let visible = access::may_see_account(&principal, Some(reseller_id));
    let reseller = state.ledger.reseller_state(reseller_id).await?;
    match (
        visible,
        reseller.reseller_id,
        reseller.name.clone(),
        reseller.created_at,
    ) {
        (true, Some(id), Some(name), Some(created_at)) => Ok(Json(ResellerView {
            id,
            name,
            created_at,
            position,
        })),
        _ => Err(ApiError::NotFound(format!(
            "reseller {reseller_id} does not exist"
        ))),
    }
}

/// A new billing profile.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingProfileInput {
    /// Its name.
    name: String,
    /// The currency of its invoices (ISO 4217).
    currency: String,
    /// The reseller it belongs to (a reseller's token: itself; none: the partner's own).
    reseller_id: Option<Uuid>,
}

async fn create_billing_profile(
    principal: Principal,
    State(state): State<AppState>,
    Json(input): Json<BillingProfileInput>,
) -> Result<impl IntoResponse, ApiError> {
    require(&principal, access::ONBOARDERS)?;
    let reseller_id = owning_reseller(&state, &principal, input.reseller_id).await?;
    let name = OrganisationName::parse(&input.name)?;
    let currency = Currency::parse(&input.currency)?;
    let billing_profile_id = Uuid::new_v4();
    let at = state.clock.now();
    let landed = state
        .ledger
        .billing_profile(
            billing_profile_id,
            BillingProfileCommand::CreateBillingProfile {
                billing_profile_id,
                name: name.clone(),
                currency: currency.clone(),
                reseller_id,
                at,
            },
            &metadata(&principal),
        )
        .await?;
    let position = state.ledger.position_after(landed.as_ref()).await?;
    Ok((
        StatusCode::CREATED,
        Json(BillingProfileView {
            id: billing_profile_id,
            name,
            currency,
            reseller_id,
            created_at: at,
            position,
        }),
    ))
}

/// The reseller a new billing profile or tenant belongs to: a reseller's token creates under
/// itself only; an admin may name any existing reseller, or none (the partner's own).
async fn owning_reseller(
    state: &AppState,
    principal: &Principal,
    requested: Option<Uuid>,
) -> Result<Option<Uuid>, ApiError> {
    let reseller_id = match principal.role {
        Role::Reseller if requested.is_some() && requested != principal.reseller_id => {
            return Err(ApiError::Forbidden)
        }
        Role::Reseller => principal.reseller_id,
        _ => requested,
    };
    if let Some(reseller_id) = reseller_id {
        ensure_reseller(state, reseller_id).await?;
    }
    Ok(reseller_id)
}

pub(super) async fn ensure_reseller(state: &AppState, reseller_id: Uuid) -> Result<(), ApiError> {
    if state
        .ledger
        .reseller_state(reseller_id)
        .await?
        .reseller_id
        .is_none()
    {
        return Err(ApiError::Invalid {
            field: "reseller_id".into(),
            reason: format!("reseller {reseller_id} does not exist"),
        });
    }
    Ok(())
}

async fn get_billing_profile(
    principal: Principal,
    State(state): State<AppState>,
    Path(billing_profile_id): Path<String>,
    min_position: MinPosition,
) -> Result<Json<BillingProfileView>, ApiError> {
    let billing_profile_id = parse_id("billing_profile_id", &billing_profile_id)?;
    let position = min_position.reached(&state, ReadFrom::Log).await?;
    let profile = visible_billing_profile(&state, &principal, billing_profile_id).await?;
    Ok(Json(BillingProfileView {
        id: profile.billing_profile_id,
        name: profile.name,
        currency: profile.currency,
        reseller_id: profile.reseller_id,
        created_at: profile.created_at,
        position,
    }))
}

/// Loads a billing profile the caller may see: admins, support and auditors see every one, a
/// reseller its own; to anyone else it does not exist.
pub(super) async fn visible_billing_profile(
    state: &AppState,
    principal: &Principal,
    billing_profile_id: Uuid,
) -> Result<aggregates::party::BillingProfileState, ApiError> {
    let not_found = || {
        ApiError::NotFound(format!(
            "billing profile {billing_profile_id} does not exist"
        ))
    };
    let profile = state
        .ledger
        .billing_profile_state(billing_profile_id)
        .await?
        .state
        .clone()
        .ok_or_else(not_found)?;
    if access::may_see_account(principal, profile.reseller_id) {
        Ok(profile)
    } else {
        Err(not_found())
    }
}

/// A new customer tenant.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantInput {
    /// Its initial domain (`contoso.onmicrosoft.com`).
    domain: String,
    /// Its organisation name.
    name: String,
    /// The reseller that manages it (a reseller's token: itself; none: the partner directly).
    reseller_id: Option<Uuid>,
}

async fn create_tenant(
    principal: Principal,
    State(state): State<AppState>,
    Json(input): Json<TenantInput>,
) -> Result<impl IntoResponse, ApiError> {
    require(&principal, access::ONBOARDERS)?;
    let reseller_id = owning_reseller(&state, &principal, input.reseller_id).await?;
    let domain = DomainName::parse(&input.domain)?;
    let name = OrganisationName::parse(&input.name)?;
    let tenant_id = Uuid::new_v4();
    let at = state.clock.now();
    let landed = state
        .ledger
        .dispatch(
            FollowUp::Tenant {
                tenant_id,
                command: TenantCommand::CreateTenant {
                    tenant_id,
                    domain: domain.clone(),
                    name: name.clone(),
                    reseller_id,
                    at,
                },
            },
            &metadata(&principal),
        )
        .await?;
    let position = state.ledger.position_after(landed.as_ref()).await?;
    Ok((
        StatusCode::CREATED,
        Json(TenantView {
            id: tenant_id,
            domain,
            name,
            reseller_id,
            created_at: at,
            subscription_ids: None,
            users: None,
            position,
        }),
    ))
}

async fn get_tenant(
    principal: Principal,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    min_position: MinPosition,
) -> Result<Json<TenantView>, ApiError> {
    let tenant_id = parse_id("tenant_id", &tenant_id)?;
    let position = min_position.reached(&state, ReadFrom::Log).await?;
    let (tenant, profile) = visible_tenant(&state, &principal, tenant_id).await?;
    require(&principal, access::READERS)?;
    Ok(Json(TenantView {
        id: profile.tenant_id,
        domain: profile.domain,
        name: profile.name,
        reseller_id: profile.reseller_id,
        created_at: profile.created_at,
        subscription_ids: Some(tenant.subscriptions.keys().copied().collect()),
        users: Some(
            tenant
                .members
                .values()
                .filter(|member| member.status != aggregates::tenant::MemberStatus::Purged)
                .count(),
        ),
        position,
    }))
}
