use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::helpers::id;

/// Resident registration numbers encrypted at rest under data keys, which
/// are themselves wrapped by a key-encrypting key kept outside the database.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261121_000004_identity_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(id("users"))
                    .add_column(text_null(id("rrn_ciphertext")))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(id("data_keys"))
                    .col(string(id("key_id")).primary_key())
                    .col(string(id("kek_id")))
                    .col(text(id("wrapped_key")))
                    .col(boolean(id("active")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(id("data_keys")).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(id("users"))
                    .drop_column(id("rrn_ciphertext"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
