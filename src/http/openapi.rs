//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of every route, built from one table so
//! that a test can check the router and the description never drift apart. Every request and
//! response body has a schema, generated (as JSON Schema 2020-12, which OpenAPI 3.1 speaks) from
//! the very Rust types the routes parse and answer; path and query parameters are typed too.

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApiBuilder, Ref, RefOr, Required, ResponseBuilder,
};

use super::problem::Problem;
use super::routes::{self, events, parties, reads, subscriptions, users};
use crate::access;

/// Writes a body's schema into the generator's components and answers the reference to it.
pub type SchemaOf = fn(&mut SchemaGenerator) -> RefOr<Schema>;

/// The schema of `T`, as a reference into the components (schemars names every struct the
/// routes use, so its schema is always a `$ref`).
fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> RefOr<Schema> {
    let reference = generator.subschema_for::<T>();
    let path = reference
        .as_value()
        .get("$ref")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{} has no schema of its own", T::schema_name()));
    RefOr::Ref(Ref::new(path))
}

/// Any JSON document (the description itself).
fn any_json(_: &mut SchemaGenerator) -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new().schema_type(Type::Object).build(),
    ))
}

/// A query parameter a route takes.
pub struct QueryDoc {
    /// Its name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Its schema.
    pub schema: fn() -> Object,
}

fn position_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .build()
}

fn instant_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .build()
}

fn boolean_schema() -> Object {
    ObjectBuilder::new().schema_type(Type::Boolean).build()
}

fn limit_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(1000))
        .build()
}

const MIN_POSITION: QueryDoc = QueryDoc {
    name: "min_position",
    description: "Answer only once what the read reads has reached this log position (a command's `position`); 504 position_not_reached after 5 s.",
    schema: position_schema,
};
const AS_OF_PARAM: QueryDoc = QueryDoc {
    name: "as_of",
    description: "Recompute the view from the log as it stood at this instant (RFC 3339).",
    schema: instant_schema,
};
const AFTER: QueryDoc = QueryDoc {
    name: "after",
    description: "The cursor: 0 (the start) or a position the feed or a command gave.",
    schema: position_schema,
};

/// What a plain read takes.
const READ_AT: &[QueryDoc] = &[MIN_POSITION];
/// What a read that can look back in time takes.
const AS_OF: &[QueryDoc] = &[MIN_POSITION, AS_OF_PARAM];
/// The user list's parameters.
const USER_LIST: &[QueryDoc] = &[
    MIN_POSITION,
    AS_OF_PARAM,
    QueryDoc {
        name: "include_deleted",
        description: "Also list deleted users, with the instant until which they may be restored.",
        schema: boolean_schema,
    },
];
/// A page of the log.
const PAGE: &[QueryDoc] = &[
    MIN_POSITION,
    AFTER,
    QueryDoc {
        name: "limit",
        description: "Events per page, 1 to 1000 (100 by default).",
        schema: limit_schema,
    },
];
/// The live feed.
const STREAM: &[QueryDoc] = &[AFTER];

/// One route: verb, path (with `{parameters}`), what it does, who may call it, what it takes
/// and answers.
pub struct RouteDoc {
    /// The HTTP method.
    pub method: &'static str,
    /// The path, parameters in braces.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Roles allowed (within their scope), the very sets the routes check; empty for the
    /// routes anyone may call.
    pub roles: access::Roles,
    /// The success status.
    pub success: u16,
    /// The request body's schema, when it takes one.
    pub request: Option<SchemaOf>,
    /// The success answer's schema (`None`: a Server-Sent Events stream).
    pub response: Option<SchemaOf>,
    /// Its query parameters.
    pub query: &'static [QueryDoc],
}

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    roles: access::Roles,
    success: u16,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        summary,
        roles,
        success,
        request: None,
        response: None,
        query: &[],
    }
}

impl RouteDoc {
    const fn takes(mut self, request: SchemaOf) -> Self {
        self.request = Some(request);
        self
    }

    const fn answers(mut self, response: SchemaOf) -> Self {
        self.response = Some(response);
        self
    }

    const fn query(mut self, query: &'static [QueryDoc]) -> Self {
        self.query = query;
        self
    }
}

/// Routes anyone may call.
const PUBLIC: access::Roles = &[];

/// Every route the service serves.
pub const ROUTES: &[RouteDoc] = &[
    route("GET", "/healthz", "Liveness.", PUBLIC, 200)
    .answers(schema::<routes::Health>),
    route(
        "GET",
        "/readyz",
        "Readiness: the store answers and every log consumer is within bounds (lag per consumer); 503 while catching up.",
        PUBLIC,
        200,
    )
    .answers(schema::<routes::Readiness>),
    route("GET", "/v1/openapi.json", "This description.", PUBLIC, 200)
    .answers(any_json),
    route(
        "POST",
        "/v1/tokens",
        "Issue a token scoped to a role (shown once).",
        access::ADMINS,
        201,
    )
    .takes(schema::<routes::TokenRequest>).answers(schema::<routes::IssuedToken>),
    route("GET", "/v1/offers", "The offer catalog.", access::READERS, 200)
    .answers(schema::<routes::OfferList>).query(READ_AT),
    route(
        "POST",
        "/v1/offers",
        "Add or update an offer (validated: no cycles, no unknown parents).",
        access::ADMINS,
        200,
    )
    .takes(schema::<routes::OfferInput>).answers(schema::<routes::OneOffer>),
    route("GET", "/v1/offers/{offer_id}", "One offer.", access::READERS, 200)
    .answers(schema::<routes::OneOffer>).query(READ_AT),
    route(
        "POST",
        "/v1/resellers",
        "Register an indirect reseller.",
        access::ADMINS,
        201,
    )
    .takes(schema::<parties::ResellerInput>).answers(schema::<parties::ResellerView>),
    route(
        "GET",
        "/v1/resellers/{reseller_id}",
        "One reseller.",
        access::ACCOUNT_READERS,
        200,
    )
    .answers(schema::<parties::ResellerView>).query(READ_AT),
    route(
        "POST",
        "/v1/billing-profiles",
        "Create a billing profile {name, currency}.",
        access::ONBOARDERS,
        201,
    )
    .takes(schema::<parties::BillingProfileInput>).answers(schema::<parties::BillingProfileView>),
    route(
        "GET",
        "/v1/billing-profiles/{billing_profile_id}",
        "One billing profile.",
        access::ACCOUNT_READERS,
        200,
    )
    .answers(schema::<parties::BillingProfileView>).query(READ_AT),
    route(
        "POST",
        "/v1/tenants",
        "Create a customer tenant {domain, name, reseller_id?}.",
        access::ONBOARDERS,
        201,
    )
    .takes(schema::<parties::TenantInput>).answers(schema::<parties::TenantView>),
    route("GET", "/v1/tenants/{tenant_id}", "One tenant.", access::READERS, 200)
    .answers(schema::<parties::TenantView>).query(READ_AT),
    route(
        "POST",
        "/v1/tenants/{tenant_id}/subscriptions",
        "PurchaseSubscription {offer_id, quantity, billing_profile_id, term?, trial?}.",
        access::MANAGERS,
        201,
    )
    .takes(schema::<subscriptions::PurchaseInput>).answers(schema::<subscriptions::SubscriptionView>),
    route(
        "GET",
        "/v1/subscriptions/{subscription_id}",
        "State, quantity, refundable batches with their deadlines.",
        access::READERS,
        200,
    )
    .answers(schema::<subscriptions::SubscriptionView>).query(READ_AT),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}/licenses:add",
        "AddLicense {count}.",
        access::MANAGERS,
        200,
    )
    .takes(schema::<subscriptions::CountInput>).answers(schema::<subscriptions::SubscriptionView>),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}/licenses:remove",
        "RemoveLicense {count} (409 cancellation_window_closed after the window).",
        access::MANAGERS,
        200,
    )
    .takes(schema::<subscriptions::CountInput>).answers(schema::<subscriptions::SubscriptionView>),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}:suspend",
        "Suspend.",
        access::MANAGERS,
        200,
    )
    .answers(schema::<subscriptions::SubscriptionView>),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}:reactivate",
        "Reactivate (an add-on needs its parent chain).",
        access::MANAGERS,
        200,
    )
    .answers(schema::<subscriptions::SubscriptionView>),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}:cancel",
        "Cancel within the cancellation window.",
        access::MANAGERS,
        200,
    )
    .answers(schema::<subscriptions::SubscriptionView>),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}:convert-trial",
        "Convert a trial to paid (fresh window).",
        access::MANAGERS,
        200,
    )
    .answers(schema::<subscriptions::SubscriptionView>),
    route(
        "POST",
        "/v1/subscriptions/{subscription_id}:upgrade",
        "Upgrade {offer_id} to a possible upgrade.",
        access::MANAGERS,
        200,
    )
    .takes(schema::<subscriptions::UpgradeInput>).answers(schema::<subscriptions::SubscriptionView>),
    route(
        "PUT",
        "/v1/subscriptions/{subscription_id}/billing-profile",
        "Move to another billing profile {billing_profile_id}.",
        access::MANAGERS,
        200,
    )
    .takes(schema::<subscriptions::BillingProfileMove>).answers(schema::<subscriptions::SubscriptionView>),
    route(
        "POST",
        "/v1/tenants/{tenant_id}/users",
        "CreateUser {user_principal_name, first_name, last_name, display_name, location?, role?}.",
        access::MANAGERS,
        201,
    )
    .takes(schema::<users::NewUser>).answers(schema::<users::UserView>),
    route(
        "GET",
        "/v1/users/{user_id}",
        "One user (personal data unreadable once purged).",
        access::USER_READERS,
        200,
    )
    .answers(schema::<users::UserView>).query(READ_AT),
    route(
        "PATCH",
        "/v1/users/{user_id}",
        "EditUser: names, location, role.",
        access::MANAGERS,
        200,
    )
    .takes(schema::<users::UserChanges>).answers(schema::<users::UserView>),
    route(
        "DELETE",
        "/v1/users/{user_id}",
        "DeleteUser (soft; restorable for 30 days).",
        access::MANAGERS,
        200,
    )
    .answers(schema::<users::UserView>),
    route(
        "POST",
        "/v1/users/{user_id}:restore",
        "RestoreUser (409 restore_window_expired after 30 days).",
        access::MANAGERS,
        200,
    )
    .answers(schema::<users::UserView>),
    route(
        "POST",
        "/v1/users/{user_id}:reset-password",
        "Reset the password {notify_email?}; the temporary password is returned once.",
        access::PASSWORD_RESETTERS,
        200,
    )
    .takes(schema::<users::ResetInput>).answers(schema::<users::PasswordReset>),
    route(
        "POST",
        "/v1/users/{user_id}/licenses",
        "AssignLicenses {add: [offer_id], remove: [offer_id]}: all or nothing.",
        access::MANAGERS,
        200,
    )
    .takes(schema::<users::LicenseChange>).answers(schema::<users::UserView>),
    route(
        "GET",
        "/v1/tenants/{tenant_id}/licenses",
        "Licence availability per product; ?as_of=<RFC 3339 instant> recomputes it from the log.",
        access::READERS,
        200,
    )
    .answers(schema::<reads::LicenceView>).query(AS_OF),
    route(
        "GET",
        "/v1/tenants/{tenant_id}/users",
        "Users; ?include_deleted=true adds deleted users with restorable_until; ?as_of= from the log.",
        access::USER_READERS,
        200,
    )
    .answers(schema::<reads::UserList>).query(USER_LIST),
    route(
        "GET",
        "/v1/tenants/{tenant_id}/subscriptions",
        "The tenant's subscriptions: state, quantity, refundable batches, billing profile.",
        access::READERS,
        200,
    )
    .answers(schema::<reads::SubscriptionList>).query(READ_AT),
    route(
        "GET",
        "/v1/billing-profiles/{billing_profile_id}/invoices/{month}",
        "The invoice of a month (YYYY-MM): monthly charges, prorations of the month before, totals per currency.",
        access::ACCOUNT_READERS,
        200,
    )
    .answers(schema::<reads::InvoiceView>).query(READ_AT),
    route(
        "GET",
        "/v1/tenants/{tenant_id}/history",
        "The tenant's events with who, when, why.",
        access::READERS,
        200,
    )
    .answers(schema::<reads::History>).query(READ_AT),
    route(
        "GET",
        "/v1/subscriptions/{subscription_id}/history",
        "The subscription's events with who, when, why.",
        access::READERS,
        200,
    )
    .answers(schema::<reads::History>).query(READ_AT),
    route(
        "GET",
        "/v1/users/{user_id}/history",
        "The user's events with who, when, why.",
        access::READERS,
        200,
    )
    .answers(schema::<reads::History>).query(READ_AT),
    route(
        "GET",
        "/v1/events",
        "The global log as CloudEvents envelopes (docs/events.md), in commit order, from ?after=<position> (0: the start), ?limit= up to 1000 (default 100); next_after is the cursor of the next page, has_more whether the log holds more now. Scoped: a reseller sees its tenants' events, a customer admin its tenant's; tenant-less events (catalog, resellers, billing profiles) only admin, support and auditor.",
        access::READERS,
        200,
    )
    .answers(schema::<events::EventPage>).query(PAGE),
    route(
        "GET",
        "/v1/events/stream",
        "The same envelopes as a live Server-Sent Events feed from ?after= (or the Last-Event-ID header when resuming); each event's id is its position; live once caught up.",
        access::READERS,
        200,
    )
    .query(STREAM),
    route(
        "POST",
        "/v1/sandbox/clock",
        "Move the sandbox clock {advance_seconds} or {now}; 404 without --sandbox-clock.",
        access::ADMINS,
        200,
    )
    .takes(schema::<routes::ClockInput>).answers(schema::<routes::ClockAnswer>),
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
/// The schema of a path parameter: a UUID (offer ids are GUIDs), or a `YYYY-MM` month.
fn path_parameter(name: &str) -> Object {
    if name == "month" {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[0-9]{4}-(0[1-9]|1[0-2])$"))
            .build()
    } else {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uuid".into())))
            .build()
    }
}

/// A body of `content_type` with `schema`.
fn content(content_type: &str, schema: RefOr<Schema>) -> (String, utoipa::openapi::Content) {
    (
        content_type.to_owned(),
        ContentBuilder::new().schema(Some(schema)).build(),
    )
}

/// The description, as served.
pub fn document() -> Value {
    // The bodies' schemas come from the Rust types (schemars, JSON Schema 2020-12), referenced
    // from the operations and written into the components below.
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|settings| settings.definitions_path = "/components/schemas/".into())
        .into_generator();
    let problem = schema::<Problem>(&mut generator);
    let mut paths = PathsBuilder::new();
    for route in ROUTES {
        let success = match route.response {
            Some(response) => content("application/json", response(&mut generator)),
            None => content(
                "text/event-stream",
                RefOr::T(Schema::Object(
                    ObjectBuilder::new().schema_type(Type::String).build(),
                )),
            ),
        };
        let mut operation = OperationBuilder::new()
            .summary(Some(route.summary))
            .operation_id(Some(operation_id(route)))
            .description(if route.roles.is_empty() {
                None
            } else {
                Some(format!("Roles: {}.", access::describe(route.roles)))
            })
            .tag(route.path.split('/').nth(2).unwrap_or("service"))
            .response(
                route.success.to_string(),
                ResponseBuilder::new()
                    .description("Success.")
                    .content(success.0, success.1),
            )
            .response(
                "default",
                ResponseBuilder::new()
                    .description(
                        "RFC 9457 problem details (application/problem+json) with a `code`.",
                    )
                    .content(
                        "application/problem+json",
                        ContentBuilder::new().schema(Some(problem.clone())).build(),
                    ),
            );
        for name in parameters(route.path) {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(path_parameter(name)))
                    .description(Some(if name == "month" {
                        "a month, YYYY-MM"
                    } else {
                        "a UUID (offer ids: a GUID)"
                    })),
            );
        }
        for parameter in route.query {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(parameter.name)
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .schema(Some((parameter.schema)()))
                    .description(Some(parameter.description)),
            );
        }
        if let Some(request) = route.request {
            let (content_type, body) = content("application/json", request(&mut generator));
            operation = operation.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(content_type, body)
                    .build(),
            ));
        }
        if !route.roles.is_empty() {
            operation =
                operation.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        paths = paths.path(route.path, PathItem::new(method(route.method), operation));
    }
    let description = OpenApiBuilder::new()
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
        .build();
    let mut document = serde_json::to_value(description).expect("the description serialises");
    // schemars' 2020-12 schemas say more than utoipa's schema model holds: they join the
    // components as they are.
    let definitions: Map<String, Value> = generator.take_definitions(true);
    document["components"]["schemas"] = Value::Object(definitions);
    document
}

/// A name for the operation, unique across the description: the method and the path's words.
fn operation_id(route: &RouteDoc) -> String {
    let words: Vec<String> = route
        .path
        .split(['/', ':', '{', '}', '-', '.'])
        .filter(|word| !word.is_empty() && *word != "v1")
        .map(str::to_owned)
        .collect();
    format!("{}_{}", route.method.to_lowercase(), words.join("_"))
}
