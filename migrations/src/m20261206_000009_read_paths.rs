use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::helpers::{id, index};

/// What reads need to cost the same whatever the data holds: indexes for
/// an agency's queue in filing order (whatever the status) and for the
/// documents sent about one case; and the catalog's revision, one row that
/// changes whenever the catalog is seeded, so each server keeps the
/// catalog's names in memory and reads them again only when it changed.
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
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(id("catalog_revision"))
                    .col(integer(id("id")).primary_key())
                    .col(uuid(id("revision")))
                    .col(timestamp_with_time_zone(id("seeded_at")))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(id("catalog_revision")).to_owned())
            .await?;
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
