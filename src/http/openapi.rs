//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of every route, built from one table so
//! that a test can check the router and the description never drift apart.

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Required, ResponseBuilder,
};

/// One route: verb, path (with `{parameters}`), what it does, who may call it.
pub struct RouteDoc {
    /// The HTTP method.
    pub method: &'static str,
    /// The path, parameters in braces.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Roles allowed (within their scope); empty for unauthenticated routes.
    pub roles: &'static str,
    /// The success status.
    pub success: u16,
}

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    roles: &'static str,
    success: u16,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        summary,
        roles,
        success,
    }
}

const CMD: &str = "admin, reseller (its tenants), customer_admin (its tenant)";
const READ: &str = "admin, reseller, customer_admin, support, auditor (within scope)";

/// Every route the service serves.
pub const ROUTES: &[RouteDoc] = &[
    route("GET", "/healthz", "Liveness.", "", 200),
    route(
        "GET",
        "/readyz",
        "Readiness: the store answers and every log consumer is within bounds (lag per consumer); 503 while catching up.",
        "",
        200,
    ),
    route("GET", "/v1/openapi.json", "This description.", "", 200),
    route(
        "POST",
        "/v1/tokens",
        "Issue a token scoped to a role (shown once).",
        "admin",
        201,
    ),
    route("GET", "/v1/offers", "The offer catalog.", "any", 200),
    route(
        "POST",
        "/v1/offers",
        "Add or update an offer (validated: no cycles, no unknown parents).",
        "admin",
        200,
    ),
    route("GET", "/v1/offers/{offer_id}", "One offer.", "any", 200),
    route(
        "POST",
        "/v1/resellers",
        "Register an indirect reseller.",
        "admin",
        201,
    ),
    route(
        "GET",
        "/v1/resellers/{reseller_id}",
        "One reseller.",
        "admin, support, auditor, the reseller",
        200,
    ),
    route(
        "POST",
        "/v1/billing-profiles",
        "Create a billing profile {name, currency}.",
        "admin, reseller",
        201,
    ),
    route(
        "GET",
        "/v1/billing-profiles/{billing_profile_id}",
        "One billing profile.",
        "admin, support, auditor, its reseller",
        200,
    ),
    route(
        "POST",
        "/v1/tenants",
        "Create a customer tenant {domain, name, reseller_id?}.",
        "admin, reseller",
        201,
    ),
    route("GET", "/v1/tenants/{tenant_id}", "One tenant.", READ, 200),
    route(
        "POST",
        "/v1/tenants/{tenant_id}/subscriptions",
        "PurchaseSubscription {offer_id, quantity, billing_profile_id, term?, trial?}.",
        CMD,
        201,
    ),
    route(
        "GET",
        "/v1/subscriptions/{subscription_id}",
        "State, quantity, refundable batches with their deadlines.",
        READ,
        200,
    ),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}/licenses:add",
        "AddLicense {count}.",
        CMD,
        200,
    ),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}/licenses:remove",
        "RemoveLicense {count} (409 cancellation_window_closed after the window).",
        CMD,
        200,
    ),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}:suspend",
        "Suspend.",
        CMD,
        200,
    ),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}:reactivate",
        "Reactivate (an add-on needs its parent chain).",
        CMD,
        200,
    ),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}:cancel",
        "Cancel within the cancellation window.",
        CMD,
        200,
    ),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}:convert-trial",
        "Convert a trial to paid (fresh window).",
        CMD,
        200,
    ),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}:upgrade",
        "Upgrade {offer_id} to a possible upgrade.",
        CMD,
        200,
    ),
    route(
        "PUT",
        "/v1/subscriptions/{subscription_id}/billing-profile",
        "Move to another billing profile {billing_profile_id}.",
        CMD,
        200,
    ),
    route(
        "POST",
        "/v1/tenants/{tenant_id}/users",
        "CreateUser {user_principal_name, first_name, last_name, display_name, location?, role?}.",
        CMD,
        201,
    ),
    route(
        "GET",
        "/v1/users/{user_id}",
        "One user (personal data unreadable once purged).",
        "admin, reseller, customer_admin, password_admin, support, auditor (within scope)",
        200,
    ),
    route(
        "PATCH",
        "/v1/users/{user_id}",
        "EditUser: names, location, role.",
        CMD,
        200,
    ),
    route(
        "DELETE",
        "/v1/users/{user_id}",
        "DeleteUser (soft; restorable for 30 days).",
        CMD,
        200,
    ),
    route(
        "POST",
        "/v1/users/{user_id}:restore",
        "RestoreUser (409 restore_window_expired after 30 days).",
        CMD,
        200,
    ),
    route(
        "POST",
        "/v1/users/{user_id}:reset-password",
        "Reset the password {notify_email?}; the temporary password is returned once.",
        "admin, reseller, customer_admin, password_admin (within scope)",
        200,
    ),
    route(
        "POST",
        "/v1/users/{user_id}/licenses",
        "AssignLicenses {add: [offer_id], remove: [offer_id]}: all or nothing.",
        CMD,
        200,
    ),
    route(
        "GET",
        "/v1/tenants/{tenant_id}/licenses",
        "Licence availability per product; ?as_of=<RFC 3339 instant> recomputes it from the log.",
        "admin, reseller, customer_admin, password_admin, support, auditor (within scope)",
        200,
    ),
    route(
        "GET",
        "/v1/tenants/{tenant_id}/users",
        "Users; ?include_deleted=true adds deleted users with restorable_until; ?as_of= from the log.",
        "admin, reseller, customer_admin, password_admin, support, auditor (within scope)",
        200,
    ),
    route(
        "GET",
        "/v1/tenants/{tenant_id}/subscriptions",
        "The tenant's subscriptions: state, quantity, refundable batches, billing profile.",
        READ,
        200,
    ),
    route(
        "GET",
        "/v1/billing-profiles/{billing_profile_id}/invoices/{month}",
        "The invoice of a month (YYYY-MM): monthly charges, prorations of the month before, totals per currency.",
        "admin, reseller (its profiles), support, auditor",
        200,
    ),
    route(
        "GET",
        "/v1/tenants/{tenant_id}/history",
        "The tenant's events with who, when, why.",
        READ,
        200,
    ),
    route(
        "GET",
        "/v1/subscriptions/{subscription_id}/history",
        "The subscription's events with who, when, why.",
        READ,
        200,
    ),
    route(
        "GET",
        "/v1/users/{user_id}/history",
        "The user's events with who, when, why.",
        READ,
        200,
    ),
    route(
        "GET",
        "/v1/events",
        "The global log as CloudEvents envelopes (docs/events.md), in commit order, from ?after=<position> (0: the start), ?limit= up to 1000 (default 100); next_after is the cursor of the next page, has_more whether the log holds more now. Scoped: a reseller sees its tenants' events, a customer admin its tenant's; tenant-less events (catalog, resellers, billing profiles) only admin, support and auditor.",
        READ,
        200,
    ),
    route(
        "GET",
        "/v1/events/stream",
        "The same envelopes as a live Server-Sent Events feed from ?after= (or the Last-Event-ID header when resuming); each event's id is its position; live once caught up.",
        READ,
        200,
    ),
    route(
        "POST",
        "/v1/sandbox/clock",
        "Move the sandbox clock {advance_seconds} or {now}; 404 without --sandbox-clock.",
        "admin",
        200,
    ),
];

fn method(raw: &str) -> HttpMethod {
    match raw {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        other => unreachable!("no route uses {other}"),
    }
}

/// The parameter names of a path: `{tenant_id}` → `tenant_id`.
fn parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// The OpenAPI document.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for route in ROUTES {
        let mut operation = OperationBuilder::new()
            .summary(Some(route.summary))
            .description(if route.roles.is_empty() {
                None
            } else {
                Some(format!("Roles: {}.", route.roles))
            })
            .tag(route.path.split('/').nth(2).unwrap_or("service"))
            .response(
                route.success.to_string(),
                ResponseBuilder::new().description("Success (JSON; commands carry `position`)."),
            )
            .response(
                "default",
                ResponseBuilder::new().description(
                    "RFC 9457 problem details (application/problem+json) with a `code`.",
                ),
            );
        for name in parameters(route.path) {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some("a UUID (offer ids: a GUID)")),
            );
        }
        if !route.roles.is_empty() {
            operation =
                operation.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        paths = paths.path(route.path, PathItem::new(method(route.method), operation));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("seatledger")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Event-sourced books for Microsoft 365 licences. Errors are RFC 9457 problem \
                     details with a machine `code`; money is a decimal string with its currency.",
                )),
        )
        .paths(paths.build())
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(
                    "bearer",
                    SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
                )
                .build(),
        ))
        .build()
}
