//! Demo accounts for trying the apps on one machine. They are written only
//! when demo mode is on (see `Settings::demo_enabled`).

use chrono::Utc;
use onestop_model::catalog::DemoAccounts;
use onestop_model::entities::{registry_person, user};
use sea_orm::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::ActiveValue::Set;

use crate::auth::hash_password;
use crate::error::ApiError;
use crate::identity::{Rrn, RrnIndexer};
use crate::vault::Vault;

/// Creates the demo accounts that do not exist yet; existing ones keep
/// whatever changed since.
pub async fn seed(
    db: &DatabaseConnection,
    indexer: &RrnIndexer,
    vault: &Vault,
) -> Result<Vec<String>, ApiError> {
    let demo = DemoAccounts::embedded();
    let index_of = |rrn: &str| Rrn::parse(rrn).map(|rrn| indexer.index(&rrn));
    for person in &demo.registry {
        registry_person::Entity::insert(registry_person::ActiveModel {
            rrn_index: Set(index_of(&person.rrn)?),
            facts: Set(person.facts.clone()),
            updated_at: Set(Utc::now()),
        })
        .on_conflict(
            OnConflict::column(registry_person::Column::RrnIndex)
                .update_columns([
                    registry_person::Column::Facts,
                    registry_person::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec(db)
        .await?;
    }
    let mut created = Vec::new();
    let mut hash: Option<String> = None;
    for account in &demo.accounts {
        let exists = user::Entity::find()
            .filter(user::Column::Username.eq(account.username.as_str()))
            .count(db)
            .await?
            > 0;
        if exists {
            continue;
        }
        // The demo password is shared, so one hash serves every account.
        let password_hash = match &hash {
            Some(hash) => hash.clone(),
            None => {
                let fresh = hash_password(demo.password.clone()).await?;
                hash = Some(fresh.clone());
                fresh
            }
        };
        let id = Uuid::new_v4();
        let rrn_ciphertext = match &account.rrn {
            Some(rrn) => {
                let rrn = Rrn::parse(rrn)?;
                Some(
                    vault
                        .encrypt(db, rrn.as_str(), id.as_bytes())
                        .await
                        .map_err(|e| ApiError::Internal(format!("sealing a number failed: {e}")))?,
                )
            }
            None => None,
        };
        user::ActiveModel {
            id: Set(id),
            username: Set(account.username.clone()),
            password_hash: Set(password_hash),
            role: Set(account.role),
            display_name: Set(account.display_name.clone()),
            locale: Set(account.locale.clone()),
            region: Set(account.region.clone()),
            agency_id: Set(account.agency_id.clone()),
            organisation_id: Set(account.organisation_id.clone()),
            rrn_index: Set(account.rrn.as_deref().map(index_of).transpose()?),
            rrn_ciphertext: Set(rrn_ciphertext),
            disabled: Set(false),
            created_at: Set(Utc::now()),
        }
        .insert(db)
        .await?;
        created.push(account.username.clone());
    }
    Ok(created)
}

/// `username (role)` lines for the start-up banner.
pub fn describe() -> Vec<String> {
    let demo = DemoAccounts::embedded();
    demo.accounts
        .iter()
        .map(|a| {
            format!(
                "{} ({}) — password {}",
                a.username,
                a.role.as_str(),
                demo.password
            )
        })
        .collect()
}
