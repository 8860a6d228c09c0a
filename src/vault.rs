//! The key store that makes personal data shreddable.
//!
//! Each user's details are sealed (XChaCha20-Poly1305, the user id as associated data) under a
//! key of that user's own, kept in `personal_keys`, outside the event log. Purging the user
//! destroys the key: the sealed bytes stay in the immutable log and can no longer be read.
//! Principal names are compared through a keyed fingerprint (HMAC-SHA-256 under a secret the
//! service generates once), so the tenant's register never holds the name itself.

use aggregates::personal::{PersonalDetails, PrincipalFingerprint, SealedDetails};
use aggregates::values::UserPrincipalName;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;
use uuid::Uuid;

use crate::store::Store;

const NONCE_LEN: usize = 24;
const FINGERPRINT_SECRET: &str = "principal_fingerprint_key";

/// Why sealing or shredding failed.
#[derive(Debug, Error)]
pub enum VaultError {
    /// The user's key was destroyed: its data can never be sealed or read again.
    #[error("the personal-data key of {0} was destroyed at purge")]
    Shredded(Uuid),
    /// The key store failed.
    #[error("key store failure: {0}")]
    Store(#[from] sqlx::Error),
}

/// Seals, unseals and shreds personal data; fingerprints principal names.
#[derive(Clone)]
pub struct Vault {
    store: Store,
    fingerprint_key: [u8; 32],
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).expect("the operating system's random source works");
    bytes
}

impl Vault {
    /// Opens the vault, generating the fingerprint secret on first use.
    pub async fn open(store: Store) -> Result<Self, VaultError> {
        let candidate = random_bytes::<32>().to_vec();
        let material: Vec<u8> = match &store {
            Store::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO service_secrets (name, material) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                )
                .bind(FINGERPRINT_SECRET)
                .bind(&candidate)
                .execute(pool)
                .await?;
                sqlx::query_scalar("SELECT material FROM service_secrets WHERE name = $1")
                    .bind(FINGERPRINT_SECRET)
                    .fetch_one(pool)
                    .await?
            }
            Store::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO service_secrets (name, material) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                )
                .bind(FINGERPRINT_SECRET)
                .bind(&candidate)
                .execute(pool)
                .await?;
                sqlx::query_scalar("SELECT material FROM service_secrets WHERE name = ?")
                    .bind(FINGERPRINT_SECRET)
                    .fetch_one(pool)
                    .await?
            }
        };
        let fingerprint_key = material
            .try_into()
            .expect("the fingerprint secret is 32 bytes");
        Ok(Self {
            store,
            fingerprint_key,
        })
    }

    /// The keyed fingerprint of a principal name within one tenant.
    pub fn fingerprint(&self, tenant_id: Uuid, name: &UserPrincipalName) -> PrincipalFingerprint {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.fingerprint_key)
            .expect("HMAC takes any key length");
        mac.update(tenant_id.as_bytes());
        mac.update(name.as_str().as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        PrincipalFingerprint::parse(&hex).expect("a SHA-256 digest is 64 hex digits")
    }

    /// Seals `details` under the user's key, creating the key on first use.
    pub async fn seal(
        &self,
        user_id: Uuid,
        details: &PersonalDetails,
    ) -> Result<SealedDetails, VaultError> {
        let plaintext = serde_json::to_vec(details).expect("details serialise");
        self.seal_bytes(user_id, &plaintext).await
    }

    /// Seals any bytes that are the user's personal data (a stored answer that names them, for
    /// one) under the user's key, so that they go with the key at purge.
    pub async fn seal_bytes(
        &self,
        user_id: Uuid,
        plaintext: &[u8],
    ) -> Result<SealedDetails, VaultError> {
        let key = self.key_for_sealing(user_id).await?;
        let cipher = XChaCha20Poly1305::new(&key.into());
        let nonce = random_bytes::<NONCE_LEN>();
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: user_id.as_bytes(),
                },
            )
            .expect("encryption of a bounded message cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        Ok(SealedDetails {
            key_id: user_id,
            ciphertext: BASE64.encode(bytes),
        })
    }

    /// Unseals details; `None` once the key is destroyed (or the bytes were tampered with).
    pub async fn unseal(
        &self,
        sealed: &SealedDetails,
    ) -> Result<Option<PersonalDetails>, VaultError> {
        let key = self.live_key(sealed.key_id).await?;
        Ok(key.and_then(|key| open_sealed(&key, sealed)))
    }

    /// Unseals bytes sealed by [`Vault::seal_bytes`]; `None` once the key is destroyed.
    pub async fn unseal_bytes(
        &self,
        sealed: &SealedDetails,
    ) -> Result<Option<Vec<u8>>, VaultError> {
        let key = self.live_key(sealed.key_id).await?;
        Ok(key.and_then(|key| open_bytes(&key, sealed)))
    }

    /// A digest of `parts` under the service's secret: equal inputs give equal digests, but
    /// nobody without the secret can test a guess of what went in (a request body that names
    /// a person, for one).
    pub fn keyed_digest(&self, parts: &[&[u8]]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.fingerprint_key)
            .expect("HMAC takes any key length");
        // Domain separation from the principal-name fingerprints under the same secret.
        mac.update(b"seatledger keyed digest\0");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Unseals many users' details with one key query per thousand users (a list of a large
    /// tenant would otherwise cost one round trip per user); in the order given.
    pub async fn unseal_all(
        &self,
        sealed: &[&SealedDetails],
    ) -> Result<Vec<Option<PersonalDetails>>, VaultError> {
        const KEYS_PER_QUERY: usize = 1_000;
        let mut opened = Vec::with_capacity(sealed.len());
        for chunk in sealed.chunks(KEYS_PER_QUERY) {
            let ids: Vec<Uuid> = chunk.iter().map(|details| details.key_id).collect();
            let keys = self.live_keys(&ids).await?;
            opened.extend(chunk.iter().map(|details| {
                keys.get(&details.key_id)
                    .and_then(|key| open_sealed(key, details))
            }));
        }
        Ok(opened)
    }

    /// Destroys the user's key for good: everything sealed under it becomes unreadable.
    pub async fn shred(&self, user_id: Uuid) -> Result<(), VaultError> {
        match &self.store {
            Store::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO personal_keys (key_id, key_material, destroyed_at) VALUES ($1, NULL, now())
                     ON CONFLICT (key_id) DO UPDATE SET key_material = NULL,
                         destroyed_at = COALESCE(personal_keys.destroyed_at, now())",
                )
                .bind(user_id)
                .execute(pool)
                .await?;
            }
            Store::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO personal_keys (key_id, key_material, destroyed_at)
                     VALUES (?, NULL, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                     ON CONFLICT (key_id) DO UPDATE SET key_material = NULL,
                         destroyed_at = COALESCE(personal_keys.destroyed_at, excluded.destroyed_at)",
                )
                .bind(user_id.to_string())
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    async fn key_for_sealing(&self, user_id: Uuid) -> Result<[u8; 32], VaultError> {
        let candidate = random_bytes::<32>().to_vec();
        let row: (Option<Vec<u8>>,) = match &self.store {
            Store::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO personal_keys (key_id, key_material) VALUES ($1, $2) ON CONFLICT (key_id) DO NOTHING",
                )
                .bind(user_id)
                .bind(&candidate)
                .execute(pool)
                .await?;
                sqlx::query_as("SELECT key_material FROM personal_keys WHERE key_id = $1")
                    .bind(user_id)
                    .fetch_one(pool)
                    .await?
            }
            Store::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO personal_keys (key_id, key_material) VALUES (?, ?) ON CONFLICT (key_id) DO NOTHING",
                )
                .bind(user_id.to_string())
                .bind(&candidate)
                .execute(pool)
                .await?;
                sqlx::query_as("SELECT key_material FROM personal_keys WHERE key_id = ?")
                    .bind(user_id.to_string())
                    .fetch_one(pool)
                    .await?
            }
        };
        row.0
            .and_then(|material| material.try_into().ok())
            .ok_or(VaultError::Shredded(user_id))
    }

    /// The live keys among `ids` (destroyed and unknown ones are absent).
    async fn live_keys(
        &self,
        ids: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, [u8; 32]>, VaultError> {
        let rows: Vec<(Uuid, Option<Vec<u8>>)> = match &self.store {
            Store::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT key_id, key_material FROM personal_keys WHERE key_id = ANY($1)",
                )
                .bind(ids)
                .fetch_all(pool)
                .await?
            }
            Store::Sqlite(pool) => {
                let sql = format!(
                    "SELECT key_id, key_material FROM personal_keys WHERE key_id IN ({})",
                    vec!["?"; ids.len()].join(", ")
                );
                let mut query = sqlx::query_as::<_, (String, Option<Vec<u8>>)>(&sql);
                for id in ids {
                    query = query.bind(id.to_string());
                }
                query
                    .fetch_all(pool)
                    .await?
                    .into_iter()
                    .filter_map(|(id, material)| Some((id.parse().ok()?, material)))
                    .collect()
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(id, material)| Some((id, material?.try_into().ok()?)))
            .collect())
    }

    async fn live_key(&self, user_id: Uuid) -> Result<Option<[u8; 32]>, VaultError> {
        let row: Option<(Option<Vec<u8>>,)> = match &self.store {
            Store::Postgres(pool) => {
                sqlx::query_as("SELECT key_material FROM personal_keys WHERE key_id = $1")
                    .bind(user_id)
                    .fetch_optional(pool)
                    .await?
            }
            Store::Sqlite(pool) => {
                sqlx::query_as("SELECT key_material FROM personal_keys WHERE key_id = ?")
                    .bind(user_id.to_string())
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(row
            .and_then(|(material,)| material)
            .and_then(|material| material.try_into().ok()))
    }
}

/// The details sealed under `key`; `None` when the bytes do not open (tampered with, or sealed
/// under another key).
fn open_sealed(key: &[u8; 32], sealed: &SealedDetails) -> Option<PersonalDetails> {
    serde_json::from_slice(&open_bytes(key, sealed)?).ok()
}

/// The bytes sealed under `key`; `None` when they do not open.
fn open_bytes(key: &[u8; 32], sealed: &SealedDetails) -> Option<Vec<u8>> {
    let bytes = BASE64.decode(&sealed.ciphertext).ok()?;
    if bytes.len() <= NONCE_LEN {
        return None;
    }
    let (nonce, body) = bytes.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: sealed.key_id.as_bytes(),
            },
        )
        .ok()
}
