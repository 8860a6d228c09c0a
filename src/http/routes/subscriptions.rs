//! Subscriptions: purchase, seats, lifecycle, billing profile.

use aggregates::catalog::Offer;
use aggregates::policy::FollowUp;
use aggregates::subscription::{
    SubscriptionCommand, SubscriptionState, SubscriptionStatus, SuspensionReason,
};
use aggregates::tenant::TenantCommand;
use aggregates::values::{OfferId, ProductName, ProvisioningId, Quantity, Term, UnitPrice};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
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

use crate::access::{self, MANAGERS as BUYERS, READERS};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/subscriptions", post(purchase))
        // `{id}:suspend` and friends put the action after the id in one segment.
        .route(
            "/v1/subscriptions/{subscription}",
            get(get_subscription).post(lifecycle),
        )
        .route(
            "/v1/subscriptions/{subscription_id}/licenses:add",
            post(add_licenses),
        )
        .route(
            "/v1/subscriptions/{subscription_id}/licenses:remove",
            post(remove_licenses),
        )
        .route(
            "/v1/subscriptions/{subscription_id}/billing-profile",
            put(assign_billing_profile),
        )
}

/// A subscription as clients read it, with what is refundable now.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SubscriptionView {
    /// Its id.
    pub id: Uuid,
    /// The tenant it belongs to.
    pub tenant_id: Uuid,
    /// The offer it is a subscription to.
    pub offer_id: OfferId,
    /// The offer's product name.
    pub offer_name: ProductName,
    /// The SKU part number its seats are counted by.
    pub sku: ProvisioningId,
    /// The price per licence per month it is billed at.
    pub unit_price: UnitPrice,
    /// Its seats.
    pub quantity: u32,
    /// Seats that may still be removed (inside their 168-hour windows).
    pub refundable_quantity: u32,
    /// Where it is in its lifecycle.
    pub status: SubscriptionStatus,
    /// Whether it is a trial.
    pub trial: bool,
    /// When the trial ends.
    pub trial_ends_at: Option<DateTime<Utc>>,
    /// Its billing term.
    pub term: Term,
    /// The billing profile it is invoiced to.
    pub billing_profile_id: Uuid,
    /// When it was bought.
    pub purchased_at: DateTime<Utc>,
    /// Until when it may be cancelled.
    pub cancellable_until: DateTime<Utc>,
    /// When its term renews.
    pub renews_at: DateTime<Utc>,
    /// Its seats by batch, each with its own cancellation window.
    pub batches: Vec<BatchView>,
    /// Its upgrades, oldest first.
    pub upgrades: Vec<UpgradeView>,
    /// Where the command landed in the log, or how far the log had been read (absent on the
    /// items of a list, whose answer carries it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
}

/// Seats added together, with their cancellation window.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BatchView {
    /// The batch's number within the subscription.
    pub batch: u32,
    /// Seats still in it.
    pub seats: u32,
    /// When they were added.
    pub added_at: DateTime<Utc>,
    /// Until when they may be removed.
    pub refundable_until: DateTime<Utc>,
    /// Whether they may be removed now.
    pub refundable: bool,
}

/// One upgrade of a subscription.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpgradeView {
    /// The offer before.
    pub from: OfferId,
    /// The offer after.
    pub to: OfferId,
    /// When.
    pub at: DateTime<Utc>,
}

/// The subscription's state as clients read it, with what is refundable now.
pub(crate) fn subscription_view(state: &SubscriptionState, now: DateTime<Utc>) -> SubscriptionView {
    SubscriptionView {
        id: state.subscription_id,
        tenant_id: state.tenant_id,
        offer_id: state.offer.id,
        offer_name: state.offer.name.clone(),
        sku: state.offer.provisioning_id.clone(),
        unit_price: state.offer.unit_price.clone(),
        quantity: state.quantity,
        refundable_quantity: state.refundable_at(now),
        status: state.status.clone(),
        trial: state.trial,
        trial_ends_at: state.trial_ends_at,
        term: state.term,
        billing_profile_id: state.billing_profile_id,
        purchased_at: state.purchased_at,
        cancellable_until: state.cancellable_until,
        renews_at: state.renews_at,
        batches: state
            .batches
            .iter()
            .map(|batch| BatchView {
                batch: batch.batch,
                seats: batch.seats,
                added_at: batch.added_at,
                refundable_until: batch.refundable_until,
                refundable: now <= batch.refundable_until,
            })
            .collect(),
        upgrades: state
            .upgrades
            .iter()
            .map(|upgrade| UpgradeView {
                from: upgrade.from.id,
                to: upgrade.to.id,
                at: upgrade.at,
            })
            .collect(),
        position: None,
    }
}

/// Loads a subscription whose tenant the caller may see, checking its role against `roles`.
pub(super) async fn visible_subscription(
    state: &AppState,
    principal: &Principal,
    subscription_id: Uuid,
    roles: access::Roles,
) -> Result<SubscriptionState, ApiError> {
    let not_found = || ApiError::NotFound(format!("subscription {subscription_id} does not exist"));
    let subscription = state
        .ledger
        .subscription(subscription_id)
        .await?
        .state
        .clone()
        .ok_or_else(not_found)?;
    // Only "the tenant is not visible" turns into "the subscription does not exist": a store
    // failure stays what it is.
    visible_tenant(state, principal, subscription.tenant_id)
        .await
        .map_err(|error| match error {
            ApiError::NotFound(_) => not_found(),
            other => other,
        })?;
    require(principal, roles)?;
    Ok(subscription)
}

async fn offer_in_catalog(state: &AppState, raw: &str) -> Result<Offer, ApiError> {
    let offer_id = OfferId::parse(raw)?;
    let catalog = state.ledger.current_catalog().await?;
    catalog
        .catalog
        .get(&offer_id)
        .cloned()
        .ok_or(ApiError::Invalid {
            field: "offer_id".into(),
            reason: format!("offer {offer_id} is not in the catalog"),
        })
}

/// A billing profile that may be charged for a tenant's subscription (one rule for every
/// role, see [`access::may_charge`]); an unknown profile answers exactly as one the caller may
/// not charge, so the answer never tells which profile ids exist.
async fn usable_billing_profile(
    state: &AppState,
    principal: &Principal,
    tenant_reseller: Option<Uuid>,
    billing_profile_id: Uuid,
) -> Result<(), ApiError> {
    let profile = state
        .ledger
        .billing_profile_state(billing_profile_id)
        .await?;
    let usable = profile
        .state
        .as_ref()
        .is_some_and(|profile| access::may_charge(principal, profile.reseller_id, tenant_reseller));
    if usable {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            field: "billing_profile_id".into(),
            reason: format!(
                "billing profile {billing_profile_id} does not exist or may not be charged for this tenant"
            ),
        })
    }
}

/// A purchase: PurchaseSubscription.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseInput {
    /// The offer (a GUID of the catalog).
    offer_id: String,
    /// Seats, 1 to 1 000 000.
    quantity: i64,
    /// The billing profile to invoice: the tenant's reseller's (or, for a direct tenant, the
    /// partner's own).
    billing_profile_id: Uuid,
    /// `monthly` (the default) or `annual`.
    term: Option<String>,
    /// A 30-day trial of 25 seats.
    #[serde(default)]
    trial: bool,
}

async fn purchase(
    principal: Principal,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    Json(input): Json<PurchaseInput>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant_id = parse_id("tenant_id", &tenant_id)?;
    let (_, tenant) = visible_tenant(&state, &principal, tenant_id).await?;
    require(&principal, BUYERS)?;
    let offer = offer_in_catalog(&state, &input.offer_id).await?;
    let quantity = Quantity::parse("quantity", input.quantity)?;
    let term = input
        .term
        .as_deref()
        .map(Term::parse)
        .transpose()?
        .unwrap_or_default();
    usable_billing_profile(
        &state,
        &principal,
        tenant.reseller_id,
        input.billing_profile_id,
    )
    .await?;
    let subscription_id = Uuid::new_v4();
    let landed = state
        .ledger
        .dispatch(
            FollowUp::Tenant {
                tenant_id,
                command: TenantCommand::PurchaseSubscription {
                    subscription_id,
                    offer,
                    quantity,
                    term,
                    billing_profile_id: input.billing_profile_id,
                    trial: input.trial,
                    at: state.clock.now(),
                },
            },
            &metadata(&principal),
        )
        .await?;
    let position = state.ledger.position_after(landed.as_ref()).await?;
    let subscription = state
        .ledger
        .subscription(subscription_id)
        .await?
        .state
        .clone()
        .ok_or_else(|| ApiError::internal("purchased subscription did not open"))?;
    let mut body = subscription_view(&subscription, state.clock.now());
    body.position = Some(position);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn get_subscription(
    principal: Principal,
    State(state): State<AppState>,
    Path(subscription_id): Path<String>,
    min_position: MinPosition,
) -> Result<Json<SubscriptionView>, ApiError> {
    if let Some((_, action)) = subscription_id.split_once(':') {
        return Err(ApiError::MethodNotAllowed(format!(
            "GET /v1/subscriptions/{subscription_id}: :{action} is an action, sent with POST"
        )));
    }
    let subscription_id = parse_id("subscription_id", &subscription_id)?;
    let position = min_position.reached(&state, ReadFrom::Log).await?;
    let subscription = visible_subscription(&state, &principal, subscription_id, READERS).await?;
    let mut body = subscription_view(&subscription, state.clock.now());
    body.position = Some(position);
    Ok(Json(body))
}

/// Runs a command on a subscription the caller may change and answers its new state.
async fn run(
    state: &AppState,
    principal: &Principal,
    subscription_id: Uuid,
    command: SubscriptionCommand,
) -> Result<Json<SubscriptionView>, ApiError> {
    let landed = state
        .ledger
        .dispatch(
            FollowUp::Subscription {
                subscription_id,
                command,
            },
            &metadata(principal),
        )
        .await?;
    let position = state.ledger.position_after(landed.as_ref()).await?;
    let subscription = state
        .ledger
        .subscription(subscription_id)
        .await?
        .state
        .clone()
        .ok_or_else(|| ApiError::internal("subscription vanished"))?;
    let mut body = subscription_view(&subscription, state.clock.now());
    body.position = Some(position);
    Ok(Json(body))
}

/// Seats to add or remove.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountInput {
    /// How many, 1 to 1 000 000.
    count: i64,
}

async fn add_licenses(
    principal: Principal,
    State(state): State<AppState>,
    Path(subscription_id): Path<String>,
    Json(input): Json<CountInput>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let subscription_id = parse_id("subscription_id", &subscription_id)?;
    visible_subscription(&state, &principal, subscription_id, BUYERS).await?;
    let count = Quantity::parse("count", input.count)?;
    let at = state.clock.now();
    run(
        &state,
        &principal,
        subscription_id,
        SubscriptionCommand::AddLicenses { count, at },
    )
    .await
}

async fn remove_licenses(
    principal: Principal,
    State(state): State<AppState>,
    Path(subscription_id): Path<String>,
    Json(input): Json<CountInput>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let subscription_id = parse_id("subscription_id", &subscription_id)?;
    visible_subscription(&state, &principal, subscription_id, BUYERS).await?;
    let count = Quantity::parse("count", input.count)?;
    let at = state.clock.now();
    run(
        &state,
        &principal,
        subscription_id,
        SubscriptionCommand::RemoveLicenses { count, at },
    )
    .await
}

/// The body of a lifecycle action: only `:upgrade` takes one.
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeInput {
    /// For `:upgrade`: the offer to upgrade to (one of the offer's possible upgrades).
    offer_id: Option<String>,
}

async fn lifecycle(
    principal: Principal,
    State(state): State<AppState>,
    Path(target): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<SubscriptionView>, ApiError> {
    let (raw_id, action) = target.split_once(':').ok_or_else(|| {
        ApiError::NotFound(format!(
            "POST /v1/subscriptions/{target} is not a route: use {{id}}:suspend, :reactivate, :cancel, :convert-trial or :upgrade"
        ))
    })?;
    let subscription_id = parse_id("subscription_id", raw_id)?;
    let subscription = visible_subscription(&state, &principal, subscription_id, BUYERS).await?;
    let at = state.clock.now();
    let command = match action {
        "suspend" => SubscriptionCommand::Suspend {
            reason: SuspensionReason::Requested,
            at,
        },
        "reactivate" => {
            let tenant = state.ledger.tenant(subscription.tenant_id).await?;
            SubscriptionCommand::Reactivate {
                parent_chain: tenant.prove_parent_chain(&subscription.offer).ok(),
                at,
            }
        }
        "cancel" => SubscriptionCommand::Cancel { at },
        "convert-trial" => SubscriptionCommand::ConvertTrial { at },
        "upgrade" => {
            let input: UpgradeInput = optional_json(&body)?;
            let raw = input.offer_id.ok_or(ApiError::Invalid {
                    field: "offer_id".into(),
                    reason: "name the offer to upgrade to".into(),
                })?;
            SubscriptionCommand::Upgrade {
                target: offer_in_catalog(&state, &raw).await?,
                at,
            }
        }
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown subscription action '{other}': use suspend, reactivate, cancel, convert-trial or upgrade"
            )))
        }
    };
    run(&state, &principal, subscription_id, command).await
}

/// The billing profile to move a subscription to.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingProfileMove {
    /// The profile (the tenant's reseller's).
    billing_profile_id: Uuid,
}

async fn assign_billing_profile(
    principal: Principal,
    State(state): State<AppState>,
    Path(subscription_id): Path<String>,
    Json(input): Json<BillingProfileMove>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let subscription_id = parse_id("subscription_id", &subscription_id)?;
    let subscription = visible_subscription(&state, &principal, subscription_id, BUYERS).await?;
    let (_, tenant) = visible_tenant(&state, &principal, subscription.tenant_id).await?;
    usable_billing_profile(
        &state,
        &principal,
        tenant.reseller_id,
        input.billing_profile_id,
    )
    .await?;
    let command = SubscriptionCommand::AssignBillingProfile {
        billing_profile_id: input.billing_profile_id,
        at: state.clock.now(),
    };
    run(&state, &principal, subscription_id, command).await
}
