//! `docs/events.md` is the event contract downstream services build on, so it must say what the
//! code does:
//! (a) the file is exactly what `seatledger::events_doc::render()` generates from the types;
//! (b) the event types it names are those `event_type()` gives real values, at the versions
//!     `event_version()` records, and a value of every type validates against its schema;
//! (c) the envelope and `data` of every event a real workload puts on the HTTP feed validate
//!     against the schemas the document gives for its `type`, subject and tenant included;
//! (d) the patterns the document gives for the value types accept what their parsers write and
//!     refuse what their parsers refuse.
//!
//! After changing an event, regenerate the document with
//! `SEATLEDGER_WRITE_DOCS=1 cargo test --test events_doc` and commit it with the change.

use aggregates::catalog::offers::{
    BUSINESS_PREMIUM, ENTERPRISE_E1 as E1, ENTERPRISE_E3 as E3,
    EXCHANGE_ONLINE_ARCHIVING as ARCHIVING,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::{spawn_app_with, Backend, TestApp};
use aggregates::catalog::{default_offers, CatalogEvent};
use aggregates::party::{BillingProfileEvent, ResellerEvent};
use aggregates::personal::{PrincipalFingerprint, ResetNotice, SealedDetails};
use aggregates::subscription::{BatchDraw, SubscriptionEvent, SuspensionReason};
use aggregates::tenant::{SeatSnapshot, SeatState, TenantEvent};
use aggregates::user::UserEvent;
use aggregates::values::{
    Currency, DomainName, EmailAddress, Location, OrganisationName, PersonName, ProductName,
    ProvisioningId, Quantity, Term, UnitPrice, UserPrincipalName, UserRole,
};
use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::DomainEvent;
use reqwest::{Method, StatusCode};
use seatledger::events_doc;
use seatledger::feed::envelope;
use serde_json::{json, Value};
use uuid::Uuid;

const REGENERATE: &str = "SEATLEDGER_WRITE_DOCS=1 cargo test --test events_doc";

/// Event types no HTTP command or timer of the service produces today, so the workload cannot
/// show them; (b) still validates a value of each against the document.
const NOT_PRODUCED_BY_THE_SERVICE: &[&str] = &["seatledger.subscription.SubscriptionRenewed.v1"];

// ---------------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------------

fn doc_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(events_doc::PATH)
}

/// (a)
#[test]
fn the_document_is_generated_from_the_code() {
    let rendered = events_doc::render();
    let path = doc_path();
    if std::env::var_os("SEATLEDGER_WRITE_DOCS").is_some_and(|value| value != "0") {
        std::fs::write(&path, &rendered).expect("docs/events.md is writable");
        eprintln!("wrote {}", path.display());
        return;
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    if written != rendered {
        let line = written
            .lines()
            .zip(rendered.lines())
            .position(|(old, new)| old != new)
            .unwrap_or_else(|| written.lines().count().min(rendered.lines().count()));
        panic!(
            "{} is behind the code (first difference at line {}). Regenerate it with\n\n    \
             {REGENERATE}\n\nand commit it with the change.",
            events_doc::PATH,
            line + 1
        );
    }
}

/// What the document says, read back from its Markdown: the envelope's schema and, per
/// CloudEvents type, the NATS subject and the schema of `data`.
struct Contract {
    envelope: Value,
    events: BTreeMap<String, Documented>,
}

struct Documented {
    subject: String,
    data: Value,
}

impl Contract {
    fn read() -> Self {
        let markdown = events_doc::render();
        let mut envelope = None;
        let mut events = BTreeMap::new();
        let mut section: Option<String> = None;
        let mut subject = None;
        let mut lines = markdown.lines();
        while let Some(line) = lines.next() {
            if let Some(heading) = line.strip_prefix("## ") {
                section = Some(heading.to_owned());
            } else if let Some(heading) = line.strip_prefix("### ") {
                section = Some(heading.to_owned());
                subject = None;
            } else if let Some(rest) = line.strip_prefix("- NATS subject: `") {
                subject = Some(rest.trim_end_matches('`').to_owned());
            } else if line == "```json" {
                let block: Vec<&str> = lines.by_ref().take_while(|line| *line != "```").collect();
                let schema: Value =
                    serde_json::from_str(&block.join("\n")).expect("every json block parses");
                let heading = section.clone().expect("a json block under a heading");
                if heading == "Envelope schema" {
                    envelope = Some(schema);
                } else {
                    assert_eq!(schema["title"], json!(heading), "a block under its type");
                    let documented = Documented {
                        subject: subject.take().expect("a NATS subject before the schema"),
                        data: schema,
                    };
                    assert!(
                        events.insert(heading.clone(), documented).is_none(),
                        "{heading} is documented once"
                    );
                }
            }
        }
        Self {
            envelope: envelope.expect("the envelope's schema"),
            events,
        }
    }

    fn data(&self, cloud_event_type: &str) -> &Documented {
        self.events
            .get(cloud_event_type)
            .unwrap_or_else(|| panic!("{cloud_event_type} is not in {}", events_doc::PATH))
    }
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::meta::validate(schema)
        .unwrap_or_else(|error| panic!("not a valid JSON Schema ({error}): {schema}"));
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|error| panic!("the schema compiles ({error}): {schema}"))
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match its documented schema:\n  {}\ninstance: {instance}",
        errors.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// (b) One value of every event type
// ---------------------------------------------------------------------------------------------

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, 9, 30, 0).unwrap() + chrono::Duration::microseconds(123_456)
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x6f1c_1c7e_9d44_4d4e_a4a5_8d1f_0c3b_0000 + n)
}

fn product(raw: &str) -> ProvisioningId {
    ProvisioningId::parse(raw).unwrap()
}

fn sealed() -> SealedDetails {
    SealedDetails {
        key_id: id(7),
        ciphertext: "c2VhbGVkIGJ5dGVzIG9mIHRoZSBkZXRhaWxzIQ==".into(),
    }
}

fn seats(state: SeatState) -> SeatSnapshot {
    SeatSnapshot {
        tenant_id: id(1),
        offer: default_offers()[0].clone(),
        quantity: 5,
        state,
    }
}

fn tenant_events() -> Vec<TenantEvent> {
    let offer = default_offers()[0].clone();
    vec![
        TenantEvent::TenantCreated {
            tenant_id: id(1),
            domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
            name: OrganisationName::parse("Contoso").unwrap(),
            reseller_id: Some(id(2)),
            at: at(1),
        },
        TenantEvent::SubscriptionPurchased {
            subscription_id: id(3),
            offer: offer.clone(),
            quantity: 5,
            term: Term::Annual,
            billing_profile_id: id(4),
            trial: false,
            at: at(1),
        },
        TenantEvent::SubscriptionSeatsChanged {
            subscription_id: id(3),
            source_sequence: 2,
            previous_product: product("STANDARDPACK"),
            seats: seats(SeatState::Warning),
            at: at(2),
        },
        TenantEvent::LicensesMigrated {
            subscription_id: id(3),
            from_product: product("STANDARDPACK"),
            to_product: product("ENTERPRISEPACK"),
            users: vec![id(5), id(6)],
            at: at(2),
        },
        TenantEvent::AddOnOrphaned {
            subscription_id: id(8),
            offer_id: default_offers()[1].id,
            parent_subscription_id: id(3),
            at: at(3),
        },
        TenantEvent::UserRegistered {
            user_id: id(5),
            fingerprint: PrincipalFingerprint::parse(&"ab12".repeat(16)).unwrap(),
            details: sealed(),
            role: UserRole::GlobalAdmin,
            at: at(3),
        },
        TenantEvent::LicensesAssigned {
            user_id: id(5),
            added: vec![product("O365_BUSINESS_PREMIUM")],
            removed: vec![],
            at: at(3),
        },
        TenantEvent::UserLicensesReleased {
            user_id: id(5),
            source_sequence: 3,
            released: vec![product("O365_BUSINESS_PREMIUM")],
            at: at(4),
        },
        TenantEvent::UserLicensesReinstated {
            user_id: id(5),
            source_sequence: 4,
            reinstated: vec![product("O365_BUSINESS_PREMIUM"), product("MCOEV")],
            over_assigned: vec![product("MCOEV")],
            at: at(5),
        },
        TenantEvent::UserForgotten {
            user_id: id(5),
            source_sequence: 5,
            at: at(6),
        },
    ]
}

fn subscription_events() -> Vec<SubscriptionEvent> {
    let offer = default_offers()[0].clone();
    let price = UnitPrice::parse("12.50", "USD").unwrap();
    vec![
        SubscriptionEvent::SubscriptionOpened {
            subscription_id: id(3),
            tenant_id: id(1),
            offer: offer.clone(),
            quantity: 25,
            term: Term::Monthly,
            billing_profile_id: id(4),
            trial: true,
            trial_ends_at: Some(at(30)),
            renews_at: at(30),
            refundable_until: at(8),
            at: at(1),
        },
        SubscriptionEvent::LicensesAdded {
            count: 2,
            batch: 1,
            refundable_until: at(9),
            unit_price: price.clone(),
            seats: seats(SeatState::Enabled),
            at: at(2),
        },
        SubscriptionEvent::LicensesRemoved {
            count: 1,
            drawn: vec![BatchDraw { batch: 1, seats: 1 }],
            unit_price: UnitPrice::parse("0.2", "EUR").unwrap(),
            seats: seats(SeatState::Enabled),
            at: at(2),
        },
        SubscriptionEvent::SubscriptionSuspended {
            reason: SuspensionReason::ParentEnded {
                parent_subscription_id: id(9),
            },
            seats: seats(SeatState::Suspended),
            at: at(3),
        },
        SubscriptionEvent::SubscriptionReactivated {
            seats: seats(SeatState::Enabled),
            at: at(3),
        },
        SubscriptionEvent::SubscriptionCancelled {
            seats: seats(SeatState::Inactive),
            at: at(4),
        },
        SubscriptionEvent::TrialConverted {
            refundable_until: at(11),
            renews_at: at(28),
            seats: seats(SeatState::Enabled),
            at: at(4),
        },
        SubscriptionEvent::SubscriptionUpgraded {
            from: default_offers()[6].clone(),
            seats: seats(SeatState::Enabled),
            at: at(5),
        },
        SubscriptionEvent::SubscriptionRenewed {
            renews_at: at(28),
            refundable_until: at(12),
            seats: seats(SeatState::Enabled),
            at: at(5),
        },
        SubscriptionEvent::SubscriptionExpired {
            grace_ends_at: at(29),
            seats: seats(SeatState::Warning),
            at: at(6),
        },
        SubscriptionEvent::SubscriptionDisabled {
            seats: seats(SeatState::Inactive),
            at: at(7),
        },
        SubscriptionEvent::BillingProfileAssigned {
            tenant_id: id(1),
            from: id(4),
            to: id(10),
            at: at(7),
        },
    ]
}

fn user_events() -> Vec<UserEvent> {
    vec![
        UserEvent::UserCreated {
            user_id: id(5),
            tenant_id: id(1),
            details: sealed(),
            role: UserRole::User,
            at: at(1),
        },
        UserEvent::UserEdited {
            tenant_id: id(1),
            details: None,
            role: Some(UserRole::PasswordAdmin),
            at: at(2),
        },
        UserEvent::UserDeleted {
            tenant_id: id(1),
            deleted_at: at(3),
            restorable_until: at(3) + chrono::Duration::days(30),
        },
        UserEvent::UserRestored {
            tenant_id: id(1),
            deleted_at: at(3),
            at: at(4),
        },
        UserEvent::UserPurged {
            tenant_id: id(1),
            key_id: id(5),
            at: at(5),
        },
        UserEvent::PasswordReset {
            tenant_id: id(1),
            notice: ResetNotice::OtherAddress,
            at: at(6),
        },
    ]
}

fn catalog_events() -> Vec<CatalogEvent> {
    default_offers()
        .into_iter()
        .map(|offer| CatalogEvent::OfferPublished { offer, at: at(1) })
        .collect()
}

fn reseller_events() -> Vec<ResellerEvent> {
    vec![ResellerEvent::ResellerCreated {
        reseller_id: id(2),
        name: OrganisationName::parse("Northwind Traders").unwrap(),
        at: at(1),
    }]
}

fn billing_profile_events() -> Vec<BillingProfileEvent> {
    vec![
        BillingProfileEvent::BillingProfileCreated {
            billing_profile_id: id(4),
            name: OrganisationName::parse("Contoso IT").unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            reseller_id: None,
            at: at(1),
        },
        BillingProfileEvent::BillingProfileCreated {
            billing_profile_id: id(10),
            name: OrganisationName::parse("Northwind").unwrap(),
            currency: Currency::parse("USD").unwrap(),
            reseller_id: Some(id(2)),
            at: at(1),
        },
    ]
}

/// The CloudEvents type, as the feed names it, and the `data` of every sample value.
fn samples_of<E: DomainEvent>(
    aggregate_type: &str,
    events: Vec<E>,
) -> Vec<(String, String, Value)> {
    events
        .into_iter()
        .map(|event| {
            let event_type = event.event_type();
            let payload = serde_json::to_value(&event).unwrap();
            let stored_under: Vec<&String> = payload.as_object().unwrap().keys().collect();
            assert_eq!(
                stored_under,
                vec![&event_type],
                "cqrs-es stores {event_type} under its event_type()"
            );
            (
                aggregate_type.to_owned(),
                envelope::type_name(aggregate_type, &event_type, &event.event_version()),
                envelope::data_of(&event_type, payload),
            )
        })
        .collect()
}

fn samples() -> Vec<(String, String, Value)> {
    let mut all = samples_of("tenant", tenant_events());
    all.extend(samples_of("subscription", subscription_events()));
    all.extend(samples_of("user", user_events()));
    all.extend(samples_of("catalog", catalog_events()));
    all.extend(samples_of("reseller", reseller_events()));
    all.extend(samples_of("billing_profile", billing_profile_events()));
    all
}

/// (b)
#[test]
fn the_documented_types_are_those_of_real_values() {
    let contract = Contract::read();
    let samples = samples();
    let sampled: BTreeSet<&str> = samples.iter().map(|(_, t, _)| t.as_str()).collect();
    let documented: BTreeSet<&str> = contract.events.keys().map(String::as_str).collect();
    assert_eq!(
        documented, sampled,
        "the document names exactly the event types (and versions) of real values; a new \
         variant needs a sample here and the document regenerating ({REGENERATE})"
    );
    for family in events_doc::families() {
        for event in &family.events {
            assert_eq!(
                event.cloud_event_type,
                envelope::type_name(family.aggregate_type, &event.event_type, family.version)
            );
        }
    }
    for (aggregate_type, cloud_event_type, data) in &samples {
        let documented = contract.data(cloud_event_type);
        assert_valid(&validator(&documented.data), data, cloud_event_type);
        assert!(documented.subject.contains(&format!(".{aggregate_type}.")));
    }
    // The schemas are not vacuous: what breaks the contract is refused.
    let (_, _, created) = &samples[0];
    let tenant_created = validator(&contract.data("seatledger.tenant.TenantCreated.v1").data);
    assert_valid(&tenant_created, created, "TenantCreated");
    for (field, wrong) in [
        ("at", json!("yesterday")),
        ("tenant_id", json!("not-a-uuid")),
        ("domain", json!("Contoso.onmicrosoft.com")),
        ("name", json!(" Contoso")),
        ("reseller_id", json!(7)),
    ] {
        let mut broken = created.clone();
        broken[field] = wrong;
        assert!(
            !tenant_created.is_valid(&broken),
            "a wrong {field} is refused: {broken}"
        );
    }
    let mut incomplete = created.clone();
    incomplete.as_object_mut().unwrap().remove("at");
    assert!(
        !tenant_created.is_valid(&incomplete),
        "a missing field is refused"
    );

    // The versions documented are those recorded.
    assert_eq!(
        UserEvent::UserPurged {
            tenant_id: id(1),
            key_id: id(1),
            at: at(1)
        }
        .event_version(),
        UserEvent::EVENT_VERSION
    );
}

// ---------------------------------------------------------------------------------------------
// (c) A real workload
// ---------------------------------------------------------------------------------------------

const DAY: i64 = 24 * 3600;

struct Workload<'a> {
    app: &'a TestApp,
}

impl Workload<'_> {
    async fn send(&self, method: Method, path: &str, body: Value, expected: StatusCode) -> Value {
        let (status, answer) = self
            .app
            .call(
                method.clone(),
                &self.app.admin_token,
                path,
                (!body.is_null()).then_some(body),
            )
            .await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        answer
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.send(Method::POST, path, body, StatusCode::OK).await
    }

    async fn create(&self, path: &str, body: Value) -> String {
        let answer = self
            .send(Method::POST, path, body, StatusCode::CREATED)
            .await;
        answer["id"].as_str().expect("an id").to_owned()
    }

    async fn purchase(
        &self,
        tenant: &str,
        offer: &str,
        quantity: u32,
        profile: &str,
        trial: bool,
    ) -> String {
        self.create(
            &format!("/v1/tenants/{tenant}/subscriptions"),
            json!({"offer_id": offer, "quantity": quantity, "billing_profile_id": profile, "trial": trial}),
        )
        .await
    }

    async fn user(&self, tenant: &str, alias: &str, location: Option<&str>) -> String {
        let mut body = json!({
            "user_principal_name": format!("{alias}@contoso.onmicrosoft.com"),
            "first_name": alias,
            "last_name": "Tester",
            "display_name": format!("{alias} Tester"),
        });
        if let Some(location) = location {
            body["location"] = json!(location);
        }
        self.create(&format!("/v1/tenants/{tenant}/users"), body)
            .await
    }

    async fn licenses(&self, user: &str, add: &[&str], remove: &[&str]) {
        self.post(
            &format!("/v1/users/{user}/licenses"),
            json!({"add": add, "remove": remove}),
        )
        .await;
    }

    async fn advance(&self, seconds: i64) {
        self.post("/v1/sandbox/clock", json!({"advance_seconds": seconds}))
            .await;
    }

    /// Every envelope of the feed, page by page.
    async fn feed(&self) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let response = self
                .app
                .request(
                    Method::GET,
                    &format!("/v1/events?after={after}&limit=1000"),
                    &self.app.admin_token,
                )
                .send()
                .await
                .expect("the feed answers");
            assert_eq!(response.status(), StatusCode::OK);
            let page: Value = response.json().await.expect("a JSON page");
            events.extend(page["events"].as_array().expect("events").iter().cloned());
            after = page["next_after"].as_i64().expect("next_after");
            if page["has_more"] != json!(true) {
                return events;
            }
        }
    }
}

/// Drives every command the HTTP API has, and the timers, through the sandbox clock.
async fn run_workload(work: &Workload<'_>) {
    // The partner's side: an add-on published, a reseller, billing profiles.
    work.send(
        Method::POST,
        "/v1/offers",
        json!({
            "id": "11111111-1111-1111-1111-111111111111",
            "name": "Test Add-on",
            "provisioning_id": "TEST_ADDON",
            "assignable_to_users": true,
            "unit_price": {"amount": "1.2500", "currency": "EUR"},
            "parent_offers": [BUSINESS_PREMIUM]
        }),
        StatusCode::OK,
    )
    .await;
    let reseller = work
        .create("/v1/resellers", json!({"name": "Northwind Traders"}))
        .await;
    let profile = work
        .create(
            "/v1/billing-profiles",
            json!({"name": "Contoso", "currency": "USD"}),
        )
        .await;
    // A reseller's tenant is billed on that reseller's profiles only.
    let northwind_profile = work
        .create(
            "/v1/billing-profiles",
            json!({"name": "Northwind USD", "currency": "USD", "reseller_id": reseller}),
        )
        .await;
    let other_profile = work
        .create(
            "/v1/billing-profiles",
            json!({"name": "Northwind EUR", "currency": "eur", "reseller_id": reseller}),
        )
        .await;

    // Tenants: one through the reseller, two direct.
    let contoso = work
        .create(
            "/v1/tenants",
            json!({"domain": "Contoso.onmicrosoft.com", "name": "Contoso", "reseller_id": reseller}),
        )
        .await;
    let fabrikam = work
        .create(
            "/v1/tenants",
            json!({"domain": "fabrikam.onmicrosoft.com", "name": "Fabrikam"}),
        )
        .await;
    let adatum = work
        .create(
            "/v1/tenants",
            json!({"domain": "adatum.onmicrosoft.com", "name": "Adatum"}),
        )
        .await;

    // Subscriptions and seats: 2 Business Premium seats (one added, one removed), an add-on
    // on it, and E1 to be upgraded.
    let premium = work
        .purchase(&contoso, BUSINESS_PREMIUM, 2, &northwind_profile, false)
        .await;
    let archiving = work
        .purchase(&contoso, ARCHIVING, 2, &northwind_profile, false)
        .await;
    let e1 = work
        .purchase(&contoso, E1, 2, &northwind_profile, false)
        .await;
    work.post(
        &format!("/v1/subscriptions/{premium}/licenses:add"),
        json!({"count": 1}),
    )
    .await;
    work.post(
        &format!("/v1/subscriptions/{premium}/licenses:remove"),
        json!({"count": 1}),
    )
    .await;

    // Users and licences: Business Premium is full (2 of 2), E1 too.
    let alex = work.user(&contoso, "alex", Some("Seattle")).await;
    let megan = work.user(&contoso, "megan", None).await;
    let lee = work.user(&contoso, "lee", Some("Redmond")).await;
    let temp = work.user(&contoso, "temp", None).await;
    work.licenses(&alex, &[BUSINESS_PREMIUM, E1], &[]).await;
    work.licenses(&megan, &[BUSINESS_PREMIUM, ARCHIVING], &[])
        .await;
    work.licenses(&lee, &[E1], &[]).await;
    work.licenses(&megan, &[], &[ARCHIVING]).await;

    // The upgrade takes E1's seats: its holders move to E3.
    work.post(
        &format!("/v1/subscriptions/{e1}:upgrade"),
        json!({"offer_id": E3}),
    )
    .await;

    // Lifecycle of a subscription.
    work.post(&format!("/v1/subscriptions/{premium}:suspend"), json!({}))
        .await;
    work.post(
        &format!("/v1/subscriptions/{premium}:reactivate"),
        json!({}),
    )
    .await;
    work.send(
        Method::PUT,
        &format!("/v1/subscriptions/{premium}/billing-profile"),
        json!({"billing_profile_id": other_profile}),
        StatusCode::OK,
    )
    .await;

    // Users: edit, password resets, delete; the freed seat goes to another user, so the
    // restore over-assigns.
    work.send(
        Method::PATCH,
        &format!("/v1/users/{megan}"),
        json!({"display_name": "Megan B.", "role": "global_admin"}),
        StatusCode::OK,
    )
    .await;
    work.send(
        Method::PATCH,
        &format!("/v1/users/{lee}"),
        json!({"role": "password_admin"}),
        StatusCode::OK,
    )
    .await;
    work.post(&format!("/v1/users/{megan}:reset-password"), json!({}))
        .await;
    work.post(
        &format!("/v1/users/{alex}:reset-password"),
        json!({"notify_email": "it@contoso.com"}),
    )
    .await;
    work.send(
        Method::DELETE,
        &format!("/v1/users/{megan}"),
        Value::Null,
        StatusCode::OK,
    )
    .await;
    work.licenses(&lee, &[BUSINESS_PREMIUM], &[]).await;
    work.post(&format!("/v1/users/{megan}:restore"), json!({}))
        .await;
    work.send(
        Method::DELETE,
        &format!("/v1/users/{temp}"),
        Value::Null,
        StatusCode::OK,
    )
    .await;

    // Cancelling the parent within its window orphans the add-on, which is suspended.
    work.post(&format!("/v1/subscriptions/{premium}:cancel"), json!({}))
        .await;
    let _ = archiving;

    // Trials: one converted, one left to expire and, after its grace period, be disabled.
    let fabrikam_profile = profile.clone();
    let converted = work
        .purchase(&fabrikam, BUSINESS_PREMIUM, 25, &fabrikam_profile, true)
        .await;
    work.post(
        &format!("/v1/subscriptions/{converted}:convert-trial"),
        json!({}),
    )
    .await;
    work.purchase(&adatum, BUSINESS_PREMIUM, 25, &profile, true)
        .await;

    // 31 days on: the trial has expired and the deleted user is purged; 31 more: disabled.
    work.advance(31 * DAY).await;
    work.app
        .eventually(30, "the trial expires and the user is purged", || async {
            let types = types_of(&work.feed().await);
            (types.contains("seatledger.subscription.SubscriptionExpired.v1")
                && types.contains("seatledger.tenant.UserForgotten.v1"))
            .then_some(())
        })
        .await;
    work.advance(31 * DAY).await;
    work.app
        .eventually(30, "the expired trial is disabled", || async {
            types_of(&work.feed().await)
                .contains("seatledger.subscription.SubscriptionDisabled.v1")
                .then_some(())
        })
        .await;
}

fn types_of(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|event| event["type"].as_str().expect("a type").to_owned())
        .collect()
}

/// (c)
#[tokio::test]
async fn every_event_of_a_real_workload_matches_the_document() {
    let contract = Contract::read();
    let envelope_validator = validator(&contract.envelope);
    let families: BTreeMap<&str, events_doc::Family> = events_doc::families()
        .into_iter()
        .map(|family| (family.aggregate_type, family))
        .collect();
    let mut validators: BTreeMap<String, jsonschema::Validator> = BTreeMap::new();

    let app = spawn_app_with(Backend::Postgres, true).await;
    let work = Workload { app: &app };
    run_workload(&work).await;
    // Let the process managers finish what the last commands started.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = work.feed().await;

    let mut ids = BTreeSet::new();
    for event in &events {
        assert_valid(&envelope_validator, event, "an envelope");
        let cloud_event_type = event["type"].as_str().unwrap();
        let documented = contract.data(cloud_event_type);
        let validator = validators
            .entry(cloud_event_type.to_owned())
            .or_insert_with(|| validator(&documented.data));
        assert_valid(validator, &event["data"], cloud_event_type);

        // The routing the document promises: source, tenant and NATS subject.
        let aggregate_type = event["source"]
            .as_str()
            .and_then(|source| source.strip_prefix("urn:seatledger:"))
            .expect("source is urn:seatledger:<aggregate_type>");
        let family = &families[aggregate_type];
        let event_type = family
            .events
            .iter()
            .find(|documented| documented.cloud_event_type == cloud_event_type)
            .unwrap_or_else(|| panic!("{cloud_event_type} is documented under {aggregate_type}"))
            .event_type
            .clone();
        let tenant = event
            .get("tenantid")
            .map(|tenant| Uuid::parse_str(tenant.as_str().unwrap()).unwrap());
        assert_eq!(
            tenant.is_some(),
            family.tenant_scoped,
            "{cloud_event_type}: tenantid as documented: {event}"
        );
        let subject = envelope::subject("seatledger", tenant, aggregate_type, &event_type);
        let pattern = match tenant {
            Some(tenant) => documented
                .subject
                .replace("<tenant_id>", &tenant.to_string()),
            None => documented.subject.clone(),
        };
        assert_eq!(
            subject, pattern,
            "{cloud_event_type}: the documented subject"
        );
        assert!(
            ids.insert(event["id"].as_str().unwrap().to_owned()),
            "ids are unique: {event}"
        );
    }

    let seen = types_of(&events);
    eprintln!(
        "validated {} envelopes of {} event types against {}",
        events.len(),
        seen.len(),
        events_doc::PATH
    );
    let missing: BTreeSet<&str> = contract
        .events
        .keys()
        .map(String::as_str)
        .filter(|documented| !seen.contains(*documented))
        .collect();
    let expected_missing: BTreeSet<&str> = NOT_PRODUCED_BY_THE_SERVICE.iter().copied().collect();
    assert_eq!(
        missing, expected_missing,
        "the workload shows every documented event type but those the service cannot produce \
         yet; extend the workload for a new type, or take one off NOT_PRODUCED_BY_THE_SERVICE \
         once the service produces it"
    );
    // The restore found its seat taken: `over_assigned` is not just an empty list.
    assert!(events.iter().any(|event| {
        event["type"] == "seatledger.tenant.UserLicensesReinstated.v1"
            && event["data"]["over_assigned"] == json!(["O365_BUSINESS_PREMIUM"])
    }));
    assert!(events.iter().any(|event| {
        event["type"] == "seatledger.subscription.SubscriptionSuspended.v1"
            && event["data"]["reason"]["kind"] == "parent_ended"
    }));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// (d) The value types' patterns against their parsers
// ---------------------------------------------------------------------------------------------

/// Checks `T`'s documented schema against its parser: every sample the parser keeps as it is
/// (its canonical form, what it serialises) is valid, every sample it refuses is not.
fn agrees_with_parser<T: schemars::JsonSchema>(
    samples: &[&str],
    parse: impl Fn(&str) -> Option<String>,
) {
    let schema = schemars::SchemaGenerator::default()
        .into_root_schema_for::<T>()
        .to_value();
    let validator = validator(&schema);
    for sample in samples {
        let instance = json!(sample);
        match parse(sample) {
            Some(canonical) if canonical == *sample => assert!(
                validator.is_valid(&instance),
                "{}: the parser accepts {sample:?} but the schema does not",
                T::schema_name()
            ),
            Some(_) => {}
            None => assert!(
                !validator.is_valid(&instance),
                "{}: the parser refuses {sample:?} but the schema accepts it",
                T::schema_name()
            ),
        }
    }
}

#[test]
fn the_documented_patterns_agree_with_the_parsers() {
    let domains = [
        "contoso.onmicrosoft.com",
        "a.b",
        "x-1.y2",
        "contoso",
        "-contoso.com",
        "contoso-.com",
        "con_toso.com",
        "contoso..com",
        ".contoso.com",
        "contoso.com.",
        "Contoso.com",
        "conto so.com",
        "",
    ];
    let long_label = format!("{}.com", "a".repeat(63));
    let too_long_label = format!("{}.com", "a".repeat(64));
    let long_domain = format!("{}.com", vec!["a".repeat(60); 4].join("."));
    let too_long_domain = format!("{}.com", vec!["a".repeat(62); 4].join("."));
    let mut all_domains: Vec<&str> = domains.to_vec();
    all_domains.extend([
        long_label.as_str(),
        too_long_label.as_str(),
        long_domain.as_str(),
        too_long_domain.as_str(),
    ]);
    agrees_with_parser::<DomainName>(&all_domains, |raw| {
        DomainName::parse(raw).ok().map(|v| v.as_str().to_owned())
    });

    let principals = [
        "megan.bowen@contoso.onmicrosoft.com",
        "o'neil+test_1-x@contoso.com",
        ".megan@contoso.com",
        "megan.@contoso.com",
        "me..gan@contoso.com",
        "megan@contoso",
        "megan@@contoso.com",
        "me gan@contoso.com",
        "Megan@contoso.com",
        "megan@",
        "@contoso.com",
    ];
    // The alias's own limit (64) is in the description only: a pattern would need a look-ahead,
    // which many validators' regex engines lack. The whole name's limit is `maxLength`.
    let long_alias = format!("{}@contoso.com", "a".repeat(64));
    let long_principal = format!("{}@{}.com", "a".repeat(60), "b".repeat(48));
    let too_long_principal = format!("{}@{}.com", "a".repeat(60), "b".repeat(49));
    let mut all_principals: Vec<&str> = principals.to_vec();
    all_principals.extend([
        long_alias.as_str(),
        long_principal.as_str(),
        too_long_principal.as_str(),
    ]);
    agrees_with_parser::<UserPrincipalName>(&all_principals, |raw| {
        UserPrincipalName::parse(raw)
            .ok()
            .map(|v| v.as_str().to_owned())
    });
    agrees_with_parser::<EmailAddress>(&all_principals, |raw| {
        EmailAddress::parse(raw).ok().map(|v| v.as_str().to_owned())
    });

    let names = [
        "Megan Bowen",
        "Zoë O'Neil-Łukasz",
        "x",
        " Megan",
        "Megan ",
        "Me\u{0007}gan",
        "Me\u{0085}gan",
        "Me\tgan",
        "",
        "   ",
        "名前",
    ];
    let long = "n".repeat(64);
    let too_long = "n".repeat(65);
    let longer = "n".repeat(128);
    let too_longer = "n".repeat(129);
    let longest = "n".repeat(256);
    let too_longest = "n".repeat(257);
    let mut all_names: Vec<&str> = names.to_vec();
    all_names.extend([
        long.as_str(),
        too_long.as_str(),
        longer.as_str(),
        too_longer.as_str(),
        longest.as_str(),
        too_longest.as_str(),
    ]);
    agrees_with_parser::<PersonName>(&all_names, |raw| {
        PersonName::parse(raw).ok().map(|v| v.as_str().to_owned())
    });
    agrees_with_parser::<Location>(&all_names, |raw| {
        Location::parse(raw).ok().map(|v| v.as_str().to_owned())
    });
    agrees_with_parser::<OrganisationName>(&all_names, |raw| {
        OrganisationName::parse(raw)
            .ok()
            .map(|v| v.as_str().to_owned())
    });
    agrees_with_parser::<ProductName>(&all_names, |raw| {
        ProductName::parse(raw).ok().map(|v| v.as_str().to_owned())
    });

    agrees_with_parser::<Currency>(&["USD", "EUR", "usd", "US", "USDX", "U5D", ""], |raw| {
        Currency::parse(raw).ok().map(|v| v.as_str().to_owned())
    });
    let sku = "A".repeat(64);
    let too_long_sku = "A".repeat(65);
    agrees_with_parser::<ProvisioningId>(
        &[
            "O365_BUSINESS_PREMIUM",
            "MCOEV",
            "o365",
            "O365-X",
            "",
            sku.as_str(),
            too_long_sku.as_str(),
        ],
        |raw| {
            ProvisioningId::parse(raw)
                .ok()
                .map(|v| v.as_str().to_owned())
        },
    );
    agrees_with_parser::<PrincipalFingerprint>(
        &[
            &"0123456789abcdef".repeat(4),
            &"0123456789ABCDEF".repeat(4),
            &"0123456789abcdef".repeat(3),
            &"0123456789abcdeg".repeat(4),
        ],
        |raw| PrincipalFingerprint::parse(raw).ok().map(|v| v.to_hex()),
    );

    // Numbers: a quantity from 1 to 1 000 000; a price's amount as its decimal string.
    let quantity = validator(
        &schemars::SchemaGenerator::default()
            .into_root_schema_for::<Quantity>()
            .to_value(),
    );
    for (value, valid) in [(0, false), (1, true), (1_000_000, true), (1_000_001, false)] {
        assert_eq!(quantity.is_valid(&json!(value)), valid, "quantity {value}");
        assert_eq!(Quantity::parse("quantity", value).is_ok(), valid);
    }
    let price = validator(
        &schemars::SchemaGenerator::default()
            .into_root_schema_for::<UnitPrice>()
            .to_value(),
    );
    for amount in [
        "0", "-0", "0.000", "12.50", "0.2", "1.2345", "1000000", "1e3", " 7.5 ",
    ] {
        let parsed = UnitPrice::parse(amount, "usd").unwrap();
        let json = serde_json::to_value(&parsed).unwrap();
        assert!(price.is_valid(&json), "{json}");
    }
    for amount in ["-1", "-0.01", "1.23456", "12,50", ""] {
        assert!(UnitPrice::parse(amount, "USD").is_err(), "{amount}");
        assert!(
            !price.is_valid(&json!({"amount": amount, "currency": "USD"})),
            "{amount}"
        );
    }
}
