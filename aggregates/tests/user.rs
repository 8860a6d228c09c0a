//! Given/when/then tests of the user aggregate: every command, its events and its refusals, at
//! the edges of the restore window.

use std::collections::BTreeSet;

use aggregates::personal::{ResetNotice, SealedDetails};
use aggregates::user::{User, UserCommand, UserEvent};
use aggregates::values::UserRole;
use aggregates::{CommercialRules, DomainError, Entity};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use uuid::Uuid;

const USER: Uuid = Uuid::from_u128(1);
const OTHER_USER: Uuid = Uuid::from_u128(2);
const TENANT: Uuid = Uuid::from_u128(100);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// When the user of most tests is deleted.
fn deleted_at() -> DateTime<Utc> {
    t0() + Duration::days(10)
}

/// The end of the default 30-day restore window after [`deleted_at`].
fn restorable_until() -> DateTime<Utc> {
    deleted_at() + Duration::days(30)
}

fn details(user_id: Uuid) -> SealedDetails {
    SealedDetails {
        key_id: user_id,
        ciphertext: "c2VhbGVk".into(),
    }
}

fn other_details(user_id: Uuid) -> SealedDetails {
    SealedDetails {
        key_id: user_id,
        ciphertext: "cmVzZWFsZWQ=".into(),
    }
}

fn framework() -> TestFramework<User> {
    TestFramework::<User>::with(CommercialRules::default())
}

fn created() -> UserEvent {
    UserEvent::UserCreated {
        user_id: USER,
        tenant_id: TENANT,
        details: details(USER),
        role: UserRole::User,
        at: t0(),
    }
}

fn deleted() -> UserEvent {
    UserEvent::UserDeleted {
        tenant_id: TENANT,
        deleted_at: deleted_at(),
        restorable_until: restorable_until(),
    }
}

fn restored(at: DateTime<Utc>) -> UserEvent {
    UserEvent::UserRestored {
        tenant_id: TENANT,
        deleted_at: deleted_at(),
        at,
    }
}

fn purged() -> UserEvent {
    UserEvent::UserPurged {
        tenant_id: TENANT,
        key_id: USER,
        at: restorable_until(),
    }
}

fn create_command(user_id: Uuid) -> UserCommand {
    UserCommand::CreateUser {
        user_id,
        tenant_id: TENANT,
        details: details(user_id),
        role: UserRole::User,
        at: t0(),
    }
}

/// Runs `command` on `given` and checks it is refused with exactly `expected`, whose code is
/// `code`. Returns the error for further checks of its message.
fn expect_refusal(
    rules: CommercialRules,
    given: Vec<UserEvent>,
    command: UserCommand,
    expected: DomainError,
    code: &str,
) -> DomainError {
    let error = TestFramework::<User>::with(rules)
        .given(given)
        .when(command)
        .inspect_result()
        .expect_err("the command must be refused");
    assert_eq!(error, expected);
    assert_eq!(error.code(), code);
    error
}

fn refused(given: Vec<UserEvent>, command: UserCommand, expected: DomainError, code: &str) {
    expect_refusal(CommercialRules::default(), given, command, expected, code);
}

// --- CreateUser -------------------------------------------------------------------------------

#[test]
fn create_user_on_a_new_stream_emits_user_created_with_the_command_facts() {
    framework()
        .given_no_previous_events()
        .when(UserCommand::CreateUser {
            user_id: USER,
            tenant_id: TENANT,
            details: details(USER),
            role: UserRole::GlobalAdmin,
            at: t0(),
        })
        .then_expect_events(vec![UserEvent::UserCreated {
            user_id: USER,
            tenant_id: TENANT,
            details: details(USER),
            role: UserRole::GlobalAdmin,
            at: t0(),
        }]);
}

#[test]
fn create_user_twice_with_the_same_id_is_idempotent() {
    framework()
        .given(vec![created()])
        .when(create_command(USER))
        .then_expect_events(vec![]);
}

#[test]
fn create_user_with_another_id_on_an_existing_stream_is_refused_already_exists() {
    let error = expect_refusal(
        CommercialRules::default(),
        vec![created()],
        create_command(OTHER_USER),
        DomainError::AlreadyExists {
            entity: Entity::User,
            id: OTHER_USER.to_string(),
        },
        "already_exists",
    );
    assert_eq!(
        error.to_string(),
        format!("user {OTHER_USER} exists already")
    );
}

#[test]
fn every_command_but_create_on_a_user_never_created_is_refused_user_not_found() {
    let commands = vec![
        UserCommand::EditUser {
            details: None,
            role: Some(UserRole::UserAdmin),
            at: t0(),
        },
        UserCommand::DeleteUser { at: t0() },
        UserCommand::RestoreUser { at: t0() },
        UserCommand::PurgeUser { at: t0() },
        UserCommand::ResetPassword {
            notice: ResetNotice::OwnPrincipalName,
            at: t0(),
        },
    ];
    for command in commands {
        let error = framework()
            .given_no_previous_events()
            .when(command.clone())
            .inspect_result()
            .expect_err("a user that was never created cannot be changed");
        assert_eq!(
            error,
            DomainError::NotFound {
                entity: Entity::User,
                id: String::new(),
            },
            "{command:?}"
        );
        assert_eq!(error.code(), "user_not_found", "{command:?}");
        assert_eq!(error.to_string(), "user does not exist", "{command:?}");
    }
}

// --- EditUser ---------------------------------------------------------------------------------

#[test]
fn edit_user_with_a_new_role_only_emits_user_edited_with_the_role_only() {
    framework()
        .given(vec![created()])
        .when(UserCommand::EditUser {
            details: None,
            role: Some(UserRole::BillingAdmin),
            at: t0() + Duration::days(1),
        })
        .then_expect_events(vec![UserEvent::UserEdited {
            tenant_id: TENANT,
            details: None,
            role: Some(UserRole::BillingAdmin),
            at: t0() + Duration::days(1),
        }]);
}

#[test]
fn edit_user_with_new_details_and_the_same_role_emits_only_the_details() {
    framework()
        .given(vec![created()])
        .when(UserCommand::EditUser {
            details: Some(other_details(USER)),
            role: Some(UserRole::User),
            at: t0() + Duration::days(1),
        })
        .then_expect_events(vec![UserEvent::UserEdited {
            tenant_id: TENANT,
            details: Some(other_details(USER)),
            role: None,
            at: t0() + Duration::days(1),
        }]);
}

#[test]
fn edit_user_with_new_details_and_new_role_emits_both() {
    framework()
        .given(vec![created()])
        .when(UserCommand::EditUser {
            details: Some(other_details(USER)),
            role: Some(UserRole::PasswordAdmin),
            at: t0() + Duration::days(1),
        })
        .then_expect_events(vec![UserEvent::UserEdited {
            tenant_id: TENANT,
            details: Some(other_details(USER)),
            role: Some(UserRole::PasswordAdmin),
            at: t0() + Duration::days(1),
        }]);
}

#[test]
fn edit_user_with_unchanged_values_emits_nothing() {
    framework()
        .given(vec![created()])
        .when(UserCommand::EditUser {
            details: Some(details(USER)),
            role: Some(UserRole::User),
            at: t0() + Duration::days(1),
        })
        .then_expect_events(vec![]);
}

#[test]
fn edit_user_naming_no_change_emits_nothing() {
    framework()
        .given(vec![created()])
        .when(UserCommand::EditUser {
            details: None,
            role: None,
            at: t0() + Duration::days(1),
        })
        .then_expect_events(vec![]);
}

#[test]
fn edit_user_compares_with_the_values_of_the_last_edit() {
    let edited = UserEvent::UserEdited {
        tenant_id: TENANT,
        details: Some(other_details(USER)),
        role: Some(UserRole::ServiceAdmin),
        at: t0() + Duration::days(1),
    };
    framework()
        .given(vec![created(), edited])
        .when(UserCommand::EditUser {
            details: Some(other_details(USER)),
            role: Some(UserRole::ServiceAdmin),
            at: t0() + Duration::days(2),
        })
        .then_expect_events(vec![]);
}

#[test]
fn edit_user_of_a_deleted_user_is_refused_user_not_active() {
    let error = expect_refusal(
        CommercialRules::default(),
        vec![created(), deleted()],
        UserCommand::EditUser {
            details: None,
            role: Some(UserRole::GlobalAdmin),
            at: deleted_at() + Duration::days(1),
        },
        DomainError::UserNotActive {
            user_id: USER,
            status: "deleted",
        },
        "user_not_active",
    );
    assert_eq!(
        error.to_string(),
        format!("user {USER} is deleted, not active")
    );
}

#[test]
fn edit_user_of_a_restored_user_is_accepted_again() {
    let at = deleted_at() + Duration::days(2);
    framework()
        .given(vec![
            created(),
            deleted(),
            restored(deleted_at() + Duration::days(1)),
        ])
        .when(UserCommand::EditUser {
            details: None,
            role: Some(UserRole::UserAdmin),
            at,
        })
        .then_expect_events(vec![UserEvent::UserEdited {
            tenant_id: TENANT,
            details: None,
            role: Some(UserRole::UserAdmin),
            at,
        }]);
}

#[test]
fn edit_user_of_a_purged_user_is_refused_user_not_active_purged() {
    refused(
        vec![created(), deleted(), purged()],
        UserCommand::EditUser {
            details: Some(other_details(USER)),
            role: None,
            at: restorable_until() + Duration::days(1),
        },
        DomainError::UserNotActive {
            user_id: USER,
            status: "purged",
        },
        "user_not_active",
    );
}

// --- DeleteUser -------------------------------------------------------------------------------

#[test]
fn delete_user_emits_user_deleted_restorable_for_30_days() {
    framework()
        .given(vec![created()])
        .when(UserCommand::DeleteUser { at: deleted_at() })
        .then_expect_events(vec![UserEvent::UserDeleted {
            tenant_id: TENANT,
            deleted_at: deleted_at(),
            restorable_until: Utc.with_ymd_and_hms(2026, 2, 10, 0, 0, 0).unwrap(),
        }]);
}

#[test]
fn delete_user_honours_a_custom_14_day_restore_window() {
    let rules = CommercialRules {
        restore_window: Duration::days(14),
        ..Default::default()
    };
    TestFramework::<User>::with(rules)
        .given(vec![created()])
        .when(UserCommand::DeleteUser { at: deleted_at() })
        .then_expect_events(vec![UserEvent::UserDeleted {
            tenant_id: TENANT,
            deleted_at: deleted_at(),
            restorable_until: deleted_at() + Duration::days(14),
        }]);
}

#[test]
fn delete_user_twice_is_refused_user_already_deleted_naming_the_window_end() {
    let error = expect_refusal(
        CommercialRules::default(),
        vec![created(), deleted()],
        UserCommand::DeleteUser {
            at: deleted_at() + Duration::hours(1),
        },
        DomainError::UserAlreadyDeleted {
            user_id: USER,
            restorable_until: restorable_until(),
        },
        "user_already_deleted",
    );
    assert_eq!(
        error.to_string(),
        format!("user {USER} is already deleted (restorable until 2026-02-10T00:00:00Z)")
    );
}

#[test]
fn delete_user_after_a_restore_opens_a_new_window_from_the_new_deletion() {
    let second = deleted_at() + Duration::days(5);
    framework()
        .given(vec![
            created(),
            deleted(),
            restored(deleted_at() + Duration::days(1)),
        ])
        .when(UserCommand::DeleteUser { at: second })
        .then_expect_events(vec![UserEvent::UserDeleted {
            tenant_id: TENANT,
            deleted_at: second,
            restorable_until: second + Duration::days(30),
        }]);
}

#[test]
fn delete_user_of_a_purged_user_is_refused_user_purged() {
    refused(
        vec![created(), deleted(), purged()],
        UserCommand::DeleteUser {
            at: restorable_until() + Duration::days(1),
        },
        DomainError::UserPurged { user_id: USER },
        "user_purged",
    );
}

// --- RestoreUser ------------------------------------------------------------------------------

#[test]
fn restore_user_one_second_before_the_window_closes_emits_user_restored() {
    let at = restorable_until() - Duration::seconds(1);
    framework()
        .given(vec![created(), deleted()])
        .when(UserCommand::RestoreUser { at })
        .then_expect_events(vec![UserEvent::UserRestored {
            tenant_id: TENANT,
            deleted_at: deleted_at(),
            at,
        }]);
}

#[test]
fn restore_user_at_exactly_the_window_end_is_refused_restore_window_expired() {
    let error = expect_refusal(
        CommercialRules::default(),
        vec![created(), deleted()],
        UserCommand::RestoreUser {
            at: restorable_until(),
        },
        DomainError::RestoreWindowExpired {
            deleted_at: deleted_at(),
            closed_at: restorable_until(),
        },
        "restore_window_expired",
    );
    assert_eq!(
        error.to_string(),
        "the restore window of this user closed at 2026-02-10T00:00:00Z \
         (deleted at 2026-01-11T00:00:00Z)"
    );
}

#[test]
fn restore_user_long_after_the_window_is_refused_restore_window_expired() {
    refused(
        vec![created(), deleted()],
        UserCommand::RestoreUser {
            at: restorable_until() + Duration::days(365),
        },
        DomainError::RestoreWindowExpired {
            deleted_at: deleted_at(),
            closed_at: restorable_until(),
        },
        "restore_window_expired",
    );
}

#[test]
fn restore_user_honours_a_custom_14_day_restore_window() {
    let rules = CommercialRules {
        restore_window: Duration::days(14),
        ..Default::default()
    };
    let deleted_14 = TestFramework::<User>::with(rules)
        .given(vec![created()])
        .when(UserCommand::DeleteUser { at: deleted_at() })
        .inspect_result()
        .expect("delete succeeds");
    let closes = deleted_at() + Duration::days(14);

    let mut given = vec![created()];
    given.extend(deleted_14);
    TestFramework::<User>::with(rules)
        .given(given.clone())
        .when(UserCommand::RestoreUser {
            at: closes - Duration::seconds(1),
        })
        .then_expect_events(vec![UserEvent::UserRestored {
            tenant_id: TENANT,
            deleted_at: deleted_at(),
            at: closes - Duration::seconds(1),
        }]);
    expect_refusal(
        rules,
        given,
        UserCommand::RestoreUser { at: closes },
        DomainError::RestoreWindowExpired {
            deleted_at: deleted_at(),
            closed_at: closes,
        },
        "restore_window_expired",
    );
}

#[test]
fn restore_user_of_an_active_user_is_refused_user_not_deleted() {
    refused(
        vec![created()],
        UserCommand::RestoreUser {
            at: t0() + Duration::days(1),
        },
        DomainError::UserNotDeleted { user_id: USER },
        "user_not_deleted",
    );
}

#[test]
fn restore_user_twice_is_refused_user_not_deleted() {
    refused(
        vec![
            created(),
            deleted(),
            restored(deleted_at() + Duration::days(1)),
        ],
        UserCommand::RestoreUser {
            at: deleted_at() + Duration::days(2),
        },
        DomainError::UserNotDeleted { user_id: USER },
        "user_not_deleted",
    );
}

#[test]
fn restore_user_of_a_purged_user_is_refused_restore_window_expired_whenever_asked() {
    for at in [
        // Even an instant inside the old window: a purged user is gone for good, and what
        // refuses is the window that closed before the purge.
        deleted_at() + Duration::days(1),
        restorable_until(),
        restorable_until() + Duration::days(1),
    ] {
        expect_refusal(
            CommercialRules::default(),
            vec![created(), deleted(), purged()],
            UserCommand::RestoreUser { at },
            DomainError::RestoreWindowExpired {
                deleted_at: deleted_at(),
                closed_at: restorable_until(),
            },
            "restore_window_expired",
        );
    }
}

// --- PurgeUser --------------------------------------------------------------------------------

#[test]
fn purge_user_at_29_days_23_hours_is_refused_purge_not_due() {
    let error = expect_refusal(
        CommercialRules::default(),
        vec![created(), deleted()],
        UserCommand::PurgeUser {
            at: deleted_at() + Duration::days(29) + Duration::hours(23),
        },
        DomainError::PurgeNotDue {
            user_id: USER,
            due_at: restorable_until(),
        },
        "purge_not_due",
    );
    assert_eq!(
        error.to_string(),
        format!("user {USER} stays restorable until 2026-02-10T00:00:00Z; purge is not due")
    );
}

#[test]
fn purge_user_one_second_before_the_window_closes_is_refused_purge_not_due() {
    refused(
        vec![created(), deleted()],
        UserCommand::PurgeUser {
            at: restorable_until() - Duration::seconds(1),
        },
        DomainError::PurgeNotDue {
            user_id: USER,
            due_at: restorable_until(),
        },
        "purge_not_due",
    );
}

#[test]
fn purge_user_at_exactly_30_days_emits_user_purged_with_the_details_key() {
    framework()
        .given(vec![created(), deleted()])
        .when(UserCommand::PurgeUser {
            at: restorable_until(),
        })
        .then_expect_events(vec![UserEvent::UserPurged {
            tenant_id: TENANT,
            key_id: details(USER).key_id,
            at: restorable_until(),
        }]);
}

#[test]
fn purge_user_honours_a_custom_14_day_restore_window() {
    let rules = CommercialRules {
        restore_window: Duration::days(14),
        ..Default::default()
    };
    let closes = deleted_at() + Duration::days(14);
    let deleted_14 = UserEvent::UserDeleted {
        tenant_id: TENANT,
        deleted_at: deleted_at(),
        restorable_until: closes,
    };
    TestFramework::<User>::with(rules)
        .given(vec![created(), deleted_14])
        .when(UserCommand::PurgeUser { at: closes })
        .then_expect_events(vec![UserEvent::UserPurged {
            tenant_id: TENANT,
            key_id: USER,
            at: closes,
        }]);
}

#[test]
fn purge_user_of_a_purged_user_is_idempotent() {
    framework()
        .given(vec![created(), deleted(), purged()])
        .when(UserCommand::PurgeUser {
            at: restorable_until() + Duration::days(3),
        })
        .then_expect_events(vec![]);
}

#[test]
fn purge_user_of_a_restored_user_is_refused_user_not_deleted() {
    refused(
        vec![
            created(),
            deleted(),
            restored(deleted_at() + Duration::days(1)),
        ],
        // The purge timer of the first deletion, had it not been cancelled.
        UserCommand::PurgeUser {
            at: restorable_until(),
        },
        DomainError::UserNotDeleted { user_id: USER },
        "user_not_deleted",
    );
}

#[test]
fn purge_user_of_a_never_deleted_user_is_refused_user_not_deleted() {
    refused(
        vec![created()],
        UserCommand::PurgeUser {
            at: t0() + Duration::days(100),
        },
        DomainError::UserNotDeleted { user_id: USER },
        "user_not_deleted",
    );
}

// --- ResetPassword ----------------------------------------------------------------------------

#[test]
fn reset_password_records_only_where_the_notice_went() {
    for notice in [ResetNotice::OwnPrincipalName, ResetNotice::OtherAddress] {
        let at = t0() + Duration::days(3);
        framework()
            .given(vec![created()])
            .when(UserCommand::ResetPassword { notice, at })
            .then_expect_events(vec![UserEvent::PasswordReset {
                tenant_id: TENANT,
                notice,
                at,
            }]);
    }
}

#[test]
fn reset_password_twice_records_two_resets() {
    let first = UserEvent::PasswordReset {
        tenant_id: TENANT,
        notice: ResetNotice::OwnPrincipalName,
        at: t0() + Duration::days(1),
    };
    framework()
        .given(vec![created(), first])
        .when(UserCommand::ResetPassword {
            notice: ResetNotice::OwnPrincipalName,
            at: t0() + Duration::days(2),
        })
        .then_expect_events(vec![UserEvent::PasswordReset {
            tenant_id: TENANT,
            notice: ResetNotice::OwnPrincipalName,
            at: t0() + Duration::days(2),
        }]);
}

#[test]
fn reset_password_of_a_deleted_user_is_refused_user_not_active() {
    refused(
        vec![created(), deleted()],
        UserCommand::ResetPassword {
            notice: ResetNotice::OwnPrincipalName,
            at: deleted_at() + Duration::days(1),
        },
        DomainError::UserNotActive {
            user_id: USER,
            status: "deleted",
        },
        "user_not_active",
    );
}

#[test]
fn reset_password_of_a_purged_user_is_refused_user_not_active_purged() {
    refused(
        vec![created(), deleted(), purged()],
        UserCommand::ResetPassword {
            notice: ResetNotice::OtherAddress,
            at: restorable_until() + Duration::days(1),
        },
        DomainError::UserNotActive {
            user_id: USER,
            status: "purged",
        },
        "user_not_active",
    );
}

// --- What the log holds -----------------------------------------------------------------------

/// The variant name and the field names of an externally tagged event, as serde_json writes it.
fn event_shape(event: &UserEvent) -> (String, BTreeSet<String>) {
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(event).unwrap()).unwrap();
    let object = json.as_object().expect("an event is a JSON object");
    assert_eq!(object.len(), 1, "externally tagged: one key, the variant");
    let (variant, body) = object.iter().next().unwrap();
    let fields = body
        .as_object()
        .expect("struct variant")
        .keys()
        .cloned()
        .collect();
    (variant.clone(), fields)
}

fn keys(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| name.to_string()).collect()
}

fn all_keys(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                into.push(key.clone());
                all_keys(inner, into);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| all_keys(item, into)),
        _ => {}
    }
}

#[test]
fn password_reset_event_json_has_exactly_tenant_notice_and_instant() {
    let event = framework()
        .given(vec![created()])
        .when(UserCommand::ResetPassword {
            notice: ResetNotice::OtherAddress,
            at: t0() + Duration::days(1),
        })
        .inspect_result()
        .expect("reset succeeds")
        .pop()
        .expect("one event");
    let (variant, fields) = event_shape(&event);
    assert_eq!(variant, "PasswordReset");
    assert_eq!(fields, keys(&["tenant_id", "notice", "at"]));
    let json = serde_json::to_string(&event).unwrap();
    assert_eq!(
        json,
        format!(
            r#"{{"PasswordReset":{{"tenant_id":"{TENANT}","notice":"other_address","at":"2026-01-02T00:00:00Z"}}}}"#
        )
    );
}

#[test]
fn no_user_event_json_has_a_field_for_a_password_or_secret() {
    let events = [
        created(),
        UserEvent::UserEdited {
            tenant_id: TENANT,
            details: Some(other_details(USER)),
            role: Some(UserRole::PasswordAdmin),
            at: t0(),
        },
        UserEvent::PasswordReset {
            tenant_id: TENANT,
            notice: ResetNotice::OwnPrincipalName,
            at: t0(),
        },
        deleted(),
        restored(deleted_at() + Duration::days(1)),
        purged(),
    ];
    let expected = [
        (
            "UserCreated",
            keys(&["user_id", "tenant_id", "details", "role", "at"]),
        ),
        ("UserEdited", keys(&["tenant_id", "details", "role", "at"])),
        ("PasswordReset", keys(&["tenant_id", "notice", "at"])),
        (
            "UserDeleted",
            keys(&["tenant_id", "deleted_at", "restorable_until"]),
        ),
        ("UserRestored", keys(&["tenant_id", "deleted_at", "at"])),
        ("UserPurged", keys(&["tenant_id", "key_id", "at"])),
    ];
    for (event, (variant, fields)) in events.iter().zip(expected) {
        assert_eq!(event_shape(event), (variant.to_string(), fields));
        let json = serde_json::to_string(event).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let mut names = Vec::new();
        all_keys(&value, &mut names);
        // The variant name "PasswordReset" is the only key allowed to mention a password.
        for name in names.iter().filter(|name| *name != "PasswordReset") {
            let lower = name.to_ascii_lowercase();
            for word in ["password", "secret", "temporary", "pwd"] {
                assert!(!lower.contains(word), "{variant}: key {name} in {json}");
            }
        }
        assert!(!json.to_ascii_lowercase().contains("temporary"), "{json}");
    }
    // Sealed details serialise as the key id and the opaque bytes, nothing in clear.
    let (_, fields) = event_shape(&events[0]);
    assert!(fields.contains("details"));
    let value: serde_json::Value = serde_json::to_value(&events[0]).unwrap();
    let details_keys: BTreeSet<String> = value["UserCreated"]["details"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(details_keys, keys(&["key_id", "ciphertext"]));
}
