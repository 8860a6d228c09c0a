//! What each subscription is billed, as a timeline per subscription, and the monthly invoice
//! of a billing profile computed from it.
//!
//! The projection records a billing entry whenever a subscription's billable seats, unit price,
//! offer or billing profile change: billable seats are those of a paid (not trial) subscription
//! that is active or suspended (suspended seats are still billed; expired, cancelled and disabled
//! ones are not). The invoice of month M then holds:
//! - a monthly charge per subscription billed to the profile at the start of M: seats × unit
//!   price, for the whole month;
//! - a proration per change during the previous month, on the profile the subscription was
//!   billed to when it changed: the seat difference × unit price × the days left in that month
//!   (the day of the change included) ÷ the days of that month. A price change (an upgrade)
//!   credits the old seats at the old price and charges the new ones at the new price.
//!
//! Every line is rounded to the cent, half away from zero; totals, per currency, are sums of
//! lines. The invoice of M reads only entries before M begins, so once M has begun it never
//! changes, on replay or otherwise.

use std::collections::BTreeMap;

use aggregates::subscription::SubscriptionEvent;
use aggregates::tenant::SeatState;
use aggregates::values::{Currency, OfferId, UnitPrice};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{instant_key, text, DomainEvent, LoggedEvent, Projection, ProjectionError, RowSet};

/// The projection's name.
pub const NAME: &str = "billing";
/// Kind of a billing entry (scoped by subscription).
pub const ENTRY: &str = "billing-entry";
/// Kind of the mark that a subscription was ever billed to a profile (scoped by profile).
pub const BILLED: &str = "billed-subscription";
const STATE: &str = "billing-state";

/// What a subscription is billed from an instant on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingEntry {
    /// The subscription.
    pub subscription_id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// The profile it is billed to.
    pub billing_profile_id: Uuid,
    /// Its offer.
    pub offer_id: OfferId,
    /// Its product's name.
    pub product_name: String,
    /// Seats billed.
    pub billable_seats: u32,
    /// The price per seat per month, as the event recorded it.
    pub unit_price: UnitPrice,
    /// From when.
    pub at: DateTime<Utc>,
    /// The subscription event that made the change.
    pub sequence: u64,
}

/// That a subscription was billed to a profile at some time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BilledSubscription {
    /// The subscription.
    pub subscription_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BillingState {
    current: BillingEntry,
    quantity: u32,
    seat_state: SeatState,
    trial: bool,
}

impl BillingState {
    fn billable_seats(&self) -> u32 {
        match self.seat_state {
            SeatState::Enabled | SeatState::Suspended if !self.trial => self.quantity,
            _ => 0,
        }
    }
}

fn state_key(subscription_id: Uuid) -> String {
    text::key(STATE, subscription_id, &[])
}

fn entry_key(subscription_id: Uuid, sequence: u64) -> String {
    format!("{ENTRY}/{subscription_id}/{sequence:012}")
}

fn billed_key(billing_profile_id: Uuid, subscription_id: Uuid) -> String {
    text::key(BILLED, billing_profile_id, &[&subscription_id])
}

/// The billing projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Billing;

impl Projection for Billing {
    fn name(&self) -> &'static str {
        NAME
    }

    fn keys(&self, event: &LoggedEvent) -> Vec<String> {
        match &event.event {
            DomainEvent::Subscription(_) => {
                event.aggregate_uuid().map(state_key).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    fn apply(&self, event: &LoggedEvent, rows: &mut RowSet) -> Result<(), ProjectionError> {
        let DomainEvent::Subscription(subscription_event) = &event.event else {
            return Ok(());
        };
        let subscription_id = event.aggregate_uuid()?;
        let sequence = event.sequence();
        let state = match subscription_event {
            SubscriptionEvent::SubscriptionOpened {
                tenant_id,
                offer,
                quantity,
                billing_profile_id,
                trial,
                at,
                ..
            } => BillingState {
                current: BillingEntry {
                    subscription_id,
                    tenant_id: *tenant_id,
                    billing_profile_id: *billing_profile_id,
                    offer_id: offer.id,
                    product_name: offer.name.to_string(),
                    billable_seats: 0,
                    unit_price: offer.unit_price.clone(),
                    at: *at,
                    sequence,
                },
                quantity: *quantity,
                seat_state: SeatState::Enabled,
                trial: *trial,
            },
            other => {
                let Some(mut state) = rows.load::<BillingState>(&state_key(subscription_id))?
                else {
                    return Ok(());
                };
                if let Some(seats) = other.seats() {
                    state.quantity = seats.quantity;
                    state.seat_state = seats.state;
                    state.current.offer_id = seats.offer.id;
                    state.current.product_name = seats.offer.name.to_string();
                    state.current.unit_price = seats.offer.unit_price.clone();
                }
                match other {
                    SubscriptionEvent::TrialConverted { .. } => state.trial = false,
                    SubscriptionEvent::BillingProfileAssigned { to, .. } => {
                        state.current.billing_profile_id = *to;
                    }
                    _ => {}
                }
                state
            }
        };
        let previous = rows
            .load::<BillingState>(&state_key(subscription_id))?
            .map(|state| state.current);
        let mut state = state;
        state.current.billable_seats = state.billable_seats();
        let changed = previous.as_ref().is_none_or(|previous| {
            previous.billable_seats != state.current.billable_seats
                || previous.unit_price != state.current.unit_price
                || previous.offer_id != state.current.offer_id
                || previous.billing_profile_id != state.current.billing_profile_id
        });
        if changed {
            state.current.at = subscription_event.at();
            state.current.sequence = sequence;
            rows.store(
                entry_key(subscription_id, sequence),
                ENTRY,
                text::uuid(subscription_id),
                instant_key(state.current.at),
                state.current.clone(),
            );
            let profile = state.current.billing_profile_id;
            rows.store(
                billed_key(profile, subscription_id),
                BILLED,
                text::uuid(profile),
                String::new(),
                BilledSubscription { subscription_id },
            );
        }
        rows.store(
            state_key(subscription_id),
            STATE,
            text::uuid(subscription_id),
            String::new(),
            state,
        );
        Ok(())
    }
}

/// A calendar month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

/// Why a month could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a month: write it as YYYY-MM, e.g. 2026-11")]
pub struct MonthError(String);

impl Month {
    /// Parses `YYYY-MM`.
    pub fn parse(raw: &str) -> Result<Self, MonthError> {
        let error = || MonthError(raw.to_owned());
        let (year, month) = raw.split_once('-').ok_or_else(error)?;
        // `str::parse` would also take a sign (`2026-+3`): only digits are a month.
        let digits = |part: &str, len: usize| {
            part.len() == len && part.bytes().all(|byte| byte.is_ascii_digit())
        };
        if !digits(year, 4) || !digits(month, 2) {
            return Err(error());
        }
        let year: i32 = year.parse().map_err(|_| error())?;
        let month: u32 = month.parse().map_err(|_| error())?;
        if !(1..=12).contains(&month) || year < 1 {
            return Err(error());
        }
        Ok(Self { year, month })
    }

    /// The month `at` falls in.
    pub fn of(at: DateTime<Utc>) -> Self {
        Self {
            year: at.year(),
            month: at.month(),
        }
    }

    fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("a parsed month has a first day")
    }

    /// The instant the month begins.
    pub fn start(self) -> DateTime<Utc> {
        Utc.from_utc_datetime(&self.first_day().and_hms_opt(0, 0, 0).expect("midnight"))
    }

    /// The month after.
    pub fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The month before.
    pub fn previous(self) -> Self {
        if self.month == 1 {
            Self {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Self {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// How many days it has.
    pub fn days(self) -> u32 {
        (self.next().first_day() - self.first_day()).num_days() as u32
    }

    fn last_day(self) -> NaiveDate {
        self.next()
            .first_day()
            .pred_opt()
            .expect("a month has a last day")
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// What a line of an invoice charges for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// The month's seats, in advance.
    MonthlyCharge,
    /// A change of seats or price during the previous month, by day.
    Proration,
}

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InvoiceLine {
    /// What it charges for.
    pub kind: LineKind,
    /// The subscription.
    pub subscription_id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// The offer.
    pub offer_id: OfferId,
    /// The product's name.
    pub product_name: String,
    /// Seats charged (negative for a credit).
    pub seats: i64,
    /// Price per seat per month.
    pub unit_price: UnitPrice,
    /// Days charged.
    pub days: u32,
    /// Days of the month the days are part of.
    pub days_in_month: u32,
    /// First day charged.
    pub period_start: NaiveDate,
    /// Last day charged.
    pub period_end: NaiveDate,
    /// When the change happened, for a proration.
    pub changed_at: Option<DateTime<Utc>>,
    /// The amount, rounded to the cent (negative for a credit).
    #[serde(with = "rust_decimal::serde::str")]
    #[schemars(with = "String", regex(pattern = r"^-?[0-9]+(?:\.[0-9]+)?$"))]
    pub amount: Decimal,
    /// Its currency.
    pub currency: Currency,
}

/// What an invoice adds up to in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Total {
    /// The currency.
    pub currency: Currency,
    /// The sum of the lines in it.
    #[serde(with = "rust_decimal::serde::str")]
    #[schemars(with = "String", regex(pattern = r"^-?[0-9]+(?:\.[0-9]+)?$"))]
    pub amount: Decimal,
}

/// A billing profile's invoice of one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Invoice {
    /// The profile.
    pub billing_profile_id: Uuid,
    /// The month, `YYYY-MM`.
    pub month: String,
    /// The lines: monthly charges by subscription, then prorations in the order they happened.
    pub lines: Vec<InvoiceLine>,
    /// Totals per currency.
    pub totals: Vec<Total>,
}

fn cents(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// The invoice of `billing_profile_id` for `month` from the billing entries of every
/// subscription ever billed to it (entries of other profiles are how moves are seen).
pub fn invoice(billing_profile_id: Uuid, month: Month, entries: &[BillingEntry]) -> Invoice {
    let begins = month.start();
    let previous = month.previous();
    let previous_begins = previous.start();
    let mut timelines: BTreeMap<Uuid, Vec<&BillingEntry>> = BTreeMap::new();
    for entry in entries.iter().filter(|entry| entry.at < begins) {
        timelines
            .entry(entry.subscription_id)
            .or_default()
            .push(entry);
    }
    let mut charges = Vec::new();
    let mut prorations = Vec::new();
    for timeline in timelines.values_mut() {
        timeline.sort_by_key(|entry| (entry.at, entry.sequence));
        if let Some(last) = timeline.last() {
            if last.billing_profile_id == billing_profile_id && last.billable_seats > 0 {
                let seats = i64::from(last.billable_seats);
                charges.push(InvoiceLine {
                    kind: LineKind::MonthlyCharge,
                    subscription_id: last.subscription_id,
                    tenant_id: last.tenant_id,
                    offer_id: last.offer_id,
                    product_name: last.product_name.clone(),
                    seats,
                    unit_price: last.unit_price.clone(),
                    days: month.days(),
                    days_in_month: month.days(),
                    period_start: month.first_day(),
                    period_end: month.last_day(),
                    changed_at: None,
                    amount: cents(line_amount(seats, &last.unit_price, 1, 1)),
                    currency: last.unit_price.currency.clone(),
                });
            }
        }
        let mut before: Option<&BillingEntry> = None;
        for entry in timeline.iter().copied() {
            if entry.at >= previous_begins && entry.billing_profile_id == billing_profile_id {
                prorations.extend(prorate(before, entry, previous));
            }
            before = Some(entry);
        }
    }
    prorations.sort_by_key(|line| (line.changed_at, line.subscription_id, line.seats));
    let lines: Vec<InvoiceLine> = charges.into_iter().chain(prorations).collect();
    let mut totals: BTreeMap<Currency, Decimal> = BTreeMap::new();
    for line in &lines {
        let total = totals.entry(line.currency.clone()).or_default();
        *total = total.saturating_add(line.amount);
    }
    Invoice {
        billing_profile_id,
        month: month.to_string(),
        lines,
        totals: totals
            .into_iter()
            .map(|(currency, amount)| Total { currency, amount })
            .collect(),
    }
}

/// `seats × price × days / days_in_month`, saturating instead of panicking: prices and seat
/// counts are bounded where they enter (UnitPrice::MAX, subscription::MAX_SEATS), but an
/// invoice must never fail over a value the log kept from before those bounds.
fn line_amount(seats: i64, price: &UnitPrice, days: i64, days_in_month: i64) -> Decimal {
    Decimal::from(seats)
        .saturating_mul(price.amount)
        .saturating_mul(Decimal::from(days))
        .checked_div(Decimal::from(days_in_month.max(1)))
        .unwrap_or(Decimal::MAX)
}

/// The proration lines of the change from `before` to `after` during `month`.
fn prorate(before: Option<&BillingEntry>, after: &BillingEntry, month: Month) -> Vec<InvoiceLine> {
    let days_in_month = month.days();
    let day = after.at.date_naive();
    let days = days_in_month - day.day() + 1;
    let line = |seats: i64, price: &UnitPrice| InvoiceLine {
        kind: LineKind::Proration,
        subscription_id: after.subscription_id,
        tenant_id: after.tenant_id,
        offer_id: after.offer_id,
        product_name: after.product_name.clone(),
        seats,
        unit_price: price.clone(),
        days,
        days_in_month,
        period_start: day,
        period_end: month.last_day(),
        changed_at: Some(after.at),
        amount: cents(line_amount(
            seats,
            price,
            i64::from(days),
            i64::from(days_in_month),
        )),
        currency: price.currency.clone(),
    };
    let old_seats = before.map_or(0, |before| i64::from(before.billable_seats));
    let new_seats = i64::from(after.billable_seats);
    match before {
        Some(before) if before.unit_price != after.unit_price => {
            let mut lines = Vec::new();
            if old_seats > 0 {
                lines.push(line(-old_seats, &before.unit_price));
            }
            if new_seats > 0 {
                lines.push(line(new_seats, &after.unit_price));
            }
            lines
        }
        _ if new_seats != old_seats => vec![line(new_seats - old_seats, &after.unit_price)],
        _ => Vec::new(),
    }
}

/// The entries in rows held in memory for the subscriptions ever billed to a profile (tests).
pub fn entries_in(
    rows: &RowSet,
    billing_profile_id: Uuid,
) -> Result<Vec<BillingEntry>, ProjectionError> {
    let billed: Vec<BilledSubscription> = rows.scoped(BILLED, &billing_profile_id.to_string())?;
    let mut entries = Vec::new();
    for subscription in billed {
        entries
            .extend(rows.scoped::<BillingEntry>(ENTRY, &subscription.subscription_id.to_string())?);
    }
    Ok(entries)
}
