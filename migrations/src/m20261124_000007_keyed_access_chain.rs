use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::helpers::id;

/// Access records name the key that linked them (an HMAC key kept outside
/// the database); records from before have none and keep their plain
/// SHA-256 link, which is verified as such. Cases keep when they were
/// claimed, so a claim can lapse; a case claimed before this migration
/// counts as claimed at its last change.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000007_keyed_access_chain"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(id("access_records"))
                    .add_column(string_null(id("key_id")))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(id("cases"))
                    .add_column(timestamp_with_time_zone_null(id("claimed_at")))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE cases SET claimed_at = updated_at WHERE claimed_by IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(id("cases"))
                    .drop_column(id("claimed_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(id("access_records"))
                    .drop_column(id("key_id"))
                    .to_owned(),
            )
            .await
    }
}
