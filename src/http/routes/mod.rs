//! The routes of API.md that exist so far: health, tokens, the catalog, resellers, billing
//! profiles and tenants.

mod events;
mod parties;
mod reads;
mod subscriptions;
mod users;

use aggregates::catalog::{CatalogCommand, Offer};
use aggregates::values::{OfferId, ProductName, ProvisioningId, UnitPrice};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::min_position::{MinPosition, ReadFrom};
use super::problem::ApiError;
use super::{AppState, Json};
use crate::access;
use crate::auth::{Principal, Role};
use crate::ledger::Metadata;

/// The routes anyone may call: liveness, readiness and the API's description.
pub(super) fn public() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi))
}

/// Every other route: each needs a bearer token (checked by the layer around them all).
pub(super) fn protected() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens", axum::routing::post(issue_token))
        .route("/v1/offers", get(list_offers).post(publish_offer))
        .route("/v1/offers/{offer_id}", get(get_offer))
        .route("/v1/sandbox/clock", axum::routing::post(set_clock))
        .merge(parties::routes())
        .merge(subscriptions::routes())
        .merge(users::routes())
        .merge(reads::routes())
        .merge(events::routes())
}

/// A path no route serves: a problem document like every other error.
pub(super) async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route serves {}", uri.path()))
}

/// A route that exists, asked with a method it does not take.
pub(super) async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} {} is not a route", uri.path()))
}

/// Parses an id from the path, naming the parameter when it is not a UUID.
pub(super) fn parse_id(field: &'static str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::Invalid {
        field: field.into(),
        reason: format!("'{raw}' is not a UUID"),
    })
}

/// Who did it and why, for the events' metadata: the token's id and role (never the token),
/// the request and correlation ids, and the caller's reason.
pub(super) fn metadata(principal: &Principal) -> Metadata {
    let mut metadata = Metadata::from([
        ("token_id".to_owned(), principal.token_id.to_string()),
        ("role".to_owned(), principal.role.to_string()),
    ]);
    let _ = super::REQUEST.try_with(|context| {
        metadata.insert("request_id".into(), context.request_id.clone());
        metadata.insert("correlation_id".into(), context.correlation_id.clone());
        metadata.insert("causation_id".into(), context.request_id.clone());
        if let Some(reason) = &context.reason {
            metadata.insert("reason".into(), reason.clone());
        }
        if let Some(attempt) = &context.idempotency_attempt {
            metadata.insert("idempotency_attempt".into(), attempt.clone());
        }
    });
    metadata
}

/// [`access::require`], as the routes' error.
fn require(principal: &Principal, roles: access::Roles) -> Result<(), ApiError> {
    Ok(access::require(principal, roles)?)
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi::document())
}

/// A consumer further behind than either bound makes the service not ready: its reads would
/// be stale.
const READY_LAG_EVENTS: i64 = 1_000;
const READY_LAG_SECONDS: i64 = 30;

/// Ready or not: 200 when the store answers and every consumer is caught up, 503 otherwise
/// (a store that cannot be reached is "not ready", never a 500).
async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    match readiness(&state).await {
        Ok(response) => response,
        Err(error) => {
            let error = match error {
                ApiError::Internal(message) => ApiError::Unavailable(message),
                other => other,
            };
            error.into_response()
        }
    }
}

async fn readiness(state: &AppState) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    state.store.ping().await?;
    let now = chrono::Utc::now();
    let mut ready = true;
    let mut consumers = serde_json::Map::new();
    for consumer in crate::workers::consumers() {
        let checkpoint = state.store.checkpoint(consumer).await?;
        let (behind, oldest) = state.store.backlog(checkpoint).await?;
        let seconds = oldest.map_or(0, |oldest| (now - oldest).num_seconds().max(0));
        let caught_up = behind <= READY_LAG_EVENTS && seconds <= READY_LAG_SECONDS;
        ready &= caught_up;
        consumers.insert(
            consumer.to_owned(),
            json!({
                "position": checkpoint.position,
                "lag_events": behind,
                "lag_seconds": seconds,
                "caught_up": caught_up,
            }),
        );
    }
    let mut body = json!({
        "status": if ready { "ready" } else { "catching_up" },
        "store": state.store.backend(),
        "log_end": state.store.log_end().await?,
        "consumers": consumers,
        "request_panics": crate::http::REQUEST_PANICS.load(std::sync::atomic::Ordering::Relaxed),
    });
    if let Some(publisher) = &state.publisher {
        // Reported, not counted: a NATS outage pauses publishing, not the service's answers.
        use std::sync::atomic::Ordering;
        let checkpoint = state
            .store
            .checkpoint(crate::feed::publisher::PUBLISHER)
            .await?;
        let (behind, oldest) = state.store.backlog(checkpoint).await?;
        let stats = publisher.stats();
        body["publisher"] = json!({
            "position": checkpoint.position,
            "lag_events": behind,
            "lag_seconds": oldest.map_or(0, |oldest| (now - oldest).num_seconds().max(0)),
            "published": stats.published.load(Ordering::Relaxed),
            "duplicates_dropped": stats.duplicates.load(Ordering::Relaxed),
            "failed_batches": stats.failures.load(Ordering::Relaxed),
        });
    }
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    role: String,
    reseller_id: Option<Uuid>,
    tenant_id: Option<Uuid>,
}

async fn issue_token(
    principal: Principal,
    State(state): State<AppState>,
    Json(request): Json<TokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    require(&principal, access::ADMINS)?;
    let role: Role = request.role.parse().map_err(|reason| ApiError::Invalid {
        field: "role".into(),
        reason,
    })?;
    crate::auth::check_scope(role, request.reseller_id, request.tenant_id).map_err(|error| {
        ApiError::Invalid {
            field: "role".into(),
            reason: error.to_string(),
        }
    })?;
    // A token scoped to a reseller or tenant that does not exist would open the day it is
    // created by someone else: refuse it now.
    if let Some(reseller_id) = request.reseller_id {
        parties::ensure_reseller(&state, reseller_id).await?;
    }
    if let Some(tenant_id) = request.tenant_id {
        if state.ledger.tenant(tenant_id).await?.profile.is_none() {
            return Err(ApiError::Invalid {
                field: "tenant_id".into(),
                reason: format!("tenant {tenant_id} does not exist"),
            });
        }
    }
    let (token_id, token) = state
        .tokens
        .issue(role, request.reseller_id, request.tenant_id)
        .await
        .map_err(|error| match error {
            crate::auth::TokenError::Scope(reason) => ApiError::Invalid {
                field: "role".into(),
                reason,
            },
            crate::auth::TokenError::Store(error) => error.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token_id": token_id,
            "token": token,
            "role": role,
            "reseller_id": request.reseller_id,
            "tenant_id": request.tenant_id,
        })),
    ))
}

async fn list_offers(
    principal: Principal,
    State(state): State<AppState>,
    min_position: MinPosition,
) -> Result<Json<Value>, ApiError> {
    require(&principal, access::READERS)?;
    let position = min_position.reached(&state, ReadFrom::Log).await?;
    let catalog = state.ledger.current_catalog().await?;
    let offers: Vec<&Offer> = catalog.catalog.offers().collect();
    Ok(Json(json!({ "offers": offers, "position": position })))
}

async fn get_offer(
    principal: Principal,
    State(state): State<AppState>,
    Path(offer_id): Path<String>,
    min_position: MinPosition,
) -> Result<Json<Value>, ApiError> {
    require(&principal, access::READERS)?;
    let offer_id = OfferId::parse(&offer_id)?;
    let position = min_position.reached(&state, ReadFrom::Log).await?;
    let catalog = state.ledger.current_catalog().await?;
    let offer = catalog
        .catalog
        .get(&offer_id)
        .ok_or_else(|| ApiError::NotFound(format!("offer {offer_id} is not in the catalog")))?;
    Ok(Json(json!({ "offer": offer, "position": position })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceInput {
    amount: String,
    currency: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferInput {
    id: String,
    name: String,
    provisioning_id: String,
    trial_offer_id: Option<String>,
    assignable_to_users: bool,
    #[serde(default)]
    possible_upgrades: Vec<String>,
    unit_price: PriceInput,
    #[serde(default)]
    parent_offers: Vec<String>,
}

impl OfferInput {
    fn parse(self) -> Result<Offer, ApiError> {
        let ids = |raw: Vec<String>, field: &'static str| -> Result<Vec<OfferId>, ApiError> {
            raw.iter()
                .map(|id| {
                    OfferId::parse(id).map_err(|_| ApiError::Invalid {
                        field: field.into(),
                        reason: format!("'{id}' is not a GUID"),
                    })
                })
                .collect()
        };
        Ok(Offer {
            id: OfferId::parse(&self.id)?,
            name: ProductName::parse(&self.name)?,
            provisioning_id: ProvisioningId::parse(&self.provisioning_id)?,
            trial_offer_id: self
                .trial_offer_id
                .map(|id| {
                    OfferId::parse(&id).map_err(|_| ApiError::Invalid {
                        field: "trial_offer_id".into(),
                        reason: "must be a GUID".into(),
                    })
                })
                .transpose()?,
            assignable_to_users: self.assignable_to_users,
            possible_upgrades: ids(self.possible_upgrades, "possible_upgrades")?,
            unit_price: UnitPrice::parse(&self.unit_price.amount, &self.unit_price.currency)?,
            parent_offers: ids(self.parent_offers, "parent_offers")?,
        })
    }
}

async fn publish_offer(
    principal: Principal,
    State(state): State<AppState>,
    Json(input): Json<OfferInput>,
) -> Result<impl IntoResponse, ApiError> {
    require(&principal, access::ADMINS)?;
    let offer = input.parse()?;
    let landed = state
        .ledger
        .catalog(
            CatalogCommand::PublishOffer {
                offer: offer.clone(),
                at: state.clock.now(),
            },
            &metadata(&principal),
        )
        .await?;
    let position = state.ledger.position_after(landed.as_ref()).await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "offer": offer, "position": position })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockInput {
    advance_seconds: Option<i64>,
    now: Option<chrono::DateTime<chrono::Utc>>,
}

/// Moves the sandbox clock; without `--sandbox-clock` the route does not exist (404).
async fn set_clock(
    principal: Principal,
    State(state): State<AppState>,
    Json(input): Json<ClockInput>,
) -> Result<Json<Value>, ApiError> {
    if !state.clock.is_sandbox() {
        return Err(ApiError::NotFound(
            "the sandbox clock is off: start the service with --sandbox-clock".into(),
        ));
    }
    require(&principal, access::ADMINS)?;
    let refused = |field: &str, refusal: crate::clock::ClockRefusal| ApiError::Invalid {
        field: field.into(),
        reason: refusal.to_string(),
    };
    let now = match (input.advance_seconds, input.now) {
        (Some(seconds), None) => {
            // Bounded before any arithmetic: chrono panics on durations past ±i64::MAX ms.
            let step = chrono::Duration::try_seconds(seconds).ok_or_else(|| ApiError::Invalid {
                field: "advance_seconds".into(),
                reason: "is out of range: the sandbox clock runs at most 100 years ahead".into(),
            })?;
            state
                .clock
                .advance(step)
                .map_err(|refusal| refused("advance_seconds", refusal))?
        }
        (None, Some(to)) => state
            .clock
            .set(to)
            .map_err(|refusal| refused("now", refusal))?,
        _ => {
            return Err(ApiError::Invalid {
                field: "body".into(),
                reason: "give exactly one of advance_seconds or now".into(),
            })
        }
    };
    if let Some(offset) = state.clock.offset() {
        state.store.save_sandbox_offset(offset).await?;
    }
    Ok(Json(json!({ "now": now })))
}
