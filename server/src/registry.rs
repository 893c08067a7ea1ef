//! Information sharing: verified facts about a person (household, region,
//! disability, multicultural family) looked up instead of paper proofs.
//! The registry is an interface a real government registry can sit behind;
//! the embedded default reads the seeded `registry_people` table.

use async_trait::async_trait;
use onestop_model::entities::registry_person;
use sea_orm::prelude::*;
use serde::{Deserialize, Serialize};

/// What the registry says about a person.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFacts {
    /// Children in the household.
    pub children: u32,
    /// The region of the registered address, e.g. `seoul-gangnam`.
    pub region: Option<String>,
    pub disability: bool,
    pub multicultural_family: bool,
}

impl SharedFacts {
    pub fn as_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("facts serialise")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the registry is unreachable: {0}")]
    Unavailable(String),
    #[error("the registry answered with something unreadable: {0}")]
    Malformed(String),
}

#[async_trait]
pub trait FactRegistry: Send + Sync {
    /// Facts about the person with this blind index, if the registry knows
    /// them. `purpose` travels with the request, as real registries ask.
    async fn lookup(
        &self,
        rrn_index: &str,
        purpose: &str,
    ) -> Result<Option<SharedFacts>, RegistryError>;
}

/// The embedded registry: a table seeded with demo people.
pub struct DatabaseRegistry {
    db: DatabaseConnection,
}

impl DatabaseRegistry {
    pub fn new(db: DatabaseConnection) -> Self {
        DatabaseRegistry { db }
    }
}

#[async_trait]
impl FactRegistry for DatabaseRegistry {
    async fn lookup(
        &self,
        rrn_index: &str,
        _purpose: &str,
    ) -> Result<Option<SharedFacts>, RegistryError> {
        let row = registry_person::Entity::find_by_id(rrn_index.to_owned())
            .one(&self.db)
            .await
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        row.map(|row| {
            serde_json::from_value(row.facts).map_err(|e| RegistryError::Malformed(e.to_string()))
        })
        .transpose()
    }
}
