//! Group commit for the embedded SQLite database.
//!
//! SQLite lets one transaction write at a time and makes each commit
//! durable with its own `fsync` of the write-ahead log. When many phones
//! upload at once, their small transactions (an attachment row, a
//! thumbnail's state) queue behind each other's `fsync`s, and the queue,
//! not the disk's bandwidth, sets the pace. [`GroupCommit`] gathers the
//! writes that arrive while a commit is under way and commits them
//! together: one transaction, each write in its own savepoint so that one
//! that fails is rolled back alone, one `fsync` for all. A write that finds
//! nothing under way is committed at once, so a lone request waits no
//! longer than before. Every caller hears back only after the commit that
//! holds its write is durable.
//!
//! PostgreSQL flushes the log of concurrent commits together by itself and
//! serves writers from several connections, so there every write is its
//! own transaction.
//!
//! sqlx and sea-orm commit one transaction per call; no crate batches
//! independent transactions, hence this module.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::FutureExt;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

use crate::begin_write;

/// The future a write returns, borrowing the transaction it runs in.
pub type WriteFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, DbErr>> + Send + 't>>;

/// Writes gathered into one transaction at most.
const BATCH: usize = 64;
/// Writes waiting for the committer before callers wait to hand theirs in.
const QUEUE: usize = 1024;

/// What one write left: its value, type-erased for the queue, or its
/// error (then nothing of it was kept).
type Outcome = Result<Box<dyn Any + Send>, DbErr>;

/// One caller's write and where its answer goes.
struct Job {
    write: Box<dyn for<'t> FnOnce(&'t DatabaseTransaction) -> WriteFuture<'t, Outcome> + Send>,
    reply: oneshot::Sender<Outcome>,
}

/// Commits writes, together when they arrive together (SQLite) or each in
/// its own transaction (PostgreSQL). Cheap to clone; the committing task
/// ends when the last clone is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    db: DatabaseConnection,
    queue: Option<mpsc::Sender<Job>>,
    commits: Arc<AtomicU64>,
}

impl GroupCommit {
    /// Starts the committing task on SQLite; needs a Tokio runtime.
    pub fn new(db: DatabaseConnection) -> Self {
        let commits = Arc::new(AtomicU64::new(0));
        let queue = (db.get_database_backend() == DatabaseBackend::Sqlite).then(|| {
            let (queue, jobs) = mpsc::channel(QUEUE);
            tokio::spawn(commit_batches(db.clone(), jobs, commits.clone()));
            queue
        });
        GroupCommit { db, queue, commits }
    }

    /// Transactions committed so far: fewer than the writes when writes
    /// were committed together.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `write` in a write transaction and returns its result once the
    /// transaction is durably committed. If `write` fails, nothing it did
    /// is kept and its error is returned.
    pub async fn write<T, F>(&self, write: F) -> Result<T, DbErr>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t DatabaseTransaction) -> WriteFuture<'t, T> + Send + 'static,
    {
        let Some(queue) = &self.queue else {
            let txn = begin_write(&self.db).await?;
            let value = write(&txn).await?;
            txn.commit().await?;
            self.commits.fetch_add(1, Ordering::Relaxed);
            return Ok(value);
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            write: Box::new(erased(move |txn| {
                Box::pin(async move {
                    let value = write(txn).await?;
                    Ok(Ok(Box::new(value) as Box<dyn Any + Send>))
                })
            })),
            reply,
        };
        queue
            .send(job)
            .await
            .map_err(|_| DbErr::Custom("the database committer has stopped".into()))?;
        let value = answer
            .await
            .map_err(|_| DbErr::Custom("the database committer dropped the write".into()))??;
        value
            .downcast::<T>()
            .map(|value| *value)
            .map_err(|_| DbErr::Custom("the database committer mixed up two writes".into()))
    }
}

/// Pins a write's closure to the signature the queue holds.
fn erased<F>(write: F) -> F
where
    F: for<'t> FnOnce(&'t DatabaseTransaction) -> WriteFuture<'t, Outcome> + Send,
{
    write
}

/// The committing task: takes what is waiting, up to [`BATCH`], runs it
/// in one transaction, commits, answers, and goes on with what arrived
/// meanwhile.
async fn commit_batches(
    db: DatabaseConnection,
    mut jobs: mpsc::Receiver<Job>,
    commits: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while jobs.recv_many(&mut batch, BATCH).await > 0 {
        // A write that panics loses its batch (the transaction is rolled
        // back and every caller in it hears of it), not the committer.
        let taken = std::mem::take(&mut batch);
        if AssertUnwindSafe(commit_batch(&db, taken, &commits))
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!(
                "a database write panicked; the writes committed with it were rolled back"
            );
        }
    }
}

async fn commit_batch(db: &DatabaseConnection, batch: Vec<Job>, commits: &AtomicU64) {
    let txn = match begin_write(db).await {
        Ok(txn) => txn,
        Err(error) => {
            let error = error.to_string();
            for job in batch {
                let _ = job.reply.send(Err(DbErr::Custom(error.clone())));
            }
            return;
        }
    };
    let mut done = Vec::with_capacity(batch.len());
    let mut broken = None;
    for job in batch {
        if broken.is_some() {
            // Not run: told below why.
            done.push((job.reply, Err(DbErr::Custom(String::new()))));
            continue;
        }
        // Each write in its own savepoint: kept if it succeeds, rolled
        // back alone if it fails.
        let outcome = match txn.begin().await {
            Ok(savepoint) => match (job.write)(&savepoint).await {
                Ok(Ok(value)) => savepoint.commit().await.map(|()| Ok(value)),
                Ok(Err(error)) | Err(error) => savepoint.rollback().await.map(|()| Err(error)),
            },
            Err(error) => Err(error),
        };
        match outcome {
            Ok(outcome) => done.push((job.reply, outcome)),
            // A savepoint that cannot be taken, kept or rolled back puts
            // the whole transaction in doubt: nothing of it counts.
            Err(error) => {
                broken = Some(error.to_string());
                done.push((job.reply, Err(DbErr::Custom(String::new()))));
            }
        }
    }
    let committed = match broken {
        Some(error) => {
            let _ = txn.rollback().await;
            Err(format!("the writes committed together failed: {error}"))
        }
        None => match txn.commit().await {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => Err(format!("the commit failed: {error}")),
        },
    };
    for (reply, outcome) in done {
        let _ = reply.send(match (&committed, outcome) {
            (Err(error), _) => Err(DbErr::Custom(error.clone())),
            (Ok(()), outcome) => outcome,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectOptions, Database, Statement};

    async fn open() -> DatabaseConnection {
        let path = std::env::temp_dir().join(format!("onestop-{}.db", uuid::Uuid::new_v4()));
        let mut options = ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()));
        options.max_connections(1).sqlx_logging(false);
        let db = Database::connect(options).await.unwrap();
        db.execute_unprepared(
            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;
             CREATE TABLE seaql_migrations (version TEXT PRIMARY KEY, applied_at BIGINT);
             CREATE TABLE photos (n INTEGER PRIMARY KEY);",
        )
        .await
        .unwrap();
        db
    }

    async fn stored(db: &DatabaseConnection) -> Vec<i64> {
        db.query_all(Statement::from_string(
            db.get_database_backend(),
            "SELECT n FROM photos ORDER BY n",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<i64>(0).unwrap())
        .collect()
    }

    #[tokio::test]
    async fn writes_arriving_together_share_commits_and_a_failing_one_keeps_nothing() {
        let db = open().await;
        let commits = GroupCommit::new(db.clone());
        let writes: Vec<_> = (0..40i64)
            .map(|n| {
                let commits = commits.clone();
                tokio::spawn(async move {
                    commits
                        .write(move |txn| {
                            Box::pin(async move {
                                txn.execute_unprepared(&format!("INSERT INTO photos VALUES ({n})"))
                                    .await?;
                                if n == 13 {
                                    // Wrote, then failed: none of it may stay.
                                    return Err(DbErr::Custom("refused".into()));
                                }
                                Ok(n * 10)
                            })
                        })
                        .await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for write in writes {
            answers.push(write.await.unwrap());
        }
        for (n, answer) in answers.iter().enumerate() {
            match n {
                13 => assert!(matches!(answer, Err(DbErr::Custom(e)) if e == "refused")),
                _ => assert_eq!(answer.as_ref().unwrap(), &(n as i64 * 10)),
            }
        }
        let expected: Vec<i64> = (0..40).filter(|&n| n != 13).collect();
        assert_eq!(stored(&db).await, expected);
        assert!(
            commits.commits() < 40,
            "{} commits for 40 writes arriving together",
            commits.commits()
        );
        // A write that breaks a constraint fails alone, too.
        let duplicate = commits
            .write(|txn| {
                Box::pin(async move {
                    txn.execute_unprepared("INSERT INTO photos VALUES (100)")
                        .await?;
                    txn.execute_unprepared("INSERT INTO photos VALUES (1)")
                        .await?;
                    Ok(())
                })
            })
            .await;
        assert!(duplicate.is_err());
        assert_eq!(stored(&db).await, expected);
    }
}
