-- Engine images left behind by patches: cleanup-cron records when it first
-- saw an image of a managed game unused (no container of any kind made from
-- it, no record naming it as current), and removes the image once it has
-- stayed unused for RTMANAGER_IMAGE_RETENTION. A row is deleted when the
-- image is used again, removed, or gone.
--
-- Expand only: a new table the previous release never reads (see the
-- README's Upgrades).
CREATE TABLE unused_engine_images (
    image_ref    text        PRIMARY KEY,
    unused_since timestamptz NOT NULL DEFAULT now()
);
