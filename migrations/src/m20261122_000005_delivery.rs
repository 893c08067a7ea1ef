use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::helpers::{id, index};

/// What the database knows about delivery: when a notifier finished an
/// event (`outbox.handled_at`) or last had it in hand (`outbox.seen_at`),
/// so the relay can publish again what Redis lost; and the case of every
/// push attempt and outbox row, for the official's view of a case.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000005_delivery"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite alters one column per statement.
        for column in [
            timestamp_with_time_zone_null(id("handled_at")),
            timestamp_with_time_zone_null(id("seen_at")),
            uuid_null(id("case_id")),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(id("outbox"))
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(id("push_attempts"))
                    .add_column(uuid_null(id("case_id")))
                    .to_owned(),
            )
            .await?;
        // Events published before this migration count as handled, or the
        // relay would send them all again.
        manager
            .exec_stmt(
                Query::update()
                    .table(id("outbox"))
                    .value(id("handled_at"), Expr::col(id("published_at")))
                    .and_where(Expr::col(id("published_at")).is_not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("outbox", &["handled_at", "published_at"], false))
            .await?;
        manager
            .create_index(index("outbox", &["case_id"], false))
            .await?;
        manager
            .create_index(index("push_attempts", &["case_id"], false))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, name) in [
            ("push_attempts", "ix_push_attempts_case_id"),
            ("outbox", "ix_outbox_case_id"),
            ("outbox", "ix_outbox_handled_at_published_at"),
        ] {
            manager
                .drop_index(Index::drop().name(name).table(id(table)).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(id("push_attempts"))
                    .drop_column(id("case_id"))
                    .to_owned(),
            )
            .await?;
        for column in ["case_id", "seen_at", "handled_at"] {
            manager
                .alter_table(
                    Table::alter()
                        .table(id("outbox"))
                        .drop_column(id(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
