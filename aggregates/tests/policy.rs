//! Tests of the process managers of `aggregates::policy`: first each pure function on its own,
//! then the aggregates and the policies driven together in memory.

use std::collections::{BTreeMap, HashMap, VecDeque};

use aggregates::catalog::{default_catalog, offers, Offer};
use aggregates::personal::{PrincipalFingerprint, ResetNotice, SealedDetails};
use aggregates::policy::{
    on_subscription_event, on_tenant_event, on_user_event, FollowUp, Timer, TimerAction,
};
use aggregates::subscription::{
    BatchDraw, Subscription, SubscriptionCommand, SubscriptionEvent, SubscriptionStatus,
    SuspensionReason,
};
use aggregates::tenant::{
    MemberStatus, SeatSnapshot, SeatState, Tenant, TenantCommand, TenantEvent,
};
use aggregates::user::{User, UserCommand, UserEvent, UserStatus};
use aggregates::values::{
    DomainName, OfferId, OrganisationName, ProvisioningId, Quantity, Term, UserRole,
};
use aggregates::{CommercialRules, DomainError};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use uuid::Uuid;

const ALICE: Uuid = Uuid::from_u128(1);
const BOB: Uuid = Uuid::from_u128(2);
const CAROL: Uuid = Uuid::from_u128(3);
const BP_SUB: Uuid = Uuid::from_u128(10);
const BP_SUB_2: Uuid = Uuid::from_u128(11);
const EOA_SUB: Uuid = Uuid::from_u128(12);
const TRIAL_SUB: Uuid = Uuid::from_u128(13);
const TENANT: Uuid = Uuid::from_u128(100);
const BILLING: Uuid = Uuid::from_u128(200);
const OTHER_BILLING: Uuid = Uuid::from_u128(201);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn offer(id: &str) -> Offer {
    default_catalog()
        .get(&OfferId::parse(id).unwrap())
        .expect("the default catalog lists the offer")
        .clone()
}

fn offer_id(id: &str) -> OfferId {
    OfferId::parse(id).unwrap()
}

fn product(id: &str) -> ProvisioningId {
    offer(id).provisioning_id
}

fn details(user_id: Uuid) -> SealedDetails {
    SealedDetails {
        key_id: user_id,
        ciphertext: "c2VhbGVk".into(),
    }
}

fn fingerprint(letter: &str) -> PrincipalFingerprint {
    PrincipalFingerprint::parse(&letter.repeat(64)).unwrap()
}

fn snapshot(offer: Offer, quantity: u32, state: SeatState) -> SeatSnapshot {
    SeatSnapshot {
        tenant_id: TENANT,
        offer,
        quantity,
        state,
    }
}

/// The key of the only `Schedule` among `follow_ups`.
fn scheduled_key(follow_ups: &[FollowUp]) -> String {
    let keys: Vec<&String> = follow_ups
        .iter()
        .filter_map(|follow_up| match follow_up {
            FollowUp::Schedule(timer) => Some(&timer.key),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 1, "exactly one timer in {follow_ups:?}");
    keys[0].clone()
}

// ================================ on_tenant_event ================================

#[test]
fn subscription_purchased_opens_exactly_one_subscription_with_the_same_facts() {
    for (trial, quantity, term) in [(false, 5, Term::Annual), (true, 25, Term::Monthly)] {
        let at = t0() + Duration::hours(3);
        let event = TenantEvent::SubscriptionPurchased {
            subscription_id: BP_SUB,
            offer: offer(offers::BUSINESS_PREMIUM),
            quantity,
            term,
            billing_profile_id: BILLING,
            trial,
            at,
        };
        assert_eq!(
            on_tenant_event(TENANT, &event),
            vec![FollowUp::Subscription {
                subscription_id: BP_SUB,
                command: SubscriptionCommand::Open {
                    subscription_id: BP_SUB,
                    tenant_id: TENANT,
                    offer: offer(offers::BUSINESS_PREMIUM),
                    quantity,
                    term,
                    billing_profile_id: BILLING,
                    trial,
                    at,
                },
            }]
        );
    }
}

#[test]
fn user_registered_creates_the_user_with_its_sealed_details_role_and_instant() {
    let at = t0() + Duration::minutes(5);
    let event = TenantEvent::UserRegistered {
        user_id: ALICE,
        fingerprint: fingerprint("a"),
        details: details(ALICE),
        role: UserRole::BillingAdmin,
        at,
    };
    assert_eq!(
        on_tenant_event(TENANT, &event),
        vec![FollowUp::User {
            user_id: ALICE,
            command: UserCommand::CreateUser {
                user_id: ALICE,
                tenant_id: TENANT,
                details: details(ALICE),
                role: UserRole::BillingAdmin,
                at,
            },
        }]
    );
}

#[test]
fn add_on_orphaned_suspends_the_add_on_with_reason_parent_ended() {
    let at = t0() + Duration::days(2);
    let event = TenantEvent::AddOnOrphaned {
        subscription_id: EOA_SUB,
        offer_id: offer_id(offers::EXCHANGE_ONLINE_ARCHIVING),
        parent_subscription_id: BP_SUB,
        at,
    };
    assert_eq!(
        on_tenant_event(TENANT, &event),
        vec![FollowUp::Subscription {
            subscription_id: EOA_SUB,
            command: SubscriptionCommand::Suspend {
                reason: SuspensionReason::ParentEnded {
                    parent_subscription_id: BP_SUB,
                },
                at,
            },
        }]
    );
}

#[test]
fn other_tenant_events_call_for_no_follow_up() {
    let bp = product(offers::BUSINESS_PREMIUM);
    let events = vec![
        TenantEvent::TenantCreated {
            tenant_id: TENANT,
            domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
            name: OrganisationName::parse("Contoso").unwrap(),
            reseller_id: None,
            at: t0(),
        },
        TenantEvent::SubscriptionSeatsChanged {
            subscription_id: BP_SUB,
            source_sequence: 2,
            previous_product: bp.clone(),
            seats: snapshot(offer(offers::BUSINESS_PREMIUM), 3, SeatState::Inactive),
            at: t0(),
        },
        TenantEvent::LicensesMigrated {
            subscription_id: BP_SUB,
            from_product: product(offers::ENTERPRISE_E1),
            to_product: product(offers::ENTERPRISE_E3),
            users: vec![ALICE],
            at: t0(),
        },
        TenantEvent::LicensesAssigned {
            user_id: ALICE,
            added: vec![bp.clone()],
            removed: vec![],
            at: t0(),
        },
        TenantEvent::UserLicensesReleased {
            user_id: ALICE,
            source_sequence: 2,
            released: vec![bp.clone()],
            at: t0(),
        },
        TenantEvent::UserLicensesReinstated {
            user_id: ALICE,
            source_sequence: 3,
            reinstated: vec![bp.clone()],
            over_assigned: vec![bp],
            at: t0(),
        },
        TenantEvent::UserForgotten {
            user_id: ALICE,
            source_sequence: 4,
            at: t0(),
        },
    ];
    for event in events {
        assert_eq!(on_tenant_event(TENANT, &event), vec![], "{event:?}");
    }
}

// ============================= on_subscription_event =============================

fn opened(trial: bool) -> SubscriptionEvent {
    SubscriptionEvent::SubscriptionOpened {
        subscription_id: BP_SUB,
        tenant_id: TENANT,
        offer: offer(offers::BUSINESS_PREMIUM),
        quantity: 25,
        term: Term::Monthly,
        billing_profile_id: BILLING,
        trial,
        trial_ends_at: trial.then(|| t0() + Duration::days(30)),
        renews_at: t0() + Duration::days(30),
        refundable_until: t0() + Duration::hours(168),
        at: t0(),
    }
}

fn expired_event() -> SubscriptionEvent {
    SubscriptionEvent::SubscriptionExpired {
        grace_ends_at: t0() + Duration::days(60),
        seats: snapshot(offer(offers::BUSINESS_PREMIUM), 25, SeatState::Warning),
        at: t0() + Duration::days(30),
    }
}

/// The key of the trial-expiry timer of `BP_SUB`, as the trial opening schedules it.
fn expire_key() -> String {
    scheduled_key(&on_subscription_event(BP_SUB, 1, &opened(true)))
}

/// The key of the disable timer of `BP_SUB`, as the expiry schedules it.
fn disable_key() -> String {
    scheduled_key(&on_subscription_event(BP_SUB, 5, &expired_event()))
}

#[test]
fn trial_opening_schedules_the_expiry_at_the_trial_end_and_reports_no_seats() {
    let follow_ups = on_subscription_event(BP_SUB, 1, &opened(true));
    assert_eq!(
        follow_ups,
        vec![FollowUp::Schedule(Timer {
            key: expire_key(),
            due_at: t0() + Duration::days(30),
            action: TimerAction::ExpireSubscription {
                subscription_id: BP_SUB,
            },
        })]
    );
}

#[test]
fn paid_opening_calls_for_no_follow_up() {
    assert_eq!(on_subscription_event(BP_SUB, 1, &opened(false)), vec![]);
}

#[test]
fn billing_profile_assigned_calls_for_no_follow_up() {
    let event = SubscriptionEvent::BillingProfileAssigned {
        tenant_id: TENANT,
        from: BILLING,
        to: OTHER_BILLING,
        at: t0() + Duration::days(1),
    };
    assert_eq!(on_subscription_event(BP_SUB, 4, &event), vec![]);
}

#[test]
fn timer_keys_are_distinct_per_kind_and_per_subscription_and_stable() {
    assert_eq!(expire_key(), expire_key());
    assert_ne!(expire_key(), disable_key());
    let other_expire = scheduled_key(&on_subscription_event(BP_SUB_2, 1, &opened(true)));
    let other_disable = scheduled_key(&on_subscription_event(BP_SUB_2, 5, &expired_event()));
    assert_ne!(expire_key(), other_expire);
    assert_ne!(disable_key(), other_disable);
}

#[test]
fn every_seat_event_syncs_the_tenant_once_with_its_sequence_and_snapshot_and_keeps_timers_in_step()
{
    let bp = || offer(offers::BUSINESS_PREMIUM);
    let at = |hours: i64| t0() + Duration::hours(hours);
    let cancel = |key: String| FollowUp::Cancel { key };
    // (event, the snapshot it carries, its instant, the timer follow-ups after the sync)
    let cases: Vec<(
        SubscriptionEvent,
        SeatSnapshot,
        DateTime<Utc>,
        Vec<FollowUp>,
    )> = vec![
        (
            SubscriptionEvent::LicensesAdded {
                count: 2,
                batch: 2,
                refundable_until: at(169),
                unit_price: bp().unit_price,
                seats: snapshot(bp(), 7, SeatState::Enabled),
                at: at(1),
            },
            snapshot(bp(), 7, SeatState::Enabled),
            at(1),
            vec![],
        ),
        (
            SubscriptionEvent::LicensesRemoved {
                count: 1,
                drawn: vec![BatchDraw { batch: 2, seats: 1 }],
                unit_price: bp().unit_price,
                seats: snapshot(bp(), 6, SeatState::Enabled),
                at: at(2),
            },
            snapshot(bp(), 6, SeatState::Enabled),
            at(2),
            vec![],
        ),
        (
            SubscriptionEvent::SubscriptionSuspended {
                reason: SuspensionReason::Requested,
                seats: snapshot(bp(), 6, SeatState::Suspended),
                at: at(3),
            },
            snapshot(bp(), 6, SeatState::Suspended),
            at(3),
            // A suspension leaves a running grace deadline standing.
            vec![],
        ),
        (
            SubscriptionEvent::SubscriptionReactivated {
                seats: snapshot(bp(), 6, SeatState::Warning),
                at: at(4),
            },
            snapshot(bp(), 6, SeatState::Warning),
            at(4),
            // Reactivated into its grace period: the disable stays due.
            vec![],
        ),
        (
            SubscriptionEvent::SubscriptionReactivated {
                seats: snapshot(bp(), 6, SeatState::Enabled),
                at: at(4),
            },
            snapshot(bp(), 6, SeatState::Enabled),
            at(4),
            vec![cancel(disable_key())],
        ),
        (
            SubscriptionEvent::SubscriptionCancelled {
                seats: snapshot(bp(), 6, SeatState::Inactive),
                at: at(5),
            },
            snapshot(bp(), 6, SeatState::Inactive),
            at(5),
            vec![cancel(expire_key()), cancel(disable_key())],
        ),
        (
            SubscriptionEvent::TrialConverted {
                refundable_until: at(6 + 168),
                renews_at: t0() + Duration::days(31),
                seats: snapshot(bp(), 25, SeatState::Enabled),
                at: at(6),
            },
            snapshot(bp(), 25, SeatState::Enabled),
            at(6),
            vec![cancel(expire_key()), cancel(disable_key())],
        ),
        (
            SubscriptionEvent::SubscriptionUpgraded {
                from: offer(offers::ENTERPRISE_E1),
                seats: snapshot(offer(offers::ENTERPRISE_E3), 4, SeatState::Enabled),
                at: at(7),
            },
            snapshot(offer(offers::ENTERPRISE_E3), 4, SeatState::Enabled),
            at(7),
            vec![],
        ),
        (
            SubscriptionEvent::SubscriptionRenewed {
                renews_at: t0() + Duration::days(59),
                refundable_until: at(8 + 168),
                seats: snapshot(bp(), 6, SeatState::Enabled),
                at: at(8),
            },
            snapshot(bp(), 6, SeatState::Enabled),
            at(8),
            vec![cancel(disable_key())],
        ),
        (
            expired_event(),
            snapshot(bp(), 25, SeatState::Warning),
            t0() + Duration::days(30),
            vec![FollowUp::Schedule(Timer {
                key: disable_key(),
                due_at: t0() + Duration::days(60),
                action: TimerAction::DisableSubscription {
                    subscription_id: BP_SUB,
                },
            })],
        ),
        (
            SubscriptionEvent::SubscriptionDisabled {
                seats: snapshot(bp(), 25, SeatState::Inactive),
                at: t0() + Duration::days(60),
            },
            snapshot(bp(), 25, SeatState::Inactive),
            t0() + Duration::days(60),
            vec![],
        ),
    ];
    for (index, (event, seats, at, timers)) in cases.into_iter().enumerate() {
        let sequence = 40 + index as u64;
        let sync = FollowUp::Tenant {
            tenant_id: TENANT,
            command: TenantCommand::SyncSubscription {
                subscription_id: BP_SUB,
                source_sequence: sequence,
                seats,
                at,
            },
        };
        let actual = on_subscription_event(BP_SUB, sequence, &event);
        assert_eq!(actual.first(), Some(&sync), "{event:?}");
        let tenant_commands = actual
            .iter()
            .filter(|follow_up| matches!(follow_up, FollowUp::Tenant { .. }))
            .count();
        assert_eq!(tenant_commands, 1, "one sync only: {actual:?}");
        assert_eq!(actual[1..], timers[..], "{event:?}");
    }
}

#[test]
fn trial_converted_cancels_the_expiry_and_the_grace_period_timers() {
    let scheduled = expire_key();
    let converted = SubscriptionEvent::TrialConverted {
        refundable_until: t0() + Duration::days(17),
        renews_at: t0() + Duration::days(41),
        seats: snapshot(offer(offers::BUSINESS_PREMIUM), 25, SeatState::Enabled),
        at: t0() + Duration::days(10),
    };
    let follow_ups = on_subscription_event(BP_SUB, 2, &converted);
    assert!(follow_ups.contains(&FollowUp::Cancel { key: scheduled }));
    // A trial may be converted during its grace period, after the expiry scheduled the disable.
    assert!(follow_ups.contains(&FollowUp::Cancel { key: disable_key() }));
}

#[test]
fn cancelled_cancels_both_the_expiry_and_the_disable_timers() {
    let cancelled = SubscriptionEvent::SubscriptionCancelled {
        seats: snapshot(offer(offers::BUSINESS_PREMIUM), 25, SeatState::Inactive),
        at: t0() + Duration::days(1),
    };
    let follow_ups = on_subscription_event(BP_SUB, 2, &cancelled);
    assert!(follow_ups.contains(&FollowUp::Cancel { key: expire_key() }));
    assert!(follow_ups.contains(&FollowUp::Cancel { key: disable_key() }));
}

// ================================= on_user_event =================================

fn user_deleted() -> UserEvent {
    UserEvent::UserDeleted {
        tenant_id: TENANT,
        deleted_at: t0() + Duration::days(1),
        restorable_until: t0() + Duration::days(31),
    }
}

#[test]
fn user_deleted_releases_its_licences_and_schedules_the_purge_at_the_window_end() {
    let follow_ups = on_user_event(ALICE, 7, &user_deleted());
    assert_eq!(
        follow_ups,
        vec![
            FollowUp::Tenant {
                tenant_id: TENANT,
                command: TenantCommand::ReleaseUserLicenses {
                    user_id: ALICE,
                    source_sequence: 7,
                    at: t0() + Duration::days(1),
                },
            },
            FollowUp::Schedule(Timer {
                key: scheduled_key(&follow_ups),
                due_at: t0() + Duration::days(31),
                action: TimerAction::PurgeUser { user_id: ALICE },
            }),
        ]
    );
}

#[test]
fn user_restored_cancels_the_purge_with_the_same_key_and_reinstates_its_licences() {
    let purge_key = scheduled_key(&on_user_event(ALICE, 2, &user_deleted()));
    let restored = UserEvent::UserRestored {
        tenant_id: TENANT,
        deleted_at: t0() + Duration::days(1),
        at: t0() + Duration::days(2),
    };
    assert_eq!(
        on_user_event(ALICE, 3, &restored),
        vec![
            FollowUp::Cancel { key: purge_key },
            FollowUp::Tenant {
                tenant_id: TENANT,
                command: TenantCommand::ReinstateUserLicenses {
                    user_id: ALICE,
                    source_sequence: 3,
                    at: t0() + Duration::days(2),
                },
            },
        ]
    );
}

#[test]
fn purge_timer_keys_differ_between_users() {
    assert_ne!(
        scheduled_key(&on_user_event(ALICE, 2, &user_deleted())),
        scheduled_key(&on_user_event(BOB, 2, &user_deleted()))
    );
}

#[test]
fn user_purged_makes_the_tenant_forget_the_user() {
    let purged = UserEvent::UserPurged {
        tenant_id: TENANT,
        key_id: ALICE,
        at: t0() + Duration::days(31),
    };
    assert_eq!(
        on_user_event(ALICE, 9, &purged),
        vec![FollowUp::Tenant {
            tenant_id: TENANT,
            command: TenantCommand::ForgetUser {
                user_id: ALICE,
                source_sequence: 9,
                at: t0() + Duration::days(31),
            },
        }]
    );
}

#[test]
fn other_user_events_call_for_no_follow_up() {
    let events = vec![
        UserEvent::UserCreated {
            user_id: ALICE,
            tenant_id: TENANT,
            details: details(ALICE),
            role: UserRole::User,
            at: t0(),
        },
        UserEvent::UserEdited {
            tenant_id: TENANT,
            details: None,
            role: Some(UserRole::GlobalAdmin),
            at: t0(),
        },
        UserEvent::PasswordReset {
            tenant_id: TENANT,
            notice: ResetNotice::OwnPrincipalName,
            at: t0(),
        },
    ];
    for event in events {
        assert_eq!(on_user_event(ALICE, 5, &event), vec![], "{event:?}");
    }
}

// ============================== TimerAction::follow_up ==============================

#[test]
fn timer_actions_build_their_command_at_the_instant_they_fire() {
    let now = t0() + Duration::days(45) + Duration::seconds(7);
    assert_eq!(
        TimerAction::PurgeUser { user_id: ALICE }.follow_up(now),
        FollowUp::User {
            user_id: ALICE,
            command: UserCommand::PurgeUser { at: now },
        }
    );
    assert_eq!(
        TimerAction::ExpireSubscription {
            subscription_id: TRIAL_SUB
        }
        .follow_up(now),
        FollowUp::Subscription {
            subscription_id: TRIAL_SUB,
            command: SubscriptionCommand::Expire { at: now },
        }
    );
    assert_eq!(
        TimerAction::DisableSubscription {
            subscription_id: BP_SUB
        }
        .follow_up(now),
        FollowUp::Subscription {
            subscription_id: BP_SUB,
            command: SubscriptionCommand::Disable { at: now },
        }
    );
}

// ======================= end to end: aggregates and policies =======================

/// An event as the in-memory log recorded it.
#[derive(Debug, Clone, PartialEq)]
enum Recorded {
    Tenant {
        tenant_id: Uuid,
        event: TenantEvent,
    },
    Subscription {
        subscription_id: Uuid,
        sequence: u64,
        event: SubscriptionEvent,
    },
    User {
        user_id: Uuid,
        sequence: u64,
        event: UserEvent,
    },
}

fn follow_ups_of(recorded: &Recorded) -> Vec<FollowUp> {
    match recorded {
        Recorded::Tenant { tenant_id, event } => on_tenant_event(*tenant_id, event),
        Recorded::Subscription {
            subscription_id,
            sequence,
            event,
        } => on_subscription_event(*subscription_id, *sequence, event),
        Recorded::User {
            user_id,
            sequence,
            event,
        } => on_user_event(*user_id, *sequence, event),
    }
}

fn load<A: Aggregate>(events: &[A::Event]) -> A {
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(event.clone());
    }
    aggregate
}

/// Loads the aggregate of `stream`, handles `command` and appends the new events, returned with
/// their sequence numbers (1-based, as an event store numbers them).
async fn handle<A: Aggregate<Services = CommercialRules>>(
    stream: &mut Vec<A::Event>,
    command: A::Command,
    rules: &CommercialRules,
) -> Result<Vec<(u64, A::Event)>, A::Error>
where
    A::Event: Clone,
{
    let mut aggregate: A = load(stream);
    let sink = EventSink::default();
    aggregate.handle(command, rules, &sink).await?;
    let new = sink.collect().await;
    let first = stream.len() as u64 + 1;
    stream.extend(new.iter().cloned());
    Ok((first..).zip(new).collect())
}

/// Aggregates in memory (one event vector per id), the durable timers, and the policies.
#[derive(Default)]
struct World {
    rules: CommercialRules,
    tenants: HashMap<Uuid, Vec<TenantEvent>>,
    subscriptions: HashMap<Uuid, Vec<SubscriptionEvent>>,
    users: HashMap<Uuid, Vec<UserEvent>>,
    timers: BTreeMap<String, Timer>,
    /// Deliver every event's follow-ups a second time, right after the first.
    deliver_twice: bool,
    /// Events the second deliveries produced (none, if the follow-ups are idempotent).
    second_delivery_events: Vec<Recorded>,
}

impl World {
    fn new() -> Self {
        Self::default()
    }

    fn tenant(&self) -> Tenant {
        load(self.tenants.get(&TENANT).map_or(&[][..], Vec::as_slice))
    }

    fn subscription(&self, id: Uuid) -> Subscription {
        load(self.subscriptions.get(&id).map_or(&[][..], Vec::as_slice))
    }

    fn user(&self, id: Uuid) -> User {
        load(self.users.get(&id).map_or(&[][..], Vec::as_slice))
    }

    /// Executes one follow-up (a command or a timer change) and returns the events it recorded.
    async fn execute(&mut self, follow_up: FollowUp) -> Result<Vec<Recorded>, DomainError> {
        let rules = self.rules;
        Ok(match follow_up {
            FollowUp::Tenant { tenant_id, command } => {
                handle::<Tenant>(self.tenants.entry(tenant_id).or_default(), command, &rules)
                    .await?
                    .into_iter()
                    .map(|(_, event)| Recorded::Tenant { tenant_id, event })
                    .collect()
            }
            FollowUp::Subscription {
                subscription_id,
                command,
            } => handle::<Subscription>(
                self.subscriptions.entry(subscription_id).or_default(),
                command,
                &rules,
            )
            .await?
            .into_iter()
            .map(|(sequence, event)| Recorded::Subscription {
                subscription_id,
                sequence,
                event,
            })
            .collect(),
            FollowUp::User { user_id, command } => {
                handle::<User>(self.users.entry(user_id).or_default(), command, &rules)
                    .await?
                    .into_iter()
                    .map(|(sequence, event)| Recorded::User {
                        user_id,
                        sequence,
                        event,
                    })
                    .collect()
            }
            FollowUp::Schedule(timer) => {
                self.timers.insert(timer.key.clone(), timer);
                Vec::new()
            }
            FollowUp::Cancel { key } => {
                self.timers.remove(&key);
                Vec::new()
            }
        })
    }

    /// Runs the follow-ups of `new` events, and of the events those lead to, to completion.
    /// Returns every event recorded, `new` first.
    async fn settle(&mut self, new: Vec<Recorded>) -> Result<Vec<Recorded>, DomainError> {
        let mut all = Vec::new();
        let mut queue: VecDeque<Recorded> = new.into();
        while let Some(recorded) = queue.pop_front() {
            let follow_ups = follow_ups_of(&recorded);
            for follow_up in follow_ups.clone() {
                queue.extend(self.execute(follow_up).await?);
            }
            if self.deliver_twice {
                for follow_up in follow_ups {
                    let again = self.execute(follow_up).await?;
                    self.second_delivery_events.extend(again);
                }
            }
            all.push(recorded);
        }
        Ok(all)
    }

    /// Executes a command and runs everything it leads to.
    async fn run(&mut self, follow_up: FollowUp) -> Result<Vec<Recorded>, DomainError> {
        let new = self.execute(follow_up).await?;
        self.settle(new).await
    }

    /// Delivers an event of the log to the policies once more; returns the events recorded.
    async fn redeliver(&mut self, recorded: &Recorded) -> Result<Vec<Recorded>, DomainError> {
        let mut new = Vec::new();
        for follow_up in follow_ups_of(recorded) {
            new.extend(self.execute(follow_up).await?);
        }
        self.settle(new).await
    }

    /// Fires (and removes) every timer due at `now`, running what each leads to.
    async fn fire_timers(&mut self, now: DateTime<Utc>) -> Result<Vec<Recorded>, DomainError> {
        let due: Vec<Timer> = self
            .timers
            .values()
            .filter(|timer| timer.due_at <= now)
            .cloned()
            .collect();
        let mut all = Vec::new();
        for timer in due {
            self.timers.remove(&timer.key);
            all.extend(self.run(timer.action.follow_up(now)).await?);
        }
        Ok(all)
    }

    async fn tenant_command(&mut self, command: TenantCommand) -> Vec<Recorded> {
        self.run(FollowUp::Tenant {
            tenant_id: TENANT,
            command,
        })
        .await
        .expect("tenant command accepted")
    }

    async fn user_command(&mut self, user_id: Uuid, command: UserCommand) -> Vec<Recorded> {
        self.run(FollowUp::User { user_id, command })
            .await
            .expect("user command accepted")
    }

    async fn subscription_command(
        &mut self,
        subscription_id: Uuid,
        command: SubscriptionCommand,
    ) -> Result<Vec<Recorded>, DomainError> {
        self.run(FollowUp::Subscription {
            subscription_id,
            command,
        })
        .await
    }

    async fn create_tenant(&mut self) {
        self.tenant_command(TenantCommand::CreateTenant {
            tenant_id: TENANT,
            domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
            name: OrganisationName::parse("Contoso").unwrap(),
            reseller_id: None,
            at: t0(),
        })
        .await;
    }

    async fn buy(&mut self, subscription_id: Uuid, offer_id: &str, seats: i64, trial: bool) {
        self.tenant_command(TenantCommand::PurchaseSubscription {
            subscription_id,
            offer: offer(offer_id),
            quantity: Quantity::parse("quantity", seats).unwrap(),
            term: Term::Monthly,
            billing_profile_id: BILLING,
            trial,
            at: t0(),
        })
        .await;
    }

    async fn register(&mut self, user_id: Uuid, letter: &str, at: DateTime<Utc>) {
        self.tenant_command(TenantCommand::RegisterUser {
            user_id,
            principal_domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
            fingerprint: fingerprint(letter),
            details: details(user_id),
            role: UserRole::User,
            at,
        })
        .await;
    }

    async fn assign(&mut self, user_id: Uuid, offer_id: &str, at: DateTime<Utc>) {
        self.tenant_command(TenantCommand::AssignLicenses {
            user_id,
            add: vec![OfferId::parse(offer_id).unwrap()],
            remove: vec![],
            at,
        })
        .await;
    }

    /// A tenant with one Business Premium seat, held by Alice.
    async fn with_alice_holding_the_only_seat() -> Self {
        let mut world = Self::new();
        world.create_tenant().await;
        world.buy(BP_SUB, offers::BUSINESS_PREMIUM, 1, false).await;
        world.register(ALICE, "a", t0()).await;
        world
            .assign(ALICE, offers::BUSINESS_PREMIUM, t0() + Duration::hours(1))
            .await;
        world
    }
}

fn deleted_at() -> DateTime<Utc> {
    t0() + Duration::days(2)
}

fn window_end() -> DateTime<Utc> {
    deleted_at() + Duration::days(30)
}

#[tokio::test]
async fn the_setup_opens_the_subscription_and_creates_the_user_through_the_policies() {
    let world = World::with_alice_holding_the_only_seat().await;
    let subscription = world.subscription(BP_SUB).state.expect("opened by policy");
    assert_eq!(subscription.status, SubscriptionStatus::Active);
    assert_eq!(subscription.quantity, 1);
    let user = world.user(ALICE).state.expect("created by policy");
    assert_eq!(user.tenant_id, TENANT);
    assert_eq!(user.details, details(ALICE));
    let seats = world.tenant().seats(&product(offers::BUSINESS_PREMIUM));
    assert_eq!((seats.enabled, seats.assigned, seats.available), (1, 1, 0));
}

#[tokio::test]
async fn deleting_a_licensed_user_frees_its_seat_in_the_tenant_and_schedules_its_purge() {
    let mut world = World::with_alice_holding_the_only_seat().await;
    let bp = product(offers::BUSINESS_PREMIUM);

    let recorded = world
        .user_command(ALICE, UserCommand::DeleteUser { at: deleted_at() })
        .await;

    assert!(recorded.contains(&Recorded::Tenant {
        tenant_id: TENANT,
        event: TenantEvent::UserLicensesReleased {
            user_id: ALICE,
            source_sequence: 2,
            released: vec![bp.clone()],
            at: deleted_at(),
        },
    }));
    let tenant = world.tenant();
    let seats = tenant.seats(&bp);
    assert_eq!((seats.assigned, seats.available), (0, 1));
    let member = &tenant.members[&ALICE];
    assert_eq!(member.status, MemberStatus::Deleted);
    assert!(
        member.licenses.contains(&bp),
        "kept for a restore: {member:?}"
    );
    let timers: Vec<&Timer> = world.timers.values().collect();
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].due_at, window_end());
    assert_eq!(timers[0].action, TimerAction::PurgeUser { user_id: ALICE });
}

#[tokio::test]
async fn restoring_while_the_seat_is_still_free_reinstates_without_over_assignment() {
    let mut world = World::with_alice_holding_the_only_seat().await;
    let bp = product(offers::BUSINESS_PREMIUM);
    world
        .user_command(ALICE, UserCommand::DeleteUser { at: deleted_at() })
        .await;
    let at = deleted_at() + Duration::days(10);

    let recorded = world
        .user_command(ALICE, UserCommand::RestoreUser { at })
        .await;

    assert!(recorded.contains(&Recorded::Tenant {
        tenant_id: TENANT,
        event: TenantEvent::UserLicensesReinstated {
            user_id: ALICE,
            source_sequence: 3,
            reinstated: vec![bp.clone()],
            over_assigned: vec![],
            at,
        },
    }));
    let seats = world.tenant().seats(&bp);
    assert_eq!((seats.assigned, seats.available), (1, 0));
    assert!(
        world.timers.is_empty(),
        "purge cancelled: {:?}",
        world.timers
    );
}

#[tokio::test]
async fn restoring_after_the_seat_went_to_someone_else_succeeds_and_over_assigns_the_product() {
    let mut world = World::with_alice_holding_the_only_seat().await;
    let bp = product(offers::BUSINESS_PREMIUM);
    world
        .user_command(ALICE, UserCommand::DeleteUser { at: deleted_at() })
        .await;
    world
        .register(BOB, "b", deleted_at() + Duration::hours(1))
        .await;
    world
        .assign(
            BOB,
            offers::BUSINESS_PREMIUM,
            deleted_at() + Duration::hours(2),
        )
        .await;
    assert_eq!(world.tenant().seats(&bp).available, 0);
    let at = window_end() - Duration::seconds(1);

    let recorded = world
        .user_command(ALICE, UserCommand::RestoreUser { at })
        .await;

    assert!(recorded.contains(&Recorded::User {
        user_id: ALICE,
        sequence: 3,
        event: UserEvent::UserRestored {
            tenant_id: TENANT,
            deleted_at: deleted_at(),
            at,
        },
    }));
    assert!(recorded.contains(&Recorded::Tenant {
        tenant_id: TENANT,
        event: TenantEvent::UserLicensesReinstated {
            user_id: ALICE,
            source_sequence: 3,
            reinstated: vec![bp.clone()],
            over_assigned: vec![bp.clone()],
            at,
        },
    }));
    let tenant = world.tenant();
    let seats = tenant.seats(&bp);
    assert_eq!((seats.enabled, seats.assigned, seats.available), (1, 2, -1));
    assert!(seats.over_assigned());
    assert_eq!(tenant.members[&ALICE].status, MemberStatus::Active);
    assert_eq!(world.user(ALICE).state.unwrap().status, UserStatus::Active);
    assert!(
        world.timers.is_empty(),
        "purge cancelled: {:?}",
        world.timers
    );
}

#[tokio::test]
async fn the_purge_timer_fires_at_the_window_end_shreds_the_key_and_frees_the_principal_name() {
    let mut world = World::with_alice_holding_the_only_seat().await;
    world
        .user_command(ALICE, UserCommand::DeleteUser { at: deleted_at() })
        .await;

    let early = world
        .fire_timers(window_end() - Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(early, vec![], "not due yet");

    let recorded = world.fire_timers(window_end()).await.unwrap();
    assert_eq!(
        recorded,
        vec![
            Recorded::User {
                user_id: ALICE,
                sequence: 3,
                event: UserEvent::UserPurged {
                    tenant_id: TENANT,
                    key_id: ALICE,
                    at: window_end(),
                },
            },
            Recorded::Tenant {
                tenant_id: TENANT,
                event: TenantEvent::UserForgotten {
                    user_id: ALICE,
                    source_sequence: 3,
                    at: window_end(),
                },
            },
        ]
    );
    assert!(world.timers.is_empty());
    let tenant = world.tenant();
    assert_eq!(tenant.members[&ALICE].status, MemberStatus::Purged);
    assert!(!tenant.principals.contains_key(&fingerprint("a")));
    // The principal name can be given to a new user.
    world
        .register(CAROL, "a", window_end() + Duration::hours(1))
        .await;
    assert_eq!(world.tenant().principals[&fingerprint("a")], CAROL);
    // And the purged user can never come back.
    let error = world
        .run(FollowUp::User {
            user_id: ALICE,
            command: UserCommand::RestoreUser {
                at: window_end() + Duration::days(1),
            },
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), "restore_window_expired");
}

#[tokio::test]
async fn redelivering_the_follow_ups_of_an_event_right_away_changes_nothing() {
    let mut world = World::with_alice_holding_the_only_seat().await;
    let recorded = world
        .user_command(ALICE, UserCommand::DeleteUser { at: deleted_at() })
        .await;
    let user_deleted = recorded[0].clone();
    assert!(matches!(
        user_deleted,
        Recorded::User {
            event: UserEvent::UserDeleted { .. },
            ..
        }
    ));
    let tenants = world.tenants.clone();
    let users = world.users.clone();
    let timers = world.timers.clone();

    let again = world.redeliver(&user_deleted).await.unwrap();

    assert_eq!(again, vec![]);
    assert_eq!(world.tenants, tenants);
    assert_eq!(world.users, users);
    assert_eq!(world.timers, timers);
}

/// A story that touches every policy: purchases (one a trial), registrations, assignments, a
/// delete and restore, a purge by timer, a trial conversion and cancellations that orphan an
/// add-on.
async fn full_story(world: &mut World) {
    world.create_tenant().await;
    world.buy(BP_SUB, offers::BUSINESS_PREMIUM, 2, false).await;
    world
        .buy(EOA_SUB, offers::EXCHANGE_ONLINE_ARCHIVING, 1, false)
        .await;
    world
        .buy(TRIAL_SUB, offers::BUSINESS_PREMIUM, 25, true)
        .await;
    world.register(ALICE, "a", t0()).await;
    world.register(BOB, "b", t0()).await;
    world
        .assign(ALICE, offers::BUSINESS_PREMIUM, t0() + Duration::hours(1))
        .await;
    world
        .assign(
            BOB,
            offers::EXCHANGE_ONLINE_ARCHIVING,
            t0() + Duration::hours(1),
        )
        .await;
    world
        .user_command(ALICE, UserCommand::DeleteUser { at: deleted_at() })
        .await;
    world
        .user_command(
            ALICE,
            UserCommand::RestoreUser {
                at: deleted_at() + Duration::days(1),
            },
        )
        .await;
    world
        .user_command(BOB, UserCommand::DeleteUser { at: deleted_at() })
        .await;
    world
        .subscription_command(
            TRIAL_SUB,
            SubscriptionCommand::ConvertTrial {
                at: t0() + Duration::days(3),
            },
        )
        .await
        .unwrap();
    world
        .subscription_command(
            BP_SUB,
            SubscriptionCommand::Cancel {
                at: t0() + Duration::days(4),
            },
        )
        .await
        .unwrap();
    world
        .subscription_command(
            TRIAL_SUB,
            SubscriptionCommand::Cancel {
                at: t0() + Duration::days(5),
            },
        )
        .await
        .unwrap();
    world.fire_timers(window_end()).await.unwrap();
}

#[tokio::test]
async fn delivering_every_event_twice_changes_nothing_the_second_time() {
    let mut once = World::new();
    full_story(&mut once).await;
    let mut twice = World {
        deliver_twice: true,
        ..World::new()
    };
    full_story(&mut twice).await;

    assert_eq!(twice.second_delivery_events, vec![]);
    assert_eq!(twice.tenants, once.tenants);
    assert_eq!(twice.subscriptions, once.subscriptions);
    assert_eq!(twice.users, once.users);
    assert_eq!(twice.timers, once.timers);
    // The story did reach its end: Bob purged, the add-on suspended, Alice active.
    assert!(matches!(
        once.user(BOB).state.unwrap().status,
        UserStatus::Purged { .. }
    ));
    assert!(matches!(
        once.subscription(EOA_SUB).state.unwrap().status,
        SubscriptionStatus::Suspended { .. }
    ));
    assert_eq!(once.user(ALICE).state.unwrap().status, UserStatus::Active);
}

/// A tenant with two Business Premium subscriptions and Exchange Online Archiving on top.
async fn with_archiving_on_two_business_premiums() -> World {
    let mut world = World::new();
    world.create_tenant().await;
    world.buy(BP_SUB, offers::BUSINESS_PREMIUM, 1, false).await;
    world
        .buy(BP_SUB_2, offers::BUSINESS_PREMIUM, 1, false)
        .await;
    world
        .buy(EOA_SUB, offers::EXCHANGE_ONLINE_ARCHIVING, 3, false)
        .await;
    world
}

#[tokio::test]
async fn cancelling_the_last_business_premium_suspends_exchange_online_archiving_with_parent_ended()
{
    let mut world = with_archiving_on_two_business_premiums().await;

    // One parent left: the add-on stays in service.
    let first = world
        .subscription_command(
            BP_SUB,
            SubscriptionCommand::Cancel {
                at: t0() + Duration::days(1),
            },
        )
        .await
        .unwrap();
    assert!(!first.iter().any(|recorded| matches!(
        recorded,
        Recorded::Tenant {
            event: TenantEvent::AddOnOrphaned { .. },
            ..
        }
    )));
    assert_eq!(
        world.subscription(EOA_SUB).state.unwrap().status,
        SubscriptionStatus::Active
    );

    // The last parent, cancelled within its window (one hour before it closes).
    let at = t0() + Duration::hours(167);
    let recorded = world
        .subscription_command(BP_SUB_2, SubscriptionCommand::Cancel { at })
        .await
        .unwrap();

    assert!(recorded.contains(&Recorded::Tenant {
        tenant_id: TENANT,
        event: TenantEvent::AddOnOrphaned {
            subscription_id: EOA_SUB,
            offer_id: offer_id(offers::EXCHANGE_ONLINE_ARCHIVING),
            parent_subscription_id: BP_SUB_2,
            at,
        },
    }));
    let reason = SuspensionReason::ParentEnded {
        parent_subscription_id: BP_SUB_2,
    };
    assert!(recorded.contains(&Recorded::Subscription {
        subscription_id: EOA_SUB,
        sequence: 2,
        event: SubscriptionEvent::SubscriptionSuspended {
            reason: reason.clone(),
            seats: snapshot(
                offer(offers::EXCHANGE_ONLINE_ARCHIVING),
                3,
                SeatState::Suspended
            ),
            at,
        },
    }));
    assert_eq!(
        world.subscription(EOA_SUB).state.unwrap().status,
        SubscriptionStatus::Suspended {
            reason,
            grace_ends_at: None
        }
    );
    let archive = world
        .tenant()
        .seats(&product(offers::EXCHANGE_ONLINE_ARCHIVING));
    assert_eq!((archive.enabled, archive.suspended), (0, 3));
}

#[tokio::test]
async fn cancelling_business_premium_after_its_window_is_refused_and_the_add_on_stays_active() {
    let mut world = World::new();
    world.create_tenant().await;
    world.buy(BP_SUB, offers::BUSINESS_PREMIUM, 1, false).await;
    world
        .buy(EOA_SUB, offers::EXCHANGE_ONLINE_ARCHIVING, 1, false)
        .await;

    let error = world
        .subscription_command(
            BP_SUB,
            SubscriptionCommand::Cancel {
                at: t0() + Duration::hours(169),
            },
        )
        .await
        .unwrap_err();

    assert_eq!(error.code(), "cancellation_window_closed");
    assert_eq!(
        world.subscription(EOA_SUB).state.unwrap().status,
        SubscriptionStatus::Active
    );
}

// Guards that the tenant drops a user report older than the last it folded in (source_sequence).
#[tokio::test]
async fn a_late_second_delivery_of_user_deleted_after_the_restore_releases_nothing() {
    let mut world = World::with_alice_holding_the_only_seat().await;
    let bp = product(offers::BUSINESS_PREMIUM);
    let deleted = world
        .user_command(ALICE, UserCommand::DeleteUser { at: deleted_at() })
        .await;
    world
        .user_command(
            ALICE,
            UserCommand::RestoreUser {
                at: deleted_at() + Duration::days(1),
            },
        )
        .await;
    assert_eq!(world.tenant().seats(&bp).assigned, 1);

    // The durable consumer catches up with the deletion, already handled inline.
    let again = world.redeliver(&deleted[0]).await.unwrap();

    assert_eq!(again, vec![], "a stale delivery must not change the pool");
    let tenant = world.tenant();
    assert_eq!(tenant.members[&ALICE].status, MemberStatus::Active);
    assert_eq!(tenant.seats(&bp).assigned, 1);
    // The stale delivery still re-schedules the purge timer (on_user_event cannot tell it is
    // stale), but the timer purges nothing: the user is active, so the purge is refused.
    let fired = world.fire_timers(window_end()).await;
    match fired {
        Ok(recorded) => assert_eq!(recorded, vec![]),
        Err(error) => assert_eq!(error.code(), "user_not_deleted"),
    }
    assert_eq!(world.user(ALICE).state.unwrap().status, UserStatus::Active);
    let tenant = world.tenant();
    assert_eq!(tenant.members[&ALICE].status, MemberStatus::Active);
    assert_eq!(tenant.seats(&bp).assigned, 1);
}

#[tokio::test]
async fn an_unconverted_trial_expires_by_timer_at_its_end_and_is_disabled_after_the_grace_period() {
    let mut world = World::new();
    world.create_tenant().await;
    world
        .buy(TRIAL_SUB, offers::BUSINESS_PREMIUM, 25, true)
        .await;
    let trial_end = t0() + Duration::days(30);
    let grace_end = trial_end + Duration::days(30);
    assert_eq!(
        world.timers.values().map(|t| t.due_at).collect::<Vec<_>>(),
        vec![trial_end]
    );

    world.fire_timers(trial_end).await.unwrap();
    let status = world.subscription(TRIAL_SUB).state.unwrap().status;
    assert_eq!(
        status,
        SubscriptionStatus::Expired {
            grace_ends_at: grace_end
        }
    );
    let seats = world.tenant().seats(&product(offers::BUSINESS_PREMIUM));
    assert_eq!((seats.enabled, seats.warning), (0, 25));
    // A second firing of the expiry timer finds the work done.
    let again = world
        .subscription_command(
            TRIAL_SUB,
            SubscriptionCommand::Expire {
                at: trial_end + Duration::hours(1),
            },
        )
        .await;
    assert_eq!(again, Ok(vec![]));

    world.fire_timers(grace_end).await.unwrap();
    assert_eq!(
        world.subscription(TRIAL_SUB).state.unwrap().status,
        SubscriptionStatus::Disabled
    );
    assert!(world.timers.is_empty());
    let seats = world.tenant().seats(&product(offers::BUSINESS_PREMIUM));
    assert_eq!((seats.enabled, seats.warning), (0, 0));
}

#[tokio::test]
async fn converting_a_trial_before_its_end_cancels_its_expiry() {
    let mut world = World::new();
    world.create_tenant().await;
    world
        .buy(TRIAL_SUB, offers::BUSINESS_PREMIUM, 25, true)
        .await;
    world
        .subscription_command(
            TRIAL_SUB,
            SubscriptionCommand::ConvertTrial {
                at: t0() + Duration::days(10),
            },
        )
        .await
        .unwrap();
    assert!(world.timers.is_empty(), "{:?}", world.timers);
    // Nothing is left to fire at the old trial end.
    assert_eq!(
        world.fire_timers(t0() + Duration::days(30)).await.unwrap(),
        vec![]
    );
    assert_eq!(
        world.subscription(TRIAL_SUB).state.unwrap().status,
        SubscriptionStatus::Active
    );
}

// Guards that TrialConverted cancels the grace-period (disable) timer as well as the expiry one.
#[tokio::test]
async fn converting_an_expired_trial_cancels_its_grace_period_timer() {
    let mut world = World::new();
    world.create_tenant().await;
    world
        .buy(TRIAL_SUB, offers::BUSINESS_PREMIUM, 25, true)
        .await;
    let trial_end = t0() + Duration::days(30);
    world.fire_timers(trial_end).await.unwrap();
    assert!(matches!(
        world.subscription(TRIAL_SUB).state.unwrap().status,
        SubscriptionStatus::Expired { .. }
    ));

    world
        .subscription_command(
            TRIAL_SUB,
            SubscriptionCommand::ConvertTrial {
                at: trial_end + Duration::days(5),
            },
        )
        .await
        .unwrap();

    assert_eq!(
        world.subscription(TRIAL_SUB).state.unwrap().status,
        SubscriptionStatus::Active
    );
    assert!(
        world.timers.is_empty(),
        "an active subscription keeps no grace-period timer: {:?}",
        world.timers
    );
    let fired = world.fire_timers(trial_end + Duration::days(30)).await;
    assert_eq!(fired, Ok(vec![]));
}
