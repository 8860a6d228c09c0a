//! `seatledger demo`: a realistic partner in a fresh store, to look around in.

use aggregates::catalog::{offers, Offer};
use aggregates::party::{BillingProfileCommand, ResellerCommand};
use aggregates::personal::PersonalDetails;
use aggregates::policy::FollowUp;
use aggregates::tenant::TenantCommand;
use aggregates::user::UserCommand;
use aggregates::values::{
    Currency, DomainName, Location, OfferId, OrganisationName, PersonName, Quantity, Term,
    UserPrincipalName, UserRole,
};
use anyhow::{bail, Context};
use uuid::Uuid;

use crate::auth::Role;
use crate::http::AppState;
use crate::write::ledger::Metadata;

/// What the demo created, to print next steps with.
pub struct DemoSummary {
    /// The reseller.
    pub reseller_id: Uuid,
    /// A token scoped to the reseller (shown once).
    pub reseller_token: String,
    /// The tenants, by domain.
    pub tenants: Vec<(String, Uuid)>,
    /// The deleted user, still restorable.
    pub deleted_user: Uuid,
}

struct Person {
    alias: &'static str,
    first: &'static str,
    last: &'static str,
    location: &'static str,
    licences: &'static [&'static str],
}

const PEOPLE: [Person; 5] = [
    Person {
        alias: "megan.bowen",
        first: "Megan",
        last: "Bowen",
        location: "Seattle",
        licences: &[offers::BUSINESS_PREMIUM, offers::EXCHANGE_ONLINE_ARCHIVING],
    },
    Person {
        alias: "alex.wilber",
        first: "Alex",
        last: "Wilber",
        location: "Redmond",
        licences: &[offers::BUSINESS_PREMIUM],
    },
    Person {
        alias: "diego.siciliani",
        first: "Diego",
        last: "Siciliani",
        location: "Milan",
        licences: &[offers::BUSINESS_PREMIUM, offers::EXCHANGE_ONLINE_ATP],
    },
    Person {
        alias: "isaiah.langer",
        first: "Isaiah",
        last: "Langer",
        location: "Austin",
        licences: &[offers::BUSINESS_PREMIUM],
    },
    Person {
        alias: "lynne.robbins",
        first: "Lynne",
        last: "Robbins",
        location: "London",
        licences: &[],
    },
];

async fn offer(state: &AppState, id: &str) -> anyhow::Result<Offer> {
    let catalog = state.ledger.current_catalog().await?;
    catalog
        .catalog
        .get(&OfferId::parse(id)?)
        .cloned()
        .with_context(|| format!("offer {id} is missing from the catalog"))
}

/// Fills an empty store with a reseller, three tenants, subscriptions, users with licences and
/// a deleted user inside its restore window.
pub async fn run(state: &AppState) -> anyhow::Result<DemoSummary> {
    let tenants_before = state.store.log_end().await?;
    let catalog_events = state.ledger.current_catalog().await?.catalog.len() as i64;
    if tenants_before > catalog_events {
        bail!("the store already holds data: run the demo on a fresh DATABASE_URL");
    }
    let metadata = Metadata::from([
        ("role".to_owned(), "system".to_owned()),
        ("reason".to_owned(), "seatledger demo".to_owned()),
    ]);
    let now = state.clock.now();

    let reseller_id = Uuid::new_v4();
    state
        .ledger
        .reseller(
            reseller_id,
            ResellerCommand::CreateReseller {
                reseller_id,
                name: OrganisationName::parse("Northwind Cloud Partners")?,
                at: now,
            },
            &metadata,
        )
        .await?;
    let billing_profile_id = Uuid::new_v4();
    state
        .ledger
        .billing_profile(
            billing_profile_id,
            BillingProfileCommand::CreateBillingProfile {
                billing_profile_id,
                name: OrganisationName::parse("Northwind — USD")?,
                currency: Currency::parse("USD")?,
                reseller_id: Some(reseller_id),
                at: now,
            },
            &metadata,
        )
        .await?;

    let mut tenants = Vec::new();
    let mut deleted_user = None;
    for (index, (domain, name)) in [
        ("contoso.onmicrosoft.com", "Contoso"),
        ("fabrikam.onmicrosoft.com", "Fabrikam"),
        ("adatum.onmicrosoft.com", "Adatum"),
    ]
    .into_iter()
    .enumerate()
    {
        let tenant_id = Uuid::new_v4();
        let tenant = |command| FollowUp::Tenant { tenant_id, command };
        state
            .ledger
            .dispatch(
                tenant(TenantCommand::CreateTenant {
                    tenant_id,
                    domain: DomainName::parse(domain)?,
                    name: OrganisationName::parse(name)?,
                    reseller_id: Some(reseller_id),
                    at: now,
                }),
                &metadata,
            )
            .await?;
        let purchases: &[(&str, i64)] = match index {
            0 => &[
                (offers::BUSINESS_PREMIUM, 5),
                (offers::EXCHANGE_ONLINE_ARCHIVING, 2),
                (offers::EXCHANGE_ONLINE_ATP, 2),
            ],
            1 => &[(offers::ENTERPRISE_E3, 3), (offers::PHONE_SYSTEM, 2)],
            _ => &[(offers::BUSINESS_PREMIUM, 25)],
        };
        for (offer_id, quantity) in purchases {
            state
                .ledger
                .dispatch(
                    tenant(TenantCommand::PurchaseSubscription {
                        subscription_id: Uuid::new_v4(),
                        offer: offer(state, offer_id).await?,
                        quantity: Quantity::parse("quantity", *quantity)?,
                        term: Term::Monthly,
                        billing_profile_id,
                        // Adatum is trying Business Premium.
                        trial: index == 2,
                        at: now,
                    }),
                    &metadata,
                )
                .await?;
        }
        let people: &[Person] = if index == 0 { &PEOPLE } else { &PEOPLE[..2] };
        for person in people {
            let user_id = Uuid::new_v4();
            let upn = UserPrincipalName::parse(&format!("{}@{domain}", person.alias))?;
            let details = PersonalDetails {
                user_principal_name: upn.clone(),
                first_name: PersonName::parse(person.first)?,
                last_name: PersonName::parse(person.last)?,
                display_name: PersonName::parse(&format!("{} {}", person.first, person.last))?,
                location: Some(Location::parse(person.location)?),
            };
            state
                .ledger
                .dispatch(
                    tenant(TenantCommand::RegisterUser {
                        user_id,
                        principal_domain: upn.domain(),
                        fingerprint: state.vault.fingerprint(tenant_id, &upn),
                        details: state.vault.seal(user_id, &details).await?,
                        role: UserRole::User,
                        at: now,
                    }),
                    &metadata,
                )
                .await?;
            let wanted: Vec<OfferId> = person
                .licences
                .iter()
                .filter(|offer_id| index == 0 || **offer_id == offers::BUSINESS_PREMIUM)
                .map(|offer_id| OfferId::parse(offer_id))
                .collect::<Result<_, _>>()?;
            let wanted = if index == 1 {
                vec![OfferId::parse(offers::ENTERPRISE_E3)?]
            } else {
                wanted
            };
            if !wanted.is_empty() {
                state
                    .ledger
                    .dispatch(
                        tenant(TenantCommand::AssignLicenses {
                            user_id,
                            add: wanted,
                            remove: Vec::new(),
                            at: now,
                        }),
                        &metadata,
                    )
                    .await?;
            }
            if index == 0 && person.alias == "isaiah.langer" {
                state
                    .ledger
                    .dispatch(
                        FollowUp::User {
                            user_id,
                            command: UserCommand::DeleteUser { at: now },
                        },
                        &metadata,
                    )
                    .await?;
                deleted_user = Some(user_id);
            }
        }
        tenants.push((domain.to_owned(), tenant_id));
    }
    let (_, reseller_token) = state
        .tokens
        .issue(Role::Reseller, Some(reseller_id), None)
        .await?;
    Ok(DemoSummary {
        reseller_id,
        reseller_token,
        tenants,
        deleted_user: deleted_user.context("the demo deletes one user")?,
    })
}
