use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::helpers::{fk, id, index};

/// Resumable uploads and their stored pieces, and the thumbnails of
/// photos.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261120_000003_uploads"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(id("uploads"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("owner_id")))
                    .col(big_integer(id("upload_length")))
                    .col(big_integer(id("upload_offset")))
                    .col(integer(id("part_count")))
                    .col(text_null(id("metadata")))
                    .col(string_null(id("file_name")))
                    .col(uuid_null(id("lock_token")))
                    .col(timestamp_with_time_zone_null(id("locked_at")))
                    .col(uuid_null(id("attachment_id")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .col(timestamp_with_time_zone(id("expires_at")))
                    .foreign_key(&mut fk(
                        "uploads",
                        "owner_id",
                        "users",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "uploads",
                        "attachment_id",
                        "attachments",
                        "id",
                        ForeignKeyAction::SetNull,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("uploads", &["expires_at"], false))
            .await?;
        manager
            .create_index(index("uploads", &["owner_id"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("upload_parts"))
                    .col(uuid(id("upload_id")))
                    .col(big_integer(id("start_offset")))
                    .col(big_integer(id("byte_size")))
                    .col(string(id("storage_key")))
                    .primary_key(Index::create().col(id("upload_id")).col(id("start_offset")))
                    .foreign_key(&mut fk(
                        "upload_parts",
                        "upload_id",
                        "uploads",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("attachment_thumbnails"))
                    .col(uuid(id("attachment_id")).primary_key())
                    .col(string(id("state")))
                    .col(small_integer(id("orientation")))
                    .col(string_null(id("storage_key")))
                    .col(big_integer_null(id("byte_size")))
                    .col(string_null(id("sha256")))
                    .col(integer_null(id("width")))
                    .col(integer_null(id("height")))
                    .col(string_null(id("detail")))
                    .col(timestamp_with_time_zone(id("updated_at")))
                    .foreign_key(&mut fk(
                        "attachment_thumbnails",
                        "attachment_id",
                        "attachments",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("attachment_thumbnails", &["state"], false))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["attachment_thumbnails", "upload_parts", "uploads"] {
            manager
                .drop_table(Table::drop().table(id(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
