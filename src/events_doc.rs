//! `docs/events.md`, the event contract for downstream services, generated from the Rust types:
//! the envelope's JSON Schema from [`CloudEvent`], each event's `data` schema from its event
//! enum (its doc comments become the descriptions), each version from the enum's
//! `EVENT_VERSION` (what `event_version()` records). `tests/integration/events_doc.rs` fails when the file
//! falls behind [`render`]; `SEATLEDGER_WRITE_DOCS=1 cargo test --test events_doc` rewrites it.

use std::fmt::Write as _;

use aggregates::catalog::CatalogEvent;
use aggregates::party::{BillingProfileEvent, ResellerEvent};
use aggregates::subscription::SubscriptionEvent;
use aggregates::tenant::TenantEvent;
use aggregates::user::UserEvent;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{Map, Value};

use crate::feed::envelope::{self, CloudEvent, NO_TENANT};

/// Where the generated document lives, relative to the workspace root.
pub const PATH: &str = "docs/events.md";

/// The subject prefix the examples use: the default of `--nats-subject-prefix`.
const PREFIX: &str = "seatledger";

/// The JSON Schema dialect of every schema in the document.
const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// One aggregate type: its stream of events as the feed names and routes them.
#[derive(Debug, Clone)]
pub struct Family {
    /// The aggregate type: `source` is `urn:seatledger:<aggregate_type>`.
    pub aggregate_type: &'static str,
    /// The Rust enum its events are, for the reader who looks at the code.
    pub rust_type: &'static str,
    /// Whether its events belong to a tenant (the subject's second token is the tenant id and
    /// the envelope has `tenantid`) or to none (`global`, no `tenantid`), as
    /// [`crate::feed::tenancy`] decides.
    pub tenant_scoped: bool,
    /// What one stream (`subject`) of this type is.
    pub stream: &'static str,
    /// The version of every event type of the family (`EVENT_VERSION` of its enum).
    pub version: &'static str,
    /// Its event types, in the enum's order.
    pub events: Vec<DocumentedEvent>,
}

/// One event type as the document describes it.
#[derive(Debug, Clone)]
pub struct DocumentedEvent {
    /// The event type, as `event_type()` names it: `UserDeleted`.
    pub event_type: String,
    /// The CloudEvents `type`: `seatledger.user.UserDeleted.v1`.
    pub cloud_event_type: String,
    /// The NATS subject under the default prefix, with `<tenant_id>` for the tenant.
    pub subject: String,
    /// When it is emitted: the variant's doc comment.
    pub description: String,
    /// The JSON Schema of the envelope's `data`, complete in itself (its own `$defs`).
    pub data_schema: Value,
}

/// Every aggregate type and its events, in the document's order.
pub fn families() -> Vec<Family> {
    vec![
        family::<TenantEvent>(
            "tenant",
            "aggregates::tenant::TenantEvent",
            true,
            "one customer tenant (`subject` is the tenant id): its profile, seat pool and register of users",
            TenantEvent::EVENT_VERSION,
        ),
        family::<SubscriptionEvent>(
            "subscription",
            "aggregates::subscription::SubscriptionEvent",
            true,
            "one subscription (`subject` is the subscription id): seats, term, billing profile, lifecycle",
            SubscriptionEvent::EVENT_VERSION,
        ),
        family::<UserEvent>(
            "user",
            "aggregates::user::UserEvent",
            true,
            "one user (`subject` is the user id): sealed details, role, delete / restore / purge, password resets",
            UserEvent::EVENT_VERSION,
        ),
        family::<CatalogEvent>(
            "catalog",
            "aggregates::catalog::CatalogEvent",
            false,
            "the one offer catalog (`subject` is `catalog`)",
            CatalogEvent::EVENT_VERSION,
        ),
        family::<ResellerEvent>(
            "reseller",
            "aggregates::party::ResellerEvent",
            false,
            "one indirect reseller (`subject` is the reseller id)",
            ResellerEvent::EVENT_VERSION,
        ),
        family::<BillingProfileEvent>(
            "billing_profile",
            "aggregates::party::BillingProfileEvent",
            false,
            "one billing profile (`subject` is the billing profile id)",
            BillingProfileEvent::EVENT_VERSION,
        ),
    ]
}

fn settings() -> SchemaSettings {
    SchemaSettings::draft2020_12().for_serialize()
}

/// The family of the event enum `E`, read from its JSON Schema: cqrs-es stores an event as
/// `{"<EventType>": {…}}` (serde's external tagging), so each variant of the schema's `oneOf`
/// is an object with one property, named after the event type, whose schema is that of `data`.
fn family<E: JsonSchema>(
    aggregate_type: &'static str,
    rust_type: &'static str,
    tenant_scoped: bool,
    stream: &'static str,
    version: &'static str,
) -> Family {
    let mut generator = settings().into_generator();
    let schema = E::json_schema(&mut generator);
    let definitions = generator.definitions().clone();
    let variants = schema
        .get("oneOf")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{rust_type}: an enum of struct variants has a oneOf schema"));
    let events = variants
        .iter()
        .map(|variant| {
            let properties = variant
                .get("properties")
                .and_then(Value::as_object)
                .filter(|properties| properties.len() == 1)
                .unwrap_or_else(|| {
                    panic!("{rust_type}: every variant is externally tagged: {variant}")
                });
            let (event_type, data) = properties.iter().next().expect("one property");
            let description = variant
                .get("description")
                .and_then(Value::as_str)
                .map(unwrap_lines)
                .unwrap_or_else(|| panic!("{rust_type}::{event_type} needs a doc comment"));
            let cloud_event_type = envelope::type_name(aggregate_type, event_type, version);
            let tenant = if tenant_scoped {
                Some(uuid::Uuid::nil())
            } else {
                None
            };
            let subject = envelope::subject(PREFIX, tenant, aggregate_type, event_type)
                .replace(&uuid::Uuid::nil().to_string(), "<tenant_id>");
            let data_schema = standalone(data, &definitions, &cloud_event_type, &description);
            DocumentedEvent {
                event_type: event_type.clone(),
                cloud_event_type,
                subject,
                description,
                data_schema,
            }
        })
        .collect();
    Family {
        aggregate_type,
        rust_type,
        tenant_scoped,
        stream,
        version,
        events,
    }
}

/// `schema` as a root schema of its own: dialect, title, description, and the definitions it
/// refers to, directly or through one another.
fn standalone(
    schema: &Value,
    definitions: &Map<String, Value>,
    title: &str,
    description: &str,
) -> Value {
    let mut root = Map::new();
    root.insert("$schema".into(), DIALECT.into());
    root.insert("title".into(), title.into());
    root.insert("description".into(), description.into());
    for (key, value) in schema.as_object().expect("an object schema") {
        root.entry(key.clone()).or_insert_with(|| value.clone());
    }
    let mut needed = std::collections::BTreeSet::new();
    let mut pending = vec![schema.clone()];
    while let Some(next) = pending.pop() {
        let mut refs = Vec::new();
        references(&next, &mut refs);
        for name in refs {
            if needed.insert(name.clone()) {
                let definition = definitions
                    .get(&name)
                    .unwrap_or_else(|| panic!("no definition {name}"));
                pending.push(definition.clone());
            }
        }
    }
    if !needed.is_empty() {
        let defs: Map<String, Value> = needed
            .into_iter()
            .map(|name| {
                let definition = definitions[&name].clone();
                (name, definition)
            })
            .collect();
        root.insert("$defs".into(), Value::Object(defs));
    }
    let mut root = Value::Object(root);
    tidy_descriptions(&mut root);
    root
}

/// A doc comment's text with its lines joined: a single line break becomes a space, a blank
/// line (a new paragraph) stays.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Joins the lines of every `description` in `schema`, which come from wrapped doc comments.
fn tidy_descriptions(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match (key.as_str(), value) {
                    ("description", Value::String(text)) => *text = unwrap_lines(text),
                    (_, value) => tidy_descriptions(value),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tidy_descriptions),
        _ => {}
    }
}

/// The names of the definitions `schema` refers to (`{"$ref": "#/$defs/<name>"}`).
fn references(schema: &Value, found: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => {
                        let name = target
                            .strip_prefix("#/$defs/")
                            .unwrap_or_else(|| panic!("a local reference: {target}"));
                        found.push(name.to_owned());
                    }
                    _ => references(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

/// The JSON Schema of the envelope.
pub fn envelope_schema() -> Value {
    let mut schema = settings()
        .into_generator()
        .into_root_schema_for::<CloudEvent>()
        .to_value();
    tidy_descriptions(&mut schema);
    schema
}

/// The whole of `docs/events.md`.
pub fn render() -> String {
    let families = families();
    let mut out = String::new();
    out.push_str(INTRODUCTION);
    out.push_str("\n## Envelope schema\n\n");
    out.push_str(
        "Every event, on JetStream and over HTTP alike, is this JSON document (CloudEvents 1.0, \
         structured mode). `data` is described per `type` below.\n\n",
    );
    json_block(&mut out, &envelope_schema());

    out.push_str("\n## Contents\n\n");
    for family in &families {
        let _ = writeln!(
            out,
            "- [`{}`](#{}) ({} event type{})",
            family.aggregate_type,
            anchor(&format!("aggregate {}", family.aggregate_type)),
            family.events.len(),
            if family.events.len() == 1 { "" } else { "s" }
        );
        for event in &family.events {
            let _ = writeln!(
                out,
                "  - [`{}`](#{})",
                event.cloud_event_type,
                anchor(&event.cloud_event_type)
            );
        }
    }

    for family in &families {
        let _ = write!(
            out,
            "\n## Aggregate `{}`\n\n\
             A stream is {}. Source `urn:seatledger:{}`; the events are `{}` in the code, all \
             at version {}. ",
            family.aggregate_type,
            family.stream,
            family.aggregate_type,
            family.rust_type,
            family.version,
        );
        if family.tenant_scoped {
            let _ = writeln!(
                out,
                "Every event belongs to a tenant: the envelope has `tenantid`, and the NATS \
                 subject's second token is the tenant id: `{PREFIX}.<tenant_id>.{}.<EventType>`.",
                family.aggregate_type
            );
        } else {
            let _ = writeln!(
                out,
                "The events belong to no tenant: the envelope has no `tenantid`, and the NATS \
                 subject's second token is `{NO_TENANT}`: `{PREFIX}.{NO_TENANT}.{}.<EventType>`. \
                 Only admin, support and auditor tokens see them on the HTTP feed.",
                family.aggregate_type
            );
        }
        for event in &family.events {
            let _ = write!(
                out,
                "\n### {}\n\n\
                 - type: `{}`\n\
                 - NATS subject: `{}`\n\n\
                 {}\n\n\
                 Schema of `data`:\n\n",
                event.cloud_event_type, event.cloud_event_type, event.subject, event.description,
            );
            json_block(&mut out, &event.data_schema);
        }
    }
    out
}

/// The anchor GitHub gives a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn json_block(out: &mut String, value: &Value) {
    out.push_str("```json\n");
    pretty(out, value, 0, false);
    out.push_str("\n```\n");
}

/// Schema keywords in the order a reader wants them; other keys follow in alphabetical order.
const KEYWORD_ORDER: &[&str] = &[
    "$schema",
    "$id",
    "title",
    "description",
    "type",
    "format",
    "const",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "contentEncoding",
    "examples",
    "$ref",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "oneOf",
    "anyOf",
    "allOf",
    "$defs",
];

/// Pretty-prints `value` like `serde_json::to_string_pretty`, with keys in a fixed order that
/// does not depend on how serde_json's map is built: schema keywords in [`KEYWORD_ORDER`], the
/// names under `properties` and `$defs` alphabetically.
fn pretty(out: &mut String, value: &Value, depth: usize, names: bool) {
    let indent = |out: &mut String, depth: usize| out.push_str(&"  ".repeat(depth));
    match value {
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|key| {
                let rank = if names {
                    usize::MAX
                } else {
                    KEYWORD_ORDER
                        .iter()
                        .position(|keyword| keyword == key)
                        .unwrap_or(usize::MAX)
                };
                (rank, key.as_str())
            });
            out.push_str("{\n");
            for (index, key) in keys.iter().enumerate() {
                indent(out, depth + 1);
                out.push_str(&Value::String((*key).clone()).to_string());
                out.push_str(": ");
                let holds_names = !names && matches!(key.as_str(), "properties" | "$defs");
                pretty(out, &map[*key], depth + 1, holds_names);
                if index + 1 < keys.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            indent(out, depth);
            out.push('}');
        }
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push_str("[\n");
            for (index, item) in items.iter().enumerate() {
                indent(out, depth + 1);
                pretty(out, item, depth + 1, false);
                if index + 1 < items.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            indent(out, depth);
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

const INTRODUCTION: &str = r#"# seatledger events

<!-- Generated from the Rust types by `seatledger::events_doc::render()`. Do not edit by hand:
     run `SEATLEDGER_WRITE_DOCS=1 cargo test --test events_doc` after changing an event. -->

This is the contract between seatledger and the services downstream of it (billing,
provisioning, CRM…): every change to the books is an immutable event, and every event reaches
you in the same envelope, on NATS JetStream and over HTTP alike. Everything below is generated
from the code that writes the events, and a test validates the events of a real workload
against these schemas, so the document cannot drift from what you receive.

## The envelope

Each event is a [CloudEvents 1.0](https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md)
event in structured JSON mode (its JSON Schema is below):

- `id`: the event's UUID, the same on every delivery.
- `type`: `seatledger.<aggregate_type>.<EventType>.v<version>`, e.g.
  `seatledger.user.UserDeleted.v1`; `source`: `urn:seatledger:<aggregate_type>`.
- `subject`: the id of the aggregate (the stream) the event belongs to: a tenant, subscription,
  user, reseller or billing profile id, or `catalog`.
- `time`: when the event was recorded. Business times (when a user was deleted, until when it
  can be restored…) are in `data`.
- `data`: the event itself, a JSON object whose schema depends on `type` (below).
- Extensions: `position` (the event's place in the global log), `streamsequence` (its place in
  its stream: 1, 2, 3… without gaps), `tenantid` (when the event belongs to a tenant),
  `correlationid` and `causationid` (when known: what one request caused share a correlation
  id).

## Delivery

- **At least once.** An event may arrive more than once (a publisher restart, a reconnect).
  Deduplicate on `id`; on JetStream it is also the `Nats-Msg-Id` header, so the stream itself
  drops re-publishes within its duplicate window.
- **Order.** Within one stream (one `subject` of one aggregate type), events arrive in
  `streamsequence` order. Overall they arrive in the order the log committed them, so an event
  caused by another one comes after it. `position` is unique but *not* increasing in
  delivery order (a transaction that took a lower position may commit after a higher one), so
  never use it to sort or to detect gaps; use `streamsequence` per `subject` for that.

## NATS JetStream

When the service runs with `--nats-url`, every event is published to the stream
`SEATLEDGER` (`--nats-stream`) on the subject

    <prefix>.<tenant_id|global>.<aggregate_type>.<EventType>

with the prefix `seatledger` by default (`--nats-subject-prefix`). Events of the catalog,
resellers and billing profiles belong to no tenant and have `global` in place of the tenant id.
Filter with NATS wildcards:

| subject filter | receives |
|---|---|
| `seatledger.>` | everything |
| `seatledger.<tenant_id>.>` | every event of one tenant (its tenant, subscription and user streams) |
| `seatledger.*.user.>` | every user event of every tenant |
| `seatledger.*.*.UserDeleted` | every `UserDeleted` |
| `seatledger.*.subscription.LicensesAdded` | seats added, in every tenant |
| `seatledger.global.>` | the catalog, resellers and billing profiles |

## HTTP feed

The same envelopes, in the same order, from the service itself (with or without NATS), limited
to what the bearer token may see (admin, support and auditor: everything; a reseller: its
tenants' events; a customer admin: its tenant's):

- `GET /v1/events?after=<position>&limit=<1..1000>` (100 by default) returns
  `{"events": [<envelope>…], "next_after": <position>, "has_more": <bool>, "position": <log end>}`.
  Start with `after=0` and ask for the next page with `after=<next_after>`. `after` must be 0 or
  a position the feed (or a command's answer) gave you: it is a cursor into the commit order,
  not a number to compute with.
- `GET /v1/events/stream` (Server-Sent Events) sends every event after `?after=` (or the start),
  then each new one as it commits. Each SSE message has `id:` = the event's `position` and
  `data:` = the envelope. A reconnecting client sends `Last-Event-ID` and resumes right after
  that event, missing nothing (browsers' `EventSource` does it by itself). A client that
  falls far behind (it stopped reading while the log ran on) gets a last message
  `event: lagged` whose `id:` (and `data.resume_after`) is where to resume — possibly an event
  outside its scope, which is fine as a `Last-Event-ID` — and the stream ends; reconnect with it.
  Each token may hold 16 streams open at once (429 `too_many_streams` past that, with
  `Retry-After`) and the service 256 (503 `streams_unavailable`); both are settings
  (`--max-event-streams-per-token`, `--max-event-streams`).

## Versioning

The version is part of `type` (`….v1`). A change that could break a consumer (a field removed,
renamed or retyped, a meaning changed) gets a new type `….v<N+1>`; adding a field does not, so
ignore fields you do not know (the schemas below allow them).

## Personal data

Users' personal details (principal name, names, location) are never in clear text in an event:
`details` is sealed (encrypted) under a key per user, readable only through the service's API.
When a user is purged, 30 days after deletion, its key is destroyed: the sealed bytes stay in
the immutable log but nobody can read them again. A principal name appears only as a keyed
fingerprint (`UserRegistered`), and a password never appears at all.
"#;
