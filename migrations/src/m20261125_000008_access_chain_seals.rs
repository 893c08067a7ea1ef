use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::helpers::{append_only, id};

/// Seals of the access records from before keyed links: for each person
/// whose chain begins with such records, the place and link of the last
/// one, with an HMAC under the access-log key (kept outside the database)
/// over them. The row of the nil id records the sealing itself. The server
/// writes the seals on its first start after this migration; like the
/// records, they are never updated or deleted.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000008_access_chain_seals"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(id("access_chain_seals"))
                    .col(uuid(id("subject_user_id")).primary_key())
                    .col(big_integer(id("seq")))
                    .col(string(id("link")))
                    .col(string(id("key_id")))
                    .col(string(id("mac")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .to_owned(),
            )
            .await?;
        append_only(
            manager,
            "access_chain_seals",
            "access chain seals are append-only",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(id("access_chain_seals")).to_owned())
            .await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP FUNCTION IF EXISTS access_chain_seals_append_only()")
                .await?;
        }
        Ok(())
    }
}
