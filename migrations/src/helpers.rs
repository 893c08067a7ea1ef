//! Small builders the migrations share.

use sea_orm_migration::prelude::*;

pub fn id(name: &str) -> Alias {
    Alias::new(name)
}

pub fn fk(
    table: &str,
    column: &str,
    to_table: &str,
    to_column: &str,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{table}_{column}"))
        .from(id(table), id(column))
        .to(id(to_table), id(to_column))
        .on_delete(on_delete)
        .to_owned()
}

pub fn index(table: &str, columns: &[&str], unique: bool) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(format!("ix_{table}_{}", columns.join("_")))
        .table(id(table));
    for column in columns {
        stmt.col(id(column));
    }
    if unique {
        stmt.unique();
    }
    stmt.to_owned()
}

pub fn now() -> SimpleExpr {
    Expr::current_timestamp().into()
}

/// Makes the database refuse every update and delete of `table`'s rows,
/// with `message` (e.g. "access records are append-only"): a PostgreSQL
/// trigger function, or two SQLite triggers.
pub async fn append_only(
    manager: &SchemaManager<'_>,
    table: &str,
    message: &str,
) -> Result<(), DbErr> {
    let db = manager.get_connection();
    match manager.get_database_backend() {
        sea_orm_migration::sea_orm::DatabaseBackend::Postgres => {
            db.execute_unprepared(&format!(
                "CREATE FUNCTION {table}_append_only() RETURNS trigger AS $$ \
                 BEGIN RAISE EXCEPTION '{message}'; END; $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION {table}_append_only();"
            ))
            .await?;
        }
        sea_orm_migration::sea_orm::DatabaseBackend::Sqlite => {
            db.execute_unprepared(&format!(
                "CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} \
                 BEGIN SELECT RAISE(ABORT, '{message}'); END; \
                 CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} \
                 BEGIN SELECT RAISE(ABORT, '{message}'); END;"
            ))
            .await?;
        }
        _ => {}
    }
    Ok(())
}
