//! Files in the media store that no record names.
//!
//! A file is given its name in the store just before the row that records
//! it is committed (the bytes must be durable before a record points at
//! them). A process that stops between the two, killed or out of memory
//! or on a power cut, leaves a file that nobody can open or delete: a
//! citizen's photo kept for no purpose. The sweep lists the store, asks
//! the database about the listed keys a batch at a time, and removes the
//! files no record names once they are older than a grace period, since a
//! younger one may belong to a request that is recording it right now.
//!
//! It is an operator's command (`onestop-server sweep-media`), not a
//! background job: pointed at the wrong database, a sweep would find
//! every photo an orphan, so it also refuses to remove anything when no
//! file it examined has a record at all.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use onestop_model::entities::{attachment, attachment_thumbnail, upload};
use sea_orm::prelude::*;
use sea_orm::{DatabaseConnection, QuerySelect};

use crate::error::ApiError;
use crate::media::{Listed, MediaStore};

/// Keys asked about in one query.
const BATCH: usize = 500;
/// Old files examined before the sweep believes its database is the
/// store's: with more than this many and none recorded, it removes
/// nothing.
const TRUST_AFTER: u64 = 10;

/// What the sweep found, by the store's folders it looks in.
#[derive(Debug, Default)]
pub struct Report {
    /// Files examined.
    pub examined: u64,
    /// Files without a record but younger than the grace period, kept.
    pub young: u64,
    /// Files without a record, older than the grace period.
    pub orphans: Vec<String>,
    /// Of those, the ones removed.
    pub removed: u64,
    /// Why nothing was removed although orphans were found.
    pub refused: Option<String>,
}

/// Which records can name a file, by the folder it is in.
#[derive(Clone, Copy)]
enum Folder {
    Attachments,
    Thumbnails,
    Uploads,
}

impl Folder {
    const ALL: [Folder; 3] = [Folder::Attachments, Folder::Thumbnails, Folder::Uploads];

    fn prefix(self) -> &'static str {
        match self {
            Folder::Attachments => "attachments/",
            Folder::Thumbnails => "thumbnails/",
            Folder::Uploads => "uploads/",
        }
    }

    /// The listed keys some record still names.
    async fn recorded(
        self,
        db: &DatabaseConnection,
        keys: &[String],
    ) -> Result<HashSet<String>, DbErr> {
        Ok(match self {
            Folder::Attachments => attachment::Entity::find()
                .select_only()
                .column(attachment::Column::StorageKey)
                .filter(attachment::Column::StorageKey.is_in(keys.iter().cloned()))
                .into_tuple::<String>()
                .all(db)
                .await?
                .into_iter()
                .collect(),
            Folder::Thumbnails => attachment_thumbnail::Entity::find()
                .select_only()
                .column(attachment_thumbnail::Column::StorageKey)
                .filter(attachment_thumbnail::Column::StorageKey.is_in(keys.iter().cloned()))
                .into_tuple::<Option<String>>()
                .all(db)
                .await?
                .into_iter()
                .flatten()
                .collect(),
            // A resumable upload's pieces and saved states lie under
            // `uploads/<id>/`; they belong to it while its row exists
            // (the expiry sweep removes both).
            Folder::Uploads => {
                let ids: HashSet<Uuid> = keys.iter().filter_map(|k| upload_of(k)).collect();
                let live: HashSet<Uuid> = upload::Entity::find()
                    .select_only()
                    .column(upload::Column::Id)
                    .filter(upload::Column::Id.is_in(ids))
                    .into_tuple::<Uuid>()
                    .all(db)
                    .await?
                    .into_iter()
                    .collect();
                keys.iter()
                    .filter(|key| upload_of(key).is_some_and(|id| live.contains(&id)))
                    .cloned()
                    .collect()
            }
        })
    }
}

/// The upload a key under `uploads/` belongs to.
fn upload_of(key: &str) -> Option<Uuid> {
    let id = key.strip_prefix("uploads/")?.split('/').next()?;
    Uuid::try_parse(id).ok()
}

/// Finds the files under the folders records point into that no record
/// names and that were last written more than `grace` ago; removes them
/// when `remove` (else only reports them).
pub async fn sweep(
    db: &DatabaseConnection,
    media: &dyn MediaStore,
    grace: Duration,
    remove: bool,
) -> Result<Report, ApiError> {
    let cutoff = SystemTime::now()
        .checked_sub(grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = Report::default();
    let mut old_recorded = 0u64;
    for folder in Folder::ALL {
        let mut listing = media.list(folder.prefix()).chunks(BATCH);
        while let Some(batch) = listing.next().await {
            let batch: Vec<Listed> = batch
                .into_iter()
                .collect::<std::io::Result<_>>()
                .map_err(ApiError::Storage)?;
            report.examined += batch.len() as u64;
            let keys: Vec<String> = batch.iter().map(|l| l.key.clone()).collect();
            let recorded = folder.recorded(db, &keys).await?;
            for listed in batch {
                let old = listed.modified <= cutoff;
                match (recorded.contains(&listed.key), old) {
                    (true, true) => old_recorded += 1,
                    (true, false) => {}
                    (false, false) => report.young += 1,
                    (false, true) => report.orphans.push(listed.key),
                }
            }
        }
    }
    let old = old_recorded + report.orphans.len() as u64;
    if old_recorded == 0 && old > TRUST_AFTER {
        report.refused = Some(format!(
            "none of the {old} files older than the grace period has a record: this database \
             does not look like the one this store belongs to"
        ));
        return Ok(report);
    }
    if remove {
        for key in &report.orphans {
            media.delete(key).await.map_err(ApiError::Storage)?;
            report.removed += 1;
            tracing::info!(key, "a file no record names was removed");
        }
        metrics::counter!("media_orphans_removed_total").increment(report.removed);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_belong_to_the_upload_named_in_their_folder() {
        let id = Uuid::new_v4();
        assert_eq!(
            upload_of(&format!("uploads/{}/filter-000000001024", id.simple())),
            Some(id)
        );
        assert_eq!(upload_of("uploads/not-an-id/0"), None);
        assert_eq!(upload_of("attachments/ab/cd/abcd"), None);
    }
}
