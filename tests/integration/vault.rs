//! Personal data is sealed under per-user keys and unreadable once the key is shredded.

use crate::support::{fresh_store, Backend};
use aggregates::personal::PersonalDetails;
use aggregates::values::{Location, PersonName, UserPrincipalName};
use seatledger::store::Store;
use seatledger::vault::{Vault, VaultError};
use uuid::Uuid;

fn details() -> PersonalDetails {
    PersonalDetails {
        user_principal_name: UserPrincipalName::parse("megan.bowen@contoso.onmicrosoft.com")
            .unwrap(),
        first_name: PersonName::parse("Megan").unwrap(),
        last_name: PersonName::parse("Bowen").unwrap(),
        display_name: PersonName::parse("Megan Bowen").unwrap(),
        location: Some(Location::parse("Seattle").unwrap()),
    }
}

async fn key_rows(store: &Store) -> Vec<Option<Vec<u8>>> {
    match store {
        Store::Postgres(pool) => sqlx::query_scalar("SELECT key_material FROM personal_keys")
            .fetch_all(pool)
            .await
            .unwrap(),
        Store::Sqlite(pool) => sqlx::query_scalar("SELECT key_material FROM personal_keys")
            .fetch_all(pool)
            .await
            .unwrap(),
    }
}

async fn seal_unseal_shred(backend: Backend) {
    let fresh = fresh_store(backend).await;
    let vault = Vault::open(fresh.store.clone()).await.unwrap();
    let (megan, other) = (Uuid::new_v4(), Uuid::new_v4());

    let sealed = vault.seal(megan, &details()).await.unwrap();
    assert_eq!(sealed.key_id, megan);
    for clear in ["megan", "Megan", "Bowen", "Seattle", "contoso"] {
        assert!(
            !sealed.ciphertext.contains(clear),
            "{clear} readable in {}",
            sealed.ciphertext
        );
    }
    assert_eq!(vault.unseal(&sealed).await.unwrap(), Some(details()));

    // Sealed bytes of one user cannot be passed off as another's.
    let mut moved = sealed.clone();
    moved.key_id = other;
    vault.seal(other, &details()).await.unwrap();
    assert_eq!(vault.unseal(&moved).await.unwrap(), None);

    vault.shred(megan).await.unwrap();
    assert_eq!(vault.unseal(&sealed).await.unwrap(), None);
    assert!(
        matches!(vault.seal(megan, &details()).await, Err(VaultError::Shredded(id)) if id == megan)
    );
    assert_eq!(
        key_rows(&fresh.store)
            .await
            .iter()
            .filter(|row| row.is_none())
            .count(),
        1
    );
    // Shredding again is harmless.
    vault.shred(megan).await.unwrap();

    // Fingerprints: stable across vault instances, distinct per tenant and per name.
    let (tenant_a, tenant_b) = (Uuid::new_v4(), Uuid::new_v4());
    let name = details().user_principal_name;
    let again = Vault::open(fresh.store.clone()).await.unwrap();
    assert_eq!(
        vault.fingerprint(tenant_a, &name),
        again.fingerprint(tenant_a, &name)
    );
    assert_ne!(
        vault.fingerprint(tenant_a, &name),
        vault.fingerprint(tenant_b, &name)
    );
    let other_name = UserPrincipalName::parse("alex@contoso.onmicrosoft.com").unwrap();
    assert_ne!(
        vault.fingerprint(tenant_a, &name),
        vault.fingerprint(tenant_a, &other_name)
    );
    fresh.remove().await;
}

#[tokio::test]
async fn personal_data_is_shredded_with_its_key_on_postgres() {
    seal_unseal_shred(Backend::Postgres).await;
}

#[tokio::test]
async fn personal_data_is_shredded_with_its_key_on_sqlite() {
    seal_unseal_shred(Backend::Sqlite).await;
}
