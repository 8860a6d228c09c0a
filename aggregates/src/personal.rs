//! Personal data, designed to be shredded.
//!
//! Names, principal name and location never enter an event or a snapshot in clear text. The
//! service seals them under a per-user key kept outside the log (the key store) and destroys that
//! key at purge; the sealed bytes stay in the immutable log but can no longer be read. The domain
//! only carries the sealed form and a keyed fingerprint of the principal name (for uniqueness).

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{Location, ParseError, PersonName, UserPrincipalName};

/// A user's personal details in clear text: what the service seals and, while the key lives,
/// unseals. Never part of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PersonalDetails {
    /// The user principal name.
    pub user_principal_name: UserPrincipalName,
    /// First name.
    pub first_name: PersonName,
    /// Last name.
    pub last_name: PersonName,
    /// Display name.
    pub display_name: PersonName,
    /// Location, when given.
    pub location: Option<Location>,
}

/// Personal details sealed under the key `key_id` (the user's own key). Opaque to the domain.
///
/// Downstream readers cannot open it: the principal name, names and location inside are
/// readable only through the service's API, and by no one once the user is purged (the key is
/// destroyed; the sealed bytes stay in the immutable log).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SealedDetails {
    /// The id of the key in the key store; the user id, so that purge finds it.
    pub key_id: Uuid,
    /// The sealed bytes (nonce and ciphertext), base64-encoded by the sealer.
    #[schemars(extend("contentEncoding" = "base64"))]
    pub ciphertext: String,
}

impl fmt::Debug for SealedDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SealedDetails(key {}, {} bytes)",
            self.key_id,
            self.ciphertext.len()
        )
    }
}

/// A keyed fingerprint (e.g. HMAC-SHA-256, hex) of a normalised user principal name: lets the
/// tenant refuse duplicates without holding the name itself.
/// Kept as its 32 bytes (a tenant's register holds one per user, twice); read and written as
/// 64 lower-case hex digits, whose order is the bytes' order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PrincipalFingerprint([u8; 32]);

impl PrincipalFingerprint {
    /// Parses 64 hex digits (either case).
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let invalid =
            || ParseError::new("user_principal_name", "fingerprint must be 64 hex digits");
        let digits = raw.trim().as_bytes();
        if digits.len() != 64 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks(2)) {
            let nibble = |digit: u8| (digit as char).to_digit(16).ok_or_else(invalid);
            *byte = (nibble(pair[0])? << 4 | nibble(pair[1])?) as u8;
        }
        Ok(Self(bytes))
    }

    /// The fingerprint as 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl fmt::Debug for PrincipalFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PrincipalFingerprint")
            .field(&self.to_hex())
            .finish()
    }
}

crate::values::string_json_schema!(PrincipalFingerprint, "PrincipalFingerprint", {
    "description": "A keyed fingerprint (HMAC-SHA-256) of a normalised user principal name: 64 lower-case hex digits. It tells principal names apart without revealing them.",
    "type": "string",
    "pattern": "^[0-9a-f]{64}$",
});

impl TryFrom<String> for PrincipalFingerprint {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PrincipalFingerprint> for String {
    fn from(value: PrincipalFingerprint) -> Self {
        value.to_hex()
    }
}

/// Where the notice of a password reset went, without the address when it is another one than
/// the user's own (that address is personal data too, so only that one was given is recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResetNotice {
    /// To the user's own principal name (the default).
    OwnPrincipalName,
    /// To an address the operator gave.
    OtherAddress,
}
