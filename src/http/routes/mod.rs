//! The routes of API.md that exist so far: health, tokens, the catalog, resellers, billing
//! profiles and tenants.

pub(super) mod events;
pub(super) mod parties;
pub(super) mod reads;
pub(super) mod subscriptions;
pub(super) mod users;

use aggregates::catalog::{CatalogCommand, Offer};
use aggregates::values::{OfferId, ProductName, ProvisioningId, UnitPrice};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::min_position::{MinPosition, ReadFrom};
use super::problem::ApiError;
use super::{AppState, Json};
use crate::access;
use crate::auth::{Principal, Role};
use crate::write::ledger::Metadata;

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

/// `GET /healthz`: the process answers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

async fn openapi() -> Json<&'static serde_json::Value> {
    // Built once: the routes and their types do not change while the service runs.
    static DOCUMENT: std::sync::LazyLock<serde_json::Value> =
        std::sync::LazyLock::new(super::openapi::document);
    Json(&*DOCUMENT)
}

/// `GET /readyz`: whether the store answers and every log consumer is within bounds.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Readiness {
    /// `ready`, or `catching_up` (answered with 503).
    pub status: &'static str,
    /// `PostgreSQL` or `SQLite`.
    pub store: &'static str,
    /// The log's last position.
    pub log_end: i64,
    /// Each consumer of the log: where it stands and how far behind.
    pub consumers: std::collections::BTreeMap<String, ConsumerLag>,
    /// Requests that panicked since the service started (each answered 500 and logged).
    pub request_panics: u64,
    /// The JetStream publisher, when NATS is configured (its lag does not make the service
    /// unready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<PublisherLag>,
}

/// One consumer's place in the log.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ConsumerLag {
    /// The last position it has read.
    pub position: i64,
    /// Events behind (exact up to 10 000).
    pub lag_events: i64,
    /// Seconds since the oldest event it has not read was recorded.
    pub lag_seconds: i64,
    /// Within 1 000 events and 30 seconds.
    pub caught_up: bool,
}

/// The JetStream publisher's place in the log and its counts.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PublisherLag {
    /// The last position acknowledged by JetStream.
    pub position: i64,
    /// Events behind.
    pub lag_events: i64,
    /// Seconds since the oldest unpublished event was recorded.
    pub lag_seconds: i64,
    /// Events published since start.
    pub published: u64,
    /// Re-sends JetStream dropped as duplicates.
    pub duplicates_dropped: u64,
    /// Batches that failed and were retried.
    pub failed_batches: u64,
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
    let mut consumers = std::collections::BTreeMap::new();
    for consumer in crate::workers::consumers() {
        let checkpoint = state.store.checkpoint(consumer).await?;
        let (behind, oldest) = state.store.backlog(checkpoint).await?;
        let seconds = oldest.map_or(0, |oldest| (now - oldest).num_seconds().max(0));
        let caught_up = behind <= READY_LAG_EVENTS && seconds <= READY_LAG_SECONDS;
        ready &= caught_up;
        consumers.insert(
            consumer.to_owned(),
            ConsumerLag {
                position: checkpoint.position,
                lag_events: behind,
                lag_seconds: seconds,
                caught_up,
            },
        );
    }
    let mut body = Readiness {
        status: if ready { "ready" } else { "catching_up" },
        store: state.store.backend(),
        log_end: state.store.log_end().await?,
        consumers,
        request_panics: crate::http::REQUEST_PANICS.load(std::sync::atomic::Ordering::Relaxed),
        publisher: None,
    };
    if let Some(publisher) = &state.publisher {
        // Reported, not counted: a NATS outage pauses publishing, not the service's answers.
        use std::sync::atomic::Ordering;
        let checkpoint = state
            .store
            .checkpoint(crate::feed::publisher::PUBLISHER)
            .await?;
        let (behind, oldest) = state.store.backlog(checkpoint).await?;
        let stats = publisher.stats();
        body.publisher = Some(PublisherLag {
            position: checkpoint.position,
            lag_events: behind,
            lag_seconds: oldest.map_or(0, |oldest| (now - oldest).num_seconds().max(0)),
            published: stats.published.load(Ordering::Relaxed),
            duplicates_dropped: stats.duplicates.load(Ordering::Relaxed),
            failed_batches: stats.failures.load(Ordering::Relaxed),
        });
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(body)).into_response())
}

/// What a new token may do.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// `admin`, `reseller`, `customer_admin`, `password_admin`, `support` or `auditor`.
    role: String,
    /// The reseller a `reseller` token acts for.
    reseller_id: Option<Uuid>,
    /// The tenant a `customer_admin` or `password_admin` token acts for.
    tenant_id: Option<Uuid>,
}

/// An issued token: the secret is shown this once.
#[derive(Debug, Serialize, JsonSchema)]
pub struct IssuedToken {
    /// The token's id (recorded in the events it causes).
    pub token_id: Uuid,
    /// The bearer token itself; only its hash is stored. `null` in a replay of the answer.
    pub token: Option<String>,
    /// Its role.
    pub role: Role,
    /// Its reseller, for role `reseller`.
    pub reseller_id: Option<Uuid>,
    /// Its tenant, for roles `customer_admin` and `password_admin`.
    pub tenant_id: Option<Uuid>,
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
        Json(IssuedToken {
            token_id,
            token: Some(token),
            role,
            reseller_id: request.reseller_id,
            tenant_id: request.tenant_id,
        }),
    ))
}

/// The offer catalog.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OfferList {
    /// Every offer.
    pub offers: Vec<Offer>,
    /// How far the log had been read.
    pub position: i64,
}

/// One offer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OneOffer {
    /// The offer.
    pub offer: Offer,
    /// How far the log had been read (for a change: where it landed).
    pub position: i64,
}

async fn list_offers(
    principal: Principal,
    State(state): State<AppState>,
    min_position: MinPosition,
) -> Result<Json<OfferList>, ApiError> {
    require(&principal, access::READERS)?;
    let position = min_position.reached(&state, ReadFrom::Log).await?;
    let catalog = state.ledger.current_catalog().await?;
    let offers: Vec<Offer> = catalog.catalog.offers().cloned().collect();
    Ok(Json(OfferList { offers, position }))
}

async fn get_offer(
    principal: Principal,
    State(state): State<AppState>,
    Path(offer_id): Path<String>,
    min_position: MinPosition,
) -> Result<Json<OneOffer>, ApiError> {
    require(&principal, access::READERS)?;
    let offer_id = OfferId::parse(&offer_id)?;
    let position = min_position.reached(&state, ReadFrom::Log).await?;
    let catalog = state.ledger.current_catalog().await?;
    let offer = catalog
        .catalog
        .get(&offer_id)
        .ok_or_else(|| ApiError::NotFound(format!("offer {offer_id} is not in the catalog")))?;
    Ok(Json(OneOffer {
        offer: offer.clone(),
        position,
    }))
}

/// A price per licence per month.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceInput {
    amount: String,
    currency: String,
}

/// An offer to add to the catalog, or to replace.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferInput {
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
    Ok((StatusCode::OK, Json(OneOffer { offer, position })))
}

/// The sandbox clock after a move.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ClockAnswer {
    /// The service's "now".
    pub now: chrono::DateTime<chrono::Utc>,
}

/// A move of the sandbox clock: exactly one of the two.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockInput {
    advance_seconds: Option<i64>,
    now: Option<chrono::DateTime<chrono::Utc>>,
}

/// Moves the sandbox clock; without `--sandbox-clock` the route does not exist (404).
async fn set_clock(
    principal: Principal,
    State(state): State<AppState>,
    Json(input): Json<ClockInput>,
) -> Result<Json<ClockAnswer>, ApiError> {
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
    let offset = match (input.advance_seconds, input.now) {
        (Some(seconds), None) => {
            // Bounded before any arithmetic: chrono panics on durations past ±i64::MAX ms.
            let step = chrono::Duration::try_seconds(seconds).ok_or_else(|| ApiError::Invalid {
                field: "advance_seconds".into(),
                reason: "is out of range: the sandbox clock runs at most 100 years ahead".into(),
            })?;
            state
                .clock
                .offset_after(step)
                .map_err(|refusal| refused("advance_seconds", refusal))?
        }
        (None, Some(to)) => state
            .clock
            .offset_at(to)
            .map_err(|refusal| refused("now", refusal))?,
        _ => {
            return Err(ApiError::Invalid {
                field: "body".into(),
                reason: "give exactly one of advance_seconds or now".into(),
            })
        }
    };
    // Stored first, then taken: a store that fails leaves the clock where it was, so a retry
    // moves it once, not twice.
    state.store.save_sandbox_offset(offset).await?;
    state.clock.adopt(offset);
    let now = state.clock.now();
    Ok(Json(ClockAnswer { now }))
}
