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
