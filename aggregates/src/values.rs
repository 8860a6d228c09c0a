//! Value types of the domain. Each is parsed once at the edge, so an invalid value cannot exist
//! inside the domain: a `Quantity` is never zero, a `UserPrincipalName` always has one `@`.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// A value that failed to parse, naming the field and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {reason}")]
pub struct ParseError {
    /// The input field, as clients name it (`user_principal_name`, `quantity`, …).
    pub field: &'static str,
    /// What is wrong with the value, for a human.
    pub reason: String,
}

impl ParseError {
    /// A parse error for `field` with a human `reason`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Implements `Serialize`/`Deserialize` through the type's `parse`, so that a stored or received
/// value that breaks the type's rules is refused when read, never smuggled in.
macro_rules! parsed_string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                <$ty>::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::parse(s)
            }
        }
    };
}

/// Implements `JsonSchema` for a type that serialises to a JSON string: `$json` describes that
/// string with the constraints the type's `parse` enforces (`tests/integration/events_doc.rs` checks them
/// against the parsers and validates real events against them).
macro_rules! string_json_schema {
    ($ty:ty, $name:literal, $json:tt) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn schema_id() -> std::borrow::Cow<'static, str> {
                concat!(module_path!(), "::", $name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($json)
            }
        }
    };
}
pub(crate) use string_json_schema;

/// The JSON Schema pattern of a text trimmed by the parser and free of control characters
/// (`char::is_control`: U+0000-U+001F, U+007F-U+009F): no white space at either end.
const TEXT_PATTERN: &str =
    r"^[^\s\x00-\x1F\x7F-\x9F](?:[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F])?$";

/// The JSON Schema pattern of one lower-case DNS label: 1-63 letters, digits or inner hyphens.
macro_rules! label_pattern {
    () => {
        r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    };
}

/// The JSON Schema pattern of a [`DomainName`]: at least two labels.
const DOMAIN_PATTERN: &str = concat!("^", label_pattern!(), r"(?:\.", label_pattern!(), ")+$");

/// The JSON Schema pattern of a [`UserPrincipalName`] (and an [`EmailAddress`]): a lower-case
/// alias of letters, digits and `_ ' + -` in dot-separated runs, `@`, and a domain.
const PRINCIPAL_PATTERN: &str = concat!(
    r"^[a-z0-9_'+-]+(?:\.[a-z0-9_'+-]+)*@",
    label_pattern!(),
    r"(?:\.",
    label_pattern!(),
    ")+$"
);

fn bounded_text(field: &'static str, raw: &str, max_chars: usize) -> Result<String, ParseError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ParseError::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > max_chars {
        return Err(ParseError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ParseError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// A number of licences (seats) in a command: at least 1, at most 1 000 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(u32);

impl Quantity {
    /// The largest quantity one command may carry; Microsoft caps a subscription far below this.
    pub const MAX: u32 = 1_000_000;

    /// Parses a seat count for the input field `field`.
    pub fn parse(field: &'static str, value: i64) -> Result<Self, ParseError> {
        if value < 1 {
            return Err(ParseError::new(field, "must be at least 1"));
        }
        if value > i64::from(Self::MAX) {
            return Err(ParseError::new(
                field,
                format!("must be at most {}", Self::MAX),
            ));
        }
        Ok(Self(value as u32))
    }

    /// The count as a plain number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = i64::deserialize(deserializer)?;
        Quantity::parse("quantity", raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl schemars::JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        concat!(module_path!(), "::Quantity").into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A number of licences (seats): a whole number from 1 to 1 000 000.",
            "type": "integer",
            "minimum": 1,
            "maximum": Quantity::MAX,
        })
    }
}

/// A DNS domain name in lower case, e.g. `contoso.onmicrosoft.com`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName(String);

impl DomainName {
    /// Parses a domain: labels of letters, digits and hyphens, at least two labels, ≤ 253 chars.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        Self::parse_field("domain", raw)
    }

    fn parse_field(field: &'static str, raw: &str) -> Result<Self, ParseError> {
        let lower = raw.trim().to_ascii_lowercase();
        if lower.is_empty() {
            return Err(ParseError::new(field, "must not be empty"));
        }
        if lower.len() > 253 {
            return Err(ParseError::new(field, "must be at most 253 characters"));
        }
        let labels: Vec<&str> = lower.split('.').collect();
        if labels.len() < 2 {
            return Err(ParseError::new(
                field,
                "must have at least two labels, like contoso.onmicrosoft.com",
            ));
        }
        for label in &labels {
            let valid = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !valid {
                return Err(ParseError::new(
                    field,
                    format!("label '{label}' must be 1-63 letters, digits or inner hyphens"),
                ));
            }
        }
        Ok(Self(lower))
    }

    /// The domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
parsed_string_serde!(DomainName);
string_json_schema!(DomainName, "DomainName", {
    "description": "A DNS domain name in lower case, e.g. `contoso.onmicrosoft.com`: at least two dot-separated labels of 1-63 letters, digits or inner hyphens; at most 253 characters.",
    "type": "string",
    "maxLength": 253,
    "pattern": DOMAIN_PATTERN,
    "examples": ["contoso.onmicrosoft.com"],
});

/// A user principal name, `alias@domain`, compared case-insensitively (stored in lower case).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserPrincipalName(String);

impl UserPrincipalName {
    /// Parses `alias@domain`: an alias of letters, digits and `. _ - ' +` (no leading or trailing
    /// dot), one `@`, and a valid domain; at most 113 characters, as Microsoft Entra allows.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        const FIELD: &str = "user_principal_name";
        let trimmed = raw.trim();
        if trimmed.chars().count() > 113 {
            return Err(ParseError::new(FIELD, "must be at most 113 characters"));
        }
        let (alias, domain) = trimmed
            .split_once('@')
            .ok_or_else(|| ParseError::new(FIELD, "must look like alias@domain"))?;
        if alias.is_empty() || alias.len() > 64 {
            return Err(ParseError::new(
                FIELD,
                "the alias before @ must be 1-64 characters",
            ));
        }
        if alias.starts_with('.') || alias.ends_with('.') || alias.contains("..") {
            return Err(ParseError::new(
                FIELD,
                "the alias must not start or end with a dot, nor hold two dots in a row",
            ));
        }
        if !alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '\'' | '+'))
        {
            return Err(ParseError::new(
                FIELD,
                "the alias may hold only letters, digits and . _ - ' +",
            ));
        }
        let domain = DomainName::parse_field(FIELD, domain)?;
        Ok(Self(format!("{}@{}", alias.to_ascii_lowercase(), domain.0)))
    }

    /// The principal name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part, after the `@`.
    pub fn domain(&self) -> DomainName {
        let (_, domain) = self.0.split_once('@').expect("parsed with one @");
        DomainName(domain.to_owned())
    }
}
parsed_string_serde!(UserPrincipalName);
string_json_schema!(UserPrincipalName, "UserPrincipalName", {
    "description": "A user principal name `alias@domain` in lower case: an alias of 1-64 letters, digits and `. _ - ' +` (no leading, trailing or doubled dot), `@`, and a domain name; at most 113 characters.",
    "type": "string",
    "maxLength": 113,
    "pattern": PRINCIPAL_PATTERN,
    "examples": ["megan.bowen@contoso.onmicrosoft.com"],
});

/// An e-mail address (where a password-reset notice goes), checked like a principal name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses `local@domain` with the rules of [`UserPrincipalName`].
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        UserPrincipalName::parse(raw)
            .map(|name| Self(name.0))
            .map_err(|error| ParseError::new("notify_email", error.reason))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
parsed_string_serde!(EmailAddress);
string_json_schema!(EmailAddress, "EmailAddress", {
    "description": "An e-mail address `local@domain` in lower case, with the rules of a user principal name: a local part of 1-64 letters, digits and `. _ - ' +` (no leading, trailing or doubled dot), `@`, and a domain name; at most 113 characters.",
    "type": "string",
    "maxLength": 113,
    "pattern": PRINCIPAL_PATTERN,
});

/// A human name field (first, last or display name): 1-64 characters, trimmed, no control chars.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PersonName(String);

impl PersonName {
    /// Parses a name for the input field `field`.
    pub fn parse_field(field: &'static str, raw: &str) -> Result<Self, ParseError> {
        bounded_text(field, raw, 64).map(Self)
    }

    /// Parses a name (reported as the field `name`).
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        Self::parse_field("name", raw)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
parsed_string_serde!(PersonName);
string_json_schema!(PersonName, "PersonName", {
    "description": "A first, last or display name: 1-64 characters, no white space at either end, no control characters.",
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "pattern": TEXT_PATTERN,
});

/// A user's location (office or usage location): 1-128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location(String);

impl Location {
    /// Parses a location.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        bounded_text("location", raw, 128).map(Self)
    }

    /// The location as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
parsed_string_serde!(Location);
string_json_schema!(Location, "Location", {
    "description": "A user's office or usage location: 1-128 characters, no white space at either end, no control characters.",
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": TEXT_PATTERN,
});

/// The name of an organisation (tenant, reseller, billing profile): 1-256 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrganisationName(String);

impl OrganisationName {
    /// Parses an organisation name.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        bounded_text("name", raw, 256).map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
parsed_string_serde!(OrganisationName);
string_json_schema!(OrganisationName, "OrganisationName", {
    "description": "The name of a tenant, reseller or billing profile: 1-256 characters, no white space at either end, no control characters.",
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    "pattern": TEXT_PATTERN,
});

/// The name of a product or offer as Partner Center shows it: 1-256 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProductName(String);

impl ProductName {
    /// Parses a product name.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        bounded_text("name", raw, 256).map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
parsed_string_serde!(ProductName);
string_json_schema!(ProductName, "ProductName", {
    "description": "The name of an offer as Partner Center shows it: 1-256 characters, no white space at either end, no control characters.",
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    "pattern": TEXT_PATTERN,
    "examples": ["Office 365 Business Premium"],
});

/// An ISO 4217 currency code, three upper-case letters (`EUR`, `USD`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency(String);

impl Currency {
    /// Parses a currency code; lower case input is accepted and upper-cased.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let upper = raw.trim().to_ascii_uppercase();
        if upper.len() != 3 || !upper.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(ParseError::new(
                "currency",
                "must be a three-letter ISO 4217 code such as EUR or USD",
            ));
        }
        Ok(Self(upper))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
parsed_string_serde!(Currency);
string_json_schema!(Currency, "Currency", {
    "description": "An ISO 4217 currency code: three upper-case letters.",
    "type": "string",
    "pattern": "^[A-Z]{3}$",
    "examples": ["USD", "EUR"],
});

/// A price per licence per month: a non-negative decimal amount with its currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UnitPrice {
    /// The amount, serialised as a decimal string (`"12.50"`), never a float: not negative, at
    /// most 4 decimal places.
    #[serde(with = "rust_decimal::serde::str")]
    #[schemars(with = "String", regex(pattern = r"^[0-9]+(?:\.[0-9]{1,4})?$"))]
    pub amount: Decimal,
    /// The currency of the amount.
    pub currency: Currency,
}

impl UnitPrice {
    /// The highest price per licence per month: far above any real one, and low enough that
    /// a month's invoice (at most a million seats per subscription) cannot overflow a decimal.
    pub const MAX: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

    /// Parses a price; the amount must be from 0 to [`UnitPrice::MAX`] with at most 4 decimal
    /// places.
    pub fn parse(amount: &str, currency: &str) -> Result<Self, ParseError> {
        let value = Decimal::from_str(amount.trim()).map_err(|_| {
            ParseError::new("unit_price", "must be a decimal string such as \"12.50\"")
        })?;
        if value.is_sign_negative() {
            return Err(ParseError::new("unit_price", "must not be negative"));
        }
        if value.scale() > 4 {
            return Err(ParseError::new(
                "unit_price",
                "must have at most 4 decimal places",
            ));
        }
        if value > Self::MAX {
            return Err(ParseError::new(
                "unit_price",
                format!("must be at most {} per licence per month", Self::MAX),
            ));
        }
        Ok(Self {
            amount: value,
            currency: Currency::parse(currency)?,
        })
    }
}

/// A Microsoft offer id (a GUID), kept in lower case so that ids from different consoles compare.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct OfferId(pub uuid::Uuid);

impl OfferId {
    /// Parses an offer id in any GUID spelling.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        uuid::Uuid::parse_str(raw.trim())
            .map(Self)
            .map_err(|_| ParseError::new("offer_id", "must be a GUID"))
    }
}

impl fmt::Display for OfferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A provisioning id, the SKU part number that licences are counted by (`O365_BUSINESS_PREMIUM`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProvisioningId(String);

impl ProvisioningId {
    /// Parses a SKU part number: 1-64 upper-case letters, digits and underscores.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let upper = raw.trim().to_ascii_uppercase();
        if upper.is_empty()
            || upper.len() > 64
            || !upper
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(ParseError::new(
                "provisioning_id",
                "must be 1-64 letters, digits or underscores, like O365_BUSINESS_PREMIUM",
            ));
        }
        Ok(Self(upper))
    }

    /// The SKU part number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
parsed_string_serde!(ProvisioningId);
string_json_schema!(ProvisioningId, "ProvisioningId", {
    "description": "A provisioning id, the SKU part number licences are counted by: 1-64 upper-case letters, digits or underscores.",
    "type": "string",
    "pattern": "^[A-Z0-9_]{1,64}$",
    "examples": ["O365_BUSINESS_PREMIUM"],
});

/// How long a subscription runs before it renews.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Term {
    /// Renews every calendar month.
    #[default]
    Monthly,
    /// Renews every year.
    Annual,
}

impl Term {
    /// Parses `monthly` or `annual`.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "monthly" | "p1m" => Ok(Self::Monthly),
            "annual" | "yearly" | "p1y" => Ok(Self::Annual),
            _ => Err(ParseError::new("term", "must be monthly or annual")),
        }
    }

    /// The number of calendar months in one term.
    pub fn months(self) -> u32 {
        match self {
            Self::Monthly => 1,
            Self::Annual => 12,
        }
    }
}

/// A user's administrative role in the customer tenant (the roles the storefront lets one pick).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    /// No administrative role.
    #[default]
    User,
    /// Global administrator: full access to the tenant.
    GlobalAdmin,
    /// Billing administrator.
    BillingAdmin,
    /// User management administrator.
    UserAdmin,
    /// Password administrator: resets passwords of non-admins.
    PasswordAdmin,
    /// Service administrator.
    ServiceAdmin,
}

impl UserRole {
    /// Parses a role name such as `global_admin`.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        serde_json::from_value(serde_json::Value::String(raw.trim().to_ascii_lowercase())).map_err(
            |_| {
                ParseError::new(
                    "role",
                    "must be one of user, global_admin, billing_admin, user_admin, password_admin, service_admin",
                )
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_refuses_zero_and_negative_and_huge() {
        assert!(Quantity::parse("quantity", 0).is_err());
        assert!(Quantity::parse("quantity", -3).is_err());
        assert!(Quantity::parse("quantity", 1_000_001).is_err());
        assert_eq!(Quantity::parse("quantity", 25).unwrap().get(), 25);
    }

    #[test]
    fn principal_name_is_lower_cased_and_split() {
        let upn = UserPrincipalName::parse(" Alex.Wilber@Contoso.OnMicrosoft.com ").unwrap();
        assert_eq!(upn.as_str(), "alex.wilber@contoso.onmicrosoft.com");
        assert_eq!(upn.domain().as_str(), "contoso.onmicrosoft.com");
    }

    #[test]
    fn principal_name_refuses_malformed_input() {
        for bad in [
            "",
            "alex",
            "@contoso.com",
            "alex@",
            "a..b@contoso.com",
            "alex@contoso",
            "a b@contoso.com",
        ] {
            let err = UserPrincipalName::parse(bad).unwrap_err();
            assert_eq!(err.field, "user_principal_name", "{bad}");
        }
    }

    #[test]
    fn deserialising_goes_through_parse() {
        assert!(serde_json::from_str::<Quantity>("0").is_err());
        assert!(serde_json::from_str::<Currency>("\"EURO\"").is_err());
        assert_eq!(
            serde_json::from_str::<Currency>("\"eur\"")
                .unwrap()
                .as_str(),
            "EUR"
        );
    }

    #[test]
    fn unit_price_serialises_as_decimal_string() {
        let price = UnitPrice::parse("12.50", "usd").unwrap();
        let json = serde_json::to_value(&price).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"amount": "12.50", "currency": "USD"})
        );
        assert!(UnitPrice::parse("-1", "USD").is_err());
        assert!(UnitPrice::parse("1.23456", "USD").is_err());
    }

    #[test]
    fn unit_prices_are_bounded_so_invoices_cannot_overflow() {
        assert!(UnitPrice::parse("1000000", "USD").is_ok());
        let refused = UnitPrice::parse("1000000.0001", "USD").unwrap_err();
        assert_eq!(refused.field, "unit_price");
        assert!(
            refused.reason.contains("at most 1000000"),
            "{}",
            refused.reason
        );
        assert!(UnitPrice::parse("79000000000000000000000000000", "USD").is_err());
    }

    #[test]
    fn role_and_term_parse_their_names() {
        assert_eq!(
            UserRole::parse("Global_Admin").unwrap(),
            UserRole::GlobalAdmin
        );
        assert!(UserRole::parse("root").is_err());
        assert_eq!(Term::parse("annual").unwrap(), Term::Annual);
        assert!(Term::parse("weekly").is_err());
    }
}
