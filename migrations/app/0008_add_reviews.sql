-- What goes public goes through review. A version's owner submits it; a
-- reviewer (`app:manage`) approves it, rejects it or asks for changes,
-- with a comment; every step is kept in `version_reviews` (append-only).
-- An application with an approved, active version is public: everyone
-- with `app:read` sees it, and its approved versions only.
ALTER TABLE app_versions
    ADD COLUMN review_status text NOT NULL DEFAULT 'none'
        CHECK (review_status IN ('none', 'pending', 'approved', 'rejected', 'changes_requested')),
    ADD COLUMN reviewed_by uuid,
    ADD COLUMN review_comment text,
    ADD COLUMN reviewed_at timestamp,
    ADD COLUMN withdrawn_at timestamp;
CREATE INDEX app_versions_review ON app_versions (review_status, created_at) WHERE review_status = 'pending';

-- The newest approved, active version: the one everyone may install.
ALTER TABLE applications ADD COLUMN public_version_id uuid;
CREATE INDEX applications_public ON applications (updated_at DESC) WHERE public_version_id IS NOT NULL;

CREATE TABLE version_reviews (
    id         uuid PRIMARY KEY,
    version_id uuid NOT NULL REFERENCES app_versions (id),
    action     text NOT NULL CHECK (action IN
                 ('submitted', 'approved', 'rejected', 'changes_requested', 'withdrawn')),
    actor_id   uuid NOT NULL,
    comment    text,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX version_reviews_version ON version_reviews (version_id, created_at);
