//! Invoices of the billing projection, computed by hand and asserted to the cent.
//!
//! The subscription events are the real ones: each test drives the subscription aggregate with
//! its commands (so refusals such as a removal outside the cancellation window are the domain's
//! own) and logs what it emits, as the service would, before folding the log into the billing
//! rows and asking for an invoice.
//!
//! The rules under test (see `projections::billing`): the invoice of month M charges each
//! subscription billed to the profile at the start of M its seats × unit price for the whole of
//! M, and prorates every change during M − 1 on the profile billed when it happened: seat
//! difference × unit price × days left in M − 1 (the day of the change included) ÷ days of
//! M − 1; a price change credits the old seats at the old price and charges the new ones at the
//! new price. Each line is rounded to the cent, half away from zero; totals are per currency.

use std::str::FromStr;

use aggregates::catalog::{
    default_catalog, offers, CatalogAggregate, CatalogCommand, CatalogEvent, Offer,
};
use aggregates::subscription::{
    Subscription, SubscriptionCommand, SubscriptionEvent, SuspensionReason,
};
use aggregates::values::{OfferId, ProductName, ProvisioningId, Quantity, Term, UnitPrice};
use aggregates::{CommercialRules, DomainError};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use projections::billing::{self, Billing, Invoice, LineKind, Month};
use projections::{DomainEvent, LoggedEvent, RowSet};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

const TENANT: Uuid = Uuid::from_u128(0x7e);
const PROFILE: Uuid = Uuid::from_u128(0xb1);
const OTHER_PROFILE: Uuid = Uuid::from_u128(0xb2);
const THIRD_PROFILE: Uuid = Uuid::from_u128(0xb3);

// ---------------------------------------------------------------------------------------------
// Helpers: a log fed by the subscription aggregate
// ---------------------------------------------------------------------------------------------

fn at(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, hour, minute, 0)
        .unwrap()
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap()
}

fn month(raw: &str) -> Month {
    Month::parse(raw).unwrap()
}

fn offer(id: &str) -> Offer {
    default_catalog()
        .get(&OfferId::parse(id).unwrap())
        .expect("offer in the default catalog")
        .clone()
}

/// Office 365 Business Premium, 12.50 USD.
fn business_premium() -> Offer {
    offer(offers::BUSINESS_PREMIUM)
}

/// Office 365 Enterprise E1, 8.00 USD (upgradable to E3).
fn e1() -> Offer {
    offer(offers::ENTERPRISE_E1)
}

/// Office 365 Enterprise E3, 20.00 USD.
fn e3() -> Offer {
    offer(offers::ENTERPRISE_E3)
}

/// An offer priced in euros, 4.9950 EUR, published through the catalog aggregate.
fn business_basic_eur() -> Offer {
    let offer = Offer {
        id: OfferId::parse("3b555118-da6a-4418-894f-7df1e2096870").unwrap(),
        name: ProductName::parse("Microsoft 365 Business Basic").unwrap(),
        provisioning_id: ProvisioningId::parse("O365_BUSINESS_ESSENTIALS").unwrap(),
        trial_offer_id: None,
        assignable_to_users: true,
        possible_upgrades: Vec::new(),
        unit_price: UnitPrice::parse("4.9950", "EUR").unwrap(),
        parent_offers: Vec::new(),
    };
    let events = TestFramework::<CatalogAggregate>::with(())
        .given_no_previous_events()
        .when(CatalogCommand::PublishOffer {
            offer,
            at: at(2025, 12, 1, 0, 0),
        })
        .inspect_result()
        .expect("the catalog takes the offer");
    match events.as_slice() {
        [CatalogEvent::OfferPublished { offer, .. }] => offer.clone(),
        other => panic!("expected one published offer, got {other:?}"),
    }
}

fn qty(n: u32) -> Quantity {
    Quantity::parse("count", i64::from(n)).unwrap()
}

/// One subscription's stream: the events the aggregate emitted so far.
struct Stream {
    id: Uuid,
    history: Vec<SubscriptionEvent>,
}

/// The global log, as the service appends to it.
#[derive(Default)]
struct Log {
    events: Vec<LoggedEvent>,
}

impl Log {
    /// Handles `command` on the subscription as its history stands and appends what it emits,
    /// each with the next position in the log and the next sequence in the subscription.
    fn run(
        &mut self,
        stream: &mut Stream,
        command: SubscriptionCommand,
    ) -> Result<(), DomainError> {
        let emitted = TestFramework::<Subscription>::with(CommercialRules::default())
            .given(stream.history.clone())
            .when(command)
            .inspect_result()?;
        for event in emitted {
            stream.history.push(event.clone());
            self.events.push(LoggedEvent {
                position: self.events.len() as i64 + 1,
                aggregate_type: "subscription".into(),
                aggregate_id: stream.id.to_string(),
                sequence: stream.history.len() as i64,
                event: DomainEvent::Subscription(event),
            });
        }
        Ok(())
    }

    /// Like [`Log::run`] for a command the domain must accept.
    fn ok(&mut self, stream: &mut Stream, command: SubscriptionCommand) {
        let shown = format!("{command:?}");
        self.run(stream, command)
            .unwrap_or_else(|error| panic!("{shown} was refused: {error:?}"));
    }

    /// Opens a subscription for the tenant.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        id: u128,
        offer: Offer,
        quantity: u32,
        term: Term,
        profile: Uuid,
        trial: bool,
        when: DateTime<Utc>,
    ) -> Stream {
        let subscription_id = Uuid::from_u128(id);
        let mut stream = Stream {
            id: subscription_id,
            history: Vec::new(),
        };
        self.ok(
            &mut stream,
            SubscriptionCommand::Open {
                subscription_id,
                tenant_id: TENANT,
                offer,
                quantity,
                term,
                billing_profile_id: profile,
                trial,
                at: when,
            },
        );
        stream
    }

    /// Opens a paid annual subscription (no renewal falls in the months tested).
    fn buy(
        &mut self,
        id: u128,
        offer: Offer,
        quantity: u32,
        profile: Uuid,
        when: DateTime<Utc>,
    ) -> Stream {
        self.open(id, offer, quantity, Term::Annual, profile, false, when)
    }

    fn add(&mut self, stream: &mut Stream, count: u32, when: DateTime<Utc>) {
        self.ok(
            stream,
            SubscriptionCommand::AddLicenses {
                count: qty(count),
                at: when,
            },
        );
    }

    fn remove(
        &mut self,
        stream: &mut Stream,
        count: u32,
        when: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        self.run(
            stream,
            SubscriptionCommand::RemoveLicenses {
                count: qty(count),
                at: when,
            },
        )
    }

    /// Folds the whole log into rows held in memory (what replay does).
    fn rows(&self) -> RowSet {
        let mut rows = RowSet::complete();
        projections::fold(&Billing, &self.events, &mut rows).unwrap();
        rows
    }

    fn invoice(&self, profile: Uuid, of: &str) -> Invoice {
        invoice_from(&self.rows(), profile, of)
    }
}

fn invoice_from(rows: &RowSet, profile: Uuid, of: &str) -> Invoice {
    let entries = billing::entries_in(rows, profile).unwrap();
    billing::invoice(profile, month(of), &entries)
}

/// An invoice line as the tests write it: kind, subscription, seats, unit price, days charged of
/// days in the month, amount (to the cent).
type Line = (LineKind, Uuid, i64, String, u32, u32, String);

fn lines(invoice: &Invoice) -> Vec<Line> {
    invoice
        .lines
        .iter()
        .map(|line| {
            assert_eq!(
                line.amount,
                line.amount.round_dp(2),
                "{line:?} is not in cents"
            );
            (
                line.kind,
                line.subscription_id,
                line.seats,
                format!(
                    "{} {}",
                    line.unit_price.amount,
                    line.unit_price.currency.as_str()
                ),
                line.days,
                line.days_in_month,
                format!("{:.2} {}", line.amount, line.currency.as_str()),
            )
        })
        .collect()
}

fn monthly(subscription: &Stream, seats: i64, price: &str, days: u32, amount: &str) -> Line {
    (
        LineKind::MonthlyCharge,
        subscription.id,
        seats,
        price.to_owned(),
        days,
        days,
        amount.to_owned(),
    )
}

fn proration(
    subscription: &Stream,
    seats: i64,
    price: &str,
    days: u32,
    days_in_month: u32,
    amount: &str,
) -> Line {
    (
        LineKind::Proration,
        subscription.id,
        seats,
        price.to_owned(),
        days,
        days_in_month,
        amount.to_owned(),
    )
}

fn totals(invoice: &Invoice) -> Vec<String> {
    invoice
        .totals
        .iter()
        .map(|total| format!("{:.2} {}", total.amount, total.currency.as_str()))
        .collect()
}

fn dec(raw: &str) -> Decimal {
    Decimal::from_str(raw).unwrap()
}

// ---------------------------------------------------------------------------------------------
// (1) A full month
// ---------------------------------------------------------------------------------------------

#[test]
fn seats_bought_before_the_month_are_one_monthly_line() {
    let mut log = Log::default();
    // 5 × Business Premium bought on 2026-01-10 at 09:00.
    let sub = log.buy(0x11, business_premium(), 5, PROFILE, at(2026, 1, 10, 9, 0));

    // March: nothing changed in February, so one line: 5 × 12.50 = 62.50 for 31 days.
    let march = log.invoice(PROFILE, "2026-03");
    assert_eq!(march.month, "2026-03");
    assert_eq!(march.billing_profile_id, PROFILE);
    assert_eq!(
        lines(&march),
        vec![monthly(&sub, 5, "12.50 USD", 31, "62.50 USD")]
    );
    assert_eq!(totals(&march), vec!["62.50 USD"]);
    let line = &march.lines[0];
    assert_eq!(line.amount, dec("62.50"));
    assert_eq!(
        (line.period_start, line.period_end),
        (date(2026, 3, 1), date(2026, 3, 31))
    );
    assert_eq!(line.changed_at, None);
    assert_eq!(line.tenant_id, TENANT);
    assert_eq!(line.product_name, "Office 365 Business Premium");

    // February, for contrast, also prorates the purchase in January (31 days), from the 10th
    // to the 31st, day of purchase included: 22 days.
    //   monthly   5 × 12.50               = 62.50
    //   proration 5 × 12.50 × 22/31 = 1375/31 = 44.3548… → 44.35
    //   total                               = 106.85
    let february = log.invoice(PROFILE, "2026-02");
    assert_eq!(
        lines(&february),
        vec![
            monthly(&sub, 5, "12.50 USD", 28, "62.50 USD"),
            proration(&sub, 5, "12.50 USD", 22, 31, "44.35 USD"),
        ]
    );
    assert_eq!(february.lines[1].period_start, date(2026, 1, 10));
    assert_eq!(february.lines[1].period_end, date(2026, 1, 31));
    assert_eq!(february.lines[1].changed_at, Some(at(2026, 1, 10, 9, 0)));
    assert_eq!(totals(&february), vec!["106.85 USD"]);

    // January's invoice was made before the purchase: nothing.
    let january = log.invoice(PROFILE, "2026-01");
    assert!(january.lines.is_empty() && january.totals.is_empty());
}

// ---------------------------------------------------------------------------------------------
// (2) Seats added during the previous month
// ---------------------------------------------------------------------------------------------

#[test]
fn seats_added_mid_month_are_prorated_by_day_then_charged_in_full() {
    let mut log = Log::default();
    let mut sub = log.buy(0x21, business_premium(), 5, PROFILE, at(2026, 1, 12, 8, 0));
    // +3 seats on 2026-02-15 (February 2026 has 28 days): the 15th to the 28th is 14 days.
    log.add(&mut sub, 3, at(2026, 2, 15, 9, 30));
    // +1 seat on 2026-02-26: the 26th to the 28th is 3 days.
    log.add(&mut sub, 1, at(2026, 2, 26, 17, 45));

    //   monthly   9 × 12.50                 = 112.50
    //   proration 3 × 12.50 × 14/28         =  18.75
    //   proration 1 × 12.50 ×  3/28 = 1.3392… →  1.34
    //   total                               = 132.59
    let march = log.invoice(PROFILE, "2026-03");
    assert_eq!(
        lines(&march),
        vec![
            monthly(&sub, 9, "12.50 USD", 31, "112.50 USD"),
            proration(&sub, 3, "12.50 USD", 14, 28, "18.75 USD"),
            proration(&sub, 1, "12.50 USD", 3, 28, "1.34 USD"),
        ]
    );
    assert_eq!(
        (march.lines[1].period_start, march.lines[1].period_end),
        (date(2026, 2, 15), date(2026, 2, 28))
    );
    assert_eq!(march.lines[1].changed_at, Some(at(2026, 2, 15, 9, 30)));
    assert_eq!(totals(&march), vec!["132.59 USD"]);

    // February's monthly charge was fixed at the start of February: 5 seats, not 9.
    let february = log.invoice(PROFILE, "2026-02");
    assert_eq!(february.lines[0].kind, LineKind::MonthlyCharge);
    assert_eq!(february.lines[0].seats, 5);
    assert_eq!(february.lines[0].amount, dec("62.50"));

    // April: the new count, in full, and no prorations (nothing changed in March).
    let april = log.invoice(PROFILE, "2026-04");
    assert_eq!(
        lines(&april),
        vec![monthly(&sub, 9, "12.50 USD", 30, "112.50 USD")]
    );
}

// ---------------------------------------------------------------------------------------------
// (3) Removals within the cancellation window
// ---------------------------------------------------------------------------------------------

#[test]
fn in_window_removal_of_purchased_seats_is_credited_on_the_next_invoice() {
    let mut log = Log::default();
    // 10 × E3 (20.00) bought on 2026-02-03 at 10:00: removable until 2026-02-10 10:00 (168 h).
    let mut sub = log.buy(0x31, e3(), 10, PROFILE, at(2026, 2, 3, 10, 0));
    // 3 removed on 2026-02-09 at 09:00, within the window.
    log.remove(&mut sub, 3, at(2026, 2, 9, 9, 0)).unwrap();
    // One minute after the window closed, the domain refuses: no event, nothing billed.
    let late = log.remove(&mut sub, 1, at(2026, 2, 10, 10, 1));
    assert!(
        matches!(late, Err(DomainError::CancellationWindowClosed { .. })),
        "{late:?}"
    );
    assert_eq!(sub.history.len(), 2);

    //   monthly    7 × 20.00                            = 140.00
    //   proration +10 × 20.00 × 26/28 (3rd–28th) = 185.714… → 185.71
    //   proration −3 × 20.00 × 20/28 (9th–28th) = −42.857… → −42.86
    //   total                                           = 282.85
    let march = log.invoice(PROFILE, "2026-03");
    assert_eq!(
        lines(&march),
        vec![
            monthly(&sub, 7, "20.00 USD", 31, "140.00 USD"),
            proration(&sub, 10, "20.00 USD", 26, 28, "185.71 USD"),
            proration(&sub, -3, "20.00 USD", 20, 28, "-42.86 USD"),
        ]
    );
    assert!(march.lines[2].amount < Decimal::ZERO);
    assert_eq!(march.lines[2].period_start, date(2026, 2, 9));
    assert_eq!(totals(&march), vec!["282.85 USD"]);
}

#[test]
fn a_half_cent_credit_rounds_away_from_zero() {
    let mut log = Log::default();
    let mut sub = log.buy(0x32, business_premium(), 4, PROFILE, at(2026, 1, 12, 8, 0));
    // +2 on 2026-02-20 at 10:00 (a new batch, removable until 2026-02-27 10:00).
    log.add(&mut sub, 2, at(2026, 2, 20, 10, 0));
    // −1 on 2026-02-22, from that batch (the first batch's window closed on 2026-01-19).
    log.remove(&mut sub, 1, at(2026, 2, 22, 16, 0)).unwrap();

    //   monthly    5 × 12.50                                 = 62.50
    //   proration +2 × 12.50 × 9/28 (20th–28th) = 8.0357…     →  8.04
    //   proration −1 × 12.50 × 7/28 (22nd–28th) = −3.125 exactly → −3.13 (half away from zero;
    //             banker's rounding would say −3.12)
    //   total                                                = 67.41
    let march = log.invoice(PROFILE, "2026-03");
    assert_eq!(
        lines(&march),
        vec![
            monthly(&sub, 5, "12.50 USD", 31, "62.50 USD"),
            proration(&sub, 2, "12.50 USD", 9, 28, "8.04 USD"),
            proration(&sub, -1, "12.50 USD", 7, 28, "-3.13 USD"),
        ]
    );
    assert_eq!(march.lines[2].amount, dec("-3.13"));
    assert_eq!(totals(&march), vec!["67.41 USD"]);
}

// ---------------------------------------------------------------------------------------------
// (4) A move between billing profiles
// ---------------------------------------------------------------------------------------------

#[test]
fn a_move_leaves_earlier_changes_with_the_old_profile_and_the_next_month_with_the_new() {
    let mut log = Log::default();
    let mut sub = log.buy(0x41, business_premium(), 6, PROFILE, at(2026, 1, 15, 11, 0));
    // +2 on 2026-02-05, still billed to PROFILE: the 5th to the 28th is 24 days.
    log.add(&mut sub, 2, at(2026, 2, 5, 8, 0));
    // Moved to OTHER_PROFILE on 2026-02-18.
    log.ok(
        &mut sub,
        SubscriptionCommand::AssignBillingProfile {
            billing_profile_id: OTHER_PROFILE,
            at: at(2026, 2, 18, 12, 0),
        },
    );
    // +1 on 2026-02-24, billed to OTHER_PROFILE: the 24th to the 28th is 5 days.
    log.add(&mut sub, 1, at(2026, 2, 24, 9, 0));

    // The old profile, March: only the change made while it paid.
    //   proration +2 × 12.50 × 24/28 = 21.428… → 21.43
    let old = log.invoice(PROFILE, "2026-03");
    assert_eq!(
        lines(&old),
        vec![proration(&sub, 2, "12.50 USD", 24, 28, "21.43 USD")]
    );
    assert_eq!(totals(&old), vec!["21.43 USD"]);

    // The new profile, March: the monthly charge with every seat, and its own change.
    //   monthly    9 × 12.50               = 112.50
    //   proration +1 × 12.50 × 5/28 = 2.232… →  2.23
    //   total                              = 114.73
    let new = log.invoice(OTHER_PROFILE, "2026-03");
    assert_eq!(
        lines(&new),
        vec![
            monthly(&sub, 9, "12.50 USD", 31, "112.50 USD"),
            proration(&sub, 1, "12.50 USD", 5, 28, "2.23 USD"),
        ]
    );
    assert_eq!(totals(&new), vec!["114.73 USD"]);

    // February was the old profile's alone (the move itself prorates nothing):
    //   monthly    6 × 12.50                             = 75.00
    //   proration +6 × 12.50 × 17/31 (Jan 15th–31st) = 41.129… → 41.13
    //   total                                            = 116.13
    let old_february = log.invoice(PROFILE, "2026-02");
    assert_eq!(
        lines(&old_february),
        vec![
            monthly(&sub, 6, "12.50 USD", 28, "75.00 USD"),
            proration(&sub, 6, "12.50 USD", 17, 31, "41.13 USD"),
        ]
    );
    assert_eq!(totals(&old_february), vec!["116.13 USD"]);
    let new_february = log.invoice(OTHER_PROFILE, "2026-02");
    assert!(new_february.lines.is_empty() && new_february.totals.is_empty());

    // April: the old profile is done with it; the new one pays the month.
    let old_april = log.invoice(PROFILE, "2026-04");
    assert!(old_april.lines.is_empty() && old_april.totals.is_empty());
    let new_april = log.invoice(OTHER_PROFILE, "2026-04");
    assert_eq!(
        lines(&new_april),
        vec![monthly(&sub, 9, "12.50 USD", 30, "112.50 USD")]
    );
}

// ---------------------------------------------------------------------------------------------
// (5) Two currencies on one profile
// ---------------------------------------------------------------------------------------------

#[test]
fn two_currencies_on_one_profile_are_totalled_apart() {
    let mut log = Log::default();
    let usd = log.buy(0x51, business_premium(), 4, PROFILE, at(2026, 1, 20, 8, 0));
    // 3 × an offer at 4.9950 EUR, bought on 2026-02-10: the 10th to the 28th is 19 days.
    let eur = log.buy(
        0x52,
        business_basic_eur(),
        3,
        PROFILE,
        at(2026, 2, 10, 8, 0),
    );

    //   monthly    4 × 12.50                                    = 50.00 USD
    //   monthly    3 × 4.9950 = 14.985                  → 14.99 EUR (half away from zero)
    //   proration +3 × 4.9950 × 19/28 = 10.16839…       → 10.17 EUR
    //   totals: 14.99 + 10.17 = 25.16 EUR (sum of rounded lines; the unrounded sum,
    //           25.1534…, would give 25.15), 50.00 USD
    let march = log.invoice(PROFILE, "2026-03");
    assert_eq!(
        lines(&march),
        vec![
            monthly(&usd, 4, "12.50 USD", 31, "50.00 USD"),
            monthly(&eur, 3, "4.9950 EUR", 31, "14.99 EUR"),
            proration(&eur, 3, "4.9950 EUR", 19, 28, "10.17 EUR"),
        ]
    );
    assert_eq!(march.totals.len(), 2);
    assert_eq!(totals(&march), vec!["25.16 EUR", "50.00 USD"]);
    assert_eq!(march.totals[0].amount, dec("25.16"));
    assert_eq!(march.totals[1].amount, dec("50.00"));
}

// ---------------------------------------------------------------------------------------------
// (6) Trials
// ---------------------------------------------------------------------------------------------

#[test]
fn trials_are_not_billed_until_converted() {
    let rules = CommercialRules::default();
    let mut log = Log::default();
    // A 25-seat Business Premium trial from 2026-01-10 (ends 2026-02-09), converted on
    // 2026-02-05 at 14:00: billed from the 5th, 24 days of February's 28.
    let mut converted = log.open(
        0x61,
        business_premium(),
        rules.trial_seats,
        Term::Monthly,
        PROFILE,
        true,
        at(2026, 1, 10, 9, 0),
    );
    // A trial cannot grow: the domain refuses.
    assert!(matches!(
        log.run(
            &mut converted,
            SubscriptionCommand::AddLicenses {
                count: qty(5),
                at: at(2026, 1, 20, 9, 0)
            }
        ),
        Err(DomainError::TrialQuantityFixed { .. })
    ));
    // Another trial from 2026-01-25 that is never converted: it expires on 2026-02-24.
    let mut lapsed = log.open(
        0x62,
        business_premium(),
        rules.trial_seats,
        Term::Monthly,
        PROFILE,
        true,
        at(2026, 1, 25, 9, 0),
    );

    // While both are trials, nothing is billed.
    let february = log.invoice(PROFILE, "2026-02");
    assert!(february.lines.is_empty() && february.totals.is_empty());

    log.ok(
        &mut converted,
        SubscriptionCommand::ConvertTrial {
            at: at(2026, 2, 5, 14, 0),
        },
    );
    log.ok(
        &mut lapsed,
        SubscriptionCommand::Expire {
            at: at(2026, 2, 24, 9, 0),
        },
    );

    //   monthly   25 × 12.50                       = 312.50
    //   proration 25 × 12.50 × 24/28 = 267.857…  → 267.86
    //   total                                      = 580.36
    // and nothing for the lapsed trial.
    let march = log.invoice(PROFILE, "2026-03");
    assert_eq!(
        lines(&march),
        vec![
            monthly(&converted, 25, "12.50 USD", 31, "312.50 USD"),
            proration(&converted, 25, "12.50 USD", 24, 28, "267.86 USD"),
        ]
    );
    assert_eq!(march.lines[1].changed_at, Some(at(2026, 2, 5, 14, 0)));
    assert_eq!(totals(&march), vec!["580.36 USD"]);

    // The lapsed trial is disabled after its grace period: still nothing, ever.
    log.ok(
        &mut lapsed,
        SubscriptionCommand::Disable {
            at: at(2026, 3, 26, 9, 0),
        },
    );
    let april = log.invoice(PROFILE, "2026-04");
    assert_eq!(
        lines(&april),
        vec![monthly(&converted, 25, "12.50 USD", 30, "312.50 USD")]
    );
    let may = log.invoice(PROFILE, "2026-05");
    assert!(may
        .lines
        .iter()
        .all(|line| line.subscription_id == converted.id));
}

// ---------------------------------------------------------------------------------------------
// Upgrades, suspensions, cancellations
// ---------------------------------------------------------------------------------------------

#[test]
fn an_upgrade_credits_the_old_price_and_charges_the_new() {
    let mut log = Log::default();
    let mut sub = log.buy(0x71, e1(), 10, PROFILE, at(2026, 1, 8, 8, 0));
    // E1 (8.00) → E3 (20.00) on 2026-02-11: the 11th to the 28th is 18 days.
    log.ok(
        &mut sub,
        SubscriptionCommand::Upgrade {
            target: e3(),
            at: at(2026, 2, 11, 10, 0),
        },
    );

    //   monthly   10 × 20.00                            = 200.00
    //   proration −10 × 8.00 × 18/28 = −51.428…  → −51.43
    //   proration +10 × 20.00 × 18/28 = 128.571… → 128.57
    //   total                                           = 277.14
    let march = log.invoice(PROFILE, "2026-03");
    assert_eq!(
        lines(&march),
        vec![
            monthly(&sub, 10, "20.00 USD", 31, "200.00 USD"),
            proration(&sub, -10, "8.00 USD", 18, 28, "-51.43 USD"),
            proration(&sub, 10, "20.00 USD", 18, 28, "128.57 USD"),
        ]
    );
    assert_eq!(march.lines[0].product_name, "Office 365 Enterprise E3");
    assert_eq!(totals(&march), vec!["277.14 USD"]);
}

#[test]
fn suspended_seats_are_billed_and_a_cancellation_is_credited() {
    let mut log = Log::default();
    let mut suspended = log.buy(0x81, business_premium(), 3, PROFILE, at(2026, 1, 5, 8, 0));
    log.ok(
        &mut suspended,
        SubscriptionCommand::Suspend {
            reason: SuspensionReason::Requested,
            at: at(2026, 2, 10, 8, 0),
        },
    );
    // 5 bought on 2026-02-20 and cancelled on 2026-02-23, within the window.
    let mut cancelled = log.buy(0x82, business_premium(), 5, PROFILE, at(2026, 2, 20, 8, 0));
    log.ok(
        &mut cancelled,
        SubscriptionCommand::Cancel {
            at: at(2026, 2, 23, 8, 0),
        },
    );

    //   monthly    3 × 12.50 (suspended, still billed)      = 37.50
    //   proration +5 × 12.50 × 9/28 (20th–28th) = 20.089… → 20.09
    //   proration −5 × 12.50 × 6/28 (23rd–28th) = −13.392… → −13.39
    //   total                                               = 44.20
    // and no monthly charge for the cancelled subscription.
    let march = log.invoice(PROFILE, "2026-03");
    assert_eq!(
        lines(&march),
        vec![
            monthly(&suspended, 3, "12.50 USD", 31, "37.50 USD"),
            proration(&cancelled, 5, "12.50 USD", 9, 28, "20.09 USD"),
            proration(&cancelled, -5, "12.50 USD", 6, 28, "-13.39 USD"),
        ]
    );
    assert_eq!(totals(&march), vec!["44.20 USD"]);
}

// ---------------------------------------------------------------------------------------------
// (7) An invoice never changes once its month has begun
// ---------------------------------------------------------------------------------------------

/// A book with something of everything before March 2026, on two profiles.
fn book_before_march() -> (Log, Vec<Stream>) {
    let rules = CommercialRules::default();
    let mut log = Log::default();
    let steady = log.buy(0x91, business_premium(), 5, PROFILE, at(2026, 1, 10, 9, 0));
    let mut grown = log.buy(0x92, e1(), 10, PROFILE, at(2026, 2, 3, 10, 0));
    log.add(&mut grown, 4, at(2026, 2, 14, 12, 0));
    log.remove(&mut grown, 2, at(2026, 2, 16, 12, 0)).unwrap();
    let mut moved = log.buy(0x93, e3(), 2, PROFILE, at(2026, 1, 20, 9, 0));
    log.ok(
        &mut moved,
        SubscriptionCommand::AssignBillingProfile {
            billing_profile_id: OTHER_PROFILE,
            at: at(2026, 2, 18, 9, 0),
        },
    );
    let trial = log.open(
        0x94,
        business_premium(),
        rules.trial_seats,
        Term::Monthly,
        OTHER_PROFILE,
        true,
        at(2026, 2, 12, 9, 0),
    );
    let monthly = log.open(
        0x95,
        business_basic_eur(),
        3,
        Term::Monthly,
        OTHER_PROFILE,
        false,
        at(2026, 2, 27, 23, 59),
    );
    (log, vec![steady, grown, moved, trial, monthly])
}

/// One command of the generated future: what, to which subscription, how many, how long after
/// the previous one (in minutes).
#[derive(Debug, Clone)]
struct Step {
    kind: u8,
    subscription: usize,
    count: u32,
    after_minutes: i64,
}

fn step() -> impl Strategy<Value = Step> {
    (0u8..11, 0usize..5, 1u32..6, 0i64..=7 * 24 * 60).prop_map(
        |(kind, subscription, count, after_minutes)| Step {
            kind,
            subscription,
            count,
            after_minutes,
        },
    )
}

fn command(step: &Step, when: DateTime<Utc>) -> SubscriptionCommand {
    let profiles = [PROFILE, OTHER_PROFILE, THIRD_PROFILE];
    match step.kind {
        0 => SubscriptionCommand::AddLicenses {
            count: qty(step.count),
            at: when,
        },
        1 => SubscriptionCommand::RemoveLicenses {
            count: qty(step.count),
            at: when,
        },
        2 => SubscriptionCommand::Suspend {
            reason: SuspensionReason::Requested,
            at: when,
        },
        3 => SubscriptionCommand::Reactivate {
            parent_chain: None,
            at: when,
        },
        4 => SubscriptionCommand::Cancel { at: when },
        5 => SubscriptionCommand::ConvertTrial { at: when },
        6 => SubscriptionCommand::Upgrade {
            target: e3(),
            at: when,
        },
        7 => SubscriptionCommand::AssignBillingProfile {
            billing_profile_id: profiles[step.count as usize % profiles.len()],
            at: when,
        },
        8 => SubscriptionCommand::Renew { at: when },
        9 => SubscriptionCommand::Expire { at: when },
        _ => SubscriptionCommand::Disable { at: when },
    }
}

fn invoices_up_to_march(rows: &RowSet) -> Vec<Invoice> {
    let mut invoices = Vec::new();
    for profile in [PROFILE, OTHER_PROFILE, THIRD_PROFILE] {
        for of in ["2026-01", "2026-02", "2026-03"] {
            invoices.push(invoice_from(rows, profile, of));
        }
    }
    invoices
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever happens from 2026-03-01 00:00 on (the first step may fall on that very
    /// instant), the invoices of March and before read the same, whether the rows are folded
    /// on (as the service does) or replayed from scratch.
    #[test]
    fn the_invoice_of_a_month_never_changes_once_it_has_begun(
        steps in proptest::collection::vec(step(), 1..25)
    ) {
        let (mut log, mut streams) = book_before_march();
        let mut rows = log.rows();
        let before = invoices_up_to_march(&rows);
        let folded = log.events.len();

        let mut when = month("2026-03").start();
        for step in &steps {
            when += Duration::minutes(step.after_minutes);
            // The domain refuses what makes no sense (removing outside the window, renewing
            // early…): refusals emit nothing.
            let _ = log.run(&mut streams[step.subscription], command(step, when));
        }
        let all_after = log.events[folded..].iter().all(|logged| match &logged.event {
            DomainEvent::Subscription(event) => event.at() >= month("2026-03").start(),
            _ => false,
        });
        prop_assert!(all_after);

        projections::fold(&Billing, &log.events[folded..], &mut rows).unwrap();
        prop_assert_eq!(&invoices_up_to_march(&rows), &before);
        prop_assert_eq!(&invoices_up_to_march(&log.rows()), &before);
    }
}

#[test]
fn changes_on_the_first_instant_of_a_month_go_to_the_next_invoice() {
    let (mut log, mut streams) = book_before_march();
    let before = log.invoice(PROFILE, "2026-03");
    let april_before = log.invoice(PROFILE, "2026-04");
    // +2 Business Premium on 2026-03-01 00:00 exactly, and a move of another subscription later
    // in March.
    log.add(&mut streams[0], 2, month("2026-03").start());
    log.ok(
        &mut streams[1],
        SubscriptionCommand::AssignBillingProfile {
            billing_profile_id: THIRD_PROFILE,
            at: at(2026, 3, 20, 9, 0),
        },
    );

    // March (already begun at that instant) is untouched.
    assert_eq!(log.invoice(PROFILE, "2026-03"), before);
    let third_march = log.invoice(THIRD_PROFILE, "2026-03");
    assert!(third_march.lines.is_empty() && third_march.totals.is_empty());

    // April sees the addition prorated over the whole of March (1st–31st: 31/31):
    //   +2 × 12.50 × 31/31 = 25.00
    // and loses the moved subscription's monthly charge to THIRD_PROFILE.
    let april = log.invoice(PROFILE, "2026-04");
    assert_ne!(april, april_before);
    let steady = &streams[0];
    assert!(lines(&april).contains(&proration(steady, 2, "12.50 USD", 31, 31, "25.00 USD")));
    assert!(lines(&april).contains(&monthly(steady, 7, "12.50 USD", 30, "87.50 USD")));
    assert!(april
        .lines
        .iter()
        .all(|line| line.subscription_id != streams[1].id));
    //   THIRD_PROFILE, April: 12 × E1 8.00 = 96.00 (10 + 4 − 2 seats).
    let third_april = log.invoice(THIRD_PROFILE, "2026-04");
    assert_eq!(
        lines(&third_april),
        vec![monthly(&streams[1], 12, "8.00 USD", 30, "96.00 USD")]
    );
}

// ---------------------------------------------------------------------------------------------
// Month
// ---------------------------------------------------------------------------------------------

#[test]
fn month_parse_refuses_what_is_not_yyyy_mm() {
    for raw in [
        "2026-13",
        "26-01",
        "2026-1",
        "abc",
        "2026-00",
        "0000-01",
        "",
        "2026",
        "2026-",
        "-03",
        "2026-03-01",
        "2026/03",
        " 2026-03",
        "2026-03 ",
        "20260-3",
        "2026-+3",
        "+026-03",
        "2026-1a",
        "２０２６-03",
    ] {
        let error = Month::parse(raw).expect_err(raw);
        assert_eq!(
            error.to_string(),
            format!("'{raw}' is not a month: write it as YYYY-MM, e.g. 2026-11")
        );
    }
}

#[test]
fn month_parse_reads_yyyy_mm_and_counts_days() {
    let march = month("2026-03");
    assert_eq!(march.to_string(), "2026-03");
    assert_eq!(march.start(), at(2026, 3, 1, 0, 0));
    assert_eq!(march.days(), 31);
    assert_eq!(march.previous(), month("2026-02"));
    assert_eq!(month("2026-02").days(), 28);
    assert_eq!(month("2028-02").days(), 29);
    assert_eq!(month("2026-12").next(), month("2027-01"));
    assert_eq!(month("2027-01").previous(), month("2026-12"));
    assert_eq!(month("0001-01").to_string(), "0001-01");
    assert_eq!(Month::of(at(2026, 2, 28, 23, 59)), month("2026-02"));
}

#[test]
fn an_unbounded_price_kept_in_the_log_saturates_the_invoice_instead_of_panicking() {
    // Prices are bounded where they enter now (UnitPrice::MAX), but the log may keep one
    // published before: the invoice still comes out, at the largest amount there is.
    let mut log = Log::default();
    let mut offer = business_premium();
    offer.unit_price = UnitPrice {
        amount: Decimal::MAX,
        currency: offer.unit_price.currency.clone(),
    };
    log.buy(0x12, offer, 1_000_000, PROFILE, at(2026, 1, 10, 9, 0));
    let february = log.invoice(PROFILE, "2026-02");
    assert_eq!(february.lines.len(), 2, "a monthly line and a proration");
    assert_eq!(february.lines[0].amount, Decimal::MAX);
    assert_eq!(february.totals[0].amount, Decimal::MAX);
}
