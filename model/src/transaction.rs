//! Write transactions that hold up when several processes share one SQLite
//! file (the server, the notifier and the operator commands do).

use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    TransactionTrait,
};

/// Begins a transaction that is going to write.
///
/// SQLite starts a plain `BEGIN` as a reader. If such a transaction reads,
/// another process commits, and then the transaction writes, SQLite refuses
/// the write at once (`SQLITE_BUSY_SNAPSHOT`); the busy timeout does not
/// help, because waiting cannot make the stale snapshot current. Taking
/// the write lock first — the way `BEGIN IMMEDIATE` does, which sea-orm has
/// no call for — makes the transaction wait its turn under the busy timeout
/// instead. The statement changes nothing: a write that matches no row
/// still takes the lock. PostgreSQL needs none of this.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let txn = db.begin().await?;
    if txn.get_database_backend() == DatabaseBackend::Sqlite {
        // The migrations table exists wherever the schema does.
        txn.execute_unprepared("UPDATE seaql_migrations SET version = version WHERE 0")
            .await?;
    }
    Ok(txn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectOptions, Database, Statement};

    async fn open(path: &std::path::Path) -> DatabaseConnection {
        let mut options = ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()));
        options.max_connections(1).sqlx_logging(false);
        let db = Database::connect(options).await.unwrap();
        db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;")
            .await
            .unwrap();
        db
    }

    #[tokio::test]
    async fn a_reading_writer_waits_for_another_process_instead_of_failing() {
        let path = std::env::temp_dir().join(format!("onestop-{}.db", uuid::Uuid::new_v4()));
        let first = open(&path).await;
        first
            .execute_unprepared(
                "CREATE TABLE seaql_migrations (version TEXT PRIMARY KEY, applied_at BIGINT);
                 CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0);",
            )
            .await
            .unwrap();
        let second = open(&path).await;

        // Read, let the other connection commit, then write.
        let read_then_write = |db: DatabaseConnection, other: DatabaseConnection| async move {
            let txn = begin_write(&db).await?;
            txn.query_one(Statement::from_string(
                DatabaseBackend::Sqlite,
                "SELECT n FROM counter",
            ))
            .await?;
            let other_write = tokio::spawn(async move {
                other
                    .execute_unprepared("UPDATE counter SET n = n + 1")
                    .await
            });
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            txn.execute_unprepared("UPDATE counter SET n = n + 1")
                .await?;
            txn.commit().await?;
            other_write.await.unwrap()?;
            Ok::<_, DbErr>(())
        };
        read_then_write(first.clone(), second.clone())
            .await
            .unwrap();

        let row = first
            .query_one(Statement::from_string(
                DatabaseBackend::Sqlite,
                "SELECT n FROM counter",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.try_get::<i32>("", "n").unwrap(),
            2,
            "both writes landed"
        );
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
