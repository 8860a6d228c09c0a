//! The envelope every downstream reader receives, on JetStream and over HTTP alike: a
//! CloudEvents 1.0 event in structured JSON mode, with seatledger's extension attributes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::log::StoredEvent;

/// The CloudEvents version of the envelope.
pub const SPEC_VERSION: &str = "1.0";
/// The media type of `data`.
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// The subject token of events that belong to no tenant (catalog, resellers, billing profiles).
pub const NO_TENANT: &str = "global";

/// One event of the log as a CloudEvents 1.0 structured-mode JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "seatledger event envelope (CloudEvents 1.0, structured JSON)")]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// The event's id (a UUID): the same on every delivery, the key to deduplicate on. Also the
    /// `Nats-Msg-Id` header on JetStream.
    pub id: String,
    /// `urn:seatledger:<aggregate_type>`: the kind of stream the event belongs to.
    pub source: String,
    /// `seatledger.<aggregate_type>.<EventType>.v<version>`, e.g.
    /// `seatledger.tenant.LicensesAssigned.v1`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The aggregate's id: the stream the event belongs to (`catalog` for the catalog).
    pub subject: String,
    /// When the event was recorded (RFC 3339, UTC; microseconds on PostgreSQL, milliseconds on
    /// the embedded SQLite store). Domain times, such as when a user was deleted, are in `data`.
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// Extension: the event's position in the global log, the cursor of `/v1/events?after=`
    /// and the SSE `id`. Unique, but not increasing in delivery order: the feed delivers in
    /// commit order, which may put a lower position after a higher one.
    pub position: i64,
    /// Extension: the event's place in its aggregate's stream (1, 2, 3… with no gaps): within
    /// one `subject`, events arrive in this order.
    pub streamsequence: i64,
    /// Extension: the tenant the event belongs to, when it belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenantid: Option<Uuid>,
    /// Extension: the id shared by everything one request caused, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<String>,
    /// Extension: the id of the request or event that caused this event, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
    /// The event itself; its JSON Schema per `type` is in `docs/events.md`. Personal details of
    /// users are sealed (encrypted under a per-user key destroyed at purge).
    pub data: serde_json::Value,
}

impl CloudEvent {
    /// Wraps a stored event. `tenant` is the tenant it belongs to (see [`super::tenancy`]).
    pub fn wrap(stored: &StoredEvent, data: serde_json::Value, tenant: Option<Uuid>) -> Self {
        let (correlationid, causationid) = correlation(&stored.metadata);
        Self {
            specversion: SPEC_VERSION.to_owned(),
            id: stored.event_id.clone(),
            source: format!("urn:seatledger:{}", stored.aggregate_type),
            event_type: type_name(
                &stored.aggregate_type,
                &stored.event_type,
                &stored.event_version,
            ),
            subject: stored.aggregate_id.clone(),
            time: stored.recorded_at.clone(),
            datacontenttype: DATA_CONTENT_TYPE.to_owned(),
            position: stored.position(),
            streamsequence: stored.sequence,
            tenantid: tenant,
            correlationid,
            causationid,
            data,
        }
    }
}

/// The CloudEvents `type` of an event.
pub fn type_name(aggregate_type: &str, event_type: &str, event_version: &str) -> String {
    format!("seatledger.{aggregate_type}.{event_type}.v{event_version}")
}

/// The NATS subject of an event under `prefix`: `<prefix>.<tenant_id|global>.<aggregate_type>.<EventType>`.
pub fn subject(
    prefix: &str,
    tenant: Option<Uuid>,
    aggregate_type: &str,
    event_type: &str,
) -> String {
    match tenant {
        Some(tenant) => format!("{prefix}.{tenant}.{aggregate_type}.{event_type}"),
        None => format!("{prefix}.{NO_TENANT}.{aggregate_type}.{event_type}"),
    }
}

/// The event's body: cqrs-es stores `{"<EventType>": {…}}`; the type is already in the
/// envelope, so `data` is the inner object.
pub fn data_of(event_type: &str, payload: serde_json::Value) -> serde_json::Value {
    match payload {
        serde_json::Value::Object(mut outer)
            if outer.len() == 1 && outer.contains_key(event_type) =>
        {
            outer.remove(event_type).unwrap_or_default()
        }
        other => other,
    }
}

fn correlation(metadata: &str) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Ids {
        correlation_id: Option<String>,
        causation_id: Option<String>,
    }
    serde_json::from_str::<Ids>(metadata)
        .map(|ids| (ids.correlation_id, ids.causation_id))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Checkpoint;

    fn stored() -> StoredEvent {
        StoredEvent {
            checkpoint: Checkpoint {
                transaction_id: 7,
                position: 42,
            },
            aggregate_type: "user".into(),
            aggregate_id: "6f1c1c7e-9d44-4d4e-a4a5-8d1f0c3b2a10".into(),
            sequence: 3,
            event_type: "UserDeleted".into(),
            event_version: "1".into(),
            event_id: "0d9a8c1e-3b4f-4c6a-9e2d-1f0a7b6c5d4e".into(),
            recorded_at: "2026-11-21T10:00:00.000000Z".into(),
            payload: r#"{"UserDeleted":{"tenant_id":"2b1e0c6a-1111-4222-8333-944455556666"}}"#
                .into(),
            metadata: r#"{"role":"admin","correlation_id":"c-1","causation_id":"r-1"}"#.into(),
        }
    }

    #[test]
    fn wraps_a_stored_event_with_every_attribute() {
        let stored = stored();
        let payload: serde_json::Value = serde_json::from_str(&stored.payload).unwrap();
        let tenant = Uuid::parse_str("2b1e0c6a-1111-4222-8333-944455556666").unwrap();
        let event = CloudEvent::wrap(&stored, data_of(&stored.event_type, payload), Some(tenant));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["id"], stored.event_id);
        assert_eq!(json["source"], "urn:seatledger:user");
        assert_eq!(json["type"], "seatledger.user.UserDeleted.v1");
        assert_eq!(json["subject"], stored.aggregate_id);
        assert_eq!(json["time"], "2026-11-21T10:00:00.000000Z");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["position"], 42);
        assert_eq!(json["streamsequence"], 3);
        assert_eq!(json["tenantid"], tenant.to_string());
        assert_eq!(json["correlationid"], "c-1");
        assert_eq!(json["causationid"], "r-1");
        assert_eq!(json["data"]["tenant_id"], tenant.to_string());
        assert!(json["data"].get("UserDeleted").is_none());
    }

    #[test]
    fn leaves_out_what_an_event_does_not_have() {
        let mut stored = stored();
        stored.metadata = "{}".into();
        let event = CloudEvent::wrap(&stored, serde_json::json!({}), None);
        let json = serde_json::to_value(&event).unwrap();
        for absent in ["tenantid", "correlationid", "causationid"] {
            assert!(json.get(absent).is_none(), "{absent} should be left out");
        }
    }

    #[test]
    fn subjects_name_tenant_aggregate_and_type() {
        let tenant = Uuid::nil();
        assert_eq!(
            subject("seatledger", Some(tenant), "tenant", "LicensesAssigned"),
            format!("seatledger.{tenant}.tenant.LicensesAssigned")
        );
        assert_eq!(
            subject("seatledger", None, "catalog", "OfferPublished"),
            "seatledger.global.catalog.OfferPublished"
        );
    }
}
