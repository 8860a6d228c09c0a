//! Reads a support agent or auditor makes: licence availability, user lists, a tenant's
//! subscriptions and a billing profile's invoices come from the checkpointed projections
//! (each answer says how far they have read); `?as_of=` recomputes a view from the log as it
//! stood at an instant; histories read the log itself.

use crate::http::Query;
use aggregates::party::BillingProfileState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use projections::billing::{self, BilledSubscription, BillingEntry, Month};
use projections::licenses::{self, AssignedDoc, SeatsDoc};
use projections::users::{self, UserListStatus, UserRow};
use projections::{LoggedEvent, Projection, RowSet};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::Serialize;
use uuid::Uuid;

use super::parties::{visible_billing_profile, visible_tenant};
use super::subscriptions::{subscription_view, visible_subscription};
use super::users::visible_user;
use super::{parse_id, require};
use crate::auth::Principal;
use crate::http::min_position::{MinPosition, ReadFrom};
use crate::http::problem::ApiError;
use crate::http::{AppState, Json};
use crate::read::{decode_all, scoped_docs, scoped_docs_page};

use crate::access::{READERS, USER_READERS};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/licenses", get(licenses))
        .route("/v1/tenants/{tenant_id}/users", get(users))
        .route("/v1/tenants/{tenant_id}/subscriptions", get(subscriptions))
        .route(
            "/v1/billing-profiles/{billing_profile_id}/invoices/{month}",
            get(invoice),
        )
        .route("/v1/tenants/{tenant_id}/history", get(tenant_history))
        .route(
            "/v1/subscriptions/{subscription_id}/history",
            get(subscription_history),
        )
        .route("/v1/users/{user_id}/history", get(user_history))
}

/// A tenant's licence availability, one row per product.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LicenceView {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The instant the view was recomputed for (`null`: now, from the projection).
    pub as_of: Option<DateTime<Utc>>,
    /// One row per product.
    pub licenses: Vec<licenses::LicenseRow>,
    /// How far the projections (or, with `as_of`, the log) had been read.
    pub position: i64,
}

/// A tenant's users.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UserList {
    /// The instant the list was recomputed for (`null`: now, from the projection).
    pub as_of: Option<DateTime<Utc>>,
    /// How far the projections (or, with `as_of`, the log) had been read.
    pub position: i64,
    /// The tenant.
    pub tenant_id: Uuid,
    /// Its users, deleted ones only with `include_deleted=true`.
    pub users: Vec<UserListItem>,
}

/// One user of a tenant's list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UserListItem {
    /// Its id.
    pub id: Uuid,
    /// Its sign-in name.
    pub user_principal_name: Option<String>,
    /// Its display name.
    pub display_name: Option<String>,
    /// `active` or `deleted`.
    pub status: UserListStatus,
    /// Its administrative role.
    pub role: aggregates::values::UserRole,
    /// The SKUs it holds.
    pub licenses: Vec<aggregates::values::ProvisioningId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was deleted, while deleted.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Until when it may be restored, while deleted.
    pub restorable_until: Option<DateTime<Utc>>,
}

/// A tenant's subscriptions.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SubscriptionList {
    /// The tenant.
    pub tenant_id: Uuid,
    /// Its subscriptions.
    pub subscriptions: Vec<super::subscriptions::SubscriptionView>,
    /// How far the projections had been read.
    pub position: i64,
}

/// A billing profile's invoice of one month.
#[derive(Debug, Serialize, JsonSchema)]
pub struct InvoiceView {
    /// The invoice.
    #[serde(flatten)]
    pub invoice: billing::Invoice,
    /// The profile's name.
    pub billing_profile_name: aggregates::values::OrganisationName,
    /// The profile's currency.
    pub billing_profile_currency: aggregates::values::Currency,
    /// `final` once its month has begun, `preview` before.
    pub status: &'static str,
    /// How far the projections had been read.
    pub position: i64,
}

/// One aggregate's events, with who, when and why.
#[derive(Debug, Serialize, JsonSchema)]
pub struct History {
    /// `tenant`, `subscription` or `user`.
    pub aggregate_type: String,
    /// Its id.
    pub aggregate_id: Uuid,
    /// Its events, oldest first.
    pub events: Vec<crate::store::RecordedEvent>,
    /// How far the log had been read.
    pub position: i64,
}

fn parse_as_of(raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(raw)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|_| ApiError::Invalid {
                field: "as_of".into(),
                reason: format!("'{raw}' is not an RFC 3339 instant such as 2026-11-01T00:00:00Z"),
            })
    })
    .transpose()
}

/// One stream's events up to `as_of` (by the time they happened), decoded.
async fn stream_until(
    state: &AppState,
    aggregate_type: &str,
    aggregate_id: Uuid,
    as_of: DateTime<Utc>,
) -> Result<Vec<LoggedEvent>, ApiError> {
    let recorded = state
        .store
        .history(aggregate_type, &aggregate_id.to_string())
        .await?;
    let mut events = Vec::with_capacity(recorded.len());
    for event in recorded {
        let logged = LoggedEvent::decode(
            event.position,
            aggregate_type,
            &aggregate_id.to_string(),
            event.sequence,
            &event.payload.to_string(),
        )
        .map_err(internal)?;
        if logged.at().is_some_and(|at| at > as_of) {
            break;
        }
        events.push(logged);
    }
    Ok(events)
}

fn fold(projection: &dyn Projection, events: &[LoggedEvent]) -> Result<RowSet, ApiError> {
    let mut rows = RowSet::complete();
    projections::fold(projection, events, &mut rows).map_err(internal)?;
    Ok(rows)
}

fn internal(error: impl std::error::Error + Send + Sync + 'static) -> ApiError {
    ApiError::internal(error)
}

/// The live documents of one kind listed under `scope` in a projection, decoded.
async fn listed<T: serde::de::DeserializeOwned>(
    state: &AppState,
    projection: &str,
    kind: &str,
    scope: impl ToString,
) -> Result<Vec<T>, ApiError> {
    let docs = scoped_docs(&state.store, projection, kind, &scope.to_string()).await?;
    decode_all(&docs).map_err(internal)
}

#[derive(Debug, Deserialize)]
struct LicenseQuery {
    as_of: Option<String>,
}

async fn licenses(
    principal: Principal,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    Query(query): Query<LicenseQuery>,
    min_position: MinPosition,
) -> Result<Json<LicenceView>, ApiError> {
    let tenant_id = parse_id("tenant_id", &tenant_id)?;
    let as_of = parse_as_of(query.as_of.as_deref())?;
    visible_tenant(&state, &principal, tenant_id).await?;
    require(&principal, READERS)?;
    let (rows, position) = match as_of {
        Some(as_of) => {
            let position = min_position.reached(&state, ReadFrom::Log).await?;
            let events = stream_until(&state, "tenant", tenant_id, as_of).await?;
            let rows = fold(&licenses::Licenses, &events)?;
            (
                licenses::availability_in(&rows, tenant_id).map_err(internal)?,
                position,
            )
        }
        None => {
            let position = min_position.reached(&state, ReadFrom::Projections).await?;
            let seats: Vec<SeatsDoc> =
                listed(&state, licenses::NAME, licenses::SEATS, tenant_id).await?;
            let assigned: Vec<AssignedDoc> =
                listed(&state, licenses::NAME, licenses::ASSIGNED, tenant_id).await?;
            (licenses::availability(&seats, &assigned), position)
        }
    };
    Ok(Json(LicenceView {
        tenant_id,
        as_of,
        licenses: rows,
        position,
    }))
}

#[derive(Debug, Deserialize)]
struct UserListQuery {
    #[serde(default)]
    include_deleted: bool,
    as_of: Option<String>,
}

async fn users(
    principal: Principal,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    Query(query): Query<UserListQuery>,
    min_position: MinPosition,
) -> Result<Response, ApiError> {
    let tenant_id = parse_id("tenant_id", &tenant_id)?;
    let as_of = parse_as_of(query.as_of.as_deref())?;
    visible_tenant(&state, &principal, tenant_id).await?;
    require(&principal, USER_READERS)?;
    let Some(as_of) = as_of else {
        let position = min_position.reached(&state, ReadFrom::Projections).await?;
        return user_list_pages(state, tenant_id, query.include_deleted, position).await;
    };
    let position = min_position.reached(&state, ReadFrom::Log).await?;
    let mut events = stream_until(&state, "tenant", tenant_id, as_of).await?;
    let registered: Vec<Uuid> = events
        .iter()
        .filter_map(|event| match &event.event {
            projections::DomainEvent::Tenant(aggregates::tenant::TenantEvent::UserRegistered {
                user_id,
                ..
            }) => Some(*user_id),
            _ => None,
        })
        .collect();
    for user_id in registered {
        events.extend(stream_until(&state, "user", user_id, as_of).await?);
    }
    events.sort_by_key(|event| event.position);
    let rows = fold(&users::Users, &events)?;
    let listed = users::users_in(&rows, tenant_id).map_err(internal)?;
    let users = listed_users(&state, listed, query.include_deleted).await?;
    Ok(Json(UserList {
        as_of: Some(as_of),
        position,
        tenant_id,
        users,
    })
    .into_response())
}

/// Users per page of the live user list.
const USER_LIST_PAGE: i64 = 500;

/// The live user list, read and sent a page at a time: a tenant of 100 000 users took 300 MiB
/// to answer as one document. The first page is read before answering, so that a failure
/// there is still an error response; a failure after it cuts the response short (and is
/// logged), which a client sees as a body that is not valid JSON.
async fn user_list_pages(
    state: AppState,
    tenant_id: Uuid,
    include_deleted: bool,
    position: i64,
) -> Result<Response, ApiError> {
    let scope = tenant_id.to_string();
    let (first, after) = user_page(&state, &scope, "", include_deleted).await?;
    // The fields of [`UserList`], written by hand around the pages.
    let head = format!(
        "{{\"as_of\":null,\"position\":{position},\"tenant_id\":\"{tenant_id}\",\"users\":["
    );
    let pages = futures::stream::unfold(
        (Some(first), after, true),
        move |(ready, next, first_item)| {
            let state = state.clone();
            let scope = scope.clone();
            async move {
                let (rows, next) = match (ready, next) {
                    (Some(rows), next) => (rows, next),
                    (None, None) => return None,
                    (None, Some(after)) => {
                        match user_page(&state, &scope, &after, include_deleted).await {
                            Ok(page) => page,
                            Err(error) => {
                                tracing::error!(?error, "user list cut short");
                                let failed = std::io::Error::other("user list cut short");
                                return Some((Err(failed), (None, None, false)));
                            }
                        }
                    }
                };
                let mut chunk = Vec::new();
                let mut first_item = first_item;
                for row in rows {
                    if !first_item {
                        chunk.push(b',');
                    }
                    first_item = false;
                    chunk.extend_from_slice(&row);
                }
                Some((Ok(bytes::Bytes::from(chunk)), (None, next, first_item)))
            }
        },
    );
    let body = futures::stream::once(async move { Ok(bytes::Bytes::from(head)) })
        .chain(pages)
        .chain(futures::stream::once(async {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"]}"))
        }));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// One page of the tenant's users after the key `after`, each as its JSON, and the key to
/// read the next page after (`None` after the last page).
async fn user_page(
    state: &AppState,
    scope: &str,
    after: &str,
    include_deleted: bool,
) -> Result<(Vec<Vec<u8>>, Option<String>), ApiError> {
    let docs = scoped_docs_page(
        &state.store,
        users::NAME,
        users::USER,
        scope,
        after,
        USER_LIST_PAGE,
    )
    .await?;
    let next = (docs.len() as i64 == USER_LIST_PAGE)
        .then(|| docs.last().map(|(key, _)| key.clone()))
        .flatten();
    let rows: Vec<UserRow> = decode_all(&docs).map_err(internal)?;
    drop(docs);
    let items = listed_users(state, rows, include_deleted)
        .await?
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()
        .map_err(internal)?;
    Ok((items, next))
}

/// The users as the list shows them, each as its JSON: deleted ones only when asked for, the
/// personal details unsealed per request (a purged user's key is gone, so nothing readable
/// remains).
async fn listed_users(
    state: &AppState,
    rows: Vec<UserRow>,
    include_deleted: bool,
) -> Result<Vec<UserListItem>, ApiError> {
    let listed: Vec<UserRow> = rows
        .into_iter()
        .filter(|user| include_deleted || user.status != UserListStatus::Deleted)
        .collect();
    let sealed: Vec<_> = listed.iter().map(|user| &user.details).collect();
    let unsealed = state.vault.unseal_all(&sealed).await.map_err(internal)?;
    Ok(listed
        .iter()
        .zip(unsealed)
        .map(|(user, details)| UserListItem {
            id: user.user_id,
            user_principal_name: details.as_ref().map(|d| d.user_principal_name.to_string()),
            display_name: details.as_ref().map(|d| d.display_name.to_string()),
            status: user.status,
            role: user.role,
            licenses: user.licenses.iter().cloned().collect(),
            created_at: user.created_at,
            deleted_at: user.deleted_at,
            restorable_until: user.restorable_until,
        })
        .collect())
}

async fn subscriptions(
    principal: Principal,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    min_position: MinPosition,
) -> Result<Json<SubscriptionList>, ApiError> {
    let tenant_id = parse_id("tenant_id", &tenant_id)?;
    visible_tenant(&state, &principal, tenant_id).await?;
    require(&principal, READERS)?;
    let position = min_position.reached(&state, ReadFrom::Projections).await?;
    let states: Vec<aggregates::subscription::SubscriptionState> = listed(
        &state,
        projections::subscriptions::NAME,
        projections::subscriptions::SUBSCRIPTION,
        tenant_id,
    )
    .await?;
    let now = state.clock.now();
    let subscriptions = states
        .iter()
        .map(|subscription| subscription_view(subscription, now))
        .collect();
    Ok(Json(SubscriptionList {
        tenant_id,
        subscriptions,
        position,
    }))
}

async fn invoice(
    principal: Principal,
    State(state): State<AppState>,
    Path((billing_profile_id, month)): Path<(String, String)>,
    min_position: MinPosition,
) -> Result<Json<InvoiceView>, ApiError> {
    let billing_profile_id = parse_id("billing_profile_id", &billing_profile_id)?;
    let profile: BillingProfileState =
        visible_billing_profile(&state, &principal, billing_profile_id).await?;
    let month = Month::parse(&month).map_err(|error| ApiError::Invalid {
        field: "month".into(),
        reason: error.to_string(),
    })?;
    let position = min_position.reached(&state, ReadFrom::Projections).await?;
    let billed: Vec<BilledSubscription> =
        listed(&state, billing::NAME, billing::BILLED, billing_profile_id).await?;
    let mut entries: Vec<BillingEntry> = Vec::new();
    for subscription in billed {
        entries.extend(
            listed::<BillingEntry>(
                &state,
                billing::NAME,
                billing::ENTRY,
                subscription.subscription_id,
            )
            .await?,
        );
    }
    let invoice = billing::invoice(billing_profile_id, month, &entries);
    // An invoice is final once its month has begun: it reads only what happened before.
    let status = if state.clock.now() >= month.start() {
        "final"
    } else {
        "preview"
    };
    Ok(Json(InvoiceView {
        invoice,
        billing_profile_name: profile.name,
        billing_profile_currency: profile.currency,
        status,
        position,
    }))
}

async fn history_of(
    state: &AppState,
    aggregate_type: &str,
    aggregate_id: Uuid,
    min_position: MinPosition,
) -> Result<Json<History>, ApiError> {
    let position = min_position.reached(state, ReadFrom::Log).await?;
    let events = state
        .store
        .history(aggregate_type, &aggregate_id.to_string())
        .await?;
    Ok(Json(History {
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id,
        events,
        position,
    }))
}

async fn tenant_history(
    principal: Principal,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    min_position: MinPosition,
) -> Result<Json<History>, ApiError> {
    let tenant_id = parse_id("tenant_id", &tenant_id)?;
    visible_tenant(&state, &principal, tenant_id).await?;
    require(&principal, READERS)?;
    history_of(&state, "tenant", tenant_id, min_position).await
}

async fn subscription_history(
    principal: Principal,
    State(state): State<AppState>,
    Path(subscription_id): Path<String>,
    min_position: MinPosition,
) -> Result<Json<History>, ApiError> {
    let subscription_id = parse_id("subscription_id", &subscription_id)?;
    visible_subscription(&state, &principal, subscription_id, READERS).await?;
    history_of(&state, "subscription", subscription_id, min_position).await
}

async fn user_history(
    principal: Principal,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    min_position: MinPosition,
) -> Result<Json<History>, ApiError> {
    let user_id = parse_id("user_id", &user_id)?;
    visible_user(&state, &principal, user_id, READERS).await?;
    history_of(&state, "user", user_id, min_position).await
}
