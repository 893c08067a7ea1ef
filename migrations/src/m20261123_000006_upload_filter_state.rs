use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::helpers::id;

/// The photo filter's state after a resumable upload's piece is kept with
/// the piece's row, committed with the offset it belongs to.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000006_upload_filter_state"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(id("upload_parts"))
                    .add_column(text_null(id("filter_state")))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(id("upload_parts"))
                    .drop_column(id("filter_state"))
                    .to_owned(),
            )
            .await
    }
}
