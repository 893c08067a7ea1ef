use sea_orm_migration::prelude::*;

use crate::helpers::{id, index};

/// Indexes for reads whose cost must not grow with the data: an agency's
/// queue in filing order (whatever the status), and the documents sent
/// about one case.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000009_read_paths"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(index("cases", &["agency_id", "created_at"], false))
            .await?;
        manager
            .create_index(index("returned_documents", &["case_id"], false))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, name) in [
            ("cases", "ix_cases_agency_id_created_at"),
            ("returned_documents", "ix_returned_documents_case_id"),
        ] {
            manager
                .drop_index(Index::drop().name(name).table(id(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
