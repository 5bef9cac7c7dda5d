//! The engine images cleanup-cron may remove: every image a managed game
//! used (the operation log's `image_ref`, the records' current image) and
//! since when each has been seen unused (`unused_engine_images`).

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Database, StoreError};

/// One image a managed game used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineImage {
    pub image_ref: String,
    /// A record names it as its current image: never removed.
    pub current: bool,
    /// When cleanup-cron first saw it unused; `None`: not seen unused yet.
    pub unused_since: Option<DateTime<Utc>>,
}

const ENGINE_IMAGES: &str = "\
WITH refs AS (
    SELECT image_ref FROM operation_log WHERE image_ref <> ''
    UNION SELECT current_image_ref FROM runtime_records
        WHERE current_image_ref IS NOT NULL AND current_image_ref <> ''
    UNION SELECT image_ref FROM unused_engine_images
)
SELECT refs.image_ref,
       EXISTS (SELECT 1 FROM runtime_records r WHERE r.current_image_ref = refs.image_ref)
           AS current,
       u.unused_since
FROM refs LEFT JOIN unused_engine_images u ON u.image_ref = refs.image_ref
ORDER BY refs.image_ref";

impl Database {
    /// Every image a managed game used, with whether a record names it as
    /// current and since when it has been seen unused.
    pub async fn engine_images(&self) -> Result<Vec<EngineImage>, StoreError> {
        let rows = sqlx::query(ENGINE_IMAGES).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(EngineImage {
                    image_ref: row.try_get("image_ref")?,
                    current: row.try_get("current")?,
                    unused_since: row.try_get("unused_since")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Records that `image_ref` is unused from now on; an earlier record is kept.
    pub async fn mark_image_unused(&self, image_ref: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO unused_engine_images (image_ref) VALUES ($1) ON CONFLICT DO NOTHING",
        )
        .bind(image_ref)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets when `image_ref` was seen unused (it is used again, removed,
    /// or gone).
    pub async fn forget_unused_image(&self, image_ref: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM unused_engine_images WHERE image_ref = $1")
            .bind(image_ref)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
