//! Schema migrations. They run on SQLite (the embedded default) and on
//! PostgreSQL; the server applies pending ones when it starts.

pub use sea_orm_migration::prelude::*;

mod helpers;
mod m20261101_000001_initial;
mod m20261102_000002_one_stop;
mod m20261120_000003_uploads;
mod m20261121_000004_identity_keys;
mod m20261122_000005_delivery;
mod m20261123_000006_upload_filter_state;
mod m20261124_000007_keyed_access_chain;
mod m20261125_000008_access_chain_seals;
mod m20261206_000009_read_paths;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261101_000001_initial::Migration),
            Box::new(m20261102_000002_one_stop::Migration),
            Box::new(m20261120_000003_uploads::Migration),
            Box::new(m20261121_000004_identity_keys::Migration),
            Box::new(m20261122_000005_delivery::Migration),
            Box::new(m20261123_000006_upload_filter_state::Migration),
            Box::new(m20261124_000007_keyed_access_chain::Migration),
            Box::new(m20261125_000008_access_chain_seals::Migration),
            Box::new(m20261206_000009_read_paths::Migration),
        ]
    }
}
