use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::helpers::{append_only, fk, id, index};

/// Information sharing with consent, the supplement loop, documents sent
/// back by offices, case history and the access log.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261102_000002_one_stop"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The keyed blind index of a person's resident registration number:
        // how their shared facts are found without storing the number.
        manager
            .alter_table(
                Table::alter()
                    .table(id("users"))
                    .add_column(string_null(id("rrn_index")))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("users", &["rrn_index"], true))
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(id("inbox_messages"))
                    .add_column(uuid_null(id("document_id")))
                    .to_owned(),
            )
            .await?;

        // The embedded stand-in of the public registry.
        manager
            .create_table(
                Table::create()
                    .table(id("registry_people"))
                    .col(string(id("rrn_index")).primary_key())
                    .col(json_binary(id("facts")))
                    .col(timestamp_with_time_zone(id("updated_at")))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("consents"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("user_id")))
                    .col(string(id("purpose")))
                    .col(timestamp_with_time_zone(id("granted_at")))
                    .col(timestamp_with_time_zone_null(id("revoked_at")))
                    .foreign_key(&mut fk(
                        "consents",
                        "user_id",
                        "users",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("consents", &["user_id", "purpose"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("case_events"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("case_id")))
                    .col(uuid_null(id("actor_id")))
                    .col(string(id("actor_role")))
                    .col(string(id("action")))
                    .col(json_binary(id("detail")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .foreign_key(&mut fk(
                        "case_events",
                        "case_id",
                        "cases",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("case_events", &["case_id", "created_at"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("supplements"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("case_id")))
                    .col(uuid(id("author_id")))
                    .col(text(id("text")))
                    .col(json_binary(id("attachments")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .foreign_key(&mut fk(
                        "supplements",
                        "case_id",
                        "cases",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("supplements", &["case_id"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("returned_documents"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("case_id")))
                    .col(uuid(id("official_id")))
                    .col(string(id("agency_id")))
                    .col(uuid(id("recipient_id")))
                    .col(string(id("title")))
                    .col(text(id("body")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .foreign_key(&mut fk(
                        "returned_documents",
                        "case_id",
                        "cases",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("returned_documents", &["recipient_id"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("returned_document_attachments"))
                    .col(uuid(id("document_id")))
                    .col(uuid(id("attachment_id")))
                    .primary_key(
                        Index::create()
                            .col(id("document_id"))
                            .col(id("attachment_id")),
                    )
                    .foreign_key(&mut fk(
                        "returned_document_attachments",
                        "document_id",
                        "returned_documents",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "returned_document_attachments",
                &["attachment_id"],
                false,
            ))
            .await?;

        // Who looked at whose data: append-only, one hash chain per person.
        manager
            .create_table(
                Table::create()
                    .table(id("access_records"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("subject_user_id")))
                    .col(big_integer(id("seq")))
                    .col(uuid_null(id("actor_id")))
                    .col(string(id("actor_role")))
                    .col(string_null(id("actor_agency_id")))
                    .col(string(id("client_address")))
                    .col(string(id("action")))
                    .col(string(id("object_id")))
                    .col(string(id("purpose")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .col(string(id("prev_hash")))
                    .col(string(id("hash")))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("access_records", &["subject_user_id", "seq"], true))
            .await?;

        append_only(manager, "access_records", "access records are append-only").await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "access_records",
            "returned_document_attachments",
            "returned_documents",
            "supplements",
            "case_events",
            "consents",
            "registry_people",
        ] {
            manager
                .drop_table(Table::drop().table(id(table)).to_owned())
                .await?;
        }
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP FUNCTION IF EXISTS access_records_append_only()")
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(id("inbox_messages"))
                    .drop_column(id("document_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("ix_users_rrn_index")
                    .table(id("users"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(id("users"))
                    .drop_column(id("rrn_index"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
