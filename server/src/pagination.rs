//! Cursor pagination: the cursor is an opaque token naming the last item
//! seen (its time and id), so pages stay stable while new items arrive.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, ModelTrait, QueryFilter,
    QueryOrder, QuerySelect, Select, Value,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

pub const DEFAULT_PAGE_SIZE: u64 = 20;

/// Which way a list runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    OldestFirst,
    NewestFirst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    #[serde(rename = "t")]
    pub created_at: DateTime<Utc>,
    #[serde(rename = "i")]
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("cursors serialise"))
    }

    /// The rows that come after this cursor in a list ordered by
    /// `created_at`, then `id`, oldest or newest first.
    pub fn rows_after<C: ColumnTrait>(&self, created_at: C, id: C, order: Order) -> Condition {
        let (time_after, id_after) = match order {
            Order::OldestFirst => (created_at.gt(self.created_at), id.gt(self.id)),
            Order::NewestFirst => (created_at.lt(self.created_at), id.lt(self.id)),
        };
        Condition::any().add(time_after).add(
            Condition::all()
                .add(created_at.eq(self.created_at))
                .add(id_after),
        )
    }

    pub fn decode(token: &str) -> Result<Self, ApiError> {
        URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| {
                ApiError::Validation("the cursor is not one this server gave out".into())
            })
    }
}

/// The page size asked for, within bounds.
pub fn page_size(requested: Option<u64>, max: u64) -> Result<u64, ApiError> {
    match requested {
        None => Ok(DEFAULT_PAGE_SIZE.min(max)),
        Some(0) => Err(ApiError::Validation("limit must be at least 1".into())),
        Some(n) => Ok(n.min(max)),
    }
}

/// Which page of a list ordered by creation time, then id, was asked for.
pub struct PageRequest {
    size: u64,
    after: Option<Cursor>,
    order: Order,
}

impl PageRequest {
    /// The page a `limit` (capped at `max`) and a `cursor` ask for.
    pub fn new(
        cursor: Option<&str>,
        limit: Option<u64>,
        max: u64,
        order: Order,
    ) -> Result<Self, ApiError> {
        let size = page_size(limit, max)?;
        Ok(PageRequest {
            size,
            after: cursor.map(Cursor::decode).transpose()?,
            order,
        })
    }

    /// The page of `query`'s rows and the cursor of the next page: ordered
    /// by `created_at` then `id`, after the cursor, one row more than the
    /// page to tell whether another follows.
    pub async fn fetch<E: EntityTrait>(
        &self,
        db: &impl ConnectionTrait,
        query: Select<E>,
        created_at: E::Column,
        id: E::Column,
    ) -> Result<(Vec<E::Model>, Option<String>), DbErr> {
        let mut query = match self.order {
            Order::OldestFirst => query.order_by_asc(created_at).order_by_asc(id),
            Order::NewestFirst => query.order_by_desc(created_at).order_by_desc(id),
        };
        if let Some(after) = &self.after {
            query = query.filter(after.rows_after(created_at, id, self.order));
        }
        let rows = query.limit(self.size + 1).all(db).await?;
        Ok(split_page(rows, self.size, |row| {
            match (row.get(created_at), row.get(id)) {
                (Value::ChronoDateTimeUtc(Some(at)), Value::Uuid(Some(id))) => Some(Cursor {
                    created_at: *at,
                    id: *id,
                }),
                _ => None,
            }
        }))
    }
}

/// Declares the page type of one kind of item: the items and the cursor of
/// the next page, absent on the last one.
#[macro_export]
macro_rules! page_type {
    ($name:ident, $item:ty) => {
        #[derive(poem_openapi::Object)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` to get the next page; absent on the last one.
            #[oai(skip_serializing_if_is_none)]
            pub next_cursor: Option<String>,
        }
    };
}

/// Splits up to `size + 1` fetched rows into the page and the cursor of
/// the next one: the extra row only tells that another page exists.
fn split_page<R>(
    mut rows: Vec<R>,
    size: u64,
    cursor_of: impl Fn(&R) -> Option<Cursor>,
) -> (Vec<R>, Option<String>) {
    let more = rows.len() as u64 > size;
    rows.truncate(size as usize);
    let next_cursor = if more {
        rows.last()
            .and_then(cursor_of)
            .map(|cursor| cursor.encode())
    } else {
        None
    };
    (rows, next_cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() {
        let cursor = Cursor {
            created_at: Utc::now(),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(Cursor::decode("not-a-cursor").is_err());
    }

    #[test]
    fn page_sizes_are_capped_and_zero_is_refused() {
        assert_eq!(page_size(Some(1000), 100).unwrap(), 100);
        assert_eq!(page_size(None, 100).unwrap(), DEFAULT_PAGE_SIZE);
        assert!(page_size(Some(0), 100).is_err());
    }
}
