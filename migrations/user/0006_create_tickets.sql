-- Support tickets and their replies. tenant_id and department_id are the
-- opener's at the time of opening, so data scopes apply to tickets as to users.
CREATE SEQUENCE ticket_numbers START 1000;

CREATE TABLE tickets (
    id                uuid PRIMARY KEY,
    number            bigint NOT NULL UNIQUE DEFAULT nextval('ticket_numbers'),
    tenant_id         uuid,
    department_id     uuid,
    user_id           uuid NOT NULL REFERENCES users (id),
    subject           text NOT NULL,
    body              text NOT NULL,
    category          text NOT NULL CHECK (category IN ('technical', 'billing', 'account', 'feature_request', 'other')),
    priority          text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    status            text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'in_progress', 'waiting', 'resolved', 'closed')),
    assignee_id       uuid REFERENCES users (id),
    rating            smallint CHECK (rating BETWEEN 1 AND 5),
    feedback          text,
    first_response_at timestamp,
    resolved_at       timestamp,
    closed_at         timestamp,
    version           bigint NOT NULL DEFAULT 1,
    created_at        timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at        timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX tickets_tenant ON tickets (tenant_id, created_at);
CREATE INDEX tickets_user ON tickets (user_id);
CREATE INDEX tickets_assignee ON tickets (assignee_id);

CREATE TABLE ticket_replies (
    id         uuid PRIMARY KEY,
    ticket_id  uuid NOT NULL REFERENCES tickets (id),
    author_id  uuid NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('user', 'staff', 'system')),
    internal   boolean NOT NULL DEFAULT false,
    body       text NOT NULL,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX ticket_replies_ticket ON ticket_replies (ticket_id, created_at);
