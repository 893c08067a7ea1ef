use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::helpers::{fk, id, index, now};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261101_000001_initial"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Catalog: agencies that decide, organisations that file, services of
        // the one-stop bundle, standard forms, and the texts people read.
        manager
            .create_table(
                Table::create()
                    .table(id("agencies"))
                    .col(string(id("id")).primary_key())
                    .col(string(id("kind")))
                    .col(string_null(id("region")))
                    .col(json_binary(id("names")))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("agencies", &["kind", "region"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("organisations"))
                    .col(string(id("id")).primary_key())
                    .col(string(id("kind")))
                    .col(string_null(id("region")))
                    .col(json_binary(id("names")))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("services"))
                    .col(string(id("code")).primary_key())
                    .col(string(id("bundle")))
                    .col(string(id("agency_kind")))
                    .col(json_binary(id("names")))
                    .col(json_binary(id("descriptions")))
                    .col(json_binary(id("rule")))
                    .col(json_binary(id("required_documents")))
                    .col(integer(id("position")))
                    .col(boolean(id("active")))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("forms"))
                    .col(string(id("code")).primary_key())
                    .col(string(id("agency_kind")))
                    .col(json_binary(id("names")))
                    .col(json_binary(id("fields")))
                    .col(integer(id("min_pages")))
                    .col(boolean(id("active")))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("message_texts"))
                    .col(string(id("key")))
                    .col(string(id("locale")))
                    .col(string(id("title")))
                    .col(text(id("body")))
                    .primary_key(Index::create().col(id("key")).col(id("locale")))
                    .to_owned(),
            )
            .await?;

        // People and their phones.
        manager
            .create_table(
                Table::create()
                    .table(id("users"))
                    .col(uuid(id("id")).primary_key())
                    .col(string_uniq(id("username")))
                    .col(string(id("password_hash")))
                    .col(string(id("role")))
                    .col(string(id("display_name")))
                    .col(string(id("locale")))
                    .col(string_null(id("region")))
                    .col(string_null(id("agency_id")))
                    .col(string_null(id("organisation_id")))
                    .col(boolean(id("disabled")).default(false))
                    .col(timestamp_with_time_zone(id("created_at")).default(now()))
                    .foreign_key(&mut fk(
                        "users",
                        "agency_id",
                        "agencies",
                        "id",
                        ForeignKeyAction::Restrict,
                    ))
                    .foreign_key(&mut fk(
                        "users",
                        "organisation_id",
                        "organisations",
                        "id",
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("refresh_tokens"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("user_id")))
                    .col(uuid(id("family_id")))
                    .col(string_uniq(id("token_hash")))
                    .col(timestamp_with_time_zone(id("expires_at")))
                    .col(timestamp_with_time_zone(id("family_expires_at")))
                    .col(timestamp_with_time_zone_null(id("used_at")))
                    .col(timestamp_with_time_zone_null(id("revoked_at")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .foreign_key(&mut fk(
                        "refresh_tokens",
                        "user_id",
                        "users",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("refresh_tokens", &["family_id"], false))
            .await?;
        manager
            .create_index(index("refresh_tokens", &["user_id"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("devices"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("user_id")))
                    .col(string(id("platform")))
                    .col(string_uniq(id("push_token")))
                    .col(string(id("locale")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .col(timestamp_with_time_zone(id("updated_at")))
                    .foreign_key(&mut fk(
                        "devices",
                        "user_id",
                        "users",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("devices", &["user_id"], false))
            .await?;

        // Documents people upload.
        manager
            .create_table(
                Table::create()
                    .table(id("attachments"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("owner_id")))
                    .col(string(id("media_type")))
                    .col(big_integer(id("byte_size")))
                    .col(string(id("sha256")))
                    .col(string(id("storage_key")))
                    .col(string(id("file_name")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .foreign_key(&mut fk(
                        "attachments",
                        "owner_id",
                        "users",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("attachments", &["owner_id", "created_at"], false))
            .await?;

        // Submissions and the cases they become.
        manager
            .create_table(
                Table::create()
                    .table(id("submissions"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("applicant_id")))
                    .col(string(id("kind")))
                    .col(string_null(id("organisation_id")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .foreign_key(&mut fk(
                        "submissions",
                        "applicant_id",
                        "users",
                        "id",
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("submissions", &["applicant_id", "created_at"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("cases"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("submission_id")))
                    .col(uuid(id("applicant_id")))
                    .col(string(id("agency_id")))
                    .col(string_null(id("service_code")))
                    .col(string_null(id("form_code")))
                    .col(string(id("status")))
                    .col(integer(id("version")))
                    .col(uuid_null(id("claimed_by")))
                    .col(json_binary(id("fields")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .col(timestamp_with_time_zone(id("updated_at")))
                    .foreign_key(&mut fk(
                        "cases",
                        "submission_id",
                        "submissions",
                        "id",
                        ForeignKeyAction::Restrict,
                    ))
                    .foreign_key(&mut fk(
                        "cases",
                        "agency_id",
                        "agencies",
                        "id",
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "cases",
                &["agency_id", "status", "created_at"],
                false,
            ))
            .await?;
        manager
            .create_index(index("cases", &["submission_id"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("case_attachments"))
                    .col(uuid(id("case_id")))
                    .col(uuid(id("attachment_id")))
                    .primary_key(Index::create().col(id("case_id")).col(id("attachment_id")))
                    .foreign_key(&mut fk(
                        "case_attachments",
                        "case_id",
                        "cases",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "case_attachments",
                        "attachment_id",
                        "attachments",
                        "id",
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("case_attachments", &["attachment_id"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("decisions"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("case_id")))
                    .col(uuid(id("official_id")))
                    .col(string(id("outcome")))
                    .col(text(id("reason")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .foreign_key(&mut fk(
                        "decisions",
                        "case_id",
                        "cases",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("decisions", &["case_id"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("inbox_messages"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("user_id")))
                    .col(string(id("kind")))
                    .col(uuid_null(id("submission_id")))
                    .col(uuid_null(id("case_id")))
                    .col(string_null(id("status")))
                    .col(string_null(id("subject_code")))
                    .col(text_null(id("reason")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .col(timestamp_with_time_zone_null(id("read_at")))
                    .foreign_key(&mut fk(
                        "inbox_messages",
                        "user_id",
                        "users",
                        "id",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("inbox_messages", &["user_id", "created_at"], false))
            .await?;

        // Delivery: the transactional outbox, idempotency records and the
        // notifier's account of every push attempt.
        manager
            .create_table(
                Table::create()
                    .table(id("outbox"))
                    .col(uuid(id("event_id")).primary_key())
                    .col(string(id("kind")))
                    .col(json_binary(id("payload")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .col(timestamp_with_time_zone_null(id("published_at")))
                    .col(integer(id("publish_attempts")).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("outbox", &["published_at", "created_at"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("idempotency_keys"))
                    .col(uuid(id("user_id")))
                    .col(string(id("key")))
                    .col(string(id("fingerprint")))
                    .col(string(id("state")))
                    .col(integer_null(id("response_status")))
                    .col(text_null(id("response_body")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .col(timestamp_with_time_zone(id("updated_at")))
                    .primary_key(Index::create().col(id("user_id")).col(id("key")))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("idempotency_keys", &["created_at"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(id("push_attempts"))
                    .col(uuid(id("id")).primary_key())
                    .col(uuid(id("event_id")))
                    .col(uuid(id("device_id")))
                    .col(uuid(id("user_id")))
                    .col(string(id("provider")))
                    .col(string(id("outcome")))
                    .col(text_null(id("detail")))
                    .col(integer(id("latency_ms")))
                    .col(timestamp_with_time_zone(id("created_at")))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("push_attempts", &["event_id", "device_id"], false))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "push_attempts",
            "idempotency_keys",
            "outbox",
            "inbox_messages",
            "decisions",
            "case_attachments",
            "cases",
            "submissions",
            "attachments",
            "devices",
            "refresh_tokens",
            "users",
            "message_texts",
            "forms",
            "services",
            "organisations",
            "agencies",
        ] {
            manager
                .drop_table(Table::drop().table(id(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
