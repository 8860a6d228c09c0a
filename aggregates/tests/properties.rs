//! Property tests: random sequences of commands, with time advancing and the process managers
//! run to completion after each one, keep the books consistent.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use aggregates::catalog::{default_catalog, offers, Offer};
use aggregates::personal::{PrincipalFingerprint, ResetNotice, SealedDetails};
use aggregates::policy::{on_subscription_event, on_tenant_event, on_user_event, FollowUp, Timer};
use aggregates::subscription::{
    Subscription, SubscriptionCommand, SubscriptionStatus, SuspensionReason,
};
use aggregates::tenant::{MemberStatus, Tenant, TenantCommand};
use aggregates::user::{User, UserCommand, UserStatus};
use aggregates::values::{
    DomainName, OfferId, OrganisationName, ProvisioningId, Quantity, Term, UserRole,
};
use aggregates::{CommercialRules, DomainError};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

const TENANT: Uuid = Uuid::from_u128(1);
const PROFILE: Uuid = Uuid::from_u128(2);

/// The aggregates' `handle` never waits on anything outside itself, so one poll finishes it.
fn run<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a pure aggregate never waits"),
    }
}

/// One aggregate instance kept two ways: live (updated by `handle`) and as its event log.
struct Stream<A: Aggregate> {
    live: A,
    log: Vec<A::Event>,
}

impl<A: Aggregate> Default for Stream<A> {
    fn default() -> Self {
        Self {
            live: A::default(),
            log: Vec::new(),
        }
    }
}

impl<A: Aggregate> Stream<A> {
    fn execute(
        &mut self,
        command: A::Command,
        services: &A::Services,
    ) -> Result<Vec<A::Event>, A::Error> {
        // Like the store: a refused command leaves the aggregate as it was.
        let mut working =
            serde_json::from_value(serde_json::to_value(&self.live).unwrap()).unwrap();
        let sink = EventSink::default();
        run(A::handle(&mut working, command, services, &sink))?;
        let events = run(sink.collect());
        self.live = working;
        self.log.extend(events.clone());
        Ok(events)
    }

    fn replayed(&self) -> A {
        let mut replay = A::default();
        for event in self.log.clone() {
            replay.apply(event);
        }
        replay
    }
}

/// All aggregates of one partner in memory, with the process managers and timers run inline.
struct Books {
    rules: CommercialRules,
    now: DateTime<Utc>,
    tenants: BTreeMap<Uuid, Stream<Tenant>>,
    subscriptions: BTreeMap<Uuid, Stream<Subscription>>,
    users: BTreeMap<Uuid, Stream<User>>,
    timers: BTreeMap<String, Timer>,
}

impl Books {
    fn new() -> Self {
        let mut books = Self {
            rules: CommercialRules::default(),
            now: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            tenants: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            users: BTreeMap::new(),
            timers: BTreeMap::new(),
        };
        books
            .dispatch(FollowUp::Tenant {
                tenant_id: TENANT,
                command: TenantCommand::CreateTenant {
                    tenant_id: TENANT,
                    domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
                    name: OrganisationName::parse("Contoso").unwrap(),
                    reseller_id: None,
                    at: books.now,
                },
            })
            .unwrap();
        books
    }

    /// Runs a command and every follow-up it causes, to completion. Only the first command's
    /// refusal is returned: follow-ups are idempotent and must not fail.
    fn dispatch(&mut self, first: FollowUp) -> Result<(), DomainError> {
        let mut queue = VecDeque::from([first]);
        let mut is_first = true;
        while let Some(step) = queue.pop_front() {
            let result = self.step(step.clone(), &mut queue);
            match result {
                Err(error) if is_first => return Err(error),
                Err(error) => panic!("follow-up {step:?} failed: {error}"),
                Ok(()) => {}
            }
            is_first = false;
        }
        Ok(())
    }

    fn step(&mut self, step: FollowUp, queue: &mut VecDeque<FollowUp>) -> Result<(), DomainError> {
        match step {
            FollowUp::Tenant { tenant_id, command } => {
                let events = self
                    .tenants
                    .entry(tenant_id)
                    .or_default()
                    .execute(command, &self.rules)?;
                for event in &events {
                    queue.extend(on_tenant_event(tenant_id, event));
                }
            }
            FollowUp::Subscription {
                subscription_id,
                command,
            } => {
                let stream = self.subscriptions.entry(subscription_id).or_default();
                let events = stream.execute(command, &self.rules)?;
                let first_sequence = stream.log.len() - events.len() + 1;
                for (offset, event) in events.iter().enumerate() {
                    let sequence = (first_sequence + offset) as u64;
                    queue.extend(on_subscription_event(subscription_id, sequence, event));
                }
            }
            FollowUp::User { user_id, command } => {
                let stream = self.users.entry(user_id).or_default();
                let events = stream.execute(command, &self.rules)?;
                let first_sequence = stream.log.len() - events.len() + 1;
                for (offset, event) in events.iter().enumerate() {
                    let sequence = (first_sequence + offset) as u64;
                    queue.extend(on_user_event(user_id, sequence, event));
                }
            }
            FollowUp::Schedule(timer) => {
                self.timers.insert(timer.key.clone(), timer);
            }
            FollowUp::Cancel { key } => {
                self.timers.remove(&key);
            }
        }
        Ok(())
    }

    /// Moves the clock and fires every timer that falls due, in due order.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        loop {
            let due = self
                .timers
                .values()
                .filter(|timer| timer.due_at <= self.now)
                .min_by_key(|timer| (timer.due_at, timer.key.clone()))
                .cloned();
            let Some(timer) = due else { break };
            self.timers.remove(&timer.key);
            // A timer's command may find nothing to do; it must never break the books.
            let _ = self.dispatch(timer.action.follow_up(self.now));
        }
    }

    fn tenant(&self) -> &Tenant {
        &self.tenants[&TENANT].live
    }
}

#[derive(Debug, Clone)]
enum Op {
    Purchase {
        offer: usize,
        quantity: i64,
        trial: bool,
    },
    AddLicenses {
        sub: usize,
        count: i64,
    },
    RemoveLicenses {
        sub: usize,
        count: i64,
    },
    Suspend {
        sub: usize,
    },
    Reactivate {
        sub: usize,
    },
    Cancel {
        sub: usize,
    },
    ConvertTrial {
        sub: usize,
    },
    Upgrade {
        sub: usize,
    },
    Renew {
        sub: usize,
    },
    Expire {
        sub: usize,
    },
    CreateUser {
        n: u8,
    },
    Assign {
        user: usize,
        add: Vec<usize>,
        remove: Vec<usize>,
    },
    Delete {
        user: usize,
    },
    Restore {
        user: usize,
    },
    ResetPassword {
        user: usize,
    },
    Advance {
        hours: i64,
    },
}

const OFFERS: [&str; 6] = [
    offers::BUSINESS_PREMIUM,
    offers::EXCHANGE_ONLINE_ARCHIVING,
    offers::EXTRA_FILE_STORAGE,
    offers::ENTERPRISE_E1,
    offers::ENTERPRISE_E3,
    offers::PHONE_SYSTEM,
];

fn offer(index: usize) -> Offer {
    default_catalog()
        .get(&OfferId::parse(OFFERS[index % OFFERS.len()]).unwrap())
        .unwrap()
        .clone()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..OFFERS.len(), 1i64..4, prop::bool::weighted(0.2))
            .prop_map(|(offer, quantity, trial)| Op::Purchase { offer, quantity: if trial { 25 } else { quantity }, trial }),
        2 => (0..8usize, 1i64..3).prop_map(|(sub, count)| Op::AddLicenses { sub, count }),
        2 => (0..8usize, 1i64..3).prop_map(|(sub, count)| Op::RemoveLicenses { sub, count }),
        1 => (0..8usize).prop_map(|sub| Op::Suspend { sub }),
        1 => (0..8usize).prop_map(|sub| Op::Reactivate { sub }),
        1 => (0..8usize).prop_map(|sub| Op::Cancel { sub }),
        1 => (0..8usize).prop_map(|sub| Op::ConvertTrial { sub }),
        1 => (0..8usize).prop_map(|sub| Op::Upgrade { sub }),
        1 => (0..8usize).prop_map(|sub| Op::Renew { sub }),
        1 => (0..8usize).prop_map(|sub| Op::Expire { sub }),
        3 => (0..12u8).prop_map(|n| Op::CreateUser { n }),
        6 => (0..12usize, prop::collection::vec(0..OFFERS.len(), 0..3), prop::collection::vec(0..OFFERS.len(), 0..2))
            .prop_map(|(user, add, remove)| Op::Assign { user, add, remove }),
        2 => (0..12usize).prop_map(|user| Op::Delete { user }),
        2 => (0..12usize).prop_map(|user| Op::Restore { user }),
        1 => (0..12usize).prop_map(|user| Op::ResetPassword { user }),
        3 => prop_oneof![0i64..24, 24i64..200, 700i64..800].prop_map(|hours| Op::Advance { hours }),
    ]
}

fn pick<T: Copy>(items: &[T], index: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[index % items.len()])
}

/// Availability per product, computed from the sources of truth rather than the tenant's
/// bookkeeping: subscription aggregates for seats, the register for who holds what.
fn independent_availability(books: &Books) -> BTreeMap<ProvisioningId, (i64, i64, i64)> {
    let mut rows: BTreeMap<ProvisioningId, (i64, i64, i64)> = BTreeMap::new();
    for stream in books.subscriptions.values() {
        let state = stream.live.state.as_ref().expect("opened");
        let row = rows.entry(state.offer.provisioning_id.clone()).or_default();
        match state.status {
            SubscriptionStatus::Active => row.0 += i64::from(state.quantity),
            SubscriptionStatus::Expired { .. } => row.1 += i64::from(state.quantity),
            _ => {}
        }
    }
    for member in books.tenant().members.values() {
        if member.status == MemberStatus::Active {
            for product in &member.licenses {
                rows.entry(product.clone()).or_default().2 += 1;
            }
        }
    }
    rows
}

fn availability(books: &Books) -> BTreeMap<ProvisioningId, i64> {
    books
        .tenant()
        .all_seats()
        .into_iter()
        .map(|seats| (seats.product.clone(), seats.available))
        .collect()
}

/// Steps that may legitimately leave a product with more assigned than assignable seats.
fn may_over_assign(op: &Op) -> bool {
    matches!(
        op,
        Op::RemoveLicenses { .. }
            | Op::Suspend { .. }
            | Op::Cancel { .. }
            | Op::Upgrade { .. }
            | Op::Restore { .. }
            | Op::Advance { .. }
            | Op::Expire { .. }
    )
}

fn apply_op(books: &mut Books, op: &Op, created_users: &mut Vec<Uuid>, next_sub: &mut u128) {
    let at = books.now;
    let subs: Vec<Uuid> = books.subscriptions.keys().copied().collect();
    let users: Vec<Uuid> = created_users.clone();
    let sub_command = |sub: usize, command: SubscriptionCommand| {
        pick(&subs, sub).map(|subscription_id| FollowUp::Subscription {
            subscription_id,
            command,
        })
    };
    let step = match op.clone() {
        Op::Purchase {
            offer: index,
            quantity,
            trial,
        } => {
            *next_sub += 1;
            Some(FollowUp::Tenant {
                tenant_id: TENANT,
                command: TenantCommand::PurchaseSubscription {
                    subscription_id: Uuid::from_u128(1_000 + *next_sub),
                    offer: offer(index),
                    quantity: Quantity::parse("quantity", quantity).unwrap(),
                    term: Term::Monthly,
                    billing_profile_id: PROFILE,
                    trial,
                    at,
                },
            })
        }
        Op::AddLicenses { sub, count } => sub_command(
            sub,
            SubscriptionCommand::AddLicenses {
                count: Quantity::parse("count", count).unwrap(),
                at,
            },
        ),
        Op::RemoveLicenses { sub, count } => sub_command(
            sub,
            SubscriptionCommand::RemoveLicenses {
                count: Quantity::parse("count", count).unwrap(),
                at,
            },
        ),
        Op::Suspend { sub } => sub_command(
            sub,
            SubscriptionCommand::Suspend {
                reason: SuspensionReason::Requested,
                at,
            },
        ),
        Op::Reactivate { sub } => pick(&subs, sub).map(|subscription_id| {
            let offer = books.subscriptions[&subscription_id]
                .live
                .state
                .as_ref()
                .unwrap()
                .offer
                .clone();
            FollowUp::Subscription {
                subscription_id,
                command: SubscriptionCommand::Reactivate {
                    parent_chain: books.tenant().prove_parent_chain(&offer).ok(),
                    at,
                },
            }
        }),
        Op::Cancel { sub } => sub_command(sub, SubscriptionCommand::Cancel { at }),
        Op::ConvertTrial { sub } => sub_command(sub, SubscriptionCommand::ConvertTrial { at }),
        Op::Upgrade { sub } => sub_command(
            sub,
            SubscriptionCommand::Upgrade {
                target: offer(4),
                at,
            },
        ),
        Op::Renew { sub } => sub_command(sub, SubscriptionCommand::Renew { at }),
        Op::Expire { sub } => sub_command(sub, SubscriptionCommand::Expire { at }),
        Op::CreateUser { n } => {
            let user_id =
                Uuid::from_u128(10_000 + u128::from(n) + 100 * created_users.len() as u128);
            created_users.push(user_id);
            Some(FollowUp::Tenant {
                tenant_id: TENANT,
                command: TenantCommand::RegisterUser {
                    user_id,
                    principal_domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
                    // Few distinct names, so that duplicates and reuse after purge happen.
                    fingerprint: PrincipalFingerprint::parse(&format!("{n:02x}").repeat(32))
                        .unwrap(),
                    details: SealedDetails {
                        key_id: user_id,
                        ciphertext: "c2VhbGVk".into(),
                    },
                    role: UserRole::User,
                    at,
                },
            })
        }
        Op::Assign { user, add, remove } => pick(&users, user).map(|user_id| FollowUp::Tenant {
            tenant_id: TENANT,
            command: TenantCommand::AssignLicenses {
                user_id,
                add: add.iter().map(|index| offer(*index).id).collect(),
                remove: remove.iter().map(|index| offer(*index).id).collect(),
                at,
            },
        }),
        Op::Delete { user } => pick(&users, user).map(|user_id| FollowUp::User {
            user_id,
            command: UserCommand::DeleteUser { at },
        }),
        Op::Restore { user } => pick(&users, user).map(|user_id| FollowUp::User {
            user_id,
            command: UserCommand::RestoreUser { at },
        }),
        Op::ResetPassword { user } => pick(&users, user).map(|user_id| FollowUp::User {
            user_id,
            command: UserCommand::ResetPassword {
                notice: ResetNotice::OwnPrincipalName,
                at,
            },
        }),
        Op::Advance { hours } => {
            books.advance(Duration::hours(hours));
            None
        }
    };
    let Some(step) = step else { return };
    let purged_before = match &step {
        FollowUp::User { user_id, .. } => books
            .users
            .get(user_id)
            .and_then(|stream| stream.live.state.as_ref())
            .is_some_and(|state| matches!(state.status, UserStatus::Purged { .. })),
        _ => false,
    };
    let result = books.dispatch(step);
    if purged_before {
        if let Op::Restore { .. } = op {
            assert_eq!(
                result.as_ref().unwrap_err().code(),
                "restore_window_expired",
                "a purged user was restored"
            );
        }
    }
    // Registration of a user id whose name was taken creates no user: forget it.
    if let (Op::CreateUser { .. }, Err(_)) = (op, &result) {
        created_users.pop();
    }
}

fn assert_round_trips<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let json = serde_json::to_value(value).unwrap();
    let back: T = serde_json::from_value(json).unwrap();
    assert_eq!(&back, value);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn books_stay_consistent_under_random_commands(ops in prop::collection::vec(op(), 1..80)) {
        let mut books = Books::new();
        let mut users = Vec::new();
        let mut next_sub = 0u128;
        for op in &ops {
            let before = availability(&books);
            apply_op(&mut books, op, &mut users, &mut next_sub);
            let after = availability(&books);

            // Availability always equals enabled + warning − assigned, from the sources of truth.
            for (product, (enabled, warning, assigned)) in independent_availability(&books) {
                let seats = books.tenant().seats(&product);
                prop_assert_eq!(
                    (i64::from(seats.enabled), i64::from(seats.warning), i64::from(seats.assigned)),
                    (enabled, warning, assigned),
                    "pool out of step for {} after {:?}", product, op
                );
                prop_assert_eq!(seats.available, enabled + warning - assigned);
            }

            // Over-assignment appears or deepens only through restores and seat reductions.
            if !may_over_assign(op) {
                for (product, available) in &after {
                    let previous = before.get(product).copied().unwrap_or(0);
                    prop_assert!(
                        *available >= 0 || *available >= previous,
                        "{:?} over-assigned {} ({} -> {})", op, product, previous, available
                    );
                }
            }
        }

        // Replaying every stream reproduces the live state, and every state survives a snapshot.
        for stream in books.tenants.values() {
            prop_assert_eq!(&stream.replayed(), &stream.live);
            assert_round_trips(&stream.live);
            stream.log.iter().for_each(assert_round_trips);
        }
        for stream in books.subscriptions.values() {
            prop_assert_eq!(&stream.replayed(), &stream.live);
            assert_round_trips(&stream.live);
            stream.log.iter().for_each(assert_round_trips);
        }
        for stream in books.users.values() {
            prop_assert_eq!(&stream.replayed(), &stream.live);
            assert_round_trips(&stream.live);
            stream.log.iter().for_each(assert_round_trips);
        }
    }

    #[test]
    fn a_purged_user_can_never_be_restored(extra_hours in 0i64..10_000) {
        let mut books = Books::new();
        let mut users = Vec::new();
        let mut next_sub = 0;
        apply_op(&mut books, &Op::CreateUser { n: 1 }, &mut users, &mut next_sub);
        apply_op(&mut books, &Op::Delete { user: 0 }, &mut users, &mut next_sub);
        books.advance(Duration::days(30) + Duration::hours(extra_hours));
        let state = books.users[&users[0]].live.state.clone().unwrap();
        prop_assert!(matches!(state.status, UserStatus::Purged { .. }), "{:?}", state.status);
        let refused = books
            .dispatch(FollowUp::User { user_id: users[0], command: UserCommand::RestoreUser { at: books.now } })
            .unwrap_err();
        prop_assert_eq!(refused.code(), "restore_window_expired");
        // And its principal name is free again.
        prop_assert!(books.tenant().principals.is_empty());
    }
}

#[test]
fn the_purge_timer_fires_at_thirty_days_and_not_before() {
    let mut books = Books::new();
    let mut users = Vec::new();
    let mut next_sub = 0;
    apply_op(
        &mut books,
        &Op::CreateUser { n: 1 },
        &mut users,
        &mut next_sub,
    );
    apply_op(
        &mut books,
        &Op::Delete { user: 0 },
        &mut users,
        &mut next_sub,
    );
    books.advance(Duration::days(29) + Duration::hours(23));
    let status = |books: &Books| books.users[&users[0]].live.state.as_ref().unwrap().status;
    assert!(matches!(status(&books), UserStatus::Deleted { .. }));
    books.advance(Duration::hours(1));
    assert!(matches!(status(&books), UserStatus::Purged { .. }));
    assert_eq!(
        books.users[&users[0]]
            .log
            .iter()
            .filter(|event| matches!(event, aggregates::user::UserEvent::UserPurged { .. }))
            .count(),
        1
    );
}

#[test]
fn a_restore_cancels_the_purge() {
    let mut books = Books::new();
    let mut users = Vec::new();
    let mut next_sub = 0;
    apply_op(
        &mut books,
        &Op::CreateUser { n: 1 },
        &mut users,
        &mut next_sub,
    );
    apply_op(
        &mut books,
        &Op::Delete { user: 0 },
        &mut users,
        &mut next_sub,
    );
    books.advance(Duration::days(10));
    apply_op(
        &mut books,
        &Op::Restore { user: 0 },
        &mut users,
        &mut next_sub,
    );
    books.advance(Duration::days(60));
    assert_eq!(
        books.users[&users[0]].live.state.as_ref().unwrap().status,
        UserStatus::Active
    );
    assert!(books.timers.is_empty());
}

proptest! {
    /// A member's licence set behaves as the `BTreeSet` it replaced, and serialises to the
    /// same JSON, so snapshots written before it still load.
    #[test]
    fn licence_set_is_a_set_with_the_btree_sets_json(
        operations in proptest::collection::vec((any::<bool>(), 0usize..6), 0..40)
    ) {
        use aggregates::tenant::LicenceSet;
        let products: Vec<ProvisioningId> = (0..6)
            .map(|n| ProvisioningId::parse(&format!("PRODUCT_{n}")).unwrap())
            .collect();
        let mut set = LicenceSet::default();
        let mut model = std::collections::BTreeSet::new();
        for (insert, n) in operations {
            let product = products[n].clone();
            if insert {
                prop_assert_eq!(set.insert(product.clone()), model.insert(product));
            } else {
                prop_assert_eq!(set.remove(&product), model.remove(&product));
            }
            for product in &products {
                prop_assert_eq!(set.contains(product), model.contains(product));
            }
        }
        prop_assert_eq!(set.iter().collect::<Vec<_>>(), model.iter().collect::<Vec<_>>());
        let json = serde_json::to_string(&model).unwrap();
        prop_assert_eq!(serde_json::to_string(&set).unwrap(), json.clone());
        prop_assert_eq!(serde_json::from_str::<LicenceSet>(&json).unwrap(), set);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Seat counts never wrap: however many large additions arrive, a subscription holds at
    /// most `MAX_SEATS`, exactly the additions it accepted, and the tenant's pool agrees.
    #[test]
    fn seat_counts_are_checked_and_never_wrap(
        opening in 1u32..=aggregates::subscription::MAX_SEATS,
        additions in prop::collection::vec(1u32..=Quantity::MAX, 1..40),
    ) {
        let limit = aggregates::subscription::MAX_SEATS;
        let mut books = Books::new();
        let mut users = Vec::new();
        let mut next_sub = 0;
        apply_op(
            &mut books,
            &Op::Purchase { offer: 3, quantity: i64::from(opening), trial: false },
            &mut users,
            &mut next_sub,
        );
        let subscription_id = *books.subscriptions.keys().next().expect("the purchase opened one");
        let mut expected = opening;
        for count in additions {
            let outcome = books.dispatch(FollowUp::Subscription {
                subscription_id,
                command: SubscriptionCommand::AddLicenses {
                    count: Quantity::parse("count", i64::from(count)).unwrap(),
                    at: books.now,
                },
            });
            if u64::from(expected) + u64::from(count) <= u64::from(limit) {
                prop_assert!(outcome.is_ok(), "{:?}", outcome);
                expected += count;
            } else {
                let refusal = outcome.unwrap_err();
                prop_assert_eq!(refusal.code(), "seat_limit_exceeded");
            }
            let held = books.subscriptions[&subscription_id].live.state.as_ref().unwrap().quantity;
            prop_assert_eq!(held, expected);
            let product = offer(3).provisioning_id;
            prop_assert_eq!(books.tenant().seats(&product).enabled, expected);
        }
    }
}
